package pool

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/procfs"
)

// env is the loop's window on the operating system and on the clock:
// forking a worker, collecting its exit, signalling it, looking at its
// descriptors, and timers. The loop does nothing else that blocks or has a
// side effect, so every decision it makes (crash budget, backoff,
// coalescing, MinServe, batches, rollback, scaling, recycling) can be
// tested with a fake env and a fake clock, without forking (sim_test.go);
// the tests that fork real workers use osEnv (osenv.go).
type env interface {
	// pid is sockd's own.
	pid() int
	// begin starts what feeds the loop from outside (the notify socket);
	// end closes it, once the loop is over.
	begin()
	end()
	// start forks w (its slot and generation are set) and arranges for an
	// exitEvent once it exits. The worker stays unreaped until reap, so
	// its pid and process group id cannot be reused before that. An error
	// that says sockd ran short of a resource is a *resources.Shortage.
	start(w *worker) (pid int, err error)
	// reap collects the exit of a worker whose exitEvent arrived.
	reap(pid int) exitStatus
	// send writes msg (one JSON value) on w's Node IPC channel, without
	// waiting: errNoChannel if it has none, errBacklog if it reads none.
	send(w *worker, msg []byte) error
	// signal sends sig to the worker's group: its process group (a
	// wrapper script's children get it too) and what it started outside
	// that (its cgroup, or the processes sockd adopted from it).
	signal(w *worker, sig unix.Signal) error
	// groupAlive reports whether anything is left of w's group.
	groupAlive(w *worker) bool
	// killGroup sends SIGKILL to w's group; false if it was empty.
	killGroup(w *worker) bool
	// release frees what w's group held (its cgroup) once it is empty.
	release(w *worker)
	// remove deletes a file a worker left (its metrics socket).
	remove(path string)
	// track and untrack tell the guard (Deps.Guard) a worker's process
	// group, when it starts and once nothing of it is left; guardPID is
	// the guard's pid (0: none).
	track(pgid int)
	untrack(pgid int)
	guardPID() int
	// orphaned sends sig, after w exited, to what it left behind that
	// could not get sig before (processes sockd adopted only now).
	orphaned(w *worker, sig unix.Signal)
	// holdsListener reports whether pid still has one of the pool's
	// listening sockets open.
	holdsListener(pid int) bool
	// grow gives every reuseport listener a socket for each of n slots,
	// the new ones steered out; steer makes the kernel hand new
	// connections to the first n slots' sockets only (false: no listener
	// is a reuseport group, so nothing is steered); queued counts the
	// connections waiting in slot's reuseport sockets.
	grow(n int) error
	steer(n int) bool
	queued(slot int) int
	// steered reports whether new connections are steered per worker
	// (Deps.Steering): then each worker has a socket of its own in every
	// reuseport group, given by start; ready gives w its share of new
	// connections and returns when its slow-start ramp ends (when the
	// worker it replaces has no share left); leave takes w's share away;
	// drained reports that nothing waits in w's sockets any more and no
	// handshake is under way to them, so that stopping it leaves no
	// connection behind. yielded says a successor sockd steers now (the
	// workers of this one drain before they stop, even at its stop).
	steered() bool
	steerReady(w *worker) time.Time
	leave(w *worker)
	drained(w *worker) bool
	yielded() bool
	// halted reports whether w's process is stopped by a signal (SIGSTOP;
	// not traced by a debugger): it can neither drain nor stop by itself.
	halted(w *worker) bool
	// mayLower reports whether w may start at a low CPU priority
	// (Config.LowStart): whether sockd may give it its normal one back;
	// start then starts it so, and raise gives it back to every thread
	// of its process tree.
	mayLower(w *worker) bool
	raise(w *worker)
	// gone says w's process has exited (what it started may linger).
	gone(w *worker)
	// queue reports the accept queue of socket i of l, and its limit
	// (see activation.Listener.Queue).
	queue(l *activation.Listener, i int) (depth, limit int, err error)
	// usage reads what a worker's process tree uses. It is called off
	// the loop, by the sampler.
	usage(t sampleTarget) (procfs.Usage, error)
	now() time.Time
	// after posts ev to the loop once d has passed.
	after(d time.Duration, ev loopEvent) timer
}

// timer is a pending event; Stop cancels it if it has not fired.
type timer interface{ Stop() bool }

// exitStatus is how a worker ended.
type exitStatus struct {
	ws  unix.WaitStatus
	cpu time.Duration // user + system time of the worker itself
}

func (e exitStatus) String() string {
	switch {
	case e.ws.Exited():
		return fmt.Sprintf("exit status %d", e.ws.ExitStatus())
	case e.ws.Signaled():
		return "killed by " + unix.SignalName(e.ws.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(e.ws))
	}
}
