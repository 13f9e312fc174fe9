package nodeshim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/worker/workertest"
)

// trampolineArg0 marks a re-exec of the test binary that sets LISTEN_PID
// to its own pid and execs the rest of its arguments, as sockd's own
// trampoline (pool.Trampoline) does for a worker.
const trampolineArg0 = "nodeshim-trampoline"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[0] == trampolineArg0 {
		env := append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
		err := unix.Exec(os.Args[1], os.Args[1:], env)
		fmt.Fprintf(os.Stderr, "trampoline: exec %s: %v\n", os.Args[1], err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

// need returns the path of a program the test needs, or skips the test
// loudly (fails it under CI: SOCKD_E2E_REQUIRE=1).
func need(t testing.TB, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, fmt.Sprintf("%s is not installed (%s; scripts/setup installs it)", name, why))
	}
	return p
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("SOCKD_E2E_REQUIRE") == "1" {
		t.Fatalf("%s, and SOCKD_E2E_REQUIRE=1", msg)
	}
	fmt.Fprintf(os.Stderr, "=== SKIPPING %s: %s\n", t.Name(), msg)
	t.Skip(msg)
}

// apps returns the folder of the test apps, with its npm packages
// installed (scripts/setup runs npm ci there).
func apps(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../../examples/node-apps")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"express", "express4", "fastify", "koa"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p, "package.json")); err != nil {
			missing(t, fmt.Sprintf("npm package %s is not installed in %s (scripts/setup runs npm ci there)", p, dir))
		}
	}
	return dir
}

var (
	preloadOnce sync.Once
	preloadPath string
	preloadErr  error
	preloadDir  string
)

// preload installs the embedded script once per test binary, as sockd
// would in its run directory.
func preload(t testing.TB) string {
	t.Helper()
	preloadOnce.Do(func() {
		preloadDir, preloadErr = os.MkdirTemp("", "nodeshim-test-")
		if preloadErr == nil {
			preloadPath, preloadErr = Install(preloadDir)
		}
	})
	if preloadErr != nil {
		t.Fatal(preloadErr)
	}
	return preloadPath
}

// bind makes sockd's sockets, as sockd binds them (--listen).
func bind(t testing.TB, specs ...string) activation.Set {
	t.Helper()
	var ss []activation.Spec
	for _, s := range specs {
		spec, err := activation.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, spec)
	}
	set, err := activation.Bind(context.Background(), ss, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close(); set.Remove() })
	return set
}

func port(t testing.TB, l *activation.Listener) int {
	t.Helper()
	_, p, err := net.SplitHostPort(l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// spec says how to start one process.
type spec struct {
	cmd       []string // the command; node is looked up when it is "node"
	dir       string
	env       []string
	set       activation.Set // passed as fds 3, 4, …
	ipc       bool           // Node's IPC channel after the listeners
	noPreload bool
	// listenPID, if set, is LISTEN_PID as is, and no trampoline runs.
	listenPID string
}

// proc is a started process (the test binary as trampoline, then exec).
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	pid  int
	out  *lockedBuffer
	ipc  *os.File
	msgs chan string
	done chan struct{}
	err  error

	mu   sync.Mutex
	seen []string // every IPC message so far
}

func start(t testing.TB, s spec) *proc {
	t.Helper()
	args := append([]string(nil), s.cmd...)
	if !filepath.IsAbs(args[0]) {
		args[0] = need(t, args[0], "the test runs it")
	}
	env := baseEnv()
	var files []*os.File
	var names []string
	for _, l := range s.set {
		fd, err := unix.FcntlInt(uintptr(l.FD(0)), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), l.Name))
		names = append(names, l.Name)
	}
	if len(s.set) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(s.set)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		ls, err := Listeners(s.set.FDs(0), names)
		if err != nil {
			t.Fatal(err)
		}
		more, err := Options{}.Env(ls)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, more...)
	}
	if !s.noPreload {
		env = append(env, "NODE_OPTIONS="+NodeOptions(os.Getenv("NODE_OPTIONS"), preload(t)))
	}
	p := &proc{t: t, out: &lockedBuffer{}, msgs: make(chan string, 10000), done: make(chan struct{})}
	var theirs *os.File
	if s.ipc {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.ipc, theirs = os.NewFile(uintptr(pair[0]), "ipc"), os.NewFile(uintptr(pair[1]), "ipc-child")
		env = append(env, "NODE_CHANNEL_FD="+strconv.Itoa(3+len(files)), "NODE_CHANNEL_SERIALIZATION_MODE=json")
		files = append(files, theirs)
	}
	env = append(env, s.env...)
	path, argv := os.Args[0], append([]string{trampolineArg0}, args...)
	if s.listenPID != "" {
		path, argv = args[0], args
		env = append(env, "LISTEN_PID="+s.listenPID)
	}
	p.cmd = &exec.Cmd{Path: path, Args: argv, Env: env, Dir: s.dir, ExtraFiles: files,
		Stdout: p.out, Stderr: p.out, SysProcAttr: &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}}
	err := p.cmd.Start()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if p.ipc != nil {
		go p.readIPC()
	}
	t.Cleanup(func() {
		unix.Kill(-p.pid, unix.SIGKILL)
		<-p.done
		if p.ipc != nil {
			p.ipc.Close()
		}
		if t.Failed() || os.Getenv("NODESHIM_SHOW_OUTPUT") == "1" {
			t.Logf("output of %v (pid %d):\n%s", s.cmd, p.pid, p.out.String())
		}
	})
	return p
}

// baseEnv is the test's environment without what sockd sets itself.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		drop := false
		for _, p := range []string{"LISTEN_", "SOCKD_", "NODE_OPTIONS=", "NODE_CHANNEL_", "NOTIFY_SOCKET=", "WATCHDOG_", "npm_"} {
			drop = drop || strings.HasPrefix(kv, p)
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) readIPC() {
	r := bufio.NewReader(p.ipc)
	for {
		line, err := r.ReadString('\n')
		if line = strings.TrimSpace(line); line != "" {
			p.mu.Lock()
			p.seen = append(p.seen, line)
			p.mu.Unlock()
			select {
			case p.msgs <- line:
			default:
			}
		}
		if err != nil {
			close(p.msgs)
			return
		}
	}
}

// waitMsg waits for the IPC line want (as Node writes it, e.g. `"ready"`).
func (p *proc) waitMsg(want string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				p.t.Fatalf("pid %d closed its IPC channel before sending %s; output:\n%s", p.pid, want, p.out)
			}
			if m == want {
				return
			}
		case <-p.done:
			p.t.Fatalf("pid %d exited (%v) before sending %s; output:\n%s", p.pid, p.err, want, p.out)
		case <-deadline:
			p.t.Fatalf("pid %d sent no %s within %v; output:\n%s", p.pid, want, timeout, p.out)
		}
	}
}

func (p *proc) messages() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func (p *proc) signal(sig unix.Signal) {
	p.t.Helper()
	if err := unix.Kill(p.pid, sig); err != nil {
		p.t.Fatalf("kill %d: %v", p.pid, err)
	}
}

// wait waits for the process to exit and returns its exit code (-1 for a
// signal).
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("pid %d did not exit within %v; output:\n%s", p.pid, timeout, p.out)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitOutput waits until the output contains s.
func (p *proc) waitOutput(s string, timeout time.Duration) {
	p.t.Helper()
	workertest.Eventually(p.t, timeout, fmt.Sprintf("pid %d to print %q; output:\n%s", p.pid, s, p.out), func() bool {
		return strings.Contains(p.out.String(), s)
	})
}

// gone reports whether the whole process group has ended (no member left,
// zombies included: they are reaped by then or the group would exist).
func (p *proc) groupGone() bool { return unix.Kill(-p.pid, 0) == unix.ESRCH }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// get sends one GET on a new connection and returns the pid in the answer
// ("pid=N") and the response.
func get(network, addr, path string) (int, *http.Response, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://sockd.test" + path)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	_, after, ok := strings.Cut(string(body), "pid=")
	if !ok {
		return 0, resp, fmt.Errorf("answer without pid=: %q", body)
	}
	pid, _ := strconv.Atoi(strings.Fields(after)[0])
	return pid, resp, nil
}

// backlog is the accept queue limit of the socket as the kernel has it.
func backlog(t testing.TB, fd int) int {
	t.Helper()
	l, err := Describe(fd)
	if err != nil {
		t.Fatal(err)
	}
	return l.Backlog
}
