package handoff

import (
	"context"

	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/reaper"
)

// Options describe an upgrade, from the old sockd's side.
type Options struct {
	// Path is the new binary; "" means the file at sockd's own path now.
	Path string
	// Args are its arguments without argv[0]; nil means sockd's own.
	Args []string
	// Env is its environment; nil means sockd's own.
	Env []string
	// Generation is the old sockd's serving generation.
	Generation int
	// Workers is the old sockd's number of worker slots, which the new
	// one keeps (a size set at run time survives the upgrade).
	Workers int
	// Cgroup is the old sockd's cgroup subtree (see internal/cgroup),
	// which the new one takes over, and CgroupOrigin where the old sockd
	// came from if it made the subtree.
	Cgroup, CgroupOrigin string
	// Steered are the reuseport socket indexes the old sockd's workers
	// hold (internal/steering's Held), by worker: the new sockd leaves
	// them to them.
	Steered map[string]int
	// Listeners are passed on; the old sockd keeps its own copies.
	Listeners activation.Set
	// Control, if set, is the control socket listener, passed on too.
	Control *net.UnixListener
	// Metrics, if set, is the metrics listener (--metrics), passed on
	// too: the new sockd cannot bind the address while this one holds it.
	Metrics net.Listener
	// Reaper registers the new sockd as a child this one waits for.
	Reaper *reaper.Reaper
	// Logger defaults to a null logger.
	Logger hclog.Logger
}

// Upgrade is a new sockd being started.
type Upgrade struct {
	cmd    *exec.Cmd
	c      conn
	exited chan struct{}
	log    hclog.Logger
}

// Start runs the new binary and sends it the state and every socket. On
// error nothing is left running.
func Start(o Options) (*Upgrade, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Path == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find sockd's binary: %w", err)
		}
		o.Path = exe
	}
	if o.Args == nil {
		o.Args = os.Args[1:]
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	state, fds, err := collect(o)
	defer closeAll(fds)
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "handoff"), os.NewFile(uintptr(pair[1]), "handoff")
	defer theirs.Close()
	nc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff socket: %w", err)
	}
	u := &Upgrade{c: conn{nc.(*net.UnixConn)}, exited: make(chan struct{}), log: o.Logger}
	u.cmd = exec.Command(o.Path, o.Args...)
	// WATCHDOG_PID names the old sockd: with it the new one would think
	// the watchdog is meant for someone else and never ping it. Without
	// it, sd_watchdog_enabled(3) accepts WATCHDOG_USEC as its own.
	u.cmd.Env = append(withoutVar(withoutVar(o.Env, EnvFD), "WATCHDOG_PID"), EnvFD+"=3")
	u.cmd.ExtraFiles = []*os.File{theirs}
	u.cmd.Stdout, u.cmd.Stderr = os.Stdout, os.Stderr
	pid, err := o.Reaper.Start(func() (int, error) {
		if err := u.cmd.Start(); err != nil {
			return 0, err
		}
		return u.cmd.Process.Pid, nil
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("start new sockd %s: %w", o.Path, err)
	}
	go func() {
		u.cmd.Wait()
		o.Reaper.Release(pid)
		close(u.exited)
	}()
	u.log.Info("started new sockd", "event", "upgrade_start", "new_pid", u.PID(), "path", o.Path)
	if err := u.c.send(state, nil); err != nil {
		u.Abort(time.Second)
		return nil, fmt.Errorf("send state to new sockd: %w", err)
	}
	if err := u.c.sendFDs(fds); err != nil {
		u.Abort(time.Second)
		return nil, err
	}
	return u, nil
}

// collect duplicates every descriptor to send, in protocol order.
func collect(o Options) (State, []int, error) {
	st := State{Version: version, Generation: o.Generation, Workers: o.Workers, Cgroup: o.Cgroup, CgroupOrigin: o.CgroupOrigin, Steered: o.Steered}
	var fds []int
	for _, l := range o.Listeners {
		for _, fd := range l.FDs() {
			d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
			if err != nil {
				return st, fds, fmt.Errorf("dup listener %s: %w", l.Name, err)
			}
			fds = append(fds, d)
		}
		st.Listeners = append(st.Listeners, ListenerState{Name: l.Name, Slots: l.Slots(), Inherited: l.Inherited, Path: l.Path()})
	}
	if o.Control != nil {
		d, err := activation.DupSocket(o.Control)
		if err != nil {
			return st, fds, fmt.Errorf("dup control socket: %w", err)
		}
		fds = append(fds, d)
		st.Control = true
	}
	if c, ok := o.Metrics.(syscall.Conn); ok {
		d, err := activation.DupSocket(c)
		if err != nil {
			return st, fds, fmt.Errorf("dup metrics socket: %w", err)
		}
		fds = append(fds, d)
		st.Metrics = true
	}
	st.FDs = len(fds)
	return st, fds, nil
}

// PID is the new sockd's pid.
func (u *Upgrade) PID() int { return u.cmd.Process.Pid }

// Exited is closed once the new sockd has exited and was reaped.
func (u *Upgrade) Exited() <-chan struct{} { return u.exited }

// ExitStatus is the new sockd's exit status, once Exited is closed (128
// plus the signal's number if a signal ended it).
func (u *Upgrade) ExitStatus() int {
	st := u.cmd.ProcessState
	if st == nil {
		return 1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// WaitReady waits until the new sockd's first generation is ready. If it
// exits, says something else, or ctx ends first, it is killed and the
// error says why.
func (u *Upgrade) WaitReady(ctx context.Context) error {
	type answer struct {
		m   message
		err error
	}
	res := make(chan answer, 1)
	go func() {
		var a answer
		fds, err := u.c.recv(&a.m, time.Time{})
		closeAll(fds)
		a.err = err
		res <- a
	}()
	var err error
	select {
	case a := <-res:
		switch {
		case a.err == nil && (a.m.Event != "ready" || a.m.PID != u.PID()):
			err = fmt.Errorf("new sockd broke the hand-off: unexpected message %+v", a.m)
		case a.err != nil:
			select { // an exit explains a closed socket best
			case <-u.exited:
				err = fmt.Errorf("new sockd exited before it was ready (%s)", u.cmd.ProcessState)
			case <-time.After(100 * time.Millisecond):
				err = fmt.Errorf("new sockd broke the hand-off: %w", a.err)
			}
		}
	case <-u.exited:
		err = fmt.Errorf("new sockd exited before it was ready (%s)", u.cmd.ProcessState)
	case <-ctx.Done():
		err = fmt.Errorf("new sockd not ready in time: %w", ctx.Err())
	}
	if err != nil {
		u.Abort(5 * time.Second)
	}
	return err
}

// Commit tells the new sockd that systemd now knows it as the main pid:
// from here on it is in charge.
func (u *Upgrade) Commit() error {
	defer u.c.c.Close()
	if err := u.c.send(message{Event: "commit"}, nil); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Abort stops the new sockd: SIGTERM (it drains its workers), SIGKILL after
// grace. It returns once the process is reaped.
func (u *Upgrade) Abort(grace time.Duration) {
	u.c.c.Close()
	u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.exited:
	case <-time.After(grace):
		u.cmd.Process.Kill()
		<-u.exited
	}
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if len(kv) <= len(name) || kv[:len(name)+1] != name+"=" {
			out = append(out, kv)
		}
	}
	return out
}
