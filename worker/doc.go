// Package worker is the worker side of sockd: it takes the listening
// sockets a service manager passes, talks back to it, and drains an HTTP
// server without losing requests. It imports nothing of sockd and works the
// same under systemd socket activation.
//
// # Protocol
//
// Sockets are passed as described in sd_listen_fds(3)
// (https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html):
// file descriptors 3, 4, … with LISTEN_FDS (how many), LISTEN_PID (the pid
// they are meant for) and LISTEN_FDNAMES (colon-separated names).
// [Listeners], [ListenersWithNames] and [Files] check LISTEN_PID, make the
// descriptors close-on-exec and unset LISTEN_* so children do not inherit
// them. Status goes back as in sd_notify(3)
// (https://www.freedesktop.org/software/systemd/man/sd_notify.html):
// datagrams of VAR=VALUE lines sent to NOTIFY_SOCKET, see [Notify].
//
// sockd adds to that contract:
//
//   - The sockets are shared by every worker: each worker holds a duplicate
//     of the same open file description, so O_NONBLOCK is shared too. A
//     worker must never put them into blocking mode. Taking them with this
//     package (os.NewFile + net.FileListener) keeps them non-blocking; never
//     call (*net.TCPListener).File on them, whose Fd method clears O_NONBLOCK.
//   - SOCKD_WORKER is the worker's slot (0-based) and SOCKD_GENERATION its
//     generation (1-based), see [Slot] and [Generation].
//   - SOCKD_REQUESTS=n in a notification is the cumulative number of
//     requests the worker has served; sockd shows it as the worker's share.
//   - STOPPING=1 is sent only when the worker decides to exit on its own, so
//     that sockd starts its replacement first. A worker told to stop (SIGTERM)
//     does not send it.
//   - SIGTERM means drain and exit; sockd sends SIGKILL after its stop
//     timeout, so keep [Options].DrainTimeout below it.
//
// # The careful drain
//
// [ServeHTTP] (or a [Drainer]) drains an http.Server in four steps:
//
//  1. Stop accepting: close the worker's own duplicates of the listening
//     sockets. The sockets stay open in sockd, so connections still queued in
//     the kernel wait there for the next generation instead of being reset.
//  2. Answer every request that still arrives on an open connection with
//     "Connection: close"; the server closes that connection right after the
//     response, which is safe: the client was told not to reuse it.
//  3. Close connections that are idle (between requests, or accepted with no
//     request yet), but only once they have stayed idle for
//     [Options].IdleGrace, counted from the later of the drain start and the
//     moment they became idle. Before closing one, the kernel is asked
//     whether anything arrived on it since it became idle (TCP_INFO bytes
//     received, and unread bytes); if so it is left alone and looked at
//     again later.
//  4. Return once no connection is open. At the drain deadline the
//     connections still open are closed and an error is returned.
//
// Why the grace: closing a keep-alive connection between requests races
// with a client that is sending its next request on it at that moment; the
// request is then lost (a client may retry an idempotent request, never a
// POST). HTTP/1.1 has no way to tell an idle client to go away other than
// closing. A busy client sends within microseconds to milliseconds of its
// previous response, so its connection gets step 2 instead; a connection
// that stayed silent for a full second belongs to a client that is not
// sending, and closing it is as safe as closing can be. The default of one
// second is far above a busy client's gap and a WAN round trip, far below
// client idle timeouts, and keeps a drain of idle pools to about a second.
//
// This differs from http.Server.Shutdown, which closes idle connections at
// once and stops serving requests it reads after it began, and from
// http.Server.SetKeepAlivesEnabled(false), which also closes idle
// connections at once. Neither is called before the connections are gone.
//
// TestReloadCareful and TestReloadNaive reload a worker under load (busy
// and sporadic keep-alive clients, new connections, all POST) and count
// the requests lost by this drain and by Shutdown; package workertest
// runs any worker the same way.
//
// Not covered: hijacked connections (WebSockets) leave the tracking when
// hijacked; use [Options].OnDrain to tell them to finish. HTTP/2 connections
// get "Connection: close" too, which Go's HTTP/2 server turns into GOAWAY.
package worker
