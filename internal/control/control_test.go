package control

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/internal/procfs"
)

// As CONTROL_TEST_CALL=PATH the test binary is a client: it calls status
// at PATH and prints the outcome (run as another user).
func TestMain(m *testing.M) {
	if path := os.Getenv("CONTROL_TEST_CALL"); path != "" {
		_, err := Call(context.Background(), path, Request{Command: "status"})
		if err != nil {
			os.Stdout.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// handler records what it is asked.
type handler struct {
	mu    sync.Mutex
	calls []string
	block chan struct{}
}

func (h *handler) note(s string) {
	h.mu.Lock()
	h.calls = append(h.calls, s)
	h.mu.Unlock()
}

func (h *handler) Status(ctx context.Context) (any, error) {
	h.note("status")
	return map[string]int{"pid": 42}, nil
}
func (h *handler) Reload(ctx context.Context, wait bool) error {
	h.note("reload")
	if wait {
		return errors.New("reload to generation 2 failed: it broke")
	}
	return nil
}
func (h *handler) Upgrade(ctx context.Context, wait bool) error {
	h.note("upgrade")
	if h.block != nil {
		<-h.block
	}
	return nil
}
func (h *handler) Scale(ctx context.Context, n int, rel, wait bool) (int, error) {
	h.note("scale")
	if rel {
		return 2 + n, nil
	}
	return n, nil
}

func serve(t *testing.T, h Handler) (string, context.CancelFunc, chan struct{}) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Serve(ctx, ln, h, hclog.NewNullLogger())
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path, cancel, done
}

func TestRequestsAndAnswers(t *testing.T) {
	h := &handler{}
	path, _, _ := serve(t, h)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v %v", fi.Mode(), err)
	}
	ctx := context.Background()
	resp, err := Call(ctx, path, Request{Command: "status"})
	if err != nil || !resp.OK || string(resp.Status) != `{"pid":42}` {
		t.Fatalf("status: %+v %v", resp, err)
	}
	if _, err := Call(ctx, path, Request{Command: "reload", Wait: true}); err == nil || err.Error() != "reload to generation 2 failed: it broke" || errors.Is(err, ErrUnreachable) {
		t.Fatalf("a failed reload: %v", err)
	}
	if resp, err := Call(ctx, path, Request{Command: "scale", Workers: "+3"}); err != nil || resp.Workers != 5 {
		t.Fatalf("scale +3: %+v %v", resp, err)
	}
	for _, bad := range []Request{{Command: "explode"}, {Command: "scale", Workers: "0"}, {Command: "scale"}} {
		if _, err := Call(ctx, path, bad); err == nil || errors.Is(err, ErrUnreachable) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	for _, raw := range []string{"garbage\n", strings.Repeat("x", MaxRequest+10)} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(raw))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.Contains(line, `"ok":false`) || !strings.Contains(line, "bad request") {
			t.Fatalf("answer to %.10q: %s", raw, line)
		}
	}
	if _, err := Call(ctx, filepath.Join(t.TempDir(), "none.sock"), Request{Command: "status"}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("no sockd: %v", err)
	}
	if strings.Join(h.calls, " ") != "status reload scale" {
		t.Fatalf("handler calls: %v", h.calls)
	}
}

// A client that connects and says nothing is dropped after the request
// timeout; it does not hold the server up.
func TestSilentClientTimesOut(t *testing.T) {
	old := requestTimeout
	requestTimeout = 200 * time.Millisecond
	defer func() { requestTimeout = old }()
	path, _, _ := serve(t, &handler{})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "bad request") {
		t.Fatalf("a silent client got %q", line)
	}
	if _, err := Call(context.Background(), path, Request{Command: "status"}); err != nil {
		t.Fatal(err)
	}
}

// A stale socket file is replaced; a live one (another sockd) refused.
func TestListenStaleAndLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use by another sockd") {
		t.Fatalf("over a live socket: %v", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()
}

// Serve waits for the requests under way when it is told to stop.
func TestServeWaitsForRequestsUnderWay(t *testing.T) {
	h := &handler{block: make(chan struct{})}
	path, cancel, done := serve(t, h)
	res := make(chan error, 1)
	go func() {
		_, err := Call(context.Background(), path, Request{Command: "upgrade", Wait: true})
		res <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		n := len(h.calls)
		h.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		<-time.After(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
		t.Fatal("Serve returned with a request under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(h.block)
	if err := <-res; err != nil {
		t.Fatalf("the request under way: %v", err)
	}
	<-done
}

// A process of another user is told "permission denied" (SO_PEERCRED),
// even where the socket's mode would let it connect.
func TestStrangerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	path, _, _ := serve(t, &handler{})
	os.Chmod(path, 0o666)
	for d := filepath.Dir(path); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
		}
	}
	bin := filepath.Join(t.TempDir(), "client")
	b, _ := os.ReadFile(os.Args[0])
	os.WriteFile(bin, b, 0o755)
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command(bin)
	cmd.Env = []string{"CONTROL_TEST_CALL=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("a stranger's call: %v %q", err, out)
	}
	_ = procfs.Alive
}
