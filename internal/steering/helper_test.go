package steering

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary re-executes itself as a worker: it takes connections
// from the socket it is given as fd 3 and answers each with its name.
// SIGUSR1 makes its one loop burn CPU without accepting (a blocked event
// loop) until SIGUSR2.
const helperEnv = "STEERING_TEST_WORKER"

// The worker's loop runs on its main thread, whose state /proc/PID/stat
// shows (a Go program may otherwise run it on any thread).
func init() {
	if os.Getenv(helperEnv) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(worker(name))
	}
	os.Exit(m.Run())
}

func worker(name string) int {
	var burn atomic.Bool
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range sig {
			burn.Store(s == syscall.SIGUSR1)
		}
	}()
	fds := []unix.PollFd{{Fd: 3, Events: unix.POLLIN}}
	os.Stdout.WriteString("up\n") // taking connections from now on
	for {
		for spins := 0; burn.Load(); spins++ {
			// CPU work that never gets back to accept
		}
		if _, err := unix.Poll(fds, 5); err != nil && !errors.Is(err, unix.EINTR) {
			return 1
		}
		for !burn.Load() {
			c, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
			if err != nil {
				break
			}
			unix.Write(c, []byte(name+"\n"))
			unix.Close(c)
		}
	}
}

// proc is a worker process started on socket k.
type proc struct {
	name string
	cmd  *exec.Cmd
}

// startWorker starts a worker process named name on socket k of l.
func startWorker(t *testing.T, l *activation.Listener, k int, name string) *proc {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(l.FD(k)), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd}
	t.Cleanup(func() { p.kill() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "up\n" {
		t.Fatalf("worker %s: %q, %v", name, line, err)
	}
	// fd 3 of the worker is socket k: the same inode.
	want, _ := l.Inode(k)
	target, err := procfs.FDTarget(cmd.Process.Pid, 3)
	if err != nil || target != fmt.Sprintf("socket:[%d]", want) {
		t.Fatalf("worker %s fd 3: %q (%v), want socket %d", name, target, err, want)
	}
	return p
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// state is the process state in /proc/PID/stat (R, S, T, Z, …).
func (p *proc) state(t *testing.T) byte {
	t.Helper()
	st, _, err := procfs.Stat(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// ask opens n connections one after another and returns who answered
// each; a connection nobody answers within 5 s fails the test.
func ask(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	who := map[string]int{}
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		if err != nil {
			t.Fatalf("connection %d of %d: no answer: %v (answers so far %v)", i, n, err, who)
		}
		who[strings.TrimSpace(line)]++
	}
	return who
}

// knock opens connections one after another without waiting for an
// answer, until stop is closed.
func knock(addr string, stop <-chan struct{}, done chan<- int) {
	n := 0
	defer func() { done <- n }()
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		n++
		time.Sleep(500 * time.Microsecond) // about 1,000 connections a second, not a busy loop
	}
}

// pool is a steered group with a worker process on each of its sockets.
type pool struct {
	l     *activation.Listener
	s     *Steering
	procs map[string]*proc
}

func newPool(t *testing.T, n int, opts Options) *pool {
	t.Helper()
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "web", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{ReusePort: true, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	s, err := New(set, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	p := &pool{l: set[0], s: s, procs: map[string]*proc{}}
	for i := 0; i < n; i++ {
		p.start(t, fmt.Sprintf("w%d", i), "", true)
	}
	return p
}

// start assigns a socket to a new worker, starts it there and, if ready,
// says so.
func (p *pool) start(t *testing.T, name, replaces string, ready bool) int {
	t.Helper()
	k, err := p.s.Assign(name, replaces)
	if err != nil {
		t.Fatal(err)
	}
	p.procs[name] = startWorker(t, p.l, k, name)
	if ready {
		p.s.Ready(name)
	}
	return k
}

func (p *pool) reason(name string) Reason {
	for _, w := range p.s.Stats().Workers {
		if w.Worker == name {
			return w.Reason
		}
	}
	return ""
}

func (p *pool) waitReason(t *testing.T, name string, r Reason) {
	t.Helper()
	workertest.Eventually(t, 10*time.Second, fmt.Sprintf("worker %s %s", name, r), func() bool { return p.reason(name) == r })
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug})
}
