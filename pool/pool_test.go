package pool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

type harness struct {
	t    *testing.T
	dir  string
	p    *pool.Pool
	ls   activation.Set
	url  string
	mu   sync.Mutex
	sent []string // what the pool told "systemd"
}

// options is what a test may set: the configuration and the wiring.
type options struct {
	pool.Config
	pool.Deps
}

// startPool runs a pool of the helper worker on a fresh 127.0.0.1:0
// listener (plus any extra specs) and stops it at the end of the test.
func startPool(t *testing.T, mode string, edit func(*options), extra ...string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir()}
	specs := []activation.Spec{{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}}
	reuse := false
	for _, e := range extra {
		if e == "reuseport" {
			reuse = true
			continue
		}
		s, err := activation.ParseSpec(e)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	logDone := new(atomic.Bool)
	opts := options{
		Config: pool.Config{
			Command:      []string{os.Args[0]},
			Workers:      2,
			StopTimeout:  5 * time.Second,
			ReadyTimeout: 10 * time.Second,
			Env: append(os.Environ(), "POOL_TEST_WORKER=1", "POOL_TEST_MODE="+mode, "POOL_TEST_DIR="+h.dir,
				// The race detector sleeps 1s at exit by default.
				"GORACE=atexit_sleep_ms=0"),
		},
		Deps: pool.Deps{
			Notify: func(s string) {
				h.mu.Lock()
				h.sent = append(h.sent, s)
				h.mu.Unlock()
			},
			Logger: hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t, logDone}}),
		},
	}
	var err error
	if edit != nil {
		edit(&opts)
	}
	bindOpts := activation.BindOptions{ReusePort: reuse, Slots: opts.Workers}
	if h.ls, err = activation.Bind(context.Background(), specs, bindOpts); err != nil {
		t.Fatal(err)
	}
	opts.Listeners = h.ls
	h.url = "http://" + h.ls[0].Addr + "/"
	if h.p, err = pool.New(opts.Config, opts.Deps); err != nil {
		t.Fatal(err)
	}
	h.p.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.p.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the pool did not stop within 30s")
		}
		logDone.Store(true)
		h.ls.Close()
		h.ls.Remove()
	})
	return h
}

// testWriter logs to the test until the test's cleanup has run; what a
// pool that did not stop in time says after that goes to stderr (t.Log
// then panics, and takes every other test of the package with it).
type testWriter struct {
	t    *testing.T
	done *atomic.Bool
}

func (w testWriter) Write(b []byte) (int, error) {
	if w.done.Load() {
		fmt.Fprintf(os.Stderr, "%s (after the test ended): %s", w.t.Name(), b)
		return len(b), nil
	}
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (h *harness) waitReady() {
	h.t.Helper()
	select {
	case <-h.p.Ready():
	case <-h.p.Done():
		h.t.Fatalf("pool stopped before it was ready: %v", h.p.Wait())
	case <-time.After(20 * time.Second):
		h.t.Fatal("pool not ready within 20s")
	}
}

func (h *harness) status() pool.Status {
	h.t.Helper()
	s, err := h.p.Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) notified(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sent {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func pids(s pool.Status) []int {
	var out []int
	for _, w := range s.Workers {
		out = append(out, w.PID)
	}
	return out
}

func waitGone(t *testing.T, pids []int, timeout time.Duration) {
	t.Helper()
	for _, pid := range pids {
		waitFor(t, timeout, fmt.Sprintf("pid %d gone", pid), func() bool { return !procfs.Alive(pid) })
	}
}

func TestWorkersServeOnSharedListener(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", func(o *options) { o.Workers = 3 })
	h.waitReady()
	s := h.status()
	if len(s.Workers) != 3 || s.Ready != 3 || s.Generation != 1 {
		t.Fatalf("status: %+v", s)
	}
	if !h.notified("READY=1\nSTATUS=3/3 workers ready, generation 1, 0 restarts") {
		t.Fatalf("systemd was not told READY=1 with a summary: %q", h.sent)
	}
	// Slow requests from concurrent clients must spread over the workers.
	seen := map[string]bool{}
	var mu sync.Mutex
	waitFor(t, 20*time.Second, "all 3 workers to answer", func() bool {
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pid, _, err := get(freshClient(), h.url+"?delay=50ms")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[pid] = true
				mu.Unlock()
			}()
		}
		wg.Wait()
		return len(seen) == 3
	})
	for _, pid := range pids(s) {
		if !seen[fmt.Sprint(pid)] {
			t.Fatalf("answers came from %v, workers are %v", seen, pids(s))
		}
	}
}

func TestWorkerGetsExactlyItsListenersAndEnv(t *testing.T) {
	t.Parallel()
	sock := t.TempDir() + "/w.sock"
	h := startPool(t, "serve", func(o *options) {
		o.Env = append(o.Env, "SOCKD_CONTROL=/leak", "WATCHDOG_USEC=1", "LISTEN_FDNAMES=leak", "NOTIFY_SOCKET=/leak")
	}, "admin=unix://"+sock+"?mode=0660")
	h.waitReady()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("unix socket %s: %v %v", sock, fi.Mode(), err)
	}
	for _, w := range h.status().Workers {
		r := readReport(t, h.dir, w.PID)
		want := map[string]string{
			"LISTEN_PID": fmt.Sprint(w.PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin",
			"SOCKD_WORKER": fmt.Sprint(w.Slot), "SOCKD_GENERATION": "1",
		}
		for k, v := range want {
			if r.Env[k] != v {
				t.Errorf("worker %d: %s=%q, want %q", w.PID, k, r.Env[k], v)
			}
		}
		for _, k := range []string{"SOCKD_CONTROL", "WATCHDOG_USEC", "WATCHDOG_PID"} {
			if _, ok := r.Env[k]; ok {
				t.Errorf("worker %d got sockd's private %s", w.PID, k)
			}
		}
		if r.Env["NOTIFY_SOCKET"] == "/leak" || r.Env["NOTIFY_SOCKET"] == "" {
			t.Errorf("worker NOTIFY_SOCKET=%q, want sockd's own", r.Env["NOTIFY_SOCKET"])
		}
		for fd, target := range r.FDs {
			// The Go runtime of the helper opens cgroup files itself.
			if fd > 4 && !strings.HasPrefix(target, "/sys/fs/cgroup/") {
				t.Errorf("worker %d has fd %d -> %s; want only 0-4 from sockd (all: %v)", w.PID, fd, target, r.FDs)
			}
		}
		for i, l := range h.ls {
			mine, _ := procfs.FDTarget(os.Getpid(), l.FD(w.Slot))
			if r.FDs[3+i] != mine {
				t.Errorf("worker fd %d is %q, want sockd's %s socket %q", 3+i, r.FDs[3+i], l.Name, mine)
			}
		}
		if r.Blocked {
			t.Errorf("worker %d found its listener in blocking mode", w.PID)
		}
	}
}

func TestStopLeavesListenerNonBlockingAndWorkersGone(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", func(o *options) { o.Workers = 4 })
	h.waitReady()
	ws := pids(h.status())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("4 workers drained and reaped in %s", time.Since(start))
	for _, pid := range ws {
		if procfs.Alive(pid) {
			t.Errorf("worker %d still running after shutdown", pid)
		}
	}
	fl, err := unix.FcntlInt(uintptr(h.ls[0].FD(0)), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("listener flags %#x (%v): lost O_NONBLOCK", fl, err)
	}
	acc, err := unix.GetsockoptInt(h.ls[0].FD(0), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 1 {
		t.Fatalf("listener is no longer listening: %d %v", acc, err)
	}
	if !h.notified("STOPPING=1") {
		t.Fatal("systemd was not told STOPPING=1")
	}
}

func TestKilledWorkerIsReplaced(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", nil)
	h.waitReady()
	victim := h.status().Workers[0]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	var s pool.Status
	waitFor(t, 10*time.Second, "replacement ready", func() bool {
		s = h.status()
		return s.Ready == 2 && s.Restarts == 1 && !contains(pids(s), victim.PID)
	})
	for _, w := range s.Workers {
		if w.Slot == victim.Slot && w.Restarts != 1 {
			t.Fatalf("slot %d restart count %d, want 1", w.Slot, w.Restarts)
		}
	}
	if _, _, err := get(freshClient(), h.url); err != nil {
		t.Fatal(err)
	}
}

func TestCrashLoopGivesUp(t *testing.T) {
	t.Parallel()
	h := startPool(t, "crash", func(o *options) {
		o.RestartLimit = pool.RestartLimit{Burst: 4, Period: time.Minute}
		o.BackoffMin = time.Millisecond
	})
	select {
	case <-h.p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("pool did not give up")
	}
	err := h.p.Wait()
	if !errors.Is(err, pool.ErrRestartLimit) {
		t.Fatalf("Wait() = %v, want ErrRestartLimit", err)
	}
	t.Logf("gave up: %v", err)
	if !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("reason does not say how workers died: %v", err)
	}
}

func TestReadyTimeoutCountsAsCrash(t *testing.T) {
	t.Parallel()
	h := startPool(t, "noready", func(o *options) {
		o.ReadyTimeout = 200 * time.Millisecond
		o.RestartLimit = pool.RestartLimit{Burst: 1, Period: time.Minute}
		o.Workers = 1
	})
	select {
	case <-h.p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("pool did not give up on a worker that never gets ready")
	}
	if err := h.p.Wait(); !errors.Is(err, pool.ErrRestartLimit) {
		t.Fatalf("Wait() = %v", err)
	}
}

func TestStoppingStartsReplacementBeforeExit(t *testing.T) {
	t.Parallel()
	h := startPool(t, "suicide", func(o *options) { o.MinServe = time.Millisecond })
	h.waitReady()
	old := h.status().Workers[0]
	// STOPPING=1 within MinServe of READY=1 would be a crash loop in
	// disguise (TestSimMinServe); this worker has served a while.
	waitFor(t, 5*time.Second, "the worker ready for longer than MinServe", func() bool { return time.Since(old.ReadyAt) > time.Millisecond })
	syscall.Kill(old.PID, syscall.SIGUSR1) // worker sends STOPPING=1 and keeps running
	var repl pool.WorkerStatus
	waitFor(t, 10*time.Second, "replacement of the leaving worker", func() bool {
		for _, w := range h.status().Workers {
			if w.Slot == old.Slot && w.PID != old.PID && w.State == pool.Ready {
				repl = w
				return true
			}
		}
		return false
	})
	if !procfs.Alive(old.PID) {
		t.Fatal("the leaving worker exited before its replacement was ready")
	}
	syscall.Kill(old.PID, syscall.SIGUSR2) // now it exits on its own
	waitGone(t, []int{old.PID}, 10*time.Second)
	s := h.status()
	if s.Restarts != 0 || s.Ready != 2 || !contains(pids(s), repl.PID) {
		t.Fatalf("after announced exit: %+v", s)
	}
}

func TestIgnoredSIGTERMIsKilledAtStopTimeout(t *testing.T) {
	t.Parallel()
	h := startPool(t, "ignoreterm", func(o *options) { o.StopTimeout = 300 * time.Millisecond })
	h.waitReady()
	ws := pids(h.status())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("workers that ignore SIGTERM were gone after %s, before the stop timeout", took)
	}
	waitGone(t, ws, time.Second)
}

func TestNotifyFromForeignProcessIgnored(t *testing.T) {
	addr := t.TempDir() + "/notify.sock"
	h := startPool(t, "noready", func(o *options) { o.NotifySocket = addr; o.Workers = 1 })
	waitFor(t, 10*time.Second, "worker started", func() bool { return len(h.status().Workers) == 1 })
	w := h.status().Workers[0]
	// A process that is not a worker: its READY=1 and STOPPING=1, garbage,
	// an oversized message, a descriptor, and a forged exit mark (sockd's
	// own, from the wrong sender): all dropped.
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	for _, msg := range []string{"READY=1", "STOPPING=1", "garbage\x00\xff", "", strings.Repeat("X=1\n", 2000), "=1",
		fmt.Sprintf("SOCKD_MARK=%d", w.PID)} {
		if err := sendAs(stranger.Process.Pid, addr, msg, false); err != nil {
			t.Fatalf("forging a stranger's credentials needs root: %v", err)
		}
	}
	if err := sendAs(stranger.Process.Pid, addr, "READY=1", true); err != nil {
		t.Fatal(err)
	}
	// The exit mark is honoured only for a worker that really exited.
	if err := sendAs(0, addr, fmt.Sprintf("SOCKD_MARK=%d", w.PID), false); err != nil {
		t.Fatal(err)
	}
	// Datagrams are read in order: once a marker from the worker's pid
	// shows, every message before it has been judged.
	if err := sendAs(w.PID, addr, "STATUS=marker", false); err != nil {
		t.Fatalf("forging the worker's credentials needs root: %v", err)
	}
	waitFor(t, 5*time.Second, "marker status", func() bool {
		s := h.status()
		return len(s.Workers) == 1 && s.Workers[0].Status == "marker"
	})
	s := h.status()
	if s.Ready != 0 || s.State != pool.StateStarting || s.Workers[0].PID != w.PID || s.Workers[0].State != pool.Starting {
		t.Fatalf("foreign messages changed the pool: %+v", s)
	}
	before, _ := procfs.FDs(os.Getpid())
	if err := sendAs(w.PID, addr, "READY=1", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "worker ready", func() bool { return h.status().Ready == 1 })
	after, _ := procfs.FDs(os.Getpid())
	if len(after) > len(before) {
		t.Fatalf("fds grew from %d to %d: a passed descriptor leaked", len(before), len(after))
	}
}

// sendAs sends msg to the unix datagram socket at addr with SCM_CREDENTIALS
// naming pid (0: our own; another pid needs CAP_SYS_ADMIN, i.e. root), and
// with withFD, a descriptor attached.
func sendAs(pid int, addr, msg string, withFD bool) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if pid == 0 {
		pid = os.Getpid()
	}
	oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(pid), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	if withFD {
		oob = append(oob, unix.UnixRights(0)...)
	}
	return unix.Sendmsg(fd, []byte(msg), oob, &unix.SockaddrUnix{Name: addr}, 0)
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func TestSilentWorkerIsReplacedByWatchdog(t *testing.T) {
	t.Parallel()
	// The helper in "serve" mode never sends WATCHDOG=1.
	h := startPool(t, "serve", func(o *options) {
		o.Workers = 1
		o.WorkerWatchdog = 300 * time.Millisecond
		o.StopTimeout = time.Second
	})
	h.waitReady()
	first := h.status().Workers[0]
	r := readReport(t, h.dir, first.PID)
	if r.Env["WATCHDOG_USEC"] != "300000" || r.Env["WATCHDOG_PID"] != fmt.Sprint(first.PID) {
		t.Fatalf("worker got WATCHDOG_USEC=%q WATCHDOG_PID=%q", r.Env["WATCHDOG_USEC"], r.Env["WATCHDOG_PID"])
	}
	waitFor(t, 10*time.Second, "silent worker replaced", func() bool {
		s := h.status()
		return s.Restarts >= 1 && len(s.Workers) == 1 && s.Workers[0].PID != first.PID
	})
	waitGone(t, []int{first.PID}, 5*time.Second)
}

// A worker that pings WATCHDOG=1 well within its watchdog interval keeps
// running for several intervals. The pings come from this test process
// (in the worker's name), which shares two cores with parallel tests
// under -race: the interval is far above how long it may be paused, so
// what is tested is the pinging, not the scheduler (the timer's own
// arithmetic is TestSimWorkerWatchdog's).
func TestPingingWorkerSurvivesWatchdog(t *testing.T) {
	t.Parallel()
	addr := t.TempDir() + "/notify.sock"
	h := startPool(t, "serve", func(o *options) {
		o.Workers = 1
		o.WorkerWatchdog = 1500 * time.Millisecond
		o.NotifySocket = addr
	})
	h.waitReady()
	w := h.status().Workers[0]
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if err := sendAs(w.PID, addr, "WATCHDOG=1", false); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	if s := h.status(); s.Restarts != 0 || s.Workers[0].PID != w.PID {
		t.Fatalf("a worker that pings was replaced: %+v", s)
	}
}
