// Package nodeshim is sockd's side of its Node.js preload: a small script
// (preload.js, embedded here) that sockd writes to its run directory and
// loads into every Node worker with `--require` in NODE_OPTIONS, so that an
// unchanged Node app (one written for PM2, `app.listen(PORT)`,
// `server.close()` on SIGINT) runs on the sockets sockd holds and drains
// without losing a request. It extends the socket passing of
// sd_listen_fds(3) (https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html)
// and carries what sd_notify(3)
// (https://www.freedesktop.org/software/systemd/man/sd_notify.html) carries
// over Node's IPC channel instead of a datagram.
//
// # The contract between sockd and the preload
//
// sockd passes the sockets as systemd does (fds 3, 4, …, LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID) and adds:
//
//	NODE_OPTIONS=<the user's> --require "<run dir>/sockd-node-preload-<hash>.js"   (NodeOptions, Install)
//	SOCKD_NODE_LISTENERS=[{"fd":3,"name":"web","net":"tcp","host":"::","port":3000,"backlog":4096,"ino":123}, …]
//	SOCKD_NODE_SEND=ready,requests,watchdog   (optional, see Send)
//	SOCKD_NODE_IDLE_GRACE_MS=1000             (optional, the drain's idle grace)
//
// One entry per stream listener (Listeners, Describe): the fd the worker
// has, its address as the kernel reports it (TCP: host and port, v6only;
// unix: path, an abstract one with a leading NUL), the accept queue limit
// the kernel has for it (TCP_INFO tcpi_sacked; sock_diag for unix) and its
// inode. Without SOCKD_NODE_LISTENERS the preload does nothing at all.
//
// # Which process takes the sockets
//
// The first Node process at or below LISTEN_PID: LISTEN_PID itself (sockd's
// trampoline makes it the worker), or a Node process started by a shell
// script that is the worker (`sh -c 'node app.js'`, with or without exec).
// It checks that each fd is still the socket sockd described (same inode)
// and then sets SOCKD_NODE_OWNER=<its pid> in its environment, so the Node
// processes it starts (which inherit NODE_OPTIONS and LISTEN_*) leave the
// sockets alone. Worker threads never take them.
//
// `npm start` works: npm is Node and runs the script through sh with fds
// 0-2 only, keeping Node's IPC channel for itself. The preload in npm (the
// worker, recognised by npm-cli.js) hands the listeners on as fds 3, 4, …
// of the script's shell, adds an IPC channel right after them, relays
// messages both ways, and marks SOCKD_NODE_OWNER=npm:<pid> so that the first
// Node process below takes the sockets. sockd's SIGINT reaches the app
// through the process group; npm forwards it too. With SIGTERM, sh and npm
// exit at once while the app drains on (sockd lets a stopped worker's
// group drain until its stop deadline).
//
// # listen()
//
// net.Server.prototype.listen is wrapped. A listen that would fail with
// EADDRINUSE because sockd holds the address listens on sockd's socket
// instead: the same port with no host, "0.0.0.0", "::" or a host whose
// address overlaps the socket's (Linux's bind rules: a wildcard covers its
// family, a dual-stack "::" both), a host name looked up first as Node does
// ("localhost"), a string port, the same unix path, or {fd: N} itself. It
// becomes listen({fd: N}, backlog) with the backlog sockd's socket has:
// Node calls listen(2) again on every listen, with 511 unless told, which
// would shrink the queue shared by every worker. Any other listen (another
// port, port 0, a path sockd does not hold) goes to Node untouched. Each
// socket is taken once per process: a second server on the same port fails
// with EADDRINUSE, as it would without sockd (Fastify's second binding of
// "localhost" fails so, and Fastify ignores it). Options that only apply to
// a socket Node creates (exclusive, reusePort, readableAll) are ignored for
// sockd's sockets.
//
// The file of a unix socket sockd holds is shared by every worker and the
// next generation, so the worker's fs.unlink, fs.rm (callback, sync and
// promise forms) of it, by any path that leads to it, is skipped with one
// line on stderr: apps often remove a stale file before listen(path) and
// again on exit, which would leave every worker on a socket no client can
// reach. Other files are removed as asked.
//
// A listen that collides with a sockd socket it cannot take (not the
// worker, fd closed on the way, already taken or closed in this process)
// gets one line on stderr that says why, e.g.
//
//	sockd: listen EADDRINUSE on port 3000: it is sockd's listening socket (fd 3, web), but sockd passed its sockets to pid 1, not to this process (pid 42); run node as sockd's worker (…)
//
// A worker that listens on a port sockd does not hold, and 2 s later has
// taken none of sockd's sockets, gets one line too: it may look ready and
// healthy (--ready node-ipc) while sockd's clients reach none of its
// servers (an admin port beside sockd's socket says nothing).
//
// # The careful drain
//
// Node's server.close() calls closeIdleConnections(), which destroys idle
// keep-alive connections at once, racing with clients that are sending
// their next request on them: the request is lost (a reset, or a 502 from
// nginx for a POST, which it does not retry). HTTP/1.1 has no GOAWAY. For an
// HTTP(S) server on sockd's socket the preload makes closeIdleConnections
// (and so close()) drain the way sockd's worker package does:
//
//  1. close() stops accepting at once (Node closes its own fd; the socket
//     stays open in sockd and the other workers, so nothing queued is lost).
//  2. Every answer from then on, and every answer in progress whose headers
//     are not out yet, says "Connection: close"; Node closes the connection
//     after it. A busy client learns to go away from its own answer.
//  3. A connection idle since the drain began (no request being read, no
//     answer pending: Node's own connection list) is closed only once it has
//     stayed idle for the grace (1s), and only if nothing arrived: Node's
//     bytesRead is unchanged and a non-blocking read(2) of one byte on its
//     fd finds nothing (EAGAIN). A byte found there (a request that reached
//     the kernel while Node's loop was busy) is handed to the HTTP parser
//     as if Node had read it, and the connection is answered instead.
//  4. close()'s callback and 'close' fire when the last connection is gone,
//     as Node's do.
//
// Why that avoids the race: a client that is sending is either busy (it
// gets step 2 within one request) or it sends within the grace; one that
// stayed silent for a full second is not in the middle of sending, and the
// probe closes the window between "nothing arrived" and close(2) to a few
// microseconds, as sockd's Go drain does with TCP_INFO. Limits: a request
// that is on the wire (not yet in the kernel) at that instant still meets a
// closed connection; clients that reuse a connection without noticing it was
// closed while idle (wrk does, and counts a read error; browsers, nginx and
// Go do notice) see the close; TLS connections are probed by bytesRead only
// (a raw read would eat TLS records); upgraded connections (WebSocket) and
// long requests are left to the app, as Node leaves them; the drain has no
// deadline of its own (sockd's stop timeout is it).
// closeAllConnections() is untouched.
//
// An HTTP/2 server (http2.createServer, createSecureServer) on sockd's
// socket: Node's close() leaves every session open, so the worker would
// live until sockd's stop timeout kills it, mid-stream. The preload's
// close() also ends the sessions. A session with a stream open gets a
// GOAWAY that still admits every stream (last stream id 2^31-1), at once or
// when its next stream begins, so that the client opens no new stream on
// it and nghttp2 ends it once its streams are done; a session that stays
// idle for the grace is closed then (session.close()). A GOAWAY is never
// sent to an idle session at once: nghttp2 ends a session as soon as it has
// sent one with no stream open, dropping a stream the client sent
// meanwhile, and Node has no shutdown notice. The same limit as HTTP/1.1's
// remains: a stream on the wire as an idle session closes is lost.
//
// Fastify answers 503 to requests arriving on open connections while it
// closes (return503OnClosing, "not needed since Node 19" per its own
// comments, because Node closed those connections). Since the drain keeps
// them open to answer them, the preload makes return503OnClosing default to
// false in the worker (an app that sets it keeps its value), by wrapping
// Fastify's router setup as fastify.js loads it (require and import alike).
//
// SOCKD_NODE_DRAIN=0 turns the drain and the Fastify default off (Node's own
// close, for comparisons); SOCKD_NODE_DEBUG=1 logs each drain step.
//
// # Warm-up before ready
//
// With SOCKD_NODE_WARMUP=PATH (sockd's --warmup; see Warmup) the worker's
// ready waits until the app's HTTP(S) servers on sockd's sockets have
// answered SOCKD_NODE_WARMUP_REQUESTS GET requests for PATH (user agent
// sockd-warmup). The preload sends them itself, from the worker, over a
// private abstract unix socket whose connections it hands to the server
// as if the server had accepted them ('connection'), one after another on
// one keep-alive connection: nothing reaches sockd's sockets, and the
// request count sockd gets leaves them out. The ready held is the app's
// (process.send('ready') or {"sockd":{"ready":true}}: the message, with
// its callback, and every message the app sends after it, go out in order
// once the warm-up ends) or the preload's own under SOCKD_NODE_SEND=ready.
// The warm-up ends at the last answer, at the first failed request or
// after SOCKD_NODE_WARMUP_MS (sockd passes half of --ready-timeout); the
// ready goes out in every case, with one line on stderr saying how it
// went:
//
//	sockd: warm-up: 200 requests for / answered in 123 ms
//	sockd: warm-up of /: request 1 of 200: socket hang up; the worker says it is ready anyway
//
// Why: a cold V8 runs the app's code in its interpreter first; the first
// requests of a new worker take several times a warm one's (10-20 ms
// against 1-2 ms for BENCHMARKS.md's Node app), and without a warm-up they
// are clients' requests.
//
// # Messages to sockd
//
// A worker started with Node's IPC channel (NODE_CHANNEL_FD,
// NODE_CHANNEL_SERIALIZATION_MODE=json: one JSON value per line) can send
// what sd_notify carries with process.send; see Message for the shape and
// ParseMessage for the parser sockd runs per line. The preload sends, when
// SOCKD_NODE_SEND asks: {"sockd":{"ready":true}} once every sockd socket the
// process has is listening, {"sockd":{"requests":N}} each second while the
// count changes, {"sockd":{"watchdog":true}} every WATCHDOG_USEC/2 from a
// timer of the event loop. It sends nothing without a channel, never
// defines process.send, never listens for messages (so the channel does not
// keep the process alive) and swallows send errors.
package nodeshim
