package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/guard"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary is also sockd: with SOCKDTEST_MAIN=1 it runs main's
// code (the workers it starts are this binary again, as the built-in demo
// worker, which is why the variable avoids the SOCKD_ prefix that sockd
// strips from its workers' environment).
func TestMain(m *testing.M) {
	pool.Trampoline()
	guard.Main()
	handoff.MainPIDHelper()
	if len(os.Args) > 1 && os.Args[1] == steerWorkerArg {
		steerWorker()
	}
	if os.Getenv("SOCKDTEST_MAIN") == "1" {
		if len(os.Args) > 1 && os.Args[1] == "run" {
			ignoreSignal34()
		}
		os.Exit(sockd(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// sockdCmd prepares a sockd process.
func sockdCmd(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SOCKDTEST_MAIN=1", "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	out := &syncBuffer{}
	cmd.Stderr = out
	cmd.Stdout = out
	// A test binary that dies (a panic at its -timeout) leaves no sockd
	// running: sockd stops with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd, out
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// exitCode runs sockd to completion (bounded) and returns its exit code and
// output.
func exitCode(t *testing.T, env []string, files []*os.File, args ...string) (int, string) {
	t.Helper()
	// "LISTEN_PID=self" stands for sockd's own pid, which only the process
	// itself can know: a shell sets it and execs sockd, as systemd would.
	self := false
	var rest []string
	for _, kv := range env {
		if kv == "LISTEN_PID=self" {
			self = true
		} else {
			rest = append(rest, kv)
		}
	}
	cmd, out := sockdCmd(t, rest, args...)
	if self {
		cmd.Path = "/bin/sh"
		cmd.Args = append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0]}, args...)
	}
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sockd %v hung; output:\n%s", args, out)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

type daemonProc struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	control string
	t       *testing.T
}

// startSockd runs sockd with the demo worker and waits until it is ready.
func startSockd(t *testing.T, env []string, args ...string) *daemonProc {
	t.Helper()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, env, append([]string{"run", "--control", ctl, "--stop-timeout", "5s"}, args...)...)
	return launch(t, cmd, out, ctl)
}

// launch starts a prepared sockd, stops it at the end of the test (by the
// pid its status names: after an upgrade that is not our child) and waits
// until it serves.
func launch(t *testing.T, cmd *exec.Cmd, out *syncBuffer, ctl string) *daemonProc {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, out: out, control: ctl, t: t}
	t.Cleanup(func() {
		if s, err := d.status(); err == nil && s.PID > 1 && s.PID != cmd.Process.Pid {
			syscall.Kill(s.PID, syscall.SIGTERM)
			waitFor(t, 20*time.Second, "sockd gone", func() bool { return !procfs.Alive(s.PID) })
		}
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("sockd output:\n%s", out)
		}
	})
	waitFor(t, 20*time.Second, "sockd ready", func() bool {
		s, err := d.status()
		return err == nil && s.State == pool.StateRunning
	})
	return d
}

func (d *daemonProc) status() (pool.Status, error) {
	var out, errs bytes.Buffer
	code := sockd([]string{"status", "--json", "--control", d.control}, &out, &errs)
	var s pool.Status
	if code != 0 {
		return s, fmt.Errorf("status exit %d: %s", code, strings.TrimSpace(errs.String()))
	}
	return s, json.Unmarshal(out.Bytes(), &s)
}

func (d *daemonProc) mustStatus() pool.Status {
	d.t.Helper()
	s, err := d.status()
	if err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d *daemonProc) url() string {
	return "http://" + d.mustStatus().Listeners[0].Address + "/"
}

// waitFor waits on cond with a deadline.
var waitFor = workertest.Eventually

func getGen(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Sockd-Generation")
}

func TestRunReloadStatusStop(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	s := d.mustStatus()
	if len(s.Workers) != 2 || s.Generation != 1 || s.Listeners[0].Name != "http" || s.Listeners[0].FD != 3 {
		t.Fatalf("status: %+v", s)
	}
	url := d.url()
	if g := getGen(t, url); g != "1" {
		t.Fatalf("generation %q", g)
	}
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, io.Discard); code != 0 {
		t.Fatalf("reload --wait exit %d", code)
	}
	if g := getGen(t, url); g != "2" {
		t.Fatalf("right after reload --wait: generation %q, want 2", g)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "generation 3 after SIGHUP", func() bool {
		s, err := d.status()
		return err == nil && s.Generation == 3 && s.State == pool.StateRunning
	})
	out.Reset()
	if code := sockd([]string{"status", "--control", d.control}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "2/2 workers ready, generation 3") {
		t.Fatalf("status text (exit %d):\n%s", code, out.String())
	}
	workers := d.mustStatus().Workers
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("sockd after SIGTERM: %v", err)
	}
	for _, w := range workers {
		if procfs.Alive(w.PID) {
			t.Errorf("worker %d survived sockd's exit", w.PID)
		}
	}
	if _, err := os.Stat(d.control); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestSIGKILLedSockdLeavesNoWorker(t *testing.T) {
	d := startSockd(t, nil, "--workers", "3", "--listen", "tcp://127.0.0.1:0")
	workers := d.mustStatus().Workers
	d.cmd.Process.Kill()
	d.cmd.Wait()
	for _, w := range workers {
		waitFor(t, 10*time.Second, fmt.Sprintf("worker %d gone", w.PID), func() bool { return !procfs.Alive(w.PID) })
	}
}

// A worker that is a wrapper (a shell script, npm start) has children of
// its own; the parent-death signal reaches only the worker itself. The
// guard takes the rest of the worker's process group down with sockd.
func TestSIGKILLedSockdLeavesNoGrandchild(t *testing.T) {
	children := filepath.Join(t.TempDir(), "children")
	script := `sleep 1000 >/dev/null 2>&1 & echo $! >> "$CHILDREN"; exec "$0" demo-worker`
	d := startSockd(t, []string{"CHILDREN=" + children}, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--",
		"/bin/sh", "-c", script, os.Args[0])
	workers := d.mustStatus().Workers
	var pids []int
	waitFor(t, 10*time.Second, "both wrappers' children started", func() bool {
		b, _ := os.ReadFile(children)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			var pid int
			fmt.Sscan(f, &pid)
			pids = append(pids, pid)
		}
		return len(pids) == 2
	})
	for _, pid := range pids {
		if !procfs.Alive(pid) {
			t.Fatalf("child %d of a worker is not running before the kill", pid)
		}
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	for _, w := range workers {
		waitFor(t, 10*time.Second, fmt.Sprintf("worker %d gone", w.PID), func() bool { return !procfs.Alive(w.PID) })
	}
	for _, pid := range pids {
		waitFor(t, 10*time.Second, fmt.Sprintf("worker's child %d gone", pid), func() bool { return !procfs.Alive(pid) })
	}
}

func TestFailedReloadWaitExitsNonZero(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "hello.conf")
	os.WriteFile(conf, []byte("ok\n"), 0o644)
	d := startSockd(t, []string{"HELLO_CONFIG=" + conf}, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	url := d.url()
	os.WriteFile(conf, []byte("broken\n"), 0o644)
	var stderr bytes.Buffer
	code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "exited before it was ready (exit status 1)") {
		t.Fatalf("reload --wait of a broken deploy: exit %d, %q", code, stderr.String())
	}
	if strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
		t.Fatalf("error is not one line: %q", stderr.String())
	}
	if g := getGen(t, url); g != "1" {
		t.Fatalf("after a failed reload generation %q serves, want 1", g)
	}
	if s := d.mustStatus(); !strings.Contains(s.Summary, "last reload failed") {
		t.Fatalf("status summary does not say the reload failed: %q", s.Summary)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	d := startSockd(t, []string{"SOCKD_WORKERS=3", "SOCKD_LISTEN=a=tcp://127.0.0.1:0 b=tcp://127.0.0.1:0"})
	s := d.mustStatus()
	if len(s.Workers) != 3 || len(s.Listeners) != 2 || s.Listeners[1].Name != "b" {
		t.Fatalf("SOCKD_WORKERS / SOCKD_LISTEN not honoured: %+v", s)
	}
}

func TestControlSocketRefusesGarbageAndStrangers(t *testing.T) {
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	for _, msg := range []string{"garbage\n", "{\"command\":\"explode\"}\n", strings.Repeat("x", 100000)} {
		c, err := net.Dial("unix", d.control)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(msg))
		reply, _ := io.ReadAll(c)
		c.Close()
		if !bytes.Contains(reply, []byte(`"ok":false`)) {
			t.Fatalf("reply to %.20q: %s", msg, reply)
		}
	}
	fi, err := os.Stat(d.control)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	// Let everyone connect, then check SO_PEERCRED turns a stranger away.
	os.Chmod(d.control, 0o666)
	os.Chmod(filepath.Dir(d.control), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(d.control)), 0o755)
	cmd, out := sockdCmd(t, nil, "status", "--control", d.control)
	cmd.Path = worldExecutableCopy(t)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	err = cmd.Run()
	if cmd.ProcessState.ExitCode() != exitFailed || !strings.Contains(out.String(), "permission denied") {
		t.Fatalf("status as uid 65534: %v, %q", err, out.String())
	}
	if s := d.mustStatus(); s.State != pool.StateRunning {
		t.Fatalf("sockd after bad requests: %+v", s)
	}
}

func TestBadInput(t *testing.T) {
	tmp := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notExec := filepath.Join(tmp, "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	crash := filepath.Join(tmp, "crash")
	os.WriteFile(crash, []byte("#!/bin/sh\nexit 7\n"), 0o755)
	plain, _ := os.CreateTemp(tmp, "plain")
	conn, _ := net.Dial("tcp", busy.Addr().String())
	defer conn.Close()
	connFile, _ := conn.(*net.TCPConn).File()
	ctl := []string{"--control", filepath.Join(tmp, "ctl.sock")}
	listen := append([]string{"--listen", "tcp://127.0.0.1:0"}, ctl...)
	cases := []struct {
		name  string
		env   []string
		files []*os.File
		args  []string
		code  int
		msg   string
	}{
		{"no command", nil, nil, nil, exitUsage, ""},
		{"unknown command", nil, nil, []string{"frobnicate"}, exitUsage, "unknown command"},
		{"unknown flag", nil, nil, []string{"run", "--frob"}, exitUsage, "flag provided but not defined"},
		{"zero workers", nil, nil, []string{"run", "--workers", "0"}, exitUsage, "--workers 0"},
		{"status --json --check", nil, nil, []string{"status", "--json", "--check"}, exitUsage, "--json or --check, not both"},
		{"too many workers", nil, nil, []string{"run", "--workers", "100000"}, exitUsage, "--workers 100000"},
		{"bad env flag", []string{"SOCKD_WORKERS=many"}, nil, []string{"run"}, exitUsage, "SOCKD_WORKERS"},
		{"bad instance variable", nil, nil, []string{"run", "--instance-var", "NODE_APP_INSTANCE,,pm_id"}, exitUsage, "want a variable name"},
		{"unix listener path too long", nil, nil, append([]string{"run", "--listen", "unix:///tmp/" + strings.Repeat("a", 120)}, ctl...), exitUsage, "at most 107"},
		{"control path too long", nil, nil, []string{"run", "--control", "/tmp/" + strings.Repeat("a", 120)}, exitUsage, "at most 107"},
		{"control path a directory's", nil, nil, []string{"run", "--control", "/tmp/x.sock/"}, exitUsage, "not a directory's"},
		{"metrics port out of range", nil, nil, append([]string{"run", "--metrics", "tcp://127.0.0.1:99999"}, listen...), exitUsage, "want 0 to 65535"},
		{"client with an empty --control", nil, nil, []string{"reload", "--control="}, exitUsage, "want a path"},
		{"client with a long --control", nil, nil, []string{"status", "--control", "/tmp/" + strings.Repeat("a", 120)}, exitUsage, "at most 107"},
		{"missing command", nil, nil, append(append([]string{"run"}, listen...), "--", "/nonexistent/server"), exitUsage, "/nonexistent/server"},
		{"node without a listener", nil, nil, append(append([]string{"run"}, ctl...), "--", "node", "app.js"), exitUsage, "a Node.js app that listens on PORT: --listen http=tcp://:PORT --ready node-listen"},
		{"command not executable", nil, nil, append(append([]string{"run"}, listen...), "--", notExec), exitUsage, "not executable"},
		{"bad listen url", nil, nil, append([]string{"run", "--listen", "tcp://nope"}, ctl...), exitUsage, "want HOST:PORT"},
		{"bad scheme", nil, nil, append([]string{"run", "--listen", "sctp://1.2.3.4:5"}, ctl...), exitUsage, "unsupported scheme"},
		{"port in use", nil, nil, append([]string{"run", "--listen", "tcp://" + busy.Addr().String()}, ctl...), exitListeners, "address already in use"},
		{"bad ready rule", nil, nil, append(append([]string{"run"}, listen...), "--ready", "soon"), exitUsage, "want notify, node-ipc, node-listen or after"},
		{"warm-up without a Node ready", nil, nil, append(append([]string{"run"}, listen...), "--warmup", "/"), exitUsage, "--warmup /: needs --ready node-ipc or node-listen"},
		{"warm-up path not a path", nil, nil, append(append([]string{"run", "--ready", "node-ipc"}, listen...), "--warmup", "warm me"), exitUsage, "--warmup warm me: want a request target beginning with /"},
		{"warm-up path with a space", nil, nil, append(append([]string{"run", "--ready", "node-ipc"}, listen...), "--warmup", "/a b"), exitUsage, "--warmup /a b: want printable ASCII without spaces or # (percent-encode the rest)"},
		{"warm-up without the preload", nil, nil, append(append([]string{"run", "--ready", "node-ipc", "--node-preload", "off"}, listen...), "--warmup", "/"), exitUsage, "--warmup /: needs --node-preload on"},
		{"zero warm-up requests", nil, nil, append(append([]string{"run"}, listen...), "--warmup-requests", "0"), exitUsage, "--warmup-requests 0: want 1 to 100000"},
		{"bad restart limit", nil, nil, append(append([]string{"run"}, listen...), "--restart-limit", "ten"), exitUsage, "N/DURATION"},
		{"LISTEN_FDS not a number", []string{"LISTEN_FDS=abc", "LISTEN_PID=self"}, nil, append([]string{"run"}, ctl...), exitListeners, "LISTEN_FDS"},
		{"LISTEN_FDS huge", []string{"LISTEN_FDS=100000", "LISTEN_PID=self"}, nil, append([]string{"run"}, ctl...), exitListeners, "more than"},
		{"LISTEN_FDNAMES count", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=a:b", "LISTEN_PID=self"}, []*os.File{plain}, append([]string{"run"}, ctl...), exitListeners, "LISTEN_FDNAMES has 2 names"},
		{"inherited fd not a socket", []string{"LISTEN_FDS=1", "LISTEN_PID=self"}, []*os.File{plain}, append([]string{"run"}, ctl...), exitListeners, "not a socket"},
		{"inherited connected socket", []string{"LISTEN_FDS=1", "LISTEN_PID=self"}, []*os.File{connFile}, append([]string{"run"}, ctl...), exitListeners, "Accept=no"},
		{"LISTEN_PID of another process", []string{"LISTEN_FDS=1", "LISTEN_PID=1"}, []*os.File{plain}, append(append([]string{"run"}, ctl...), "--", "/bin/true"), exitUsage, "no listeners"},
		{"LISTEN_FDS without LISTEN_PID", []string{"LISTEN_FDS=1"}, []*os.File{plain}, append(append([]string{"run"}, ctl...), "--", "/bin/true"), exitUsage, "no listeners"},
		{"zero stop timeout", nil, nil, append(append([]string{"run"}, listen...), "--stop-timeout", "0s"), exitUsage, "--stop-timeout 0s: must be positive"},
		{"negative ready timeout", nil, nil, append(append([]string{"run"}, listen...), "--ready-timeout", "-1s"), exitUsage, "--ready-timeout -1s: must be positive"},
		{"bad log format", nil, nil, append(append([]string{"run"}, listen...), "--log-format", "xml"), exitUsage, "--log-format"},
		{"bad log level", nil, nil, append(append([]string{"run"}, listen...), "--log-level", "loud"), exitUsage, "--log-level"},
		{"crash loop", nil, nil, append(append([]string{"run", "--workers", "2", "--restart-limit", "3/60s"}, listen...), "--", crash), exitWorkers, "restart limit reached"},
		{"never ready", nil, nil, append(append([]string{"run", "--workers", "1", "--ready-timeout", "200ms", "--restart-limit", "1/60s", "--stop-timeout", "1s"}, listen...), "--", "/bin/sleep", "60"), exitWorkers, "not ready within"},
		{"status without sockd", nil, nil, append([]string{"status"}, ctl...), exitUnreachable, "cannot reach sockd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := exitCode(t, c.env, c.files, c.args...)
			if code != c.code || !strings.Contains(out, c.msg) {
				t.Fatalf("exit %d (want %d), output:\n%s", code, c.code, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; c.msg != "" && (!strings.HasPrefix(last, "sockd: ") || !strings.Contains(last, c.msg)) {
				t.Fatalf("last line is not the one-line error:\n%s", out)
			}
		})
	}
}

// worldExecutableCopy copies the test binary where another user can run it.
func worldExecutableCopy(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sockd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sockd")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	return path
}

// Under systemd sockd takes the sockets of the .socket unit: fd 3 with
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID naming sockd itself.
func TestTakesInheritedListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := l.(*net.TCPListener).File()
	l.Close()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web"})
	// exec keeps the shell's pid, so LISTEN_PID names sockd as systemd would.
	cmd.Args = []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "run", "--workers", "2", "--control", ctl}
	cmd.Path = "/bin/sh"
	cmd.ExtraFiles = []*os.File{f}
	d := launch(t, cmd, out, ctl)
	f.Close() // the started sockd has its own copy
	s := d.mustStatus()
	if len(s.Listeners) != 1 || s.Listeners[0].Name != "web" || !s.Listeners[0].Inherited || s.Listeners[0].Address != l.Addr().String() {
		t.Fatalf("listeners: %+v", s.Listeners)
	}
	if g := getGen(t, d.url()); g != "1" {
		t.Fatalf("generation %q", g)
	}
}

// Sockets whose LISTEN_PID names another process (or is missing) are not
// sockd's: it says so and goes on with its own --listen sockets.
func TestForeignInheritedSocketsIgnoredWithAWarning(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, _ := l.(*net.TCPListener).File()
	defer f.Close()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, []string{"LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=web"},
		"run", "--control", ctl, "--workers", "1", "--listen", "own=tcp://127.0.0.1:0")
	cmd.ExtraFiles = []*os.File{f}
	d := launch(t, cmd, out, ctl)
	s := d.mustStatus()
	if len(s.Listeners) != 1 || s.Listeners[0].Name != "own" || s.Listeners[0].Inherited {
		t.Fatalf("listeners: %+v", s.Listeners)
	}
	if !strings.Contains(out.String(), "ignoring inherited sockets") || !strings.Contains(out.String(), "LISTEN_PID=1") {
		t.Fatalf("no warning about the foreign sockets:\n%s", out)
	}
	if g := getGen(t, d.url()); g != "1" {
		t.Fatalf("generation %q", g)
	}
}

// A second sockd on the same control socket fails before it binds
// anything: no unix socket file of its own is left behind, and the first
// sockd's control socket still answers.
func TestSecondSockdOnTheSameControlSocketLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	sock := filepath.Join(dir, "app.sock")
	code, out := exitCode(t, nil, nil, "run", "--control", d.control, "--listen", "unix://"+sock, "--", "/bin/true")
	if code != exitListeners || !strings.Contains(out, "in use by another sockd") {
		t.Fatalf("second sockd: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the failed sockd left %s behind: %v", sock, err)
	}
	if s := d.mustStatus(); s.State != pool.StateRunning {
		t.Fatalf("first sockd: %+v", s)
	}
}

// help, version and --help on every command: text on stdout, exit 0.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"version"}, {"run", "--help"}, {"status", "--help"},
		{"reload", "--help"}, {"upgrade", "--help"}, {"help", "run"}, {"help", "logs"}} {
		var stdout, stderr bytes.Buffer
		code := sockd(args, &stdout, &stderr)
		want := "Usage"
		if args[0] == "version" {
			want = "sockd "
		}
		if code != exitOK || !strings.Contains(stdout.String()+stderr.String(), want) {
			t.Errorf("sockd %v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
		if len(args) == 2 && args[0] == "help" && !strings.Contains(stdout.String(), "Usage: sockd "+args[1]) {
			t.Errorf("sockd help %s is not sockd %s --help: %q", args[1], args[1], stdout.String())
		}
	}
	var stderr bytes.Buffer
	if code := sockd([]string{"help", "bogus"}, io.Discard, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "no such command") {
		t.Errorf("sockd help bogus: exit %d, %q", code, stderr.String())
	}
	// Every command sockd help lists has help of its own.
	for _, c := range []string{"version", "man", "help"} {
		var out bytes.Buffer
		if code := sockd([]string{"help", c}, &out, io.Discard); code != exitOK || !strings.Contains(out.String(), "sockd "+c) {
			t.Errorf("sockd help %s: exit %d, %q", c, code, out.String())
		}
		if !strings.Contains(helpText, "\n  sockd "+c+" ") {
			t.Errorf("sockd help does not list %s", c)
		}
	}
}

// --log-format json: every line sockd writes to stderr is a JSON object.
func TestJSONLogs(t *testing.T) {
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0", "--log-format", "json", "--log-level", "debug",
		"--", "/bin/sh", "-c", `exec "$0" demo-worker 2>/dev/null`, os.Args[0])
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	n, debug := 0, false
	for _, line := range strings.Split(strings.TrimSpace(d.out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["@level"] == "debug" {
			debug = true
		}
		n++
	}
	if n < 5 || !debug {
		t.Fatalf("%d JSON lines, debug lines: %v\n%s", n, debug, d.out)
	}
}

// 10 SIGHUPs within 100 ms: never more than two generations alive, and
// the pool ends in one generation, newer than the first.
func TestSIGHUPStormIsCoalesced(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	stop := make(chan struct{})
	most := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				most <- n
				return
			default:
			}
			if s, err := d.status(); err == nil {
				gens := map[int]bool{}
				for _, w := range s.Workers {
					if procfs.Alive(w.PID) {
						gens[w.Generation] = true
					}
				}
				n = max(n, len(gens))
			}
		}
	}()
	for i := 0; i < 10; i++ {
		d.cmd.Process.Signal(syscall.SIGHUP)
		syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
	}
	var s pool.Status
	waitFor(t, 30*time.Second, "one generation again", func() bool {
		var err error
		s, err = d.status()
		return err == nil && s.State == pool.StateRunning && s.Reload == nil && len(s.Workers) == 2 &&
			s.Workers[0].Generation == s.Workers[1].Generation && s.Generation > 1
	})
	close(stop)
	if n := <-most; n > 2 {
		t.Fatalf("%d generations alive at once", n)
	}
	// How many reloads 10 SIGHUPs make depends on how fast a reload is on
	// this machine (a SIGHUP after a reload finished starts another);
	// exact coalescing is pool's TestSimReloadsAreCoalesced.
	if s.Generation > 11 {
		t.Fatalf("10 SIGHUPs made %d reloads", s.Generation-1)
	}
	t.Logf("10 SIGHUPs in 100 ms: %d reloads", s.Generation-1)
}

// A deploy whose workers never become ready: `reload --wait` fails with the
// reason once --reload-timeout passes, the old generation keeps serving and
// `sockd status` says why.
func TestNeverReadyReloadRollsBack(t *testing.T) {
	mode := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(mode, []byte("ok\n"), 0o644)
	script := `if grep -q hang "$MODE"; then exec sleep 60; fi; exec "$0" demo-worker`
	d := startSockd(t, []string{"MODE=" + mode}, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--reload-timeout", "1s",
		"--", "/bin/sh", "-c", script, os.Args[0])
	url := d.url()
	os.WriteFile(mode, []byte("hang\n"), 0o644)
	var stderr bytes.Buffer
	code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "not every worker was ready within 1s") {
		t.Fatalf("reload --wait of a never-ready deploy: exit %d, %q", code, stderr.String())
	}
	if g := getGen(t, url); g != "1" {
		t.Fatalf("after the failed reload generation %q serves, want 1", g)
	}
	s := d.mustStatus()
	if s.LastReload == nil || s.LastReload.OK || !strings.Contains(s.LastReload.Error, "ready within") || !strings.Contains(s.Summary, "last reload failed") {
		t.Fatalf("status does not say why the reload failed: %+v %+v", s.Summary, s.LastReload)
	}
	var text bytes.Buffer
	sockd([]string{"status", "--control", d.control}, &text, io.Discard)
	if !strings.Contains(text.String(), "ready within") {
		t.Fatalf("sockd status text does not say why:\n%s", text.String())
	}
}

// Workers that report SOCKD_REQUESTS= have their counts in sockd status.
func TestStatusShowsWorkersRequestCounts(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	url := d.url()
	for i := 0; i < 20; i++ {
		getGen(t, url)
	}
	waitFor(t, 10*time.Second, "20 requests counted in status", func() bool {
		var sum int64
		for _, w := range d.mustStatus().Workers {
			if w.Requests != nil {
				sum += *w.Requests
			}
		}
		return sum >= 20
	})
	var text bytes.Buffer
	sockd([]string{"status", "--control", d.control}, &text, io.Discard)
	if !strings.Contains(text.String(), "REQUESTS") {
		t.Fatalf("status text has no REQUESTS column:\n%s", text.String())
	}
}

// TestRelativeCommandRunsInCwd: `--cwd /srv/app -- ./server` (a unit's
// SOCKD_CWD and SOCKD_COMMAND) runs the server of --cwd, wherever sockd
// itself runs.
func TestRelativeCommandRunsInCwd(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "server"), []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startSockd(t, nil, "--listen", "none", "--ready", "after:50ms", "--workers", "1", "--cwd", dir, "--", "./server")
	if s := d.mustStatus(); s.Ready != 1 {
		t.Fatalf("status %+v", s)
	}
	// With no listener, status --json has an empty list, not null.
	var js bytes.Buffer
	if code := sockd([]string{"status", "--json", "--control", d.control}, &js, io.Discard); code != 0 || !strings.Contains(js.String(), `"listeners":[]`) {
		t.Fatalf("status --json (exit %d): %s", code, js.String())
	}
	// A relative --cwd too, from its parent.
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--ready", "after:50ms", "--workers", "1",
		"--cwd", filepath.Base(dir), "--", "./server")
	cmd.Dir = filepath.Dir(dir)
	rel := launch(t, cmd, out, ctl)
	if s := rel.mustStatus(); s.Ready != 1 || s.Restarts != 0 {
		t.Fatalf("with a relative --cwd: status %+v\n%s", s, out)
	}
}

// With --log-format json, sockd's last word (why it stopped) is a JSON
// record too, so that a parser of its stderr reads every line.
func TestFatalErrorAsJSON(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	code, out := exitCode(t, nil, nil, "run", "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--listen", "tcp://"+busy.Addr().String())
	if code != exitListeners {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("not JSON: %q", l)
		}
	}
	var last struct {
		Level    string `json:"@level"`
		Message  string `json:"@message"`
		ExitCode int    `json:"exit_code"`
	}
	if json.Unmarshal([]byte(lines[len(lines)-1]), &last); last.Level != "error" || last.ExitCode != exitListeners || !strings.Contains(last.Message, "address already in use") {
		t.Errorf("last record %+v", last)
	}
}
