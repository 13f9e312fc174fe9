package pool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/reaper"
	"github.com/sockd/sockd/internal/resources"
	"github.com/sockd/sockd/internal/sched"
)

// osEnv is the real env: fork through the trampoline, pidfds, kill(2),
// /proc, the notify socket.
type osEnv struct {
	p       *Pool
	self    int // sockd's pid
	uid     int // sockd's uid
	devnull int
	nsrv    *notify.Server
	// inodes are "socket:[ino]" of every listening socket.
	inodes map[string]bool
	// noClone3: clone3 (CLONE_INTO_CGROUP) was refused once.
	noClone3 atomic.Bool
	// exiting holds the pids of workers that have exited until their exit
	// reaches the loop through the notify socket; notifyDead says the
	// notify socket stopped, so exits go to the loop directly.
	exiting    sync.Map
	notifyDead atomic.Bool
	// channels are the workers' Node IPC channels (sockd's ends), by pid.
	channels sync.Map
	// schedAttr is sockd's own CPU scheduling, which a worker started
	// low gets back (Config.LowStart).
	schedOnce   sync.Once
	schedAttr   sched.Attr
	schedErr    error
	schedWarned bool
}

// newOSEnv opens what p's workers need from sockd: /dev/null for their
// stdin and the notify socket.
func newOSEnv(p *Pool) (*osEnv, error) {
	e := &osEnv{p: p, self: os.Getpid(), uid: os.Geteuid()}
	if err := e.listInodes(); err != nil {
		return nil, err
	}
	var err error
	if e.devnull, err = unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	if e.nsrv, err = notify.Listen(p.deps.NotifySocket); err != nil {
		unix.Close(e.devnull)
		return nil, err
	}
	e.nsrv.Trusted = e.trusted
	return e, nil
}

func (e *osEnv) pid() int { return e.self }
func (e *osEnv) begin()   { go e.receiveNotify() }

func (e *osEnv) end() {
	e.nsrv.Close()
	unix.Close(e.devnull)
}

// trusted says whether a notify sender may be a worker at all, before its
// message is read: only the workers' user (sockd's, or Config.User) and
// root can be. The rest is decided by the loop (a live worker or one of
// its descendants).
func (e *osEnv) trusted(pid, uid int) bool {
	return uid == 0 || uid == e.uid || e.p.workerUID(uid)
}

func (e *osEnv) receiveNotify() {
	var drops rateLog // dropped messages: a flood of them must cost next to nothing
	defer func() {
		e.notifyDead.Store(true)
		e.exiting.Range(func(pid, _ any) bool {
			e.exited(pid.(int))
			return true
		})
	}()
	for {
		m, err := e.nsrv.Receive()
		if tag, ok := m.Fields[notify.MarkField]; ok && err == nil && m.PID == e.self {
			if pid, err := strconv.Atoi(tag); err == nil {
				e.exited(pid)
			}
			continue
		}
		var drop *notify.DropError
		switch {
		case errors.As(err, &drop):
			if n, ok := drops.note(time.Now()); ok {
				e.p.log.Debug("notify messages dropped", "event", "notify_dropped", "messages", n, "sender_pid", drop.PID, "reason", drop.Reason)
			}
		case errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			e.p.log.Error("notify socket failed", "error", err)
			return
		default:
			// Now, while the sender surely runs (systemd-notify waits on a
			// BARRIER=1 that is answered only after this is read).
			// One /proc read for a worker itself (its parent is sockd).
			m.Ancestors = procfs.Ancestors(m.PID, e.self, 8)
			if !e.p.post(notifyEvent{msg: m}) {
				return
			}
		}
	}
}

func (e *osEnv) start(w *worker) (int, error) {
	w.sock = w.slot
	if st := e.p.deps.Steering; st != nil {
		k, err := st.Assign(w.steerName(), w.replaces)
		if err != nil {
			return 0, err
		}
		w.sock = k
	}
	pid, err := e.startOutput(w)
	if err != nil && e.p.deps.Steering != nil {
		e.p.deps.Steering.Exited(w.steerName())
	}
	return pid, err
}

func (e *osEnv) startOutput(w *worker) (int, error) {
	if r := e.p.deps.Output; r != nil {
		out, err := r.Open(w.slot, w.gen)
		if err != nil {
			return 0, resources.Check(err)
		}
		w.out = out
	}
	pid, err := e.startWith(w)
	if w.out != nil {
		if err != nil {
			w.out.Abort()
			w.out = nil
		} else {
			w.out.Start(pid)
		}
	}
	return pid, err
}

func (e *osEnv) startWith(w *worker) (int, error) {
	mine, theirs := -1, -1
	if w.cfg.Ready.NodeIPC {
		var err error
		if mine, theirs, err = nodeChannel(); err != nil {
			return 0, err
		}
		defer unix.Close(theirs)
	}
	var pid int
	var err error
	if t := e.p.deps.Cgroups; t != nil {
		pid, err = e.startInCgroup(w, t, theirs)
	} else {
		pid, err = e.p.deps.Reaper.Start(func() (int, error) { return e.spawn(w, theirs, -1, -1) })
	}
	if err != nil {
		if mine >= 0 {
			unix.Close(mine)
		}
		return 0, resources.Check(err)
	}
	go e.watch(pid)
	if mine >= 0 {
		go e.readNodeChannel(pid, mine, w.cfg.Ready.Listening)
	}
	return pid, nil
}

// startInCgroup starts w in a new cgroup of its own: with clone3's
// CLONE_INTO_CGROUP, or, where that is refused, stopped at a gate until
// sockd has moved it there.
func (e *osEnv) startInCgroup(w *worker, t *cgroup.Tree, channel int) (int, error) {
	g, err := t.NewGroup(w.cfg.Limits)
	if err != nil {
		return 0, err
	}
	defer g.CloseFD()
	if !e.noClone3.Load() {
		pid, err := e.p.deps.Reaper.Start(func() (int, error) { return e.spawn(w, channel, g.FD(), -1) })
		if !errors.Is(err, unix.ENOSYS) {
			if err != nil {
				g.Remove()
				return 0, err
			}
			w.cgroup = g
			return pid, nil
		}
		e.noClone3.Store(true)
		e.p.log.Info("clone3 refused (ENOSYS, a seccomp filter such as systemd's RestrictNamespaces=); workers are moved into their cgroups before they exec", "event", "cgroups")
	}
	var gate [2]int
	if err := unix.Pipe2(gate[:], unix.O_CLOEXEC); err != nil {
		g.Remove()
		return 0, fmt.Errorf("cgroup gate: %w", err)
	}
	defer unix.Close(gate[1])
	pid, err := e.p.deps.Reaper.Start(func() (int, error) { return e.spawn(w, channel, -1, gate[0]) })
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

func (e *osEnv) reap(pid int) exitStatus {
	var ws unix.WaitStatus
	var ru unix.Rusage
	defer e.p.deps.Reaper.Release(pid)
	for {
		_, err := unix.Wait4(pid, &ws, 0, &ru)
		if err != unix.EINTR {
			return exitStatus{ws: ws, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		}
	}
}

func (e *osEnv) signal(w *worker, sig unix.Signal) error {
	err := unix.Kill(-w.pid, sig)
	if err == unix.ESRCH || err == unix.EPERM {
		err = unix.Kill(w.pid, sig)
	}
	// What it started outside its process group gets sig too, once.
	for _, pid := range e.others(w) {
		if pgid, err := unix.Getpgid(pid); err == nil && pgid != w.pid {
			unix.Kill(pid, sig)
		}
	}
	return err
}

// others lists the processes of w that may have left its tree: the rest
// of its cgroup, or the processes sockd adopted from it.
func (e *osEnv) others(w *worker) []int {
	if w.cgroup != nil {
		pids, _ := w.cgroup.PIDs()
		return pids
	}
	return e.adopted(w)
}

func (e *osEnv) groupAlive(w *worker) bool {
	if w.cgroup != nil {
		return w.cgroup.Populated()
	}
	return unix.Kill(-w.pid, 0) == nil || len(e.adopted(w)) > 0
}

func (e *osEnv) killGroup(w *worker) bool {
	if w.cgroup != nil {
		return w.cgroup.Kill()
	}
	killed := unix.Kill(-w.pid, unix.SIGKILL) == nil
	if n, _ := e.p.deps.Reaper.KillAdopted(func(pid int) bool { return markedBy(pid, w) }, time.Now().Add(time.Second)); n > 0 {
		killed = true
	}
	return killed
}

func (e *osEnv) orphaned(w *worker, sig unix.Signal) {
	if w.cgroup != nil {
		return // its cgroup had every signal
	}
	for _, pid := range e.adopted(w) {
		unix.Kill(pid, sig)
	}
}

func (*osEnv) remove(path string) { os.Remove(path) }

func (e *osEnv) release(w *worker) {
	if w.cgroup != nil {
		w.cgroup.Remove()
	}
	if w.out != nil {
		// Nothing of its group is left; what still holds its pipes
		// (something it started that left the group) is cut off after
		// outputDrain.
		w.out.Close(outputDrain)
	}
}

// outputDrain is how long a worker's output pipes are read on after its
// group is gone, for a process outside the group that inherited them.
const outputDrain = time.Second

// adopted lists the processes sockd adopted that w started (and their
// descendants): sockd reads the SOCKD_WORKER_ID they inherited.
func (e *osEnv) adopted(w *worker) []int {
	var pids []int
	for _, pid := range e.p.deps.Reaper.Adopted() {
		if markedBy(pid, w) {
			pids = append(pids, reaper.Descendants(pid, maxTree)...)
		}
	}
	return pids
}

func markedBy(pid int, w *worker) bool { return procfs.EnvIs(pid, WorkerIDVar+"="+w.id) }

// listInodes lists the inodes of every listening socket (again once a
// group grew).
func (e *osEnv) listInodes() error {
	e.inodes = map[string]bool{}
	for _, l := range e.p.deps.Listeners {
		for _, fd := range l.FDs() {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return fmt.Errorf("listener %s: %w", l.Name, err)
			}
			e.inodes[fmt.Sprintf("socket:[%d]", st.Ino)] = true
		}
	}
	return nil
}

// holdsListener compares the socket inodes /proc/PID/fd shows with the
// pool's listening sockets.
func (e *osEnv) holdsListener(pid int) bool {
	n := 0
	for _, l := range e.p.deps.Listeners {
		n += l.Slots()
	}
	if n != len(e.inodes) {
		e.listInodes()
	}
	fds, err := procfs.FDs(pid)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := procfs.FDTarget(pid, fd)
		if err == nil && e.inodes[target] {
			return true
		}
	}
	return false
}

func (e *osEnv) steered() bool { return e.p.deps.Steering != nil }

// mayLower: sockd may start w at a low CPU priority if it may give it
// sockd's own back (internal/sched); the first time it may not, it says
// why.
func (e *osEnv) mayLower(w *worker) bool {
	e.schedOnce.Do(func() {
		e.schedAttr, e.schedErr = sched.Self()
	})
	ok, why := false, ""
	if e.schedErr != nil {
		why = e.schedErr.Error()
	} else {
		ok, why = sched.CanRestore(e.schedAttr, w.cfg.User == nil || int(w.cfg.User.UID) == e.uid)
	}
	if !ok && !e.schedWarned {
		e.schedWarned = true
		e.p.log.Warn("new workers start at their normal CPU priority, not a low one until ready", "event", "low_start_unavailable", "reason", why)
	}
	return ok
}

// restoreThread gives the calling thread (the loop's, which forked a
// worker at a low priority) sockd's own priority back.
func (e *osEnv) restoreThread() {
	if err := sched.SetThread(e.schedAttr); err != nil {
		e.p.log.Error("cannot give sockd's own thread its CPU priority back", "event", "low_start_unavailable", "error", err)
	}
}

// raise restores w's tree and what left it: the same processes signal
// reaches (a daemon that double-forked was forked low too). The second
// time, only threads the first did not see.
func (e *osEnv) raise(w *worker) {
	if w.threads == nil {
		w.threads = map[int]bool{}
	}
	n, err := sched.Restore(e.schedAttr, w.threads, append([]int{w.pid}, e.others(w)...)...)
	if err != nil {
		e.p.wlog(w).Warn("cannot give the worker its normal CPU priority back", "event", "worker_priority_restored", "threads", n, "error", err)
		return
	}
	e.p.wlog(w).Debug("worker has its normal CPU priority back", "event", "worker_priority_restored", "threads", n)
}

func (e *osEnv) steerReady(w *worker) time.Time {
	if st := e.p.deps.Steering; st != nil {
		return st.Ready(w.steerName())
	}
	return time.Time{}
}

func (e *osEnv) leave(w *worker) {
	if st := e.p.deps.Steering; st != nil {
		st.Leave(w.steerName())
	}
}

func (e *osEnv) halted(w *worker) bool {
	pr, err := procfs.ReadProcess(w.pid)
	return err == nil && pr.State == 'T'
}

func (e *osEnv) drained(w *worker) bool {
	st := e.p.deps.Steering
	return st == nil || st.Drained(w.steerName())
}

func (e *osEnv) gone(w *worker) {
	if w.out != nil && (w.why == ExitCrash || w.failure != "") {
		// Its last words outlast the lines of workers that ended as
		// planned, in sockd's bounded ring of exited workers.
		w.out.Crashed()
	}
	if st := e.p.deps.Steering; st != nil {
		// Its sockets keep what is queued on them for the next worker
		// given them (Assign prefers such a socket).
		st.Exited(w.steerName())
	}
}

func (e *osEnv) yielded() bool {
	st := e.p.deps.Steering
	return st != nil && st.Yielded()
}

// grow, steer and queued are the slot-indexed steering of a pool without
// Deps.Steering (a scale-down's sockets); with it, Assign grows the
// groups and stopWorker drains a worker's own sockets.
func (e *osEnv) grow(n int) error {
	if e.p.deps.Steering != nil {
		return nil
	}
	for _, l := range e.p.deps.Listeners {
		if _, err := l.Grow(n); err != nil {
			return err
		}
	}
	return nil
}

func (e *osEnv) steer(n int) bool {
	if e.p.deps.Steering != nil {
		return false
	}
	steered := false
	for _, l := range e.p.deps.Listeners {
		if l.Growable() {
			if err := l.Steer(min(n, l.Slots())); err != nil {
				e.p.log.Warn("cannot steer connections", "error", err)
			}
			steered = true
		}
	}
	return steered
}

func (e *osEnv) queued(slot int) int {
	n := 0
	for _, l := range e.p.deps.Listeners {
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
func (*osEnv) usage(t sampleTarget) (procfs.Usage, error) {
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

func (e *osEnv) queue(l *activation.Listener, i int) (int, int, error) { return l.Queue(i) }

func (e *osEnv) track(pgid int) {
	if g := e.p.deps.Guard; g != nil {
		if err := g.Add(pgid); err != nil {
			e.p.log.Warn("guard", "error", err)
		}
	}
}

func (e *osEnv) untrack(pgid int) {
	if g := e.p.deps.Guard; g != nil {
		if err := g.Remove(pgid); err != nil {
			e.p.log.Warn("guard", "error", err)
		}
	}
}

func (e *osEnv) guardPID() int {
	if g := e.p.deps.Guard; g != nil {
		return g.PID()
	}
	return 0
}

func (*osEnv) now() time.Time { return time.Now() }

func (e *osEnv) after(d time.Duration, ev loopEvent) timer {
	return time.AfterFunc(d, func() { e.p.post(ev) })
}
