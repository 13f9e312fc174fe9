// Package pool is sockd's supervisor: it runs worker processes on a fixed
// set of listening sockets, keeps them alive, and replaces them without a
// refused or reset connection.
//
// Workers are started the way systemd starts a socket-activated service
// (sd_listen_fds(3), https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html):
// the sockets are fds 3, 4, …, LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID
// (the worker's own pid, set by a re-exec trampoline, see Trampoline) say
// so, and NOTIFY_SOCKET points at a socket of sockd's on which a worker
// reports READY=1, STOPPING=1, WATCHDOG=1 and STATUS= as sd_notify(3)
// (https://www.freedesktop.org/software/systemd/man/sd_notify.html)
// describes.
//
// # One goroutine, one mechanism
//
// One goroutine (run, loop.go) owns every worker; the methods of Pool,
// timers and the processes' exits send it events. Its one mechanism is
// replacing the worker of a slot (slot.go): a new worker starts in the
// slot as its "next"; once it is ready it is promoted and the worker it
// replaces is asked to drain (SIGTERM); if it fails first, the slot's
// worker was never touched. First starts, crash restarts, replacements
// after STOPPING=1 and reloads are policies over it:
//
//	event                       what the loop does
//	worker exits                a slot's worker or its starting replacement: a crash (budget,
//	                            backoff, restart); in a reload's batch: the reload is rolled
//	                            back; any other worker: it was retiring, nothing more
//	READY=1 (or after:D)        promote the slot's new worker; in a reload's batch: wait for
//	                            the whole batch, then promote it together
//	STOPPING=1                  start the worker's replacement at once; its exit is not a
//	                            crash (unless it came before READY=1 or within MinServe)
//	WATCHDOG=1, STATUS=,        remembered for the watchdog and status
//	SOCKD_REQUESTS=
//	ready timeout               the worker is stopped and its exit counts as a crash; in a
//	                            reload's batch: roll back
//	watchdog timeout            SIGABRT, SIGKILL after StopTimeout; the exit counts as a crash
//	stop timeout                SIGKILL the worker (and, once it exited, its process group)
//	Reload                      start a reload, or join the one queued behind it (reload.go)
//	Stop                        SIGTERM everyone; done when every worker is reaped
//
// # A worker's life
//
// starting (forked, in its slot as next) → ready (promoted: it serves the
// slot) → stopping (asked to drain, or announced STOPPING=1) → exited and
// reaped. What is left of its process group is killed at once after a
// crash, at the stop deadline after a requested stop.
//
// # A generation's life
//
// A generation is the set of workers one reload started. A reload moves
// every slot to the next generation, ReloadBatch slots at a time (all at
// once by default); the reload is over when no worker of the old
// generation holds a listening socket any more, so that a request sent
// after Reload returned is answered by the new generation. Reloads asked
// for meanwhile are coalesced into one, which starts only once the old
// generation is gone: never three generations alive.
//
// Everything the loop does to the world goes through a small seam (env.go:
// fork, reap, signal, /proc, timers), so its decisions are tested with a
// fake process table and a fake clock (loop_test.go), and again with real
// forked workers.
package pool
