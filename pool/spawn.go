package pool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/internal/sched"
	"golang.org/x/sys/unix"
)

// trampolineArg0 marks a re-exec of sockd whose only job is to set
// LISTEN_PID to its own pid and exec the worker command.
const trampolineArg0 = "sockd-trampoline"

// Trampoline must be the first call in main (and in TestMain of tests that
// run pools). When the process is a trampoline it sets LISTEN_PID (and
// WATCHDOG_PID when WATCHDOG_USEC is set) to its own pid and execs the
// worker: the pid stays the same, so the variables name the worker. It
// returns only when the process is not a trampoline.
//
// This is sockd's answer to LISTEN_PID: Go's os/exec cannot set a variable
// to the child's pid between fork and exec, so the child does it itself.
// The parent-death signal set at fork survives the exec.
//
// It also marks every descriptor past the listeners close-on-exec, so the
// worker gets fds 0-2 and its listeners and nothing else, even when sockd
// itself inherited stray descriptors without CLOEXEC.
func Trampoline() {
	if len(os.Args) < 3 || os.Args[0] != trampolineArg0 {
		return
	}
	if os.Getenv(gateVar) != "" {
		passGate()
	}
	nfds, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	keep := 3 + nfds
	if os.Getenv("NODE_CHANNEL_FD") == strconv.Itoa(keep) {
		keep++ // Node's IPC channel, right after the listeners
	}
	if err := unix.CloseRange(uint(keep), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "sockd: close_range: %v\n", err)
		os.Exit(127)
	}
	defaultSignal34()
	pid := strconv.Itoa(os.Getpid())
	env := append(withoutGate(os.Environ()), "LISTEN_PID="+pid)
	if os.Getenv("WATCHDOG_USEC") != "" {
		env = append(env, "WATCHDOG_PID="+pid)
	}
	err := unix.Exec(os.Args[1], os.Args[2:], env)
	fmt.Fprintf(os.Stderr, "sockd: exec %s: %v\n", os.Args[1], err)
	os.Exit(127)
}

func sysProcAttr(c *conf, cgroupFD int) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, UseCgroupFD: cgroupFD >= 0, CgroupFD: cgroupFD}
	if u := c.User; u != nil {
		// Go sets the parent-death signal after changing the credentials
		// (which would clear it).
		a.Credential = u.Credential()
	}
	return a
}

// gateVar tells a trampoline that its stdin is a gate: it waits for
// sockd's word that it has been moved into its cgroup before it execs the
// worker (where clone3 cannot start it there directly: systemd's
// RestrictNamespaces= filter makes clone3 fail with ENOSYS).
const gateVar = "SOCKD_CGROUP_GATE"

// passGate reads sockd's "g" from stdin, then makes stdin /dev/null, as
// every worker's is.
func passGate() {
	var b [1]byte
	if n, _ := os.Stdin.Read(b[:]); n != 1 || b[0] != 'g' {
		fmt.Fprintln(os.Stderr, "sockd: worker not moved into its cgroup; not started")
		os.Exit(127)
	}
	null, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err == nil {
		err = unix.Dup2(null, 0)
		unix.Close(null)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sockd: stdin: %v\n", err)
		os.Exit(127)
	}
}

func withoutGate(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, gateVar+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// defaultSignal34 gives signal 34 back its default action, which sockd
// ignores (Go cannot handle it): an ignored signal stays ignored across
// execve.
func defaultSignal34() {
	var sa struct {
		handler, flags, restorer uintptr
		mask                     uint64
	} // SIG_DFL
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, 34, uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
}

// ResolveCommand finds the worker program before any worker is forked, so
// a typo is one clear error instead of N crash loops.
//
// A relative path with a slash ("./server", "bin/app") is taken in dir,
// the workers' directory (--cwd), where they run it, not in sockd's.
func ResolveCommand(name, dir string) (string, error) {
	what := strconv.Quote(name)
	if strings.Contains(name, "/") && !filepath.IsAbs(name) && dir != "" {
		// Absolute: the workers are started in dir, where a relative
		// path would be taken again from there.
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		name = filepath.Join(dir, name)
		what += " in " + dir
	}
	path, err := exec.LookPath(name)
	if errors.Is(err, fs.ErrPermission) {
		return "", fmt.Errorf("worker command %s: not executable (permission denied)", what)
	}
	if err != nil {
		return "", fmt.Errorf("worker command %s: %w", what, errors.Unwrap(err))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("worker command %s: %w", what, err)
	}
	if fi.IsDir() {
		return "", fmt.Errorf("worker command %s is a directory", what)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("worker command %s: not executable", what)
	}
	return path, nil
}

// privateEnv lists the variables that describe sockd's own relation with
// its parent; a worker must never see them.
var privateEnv = []string{"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "SOCKD_",
	"NODE_CHANNEL_FD=", "NODE_CHANNEL_SERIALIZATION_MODE="}

func workerEnv(base []string, extra ...string) []string {
	env := make([]string, 0, len(base)+len(extra))
	for _, kv := range base {
		keep := true
		for _, p := range privateEnv {
			if strings.HasPrefix(kv, p) {
				keep = false
				break
			}
		}
		if keep {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// WorkerIDVar is the variable that marks a worker and everything it
// starts: "SOCKD_WORKER_ID=<sockd's pid>-<n>". sockd finds the processes
// a worker left behind (with setsid, say) by it, when it has no cgroup
// to look in.
const WorkerIDVar = "SOCKD_WORKER_ID"

// spawn forks w through the trampoline, with channel (if >= 0) as the
// descriptor right after the listeners, into the cgroup whose directory
// is cgroupFD (if >= 0), or with gate (if >= 0) as its stdin (see
// gateVar). It must run on the pool's locked OS thread: the parent-death
// signal fires when the thread that forked exits.
func (e *osEnv) spawn(w *worker, channel, cgroupFD, gate int) (int, error) {
	c, d := w.cfg, &e.p.deps
	gen, slot := w.gen, w.slot
	base := c.Env
	if c.User != nil {
		base = append(base[:len(base):len(base)], c.User.Env()...)
	}
	env := workerEnv(base,
		"NOTIFY_SOCKET="+d.NotifySocket,
		"SOCKD_WORKER="+strconv.Itoa(slot),
		"SOCKD_GENERATION="+strconv.Itoa(gen),
		WorkerIDVar+"="+w.id,
	)
	if len(d.Listeners) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(d.Listeners)), "LISTEN_FDNAMES="+d.Listeners.Names())
	}
	if w.out != nil && !hasVar(env, "PYTHONUNBUFFERED") {
		// Relayed line by line: Python writes its stdout to a pipe in
		// blocks of 8 KiB, so print()'s lines would come late, and be lost
		// when it is killed (PM2 sets this too).
		env = append(env, "PYTHONUNBUFFERED=1")
	}
	if d.MetricsDir != "" {
		env = append(env, "SOCKD_METRICS_SOCKET="+w.metricsSocket(d.MetricsDir))
	}
	if e.p.deps.NodePreload != "" && c.NodePreload {
		env = e.nodePreload(env, w, channel >= 0)
	}
	if c.InstanceVar != "" {
		for _, v := range strings.Split(c.InstanceVar, ",") {
			env = append(withoutVar(env, v), v+"="+strconv.Itoa(slot))
		}
	}
	if c.WorkerWatchdog > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(c.WorkerWatchdog.Microseconds(), 10))
	}
	files := []uintptr{uintptr(e.devnull), 1, 2}
	if w.out != nil {
		stdout, stderr := w.out.FDs()
		files[1], files[2] = uintptr(stdout), uintptr(stderr)
	}
	if gate >= 0 {
		files[0] = uintptr(gate)
		env = append(env, gateVar+"=1")
	}
	for _, fd := range d.Listeners.FDs(w.sock) {
		files = append(files, uintptr(fd))
	}
	if channel >= 0 {
		env = append(env, "NODE_CHANNEL_FD="+strconv.Itoa(len(files)), "NODE_CHANNEL_SERIALIZATION_MODE=json")
		files = append(files, uintptr(channel))
	}
	argv := append([]string{trampolineArg0, c.command}, c.Command...)
	if w.low {
		// The loop's thread (locked to it) forks the worker at the low
		// priority, so that everything from the fork on runs low, the
		// trampoline's own start-up included.
		if err := sched.LowThread(e.schedAttr); err != nil {
			e.p.wlog(w).Warn("cannot start the worker at a low CPU priority", "event", "low_start_unavailable", "error", err)
			w.low = false
		} else {
			defer e.restoreThread()
		}
	}
	pid, _, err := syscall.StartProcess(d.Trampoline, argv, &syscall.ProcAttr{
		Dir:   c.Dir,
		Env:   env,
		Files: files,
		Sys:   sysProcAttr(c, cgroupFD),
	})
	if err != nil {
		return 0, fmt.Errorf("start worker %d of generation %d: %w", slot, gen, err)
	}
	return pid, nil
}

// watch waits for the worker to exit without reaping it (WNOWAIT), so its
// pid cannot be reused before the loop has reaped it and forgotten it. It
// waits on a pidfd through Go's network poller, so a thousand workers do
// not hold a thousand OS threads blocked in waitid.
func (e *osEnv) watch(pid int) {
	if err := waitPidfd(pid); err != nil {
		// No pidfd (kernel < 5.3): block a thread in waitid instead.
		var info unix.Siginfo
		for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
		}
	}
	// The exit reaches the loop behind every notify message the worker
	// sent before it exited (a STOPPING=1 just before exit(0) must not
	// make the exit look like a crash): the exit travels as a mark through
	// the notify socket's own queue.
	e.exiting.Store(pid, true)
	if e.notifyDead.Load() || e.nsrv.Mark(strconv.Itoa(pid), time.Second) != nil {
		e.exited(pid)
	}
}

// exited posts the exit of a worker that watch saw exit, once.
func (e *osEnv) exited(pid int) {
	if _, ok := e.exiting.LoadAndDelete(pid); ok {
		e.p.post(exitEvent{pid: pid})
	}
}

// waitPidfd returns once pid has exited (still unreaped).
func waitPidfd(pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: handled by the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo // Linux zeroes it when nothing is waitable
		werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return werr != nil && werr != unix.EINTR || info.Signo != 0
	})
	if werr == unix.EINTR {
		werr = nil
	}
	return errors.Join(err, werr)
}

// withoutVar is env without name's assignments.
func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// nodePreload adds what sockd's Node.js preload needs (internal/nodeshim):
// NODE_OPTIONS with --require, and the worker's sockets as the preload
// maps listen(PORT) to them. Non-Node workers ignore both.
func (e *osEnv) nodePreload(env []string, w *worker, channel bool) []string {
	d, c := &e.p.deps, w.cfg
	ls, err := nodeshim.Listeners(d.Listeners.FDs(w.sock), strings.Split(d.Listeners.Names(), ":"))
	if err != nil {
		e.p.log.Warn("node preload: cannot describe the sockets; workers get none", "error", err)
		ls = nil
	}
	o := nodeshim.Options{Send: nodeshim.Send{Ready: c.Ready.Listening, Requests: channel, Watchdog: channel && c.WorkerWatchdog > 0},
		StopSignal: unix.SignalName(c.StopSignal)}
	if c.StopSignal == 0 {
		o.StopSignal = "SIGTERM"
	}
	if channel {
		o.Warmup = c.Warmup
	}
	extra, err := o.Env(ls)
	if err != nil {
		e.p.log.Warn("node preload: not used", "error", err)
		return env
	}
	opts := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NODE_OPTIONS="); ok {
			opts = v
		}
	}
	env = append(withoutVar(env, "NODE_OPTIONS"), extra...)
	return append(env, "NODE_OPTIONS="+nodeshim.NodeOptions(opts, d.NodePreload))
}
