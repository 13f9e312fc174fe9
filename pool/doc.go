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
// # One goroutine, one mechanism, policies that own their workers
//
// One goroutine (run, loop.go) owns every worker; the methods of Pool,
// timers and the processes' exits send it events (a sealed interface,
// event.go: each kind says what the loop does with it). Its one
// mechanism is replacing the worker of a slot (slot.go): a new worker
// starts in the slot as its "next"; once it is ready it is promoted and
// the worker it replaces is retired (asked to drain, SIGTERM); if it fails
// first, the slot's worker was never touched. A scale-down replaces a
// slot's worker by nothing.
//
// Every worker has an owner (owner.go): the policy that started it, then
// the slot's serving rules once promoted, then the retirement. The loop's
// handlers do what is the same for every worker and hand the event to the
// owner, which alone decides what it means:
//
//	event                       generic (loop.go)               the owner decides
//	worker exits                reap, log, its group            starter, server: a crash of the slot (budget,
//	                                                            backoff, restart); recycler: the old worker keeps
//	                                                            serving, retry later; rollout: roll the reload
//	                                                            back; retiree, parker: nothing
//	READY=1 (or after:D,        state, event, watchdog timer    starter, recycler: promote; rollout: wait for the
//	node-ipc "ready")                                           batch, then promote it together
//	STOPPING=1                  ignored if asked to stop        server: start the replacement at once (its exit is
//	                                                            no crash, unless within MinServe); starter,
//	                                                            recycler: an early failure; rollout: roll back
//	ready timeout               ignored unless still starting   starter, recycler: stop it, its exit a failure;
//	                                                            rollout: roll back
//	WATCHDOG=1, STATUS=,        remembered; policies hear it    recycler: over MaxRequests? replace it
//	SOCKD_REQUESTS=
//	watchdog timeout            SIGABRT, SIGKILL after StopTimeout; the exit counts as a crash
//	stop timeout                SIGKILL the worker (and, once it exited, its process group)
//	Reload                      start a reload, or join the one queued behind it
//	Stop                        every worker is retired; done when every worker is reaped
//
// Where each policy lives: filling a slot (first start, crash restart,
// scale-up, the replacement after STOPPING=1) and serving it, slot.go;
// reloads, reload.go, which reads top to bottom as everything a reload
// decides; recycling, recycle.go; scaling and parking, scale.go. Adding a
// policy needs no change to the mechanism (policy_test.go has one).
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
// Everything the loop learns from the world and does to it goes through a
// small seam (env.go: fork, reap, signal, /proc, the guard, the sockets'
// queues, the clock), so its decisions are tested with a fake process
// table and a fake clock (sim_test.go), and again with real forked
// workers (osenv.go is the real seam).
package pool
