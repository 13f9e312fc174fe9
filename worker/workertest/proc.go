package workertest

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Config describes a worker process to start.
type Config struct {
	Argv  []string   // program and arguments
	Files []*os.File // passed as fds 3, 4, …; Start closes them
	Names []string   // LISTEN_FDNAMES, optional
	Env   []string   // extra VAR=VALUE
	// Notify serves a NOTIFY_SOCKET for the process.
	Notify bool
	// Slot and Generation set SOCKD_WORKER and SOCKD_GENERATION when
	// Generation > 0.
	Slot, Generation int
	// ProbeURL is polled by WaitReady when Notify is false.
	ProbeURL string
}

// Proc is a running worker.
type Proc struct {
	Cmd    *exec.Cmd
	Notify *NotifySocket // nil unless Config.Notify
	cfg    Config
	out    lockedBuffer
	done   chan struct{}
}

// shim sets LISTEN_PID to the pid the worker will have: the shell's own,
// kept by exec. A Go parent cannot set it between fork and exec otherwise.
const shim = `export LISTEN_PID=$$; exec "$@"`

// Start runs cfg.Argv through /bin/sh (for LISTEN_PID) with the sockd
// environment. The process is killed at cleanup if still running.
func Start(t testing.TB, cfg Config) *Proc {
	t.Helper()
	p := &Proc{cfg: cfg, done: make(chan struct{})}
	args := append([]string{"-c", shim, "sh"}, cfg.Argv...)
	p.Cmd = exec.Command("/bin/sh", args...)
	p.Cmd.Env = p.env(t)
	p.Cmd.ExtraFiles = cfg.Files
	p.Cmd.Stdout = &p.out
	p.Cmd.Stderr = &p.out
	err := p.Cmd.Start()
	for _, f := range cfg.Files {
		f.Close()
	}
	if err != nil {
		t.Fatalf("start %v: %v", cfg.Argv, err)
	}
	go func() { p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of pid %d:\n%s", p.Pid(), p.Output())
		}
	})
	return p
}

func (p *Proc) env(t testing.TB) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"),
			strings.HasPrefix(k, "SOCKD_"), k == "NOTIFY_SOCKET", k == "GORACE":
			continue
		}
		env = append(env, kv)
	}
	// The race detector sleeps a second at exit unless told otherwise,
	// which would blur drain timings.
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(p.cfg.Files)))
	if p.cfg.Names != nil {
		env = append(env, "LISTEN_FDNAMES="+strings.Join(p.cfg.Names, ":"))
	}
	if p.cfg.Generation > 0 {
		env = append(env, "SOCKD_WORKER="+strconv.Itoa(p.cfg.Slot),
			"SOCKD_GENERATION="+strconv.Itoa(p.cfg.Generation))
	}
	if p.cfg.Notify {
		p.Notify = NewNotifySocket(t)
		env = append(env, "NOTIFY_SOCKET="+p.Notify.Path())
	}
	return append(env, p.cfg.Env...)
}

// Pid is the worker's pid (the shell exec'd into it).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Output returns what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the worker.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %d: %v", sig, p.Pid(), err)
	}
}

// Wait returns the exit code (-1 when killed by a signal), failing t if
// the process is still running after timeout. Every notification the
// process sent can be read from p.Notify once Wait returns.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		if p.Notify != nil {
			p.Notify.Flush(t)
		}
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("pid %d still running after %v", p.Pid(), timeout)
		return 0
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitReady waits for READY=1, or without a notify socket until a request
// to ProbeURL on a new connection is answered by this pid (X-Sockd-Pid).
func (p *Proc) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	if p.Notify != nil {
		p.Notify.WaitFor(t, "READY=1", timeout)
		return
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	want := strconv.Itoa(p.Pid())
	Eventually(t, timeout, "worker answering "+p.cfg.ProbeURL, func() bool {
		if p.Exited() {
			t.Fatalf("pid %d exited before ready:\n%s", p.Pid(), p.Output())
		}
		resp, err := c.Get(p.cfg.ProbeURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("X-Sockd-Pid") == want
	})
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
