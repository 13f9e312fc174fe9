package pool

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/reaper"
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
	// usage reads what a worker's process tree uses. It is called off
	// the loop, by the sampler.
	usage(t sampleTarget) (procfs.Usage, error)
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
	mine, theirs := -1, -1
	if e.p.opts.Ready.NodeIPC {
		var err error
		if mine, theirs, err = nodeChannel(); err != nil {
			return 0, err
		}
		defer unix.Close(theirs)
	}
	var pid int
	var err error
	if t := e.p.opts.Cgroups; t != nil {
		pid, err = e.startInCgroup(w, t, theirs)
	} else {
		pid, err = e.p.opts.Reaper.Start(func() (int, error) { return e.p.spawn(w, theirs, -1, -1) })
	}
	if err != nil {
		if mine >= 0 {
			unix.Close(mine)
		}
		return 0, err
	}
	go e.p.watch(pid)
	if mine >= 0 {
		go e.p.readNodeChannel(pid, mine)
	}
	return pid, nil
}

// startInCgroup starts w in a new cgroup of its own: with clone3's
// CLONE_INTO_CGROUP, or, where that is refused, stopped at a gate until
// sockd has moved it there.
func (e osEnv) startInCgroup(w *worker, t *cgroup.Tree, channel int) (int, error) {
	g, err := t.NewGroup()
	if err != nil {
		return 0, err
	}
	defer g.CloseFD()
	if !e.p.noClone3.Load() {
		pid, err := e.p.opts.Reaper.Start(func() (int, error) { return e.p.spawn(w, channel, g.FD(), -1) })
		if !errors.Is(err, unix.ENOSYS) {
			if err != nil {
				g.Remove()
				return 0, err
			}
			w.cgroup = g
			return pid, nil
		}
		e.p.noClone3.Store(true)
		e.p.log.Info("clone3 refused (ENOSYS, a seccomp filter such as systemd's RestrictNamespaces=); workers are moved into their cgroups before they exec", "event", "cgroups")
	}
	var gate [2]int
	if err := unix.Pipe2(gate[:], unix.O_CLOEXEC); err != nil {
		g.Remove()
		return 0, fmt.Errorf("cgroup gate: %w", err)
	}
	defer unix.Close(gate[1])
	pid, err := e.p.opts.Reaper.Start(func() (int, error) { return e.p.spawn(w, channel, -1, gate[0]) })
	unix.Close(gate[0])
	if err != nil {
		g.Remove()
		return 0, err
	}
	if err := g.Add(pid); err != nil {
		// The gate closes unopened: the trampoline exits at once.
		e.p.log.Error("cannot move a worker into its cgroup", "event", "cgroups", "error", err)
	} else {
		unix.Write(gate[1], []byte{'g'})
	}
	w.cgroup = g
	return pid, nil
}

func (e osEnv) reap(pid int) exitStatus {
	var ws unix.WaitStatus
	var ru unix.Rusage
	defer e.p.opts.Reaper.Release(pid)
	for {
		_, err := unix.Wait4(pid, &ws, 0, &ru)
		if err != unix.EINTR {
			return exitStatus{ws: ws, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		}
	}
}

func (e osEnv) signal(w *worker, sig unix.Signal) error {
	err := unix.Kill(-w.pid, sig)
	if err == unix.ESRCH || err == unix.EPERM {
		err = unix.Kill(w.pid, sig)
	}
	// What it started outside its process group gets sig too, once: the
	// rest of its cgroup, or the processes sockd adopted from it.
	var others []int
	if w.cgroup != nil {
		others, _ = w.cgroup.PIDs()
	} else {
		others = e.adopted(w)
	}
	for _, pid := range others {
		if pgid, err := unix.Getpgid(pid); err == nil && pgid != w.pid {
			unix.Kill(pid, sig)
		}
	}
	return err
}

func (e osEnv) groupAlive(w *worker) bool {
	if w.cgroup != nil {
		return w.cgroup.Populated()
	}
	return unix.Kill(-w.pid, 0) == nil || len(e.adopted(w)) > 0
}

func (e osEnv) killGroup(w *worker) bool {
	if w.cgroup != nil {
		return w.cgroup.Kill()
	}
	killed := unix.Kill(-w.pid, unix.SIGKILL) == nil
	if n, _ := e.p.opts.Reaper.KillAdopted(func(pid int) bool { return markedBy(pid, w) }, time.Now().Add(time.Second)); n > 0 {
		killed = true
	}
	return killed
}

func (e osEnv) orphaned(w *worker, sig unix.Signal) {
	if w.cgroup != nil {
		return // its cgroup had every signal
	}
	for _, pid := range e.adopted(w) {
		unix.Kill(pid, sig)
	}
}

func (osEnv) remove(path string) { os.Remove(path) }

func (osEnv) release(w *worker) {
	if w.cgroup != nil {
		w.cgroup.Remove()
	}
}

// adopted lists the processes sockd adopted that w started (and their
// descendants): sockd reads the SOCKD_WORKER_ID they inherited.
func (e osEnv) adopted(w *worker) []int {
	var pids []int
	for _, pid := range e.p.opts.Reaper.Adopted() {
		if markedBy(pid, w) {
			pids = append(pids, reaper.Descendants(pid, maxTree)...)
		}
	}
	return pids
}

func markedBy(pid int, w *worker) bool { return procfs.EnvHas(pid, WorkerIDVar+"="+w.id) }

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

// usage is the worker's cgroup's memory and CPU time when it has a cgroup
// (the memory of its processes' tree without the memory controller),
// else its process tree's.
func (osEnv) usage(t sampleTarget) (procfs.Usage, error) {
	u, err := procfs.TreeUsage(t.pid, maxTree)
	if t.cgroup == nil || err != nil {
		return u, err
	}
	if cpu, err := t.cgroup.CPU(); err == nil {
		u.CPU = cpu
	}
	if mem, ok := t.cgroup.Memory(); ok {
		u.RSS = mem
	}
	return u, nil
}

// maxTree bounds the processes of one worker's tree that are sampled.
const maxTree = 1024

func (osEnv) now() time.Time { return time.Now() }

func (e osEnv) after(d time.Duration, ev any) timer {
	return time.AfterFunc(d, func() { e.p.post(ev) })
}
