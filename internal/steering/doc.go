// Package steering decides which worker the kernel hands each new
// connection to when sockd runs with --reuseport: not to a worker that is
// not ready yet, has stalled or is leaving, and to a new worker only a
// growing share of it (slow start). It does so with the one lever a
// SO_REUSEPORT group offers an unprivileged process, a classic BPF
// program attached with SO_ATTACH_REUSEPORT_CBPF (socket(7),
// https://man7.org/linux/man-pages/man7/socket.7.html): for each SYN (or
// datagram) the kernel runs the program and takes the group's socket at
// the index it returns.
//
// # Sockets: one per worker, never closed
//
// Each worker gets a socket of its own in every reuseport group (the same
// index in each), so that the program can pass it over: a starting worker
// and the worker it replaces no longer share a socket. Assign gives a
// starting worker a free socket (or the socket of a dead worker whose
// queue still holds connections, so that they get served); when none is
// free every group grows by one (activation's Extend, under a program
// that does not answer the new index). A slot thus uses two sockets
// alternately, its running worker's and its replacement's, a third only
// while a worker outlives two generations; at most MaxSockets (2048: two
// per slot at 1024 slots).
//
// sockd never closes a socket while it runs: the kernel keeps a group's
// sockets in an array in the order they joined it, and closing one moves
// the last into the hole, which would silently change what every index
// means. So sockd's order of a group is the kernel's. A binary upgrade
// passes the descriptors on in that order (handoff's state message), and
// so keeps it. Sockets back from systemd's fd store are named
// sockd.<listener>.<index>, but the group may have changed meanwhile (a
// socket the store refused closed with the old sockd): with Options.Probe
// activation's Order finds the order by probing (a program sends one
// connection of sockd's own to index k and every other to index 0; the
// socket whose edge-triggered epoll fires is k; two probes must agree),
// about 0.3 ms an index, 0.6–1.1 s for 2048 sockets on a loaded 2-core
// machine. A probe connection alone in its queue is accepted and closed;
// otherwise a worker gets it already reset.
//
// # The program
//
// Compile turns per-socket weights (0 to MaxWeight) into a program: the
// flow hash sockd has always used (source address, its last word for
// IPv6, xor the ports, folded, times 2^32/φ; IPv4 with options and IPv6
// without extension headers), halved to 31 bits, then a balanced binary
// search on it over runs of sockets. Each socket owns
// floor(w·2^31/Σw) consecutive hashes; sockets of equal weight whose
// indexes step evenly form one run, answered by arithmetic (first +
// stride·(h−lo)/q), so a generation of any size at one weight is one leaf
// and a whole-generation reload ramping in beside the old one is two: 20
// to 30 instructions for 2048 sockets. The program answers only indexes
// with a positive weight, never one out of range: the kernel would then
// hash over every socket of the group, unready ones included. The
// kernel's limits: 4096 instructions (BPF_MAXINSNS); 8-bit conditional
// jumps (a search level farther than 255 instructions falls through to an
// unconditional jump); and optmem_max, which SO_ATTACH_REUSEPORT_CBPF
// compares with the program's size once translated to eBPF (8 bytes an
// instruction; per network namespace; 131072 on this 6.18 kernel, 20480
// before 6.8: a 2070-instruction program of 1024 distinct weights needs
// about 25 KB and is refused with ENOMEM there). Compile keeps within an
// estimate of that size from above; past the limits it coarsens the
// weights (64, 16, 4 levels, then equal), then drops the lightest runs;
// and Steering, told ENOMEM, retries within three quarters of what was
// refused. The tests run the programs in a classic BPF interpreter and
// checker written after the kernel's, measure exactly how much of the
// hash space each socket gets, and check against a real group of up to
// 2048 sockets that every connection lands where the interpreter says.
//
// # Weights
//
// Weights derives the weight vector from each socket's state (Free,
// Starting, Ready since T, Leaving, Gone), the slow-start Ramp and the
// sockets the detector excluded: starting, leaving and stalled sockets
// get 0; a ready worker Full (1000), or, during --slow-start D, a share
// rising linearly from 10 % to full over D, in 2 % steps (HAProxy's
// slowstart and Envoy's default curve with its 10 % floor: a cold worker
// warms by what it serves, so its load should rise steadily, from at
// once). A worker that replaces a ready one takes its weight from that
// one, so each pair keeps one full share: a whole generation ramps in
// while the old one serves the rest, the case Envoy's slow start leaves
// out (all endpoints new). A worker that replaces nobody (scale-up, crash
// restart) ramps against everyone. Ready returns when the ramp ends, when
// the replaced worker has no share left and can be stopped. With no
// socket weighted (nobody ready) it falls back to the best there is:
// ready, else starting, else leaving sockets, else all.
//
// # Stalls
//
// Detector judges by the accept queues only (tcpi_unacked of a listening
// socket; idiag_rqueue in sock_diag), never by process state: a worker
// stopped by SIGSTOP and one whose event loop spins on the CPU without
// getting to accept(2) look the same there, while /proc calls one
// stopped and the other running. A socket whose queue stays non-empty
// and never goes down for StallAfter (60 ms) is excluded, if at least one
// eligible peer's queue is empty at that sample (someone keeps up) and
// at most half the eligible sockets are excluded. It is readmitted once
// its queue is empty. Saturation (every queue waiting) excludes no one,
// so steering does not chase load around; a readmitted worker needs a
// full StallAfter of new evidence to be excluded again. Bound: the first
// connection that waits wakes the sampler at once; exclusion follows
// within StallAfter plus one Period (80 ms); measured 60–110 ms from the
// start of 1,000 connections a second to a stopped worker, on a loaded
// machine. Connections already queued on an excluded socket wait for
// their worker (SIGCONT, or its loop coming back); the kernel's
// tcp_migrate_req moves a queue only when its socket closes, and sockd
// keeps every socket open. If the worker dies they wait for the next
// worker Assign gives that socket to.
//
// A socket that leaves the program still receives the handshakes under
// way (a SYN_RECV request belongs to its listener): Drained says a
// leaving worker's socket is empty only after Dwell (1 s) with nothing
// queued.
//
// # Cost
//
// Nothing while no connection waits: the sampler blocks in epoll_wait on
// an edge-triggered EPOLLIN of every socket; epoll re-checks readiness
// when it delivers, so only a connection still queued when sockd looks
// wakes it (see sampler.go: the workers' own wakeups are unchanged, each
// new connection costs sockd's sleeping thread one in-kernel re-check).
// Measured: 0.00 s CPU in 60 s idle with 1024 sockets. While
// connections wait, it samples every Period (20 ms): one sock_diag dump
// per group (getsockopt TCP_INFO costs ~3 µs a socket here, 3 ms for
// 1024), ~30 µs a sample for 8 sockets and ~0.45 ms for 1024 (so 0.15 %
// and 2 % of a core at 50 Hz), then blocks again after Quiet (1 s) with
// nothing waiting. A ramp wakes it every max(D/50, Period) while it lasts.
//
// # systemd's sockets
//
// A socket unit gives sockd one shared socket, and a reuseport group
// admits only sockets created by the uid that created its first (tested:
// a root group refuses a socket of uid 65534 and the other way round).
// systemd creates system units' sockets as root, so a sockd running as a
// service user cannot add a socket to the group; even as root it could
// only if the unit set ReusePort=yes. Steering gives nothing there:
// sockd's workers share the one socket, the kernel wakes one waiter per
// connection (the most recent, LIFO), and a stalled worker simply does not
// wait for connections. --reuseport under systemd therefore means that
// sockd binds its own groups (for the addresses given with --listen) and
// stores them in the fd store to keep them across restarts; the sockets
// of the socket unit stay shared. (A user unit's sockets belong to the
// user, so a user sockd with ReusePort=yes could join them; sockd does
// not.)
//
// Without eBPF: BPF_PROG_TYPE_SK_REUSEPORT with a REUSEPORT_SOCKARRAY map
// would let sockd place sockets at indexes of its choosing and migrate
// the requests of a closing listener, but loading it needs CAP_BPF;
// classic BPF works unprivileged on every kernel sockd supports.
package steering
