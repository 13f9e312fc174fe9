package pool

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// env is the loop's window on the operating system and on the clock:
// forking a worker, collecting its exit, signalling it, looking at its
// descriptors, and timers. The loop does nothing else that blocks or has a
// side effect, so every decision it makes (crash budget, backoff,
// coalescing, MinServe, batches, rollback, scaling, recycling) can be
// tested with a fake env and a fake clock, without forking (loop_test.go);
// the tests that fork real workers use osEnv.
type env interface {
	// start forks w (its slot and generation are set) and arranges for an
	// exitEvent once it exits. The worker stays unreaped until reap, so
	// its pid and process group id cannot be reused before that.
	start(w *worker) (pid int, err error)
	// reap collects the exit of a worker whose exitEvent arrived.
	reap(pid int) exitStatus
	// signal sends sig to the worker's process group (a wrapper script's
	// children get it too), or to the worker alone if it left its group.
	signal(pid int, sig unix.Signal) error
	// groupAlive reports whether anything is left of process group pgid.
	groupAlive(pgid int) bool
	// killGroup sends SIGKILL to process group pgid; false if it was empty.
	killGroup(pgid int) bool
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
	// usage reads what a worker's process tree uses. It is called off
	// the loop, by the sampler.
	usage(pid int) (procfs.Usage, error)
	now() time.Time
	// after posts ev to the loop once d has passed.
	after(d time.Duration, ev any) timer
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

// osEnv is the real env: fork through the trampoline, pidfds, kill(2),
// /proc.
type osEnv struct{ p *Pool }

func (e osEnv) start(w *worker) (int, error) {
	if !e.p.opts.Ready.NodeIPC {
		pid, err := e.p.spawn(w.gen, w.slot, -1)
		if err != nil {
			return 0, err
		}
		go e.p.watch(pid)
		return pid, nil
	}
	mine, theirs, err := nodeChannel()
	if err != nil {
		return 0, err
	}
	pid, err := e.p.spawn(w.gen, w.slot, theirs)
	unix.Close(theirs)
	if err != nil {
		unix.Close(mine)
		return 0, err
	}
	go e.p.watch(pid)
	go e.p.readNodeChannel(pid, mine)
	return pid, nil
}

func (osEnv) reap(pid int) exitStatus {
	var ws unix.WaitStatus
	var ru unix.Rusage
	for {
		_, err := unix.Wait4(pid, &ws, 0, &ru)
		if err != unix.EINTR {
			return exitStatus{ws: ws, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		}
	}
}

func (osEnv) signal(pid int, sig unix.Signal) error {
	err := unix.Kill(-pid, sig)
	if err == unix.ESRCH || err == unix.EPERM {
		err = unix.Kill(pid, sig)
	}
	return err
}

func (osEnv) groupAlive(pgid int) bool { return unix.Kill(-pgid, 0) == nil }

func (osEnv) killGroup(pgid int) bool { return unix.Kill(-pgid, unix.SIGKILL) == nil }

// holdsListener compares the socket inodes /proc/PID/fd shows with the
// pool's listening sockets.
func (e osEnv) holdsListener(pid int) bool {
	fds, err := procfs.FDs(pid)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := procfs.FDTarget(pid, fd)
		if err == nil && e.p.listenerInodes[target] {
			return true
		}
	}
	return false
}

func (e osEnv) grow(n int) error {
	for _, l := range e.p.opts.Listeners {
		if _, err := l.Grow(n); err != nil {
			return err
		}
	}
	return nil
}

func (e osEnv) steer(n int) bool {
	steered := false
	for _, l := range e.p.opts.Listeners {
		if l.Growable() {
			if err := l.Steer(min(n, l.Slots())); err != nil {
				e.p.log.Warn("cannot steer connections", "error", err)
			}
			steered = true
		}
	}
	return steered
}

func (e osEnv) queued(slot int) int {
	n := 0
	for _, l := range e.p.opts.Listeners {
		if l.Growable() && slot < l.Slots() {
			if d, _, err := l.Queue(slot); err == nil {
				n += d
			}
		}
	}
	return n
}

func (osEnv) usage(pid int) (procfs.Usage, error) { return procfs.TreeUsage(pid, maxTree) }

// maxTree bounds the processes of one worker's tree that are sampled.
const maxTree = 1024

func (osEnv) now() time.Time { return time.Now() }

func (e osEnv) after(d time.Duration, ev any) timer {
	return time.AfterFunc(d, func() { e.p.post(ev) })
}
