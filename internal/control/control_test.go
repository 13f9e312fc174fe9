package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/output"
	"github.com/sockd/sockd/worker/workertest"
)

// With CONTROL_TEST_CALL=PATH the test binary is a client: it sends
// {"command":"status"} to PATH and writes a callResult as JSON.
func TestMain(m *testing.M) {
	if path := os.Getenv("CONTROL_TEST_CALL"); path != "" {
		_, err := Call(context.Background(), path, Request{Command: "status"})
		r := callResult{UID: os.Getuid(), Unreachable: errors.Is(err, ErrUnreachable)}
		if err != nil {
			r.Error = err.Error()
		}
		json.NewEncoder(os.Stdout).Encode(r)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type callResult struct {
	UID         int    `json:"uid"`
	Error       string `json:"error"`
	Unreachable bool   `json:"unreachable"`
}

// fakeHandler records the requests it carries out. Status answers status
// (or fails with fail), Reload and Upgrade fail with fail; a Reload with
// wait blocks until release is closed.
type fakeHandler struct {
	status  any
	fail    error
	release chan struct{}

	mu    sync.Mutex
	calls []string
}

func (h *fakeHandler) record(s string) {
	h.mu.Lock()
	h.calls = append(h.calls, s)
	h.mu.Unlock()
}

func (h *fakeHandler) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *fakeHandler) Status(ctx context.Context) (any, error) {
	h.record("status")
	if h.fail != nil {
		return nil, h.fail
	}
	return h.status, nil
}

func (h *fakeHandler) Reload(ctx context.Context, wait bool, env []string) error {
	if env != nil {
		h.record(fmt.Sprintf("reload wait=%v env=%q", wait, env))
	} else {
		h.record(fmt.Sprintf("reload wait=%v", wait))
	}
	if wait && h.release != nil {
		<-h.release
	}
	return h.fail
}

func (h *fakeHandler) Signal(ctx context.Context, sig string, slot, gen *int) (int, error) {
	h.record(fmt.Sprintf("signal %s slot=%v gen=%v", sig, deref(slot), deref(gen)))
	return 2, h.fail
}

func (h *fakeHandler) Send(ctx context.Context, msg json.RawMessage, slot, gen *int) (int, error) {
	h.record(fmt.Sprintf("send %s slot=%v gen=%v", msg, deref(slot), deref(gen)))
	return 1, h.fail
}

func deref(p *int) any {
	if p == nil {
		return "any"
	}
	return *p
}

func (h *fakeHandler) Upgrade(ctx context.Context, wait bool) error {
	h.record(fmt.Sprintf("upgrade wait=%v", wait))
	return h.fail
}

// Scale answers the size it was asked for, from 4 workers.
func (h *fakeHandler) Scale(ctx context.Context, n int, relative, wait bool) (int, error) {
	h.record(fmt.Sprintf("scale %d relative=%v wait=%v", n, relative, wait))
	if relative {
		n += 4
	}
	return n, h.fail
}

// server is Serve running on a fresh control socket.
type server struct {
	path string
	log  bytes.Buffer // written by hclog under its lock; read after stop
	stop func()
}

func startServer(t *testing.T, h Handler) *server {
	t.Helper()
	s := &server{path: filepath.Join(t.TempDir(), "run", "sockd.sock")}
	ln, err := Listen(s.path)
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Output: &s.log, Level: hclog.Debug})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Serve(ctx, ln, h, log)
		close(done)
	}()
	var once sync.Once
	s.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(s.stop)
	return s
}

// raw sends b on a connection of its own and returns the answer line.
func raw(t *testing.T, path string, b []byte) Response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The server may answer and close before it has read everything; the
	// answer is still there to read.
	c.Write(b)
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer to %.40q…: %v", b, err)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("answer %q: %v", line, err)
	}
	return r
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	// Its own directory is made, not a tree (a mistyped RUNTIME_DIRECTORY
	// must not leave directories at the root).
	if _, err := Listen(filepath.Join(dir, "x", "y", "sockd.sock")); err == nil || !strings.Contains(err.Error(), "that exists") {
		t.Fatalf("Listen two directories deep: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Listen left %s/x: %v", dir, err)
	}
	path := filepath.Join(dir, "a", "sockd.sock")
	checkFDs := fdtest.Track(t, "control sockets closed")
	umask := unix.Umask(0o022)
	ln, err := Listen(path)
	if got := unix.Umask(umask); got != 0o022 {
		t.Errorf("umask %#o after Listen, want it restored to 0022", got)
	}
	if err != nil {
		t.Fatalf("Listen in a directory that does not exist yet: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v, %v; want a socket with mode 0600", fi.Mode(), err)
	}
	// A live socket is refused, and left alone.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use by another sockd") {
		t.Fatalf("Listen over a live control socket: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the live socket was touched: %v", err)
	} else {
		c.Close()
	}
	// A stale one (nobody listening) is replaced.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if c, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: dial %v, want ECONNREFUSED", err)
	} else if c != nil {
		c.Close()
	}
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replaced socket %v, %v; want mode 0600", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()
	ln.Close()
	checkFDs()
}

// Whatever is at the path and is not a socket stays: a mistyped --control
// must not delete a file.
func TestListenLeavesOtherFilesAlone(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	os.WriteFile(file, []byte("keep me"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for path, what := range map[string]string{file: "regular file", link: "symbolic link", sub: "directory"} {
		ln, err := Listen(path)
		if err == nil {
			ln.Close()
			t.Fatalf("Listen over a %s succeeded", what)
		}
		if !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen over a %s: %v", what, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the file after Listen: %q, %v", b, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link after Listen: %v, %v", fi, err)
	}
}

func TestServeCommands(t *testing.T) {
	checkFDs := fdtest.Track(t, "Serve stopped")
	h := &fakeHandler{status: map[string]any{"generation": 3, "workers": []int{1, 2}}}
	s := startServer(t, h)
	ctx := context.Background()

	resp, err := Call(ctx, s.path, Request{Command: "status"})
	want, _ := json.Marshal(h.status)
	if err != nil || !resp.OK || string(resp.Status) != string(want) {
		t.Fatalf("status: %+v, %v; want status %s", resp, err, want)
	}
	big := "BIG=" + strings.Repeat("x", 200<<10) // an environment larger than a small request
	for _, req := range []Request{{Command: "reload", Wait: true}, {Command: "reload"}, {Command: "reload", Wait: true, Env: []string{"A=1", "B=two words"}},
		{Command: "reload", Env: []string{big}}, {Command: "upgrade", Wait: true}, {Command: "upgrade"}} {
		if resp, err := Call(ctx, s.path, req); err != nil || !resp.OK || resp.Status != nil {
			t.Fatalf("%+v: %+v, %v", req, resp, err)
		}
	}
	one, two := 1, 2
	for _, req := range []Request{{Command: "signal", Signal: "USR1"}, {Command: "signal", Signal: "HUP", Slot: &one, Generation: &two},
		{Command: "send", Message: json.RawMessage(`{"type":"process:msg","topic":"t","data":{"a":1}}`), Slot: &one}} {
		if resp, err := Call(ctx, s.path, req); err != nil || !resp.OK || resp.Workers == 0 {
			t.Fatalf("%+v: %+v, %v", req, resp, err)
		}
	}
	for _, c := range []struct {
		workers string
		want    int
	}{{"6", 6}, {"+2", 6}, {"-1", 3}} {
		if resp, err := Call(ctx, s.path, Request{Command: "scale", Workers: c.workers, Wait: true}); err != nil || !resp.OK || resp.Workers != c.want {
			t.Fatalf("scale %s: %+v, %v", c.workers, resp, err)
		}
	}
	// Refused requests: sockd's reason, and not "unreachable".
	for _, c := range []struct {
		req  Request
		want string
	}{
		{Request{Command: "restart"}, `unknown command "restart" (want status, reload, upgrade, scale, signal, send or logs)`},
		{Request{Command: "signal"}, "which signal"},
		{Request{Command: "send"}, "one JSON value"},
		{Request{Command: "scale", Workers: "0"}, `workers "0"`},
		{Request{Command: "scale", Workers: "many"}, `"many"`},
		{Request{}, `unknown command ""`},
		{Request{Command: "STATUS"}, `unknown command "STATUS"`},
	} {
		resp, err := Call(ctx, s.path, c.req)
		if err == nil || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), c.want) || resp.OK || resp.Error != err.Error() {
			t.Errorf("%+v: %+v, %v; want a refusal mentioning %q", c.req, resp, err, c.want)
		}
	}
	wantCalls := []string{"status", "reload wait=true", "reload wait=false", `reload wait=true env=["A=1" "B=two words"]`,
		fmt.Sprintf("reload wait=false env=%q", []string{big}), "upgrade wait=true", "upgrade wait=false",
		"signal USR1 slot=any gen=any", "signal HUP slot=1 gen=2", `send {"type":"process:msg","topic":"t","data":{"a":1}} slot=1 gen=any`,
		"scale 6 relative=false wait=true", "scale 2 relative=true wait=true", "scale -1 relative=true wait=true"}
	if got := h.Calls(); strings.Join(got, ",") != strings.Join(wantCalls, ",") {
		t.Errorf("handler calls %q, want %q", got, wantCalls)
	}
	s.stop()
	if _, err := os.Stat(s.path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Serve stopped: %v", err)
	}
	if _, err := Call(ctx, s.path, Request{Command: "status"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Call after Serve stopped: %v, want ErrUnreachable", err)
	}
	checkFDs()
}

func TestServeHandlerErrors(t *testing.T) {
	h := &fakeHandler{fail: errors.New("reload to generation 3 failed: worker 0 exited\nbefore it was ready")}
	s := startServer(t, h)
	for _, cmd := range []string{"status", "reload", "upgrade"} {
		resp, err := Call(context.Background(), s.path, Request{Command: cmd})
		// An error with a newline still travels as one line.
		if err == nil || errors.Is(err, ErrUnreachable) || err.Error() != h.fail.Error() || resp.OK {
			t.Errorf("%s: %+v, %v; want the handler's error", cmd, resp, err)
		}
	}
}

func TestServeBadRequests(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h)
	// A request of exactly MaxRequest bytes, newline included, is read.
	req := []byte(`{"command":"status"}`)
	fits := append(append(req, bytes.Repeat([]byte(" "), MaxRequest-len(req)-1)...), '\n')
	if r := raw(t, s.path, fits); !r.OK {
		t.Fatalf("request of %d bytes: %+v", len(fits), r)
	}
	const badRequest = `): want one line of JSON like {"command":"status"}`
	for name, b := range map[string][]byte{
		"one byte too long": append(append(req, bytes.Repeat([]byte(" "), MaxRequest-len(req))...), '\n'),
		"no newline at all": bytes.Repeat([]byte("x"), 4*MaxRequest),
		"not JSON":          []byte("status\n"),
		"two values":        []byte(`{"command":"status"}{"command":"reload"}` + "\n"),
		"wrong type":        []byte(`{"command":"reload","wait":"yes"}` + "\n"),
		"a JSON string":     []byte(`"status"` + "\n"),
		"empty line":        []byte("\n"),
	} {
		if r := raw(t, s.path, b); r.OK || !strings.HasPrefix(r.Error, "bad request (") || !strings.HasSuffix(r.Error, badRequest) || strings.Contains(r.Error, "(EOF)") {
			t.Errorf("%s: %+v", name, r)
		}
	}
	if got := h.Calls(); len(got) != 1 {
		t.Errorf("handler called for bad requests: %q", got)
	}
	// What follows the request line is not read.
	if r := raw(t, s.path, []byte(`{"command":"reload"}`+"\ngarbage")); !r.OK {
		t.Errorf("request followed by more: %+v", r)
	}
}

// setRequestTimeout shortens the request timeout for the rest of the
// test; call it before starting the server.
func setRequestTimeout(t *testing.T, d time.Duration) {
	old := requestTimeout
	requestTimeout = d
	t.Cleanup(func() { requestTimeout = old })
}

func TestSlowClientHitsTheRequestTimeout(t *testing.T) {
	setRequestTimeout(t, 200*time.Millisecond)
	h := &fakeHandler{}
	s := startServer(t, h)
	for _, partial := range []string{"", `{"command":"sta`} {
		// Before the dial: the server's deadline counts from its accept.
		start := time.Now()
		c, err := net.Dial("unix", s.path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(partial))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		elapsed := time.Since(start)
		c.Close()
		if err != nil || !strings.Contains(string(line), "bad request") {
			t.Fatalf("slow client sending %q: %q, %v", partial, line, err)
		}
		if elapsed < requestTimeout {
			t.Errorf("slow client sending %q cut off after %v, before the %v timeout", partial, elapsed, requestTimeout)
		}
	}
	if got := h.Calls(); len(got) != 0 {
		t.Errorf("handler called for slow clients: %q", got)
	}
}

func TestRequestsAreServedConcurrently(t *testing.T) {
	setRequestTimeout(t, 200*time.Millisecond)
	h := &fakeHandler{release: make(chan struct{})}
	s := startServer(t, h)
	waiting := make(chan error, 1)
	go func() {
		_, err := Call(context.Background(), s.path, Request{Command: "reload", Wait: true})
		waiting <- err
	}()
	// While one request waits in its handler, longer than the request
	// timeout (which bounds reading the request only) …
	workertest.Eventually(t, 10*time.Second, "reload reaches the handler", func() bool { return len(h.Calls()) == 1 })
	// … a slow client is cut off and another request is answered.
	c, err := net.Dial("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	c.Close()
	if err != nil || !strings.Contains(string(line), "bad request") {
		t.Fatalf("slow client: %q, %v", line, err)
	}
	if _, err := Call(context.Background(), s.path, Request{Command: "status"}); err != nil {
		t.Fatalf("status while a reload waits: %v", err)
	}
	// Serve, asked to stop, closes the listener (which removes the file)
	// and waits for the request in progress.
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	workertest.Eventually(t, 10*time.Second, "listener closed", func() bool {
		_, err := os.Stat(s.path)
		return os.IsNotExist(err)
	})
	select {
	case err := <-waiting:
		t.Fatalf("reload answered before it was released: %v", err)
	case <-stopped:
		t.Fatal("Serve returned with a request in progress")
	default:
	}
	close(h.release)
	if err := <-waiting; err != nil {
		t.Fatalf("reload: %v", err)
	}
	<-stopped
}

func TestPeerOfAnotherUserIsRefused(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h)
	// Let user nobody reach the socket: the peer check is what must stop
	// it, should the file's mode ever let someone in.
	for _, p := range []string{filepath.Dir(filepath.Dir(filepath.Dir(s.path))), filepath.Dir(filepath.Dir(s.path)), filepath.Dir(s.path)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(s.path, 0o666); err != nil {
		t.Fatal(err)
	}
	// /proc/self/exe leads to the test binary even where nobody cannot
	// look up its directory.
	c := exec.Command("/proc/self/exe")
	c.Env = append(os.Environ(), "CONTROL_TEST_CALL="+s.path, "GORACE=atexit_sleep_ms=0")
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("client as nobody: %v", err)
	}
	var r callResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client said %q: %v", out, err)
	}
	if r.UID != 65534 || r.Unreachable || r.Error != "permission denied" {
		t.Fatalf("client as nobody: %+v; want refused with permission denied", r)
	}
	// Root's own requests still go through.
	if _, err := Call(context.Background(), s.path, Request{Command: "status"}); err != nil {
		t.Fatalf("status as root: %v", err)
	}
	s.stop()
	if got := h.Calls(); len(got) != 1 {
		t.Errorf("handler calls %q; want root's status only", got)
	}
	if log := s.log.String(); !strings.Contains(log, "control request refused") || !strings.Contains(log, "peer_uid=65534") {
		t.Errorf("refusal not logged with the peer's uid:\n%s", log)
	}
}

// fakeSockd listens at a fresh path and handles each connection with
// answer (nil: never accept).
func fakeSockd(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	if answer == nil {
		return path
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadBytes('\n')
			answer(c)
			c.Close()
		}
	}()
	return path
}

func TestCallErrorKinds(t *testing.T) {
	// Checked last, once the fake servers are gone.
	t.Cleanup(fdtest.Track(t, "calls done"))
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	silent := make(chan struct{})
	defer close(silent)
	for _, c := range []struct {
		name        string
		path        string
		unreachable bool
		want        string
	}{
		{"no socket file", filepath.Join(dir, "none.sock"), true, "no such file"},
		{"nobody listening", stale, true, "connection refused"},
		{"closed without an answer", fakeSockd(t, func(net.Conn) {}), true, "no answer"},
		{"half an answer", fakeSockd(t, func(c net.Conn) { c.Write([]byte(`{"ok":tr`)) }), true, "no answer"},
		{"not JSON", fakeSockd(t, func(c net.Conn) { c.Write([]byte("hello\n")) }), false, "bad answer from sockd"},
		{"refused", fakeSockd(t, func(c net.Conn) { c.Write([]byte(`{"ok":false,"error":"upgrade in progress"}` + "\n")) }), false, "upgrade in progress"},
		{"never answers", fakeSockd(t, func(net.Conn) { <-silent }), true, "the status request was sent but no answer came in time (sockd may still carry it out: see sockd status): read unix"},
		{"never accepts", fakeSockd(t, nil), true, "i/o timeout"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := Call(ctx, c.path, Request{Command: "status"})
		cancel()
		if err == nil || errors.Is(err, ErrUnreachable) != c.unreachable || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error mentioning %q, unreachable %v", c.name, err, c.want, c.unreachable)
		}
	}
}

func TestServeReturnsWithTheSocketClosed(t *testing.T) {
	// Serve's Accept fails as soon as Close begins; the descriptor itself
	// is closed a moment later. Serve must not return in between.
	for i := 0; i < 1000; i++ {
		checkFDs := fdtest.Track(t, "Serve returned")
		s := startServer(t, &fakeHandler{})
		s.stop()
		checkFDs()
		if t.Failed() {
			t.Fatalf("after %d servers", i+1)
		}
	}
}

// blockingHandler's Status and Scale wait for their context to end (a
// scale --wait whose new size took effect, waiting for its workers); its
// Reload is refused as a handed-off sockd refuses it.
type blockingHandler struct{ fakeHandler }

func (h *blockingHandler) Status(ctx context.Context) (any, error) {
	h.record("status")
	<-ctx.Done()
	return nil, ctx.Err()
}

func (h *blockingHandler) Scale(ctx context.Context, n int, relative, wait bool) (int, error) {
	h.record("scale")
	<-ctx.Done()
	return 0, ctx.Err()
}

// Logs follows: one record, then nothing until its context ends.
func (h *blockingHandler) Logs(ctx context.Context, c net.Conn, line []byte) error {
	h.record("logs")
	c.Write([]byte(`{"ok":true}` + "\n" + `{"worker":0,"generation":1,"pid":7,"priority":6,"message":"old"}` + "\n"))
	<-ctx.Done()
	return nil
}

func (h *blockingHandler) Reload(ctx context.Context, wait bool, env []string) error {
	h.record("reload")
	return fmt.Errorf("%w; reload refused", ErrHandedOver)
}

// An upgrade's old sockd and new sockd share the control socket. The old
// one closes its listener and ends Serve with ErrHandedOver: the request
// it had not answered gets Retry, and the same request sent again reaches
// the new sockd.
func TestHandOverAnswersRetry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sockd.sock")
	oldLn, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	oldLn.SetUnlinkOnClose(false)
	f, err := oldLn.File()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	newLn := l.(*net.UnixListener)
	log := hclog.NewNullLogger()
	old := &blockingHandler{}
	oldCtx, handOver := context.WithCancelCause(context.Background())
	oldDone := make(chan struct{})
	go func() { Serve(oldCtx, oldLn, old, log); close(oldDone) }()
	status, scale, logs := make(chan Response, 1), make(chan Response, 1), make(chan error, 1)
	go func() { status <- raw(t, path, []byte(`{"command":"status"}`+"\n")) }()
	go func() { scale <- raw(t, path, []byte(`{"command":"scale","workers":"+2","wait":true}`+"\n")) }()
	go func() {
		c, err := net.Dial("unix", path)
		if err != nil {
			logs <- err
			return
		}
		defer c.Close()
		c.Write([]byte(`{"command":"logs","follow":true}` + "\n"))
		var got []string
		err = output.ReadLogs(c, func(r output.Record) error { got = append(got, r.Message); return nil })
		if len(got) != 1 || got[0] != "old" {
			err = fmt.Errorf("records %q, then %w", got, err)
		}
		logs <- err
	}()
	workertest.Eventually(t, 10*time.Second, "status, scale and logs reach the old sockd's handler", func() bool { return len(old.Calls()) == 3 })
	// A refusal because this sockd handed over is retried: nothing was
	// carried out.
	if r := raw(t, path, []byte(`{"command":"reload"}`+"\n")); r.OK || !r.Retry {
		t.Fatalf("reload refused by a handed-off sockd: %+v, want Retry", r)
	}
	// What the old sockd's stopControl does.
	oldLn.Close()
	handOver(ErrHandedOver)
	// A status cut off by the hand-over is asked again; a scale is not:
	// its new size may have taken effect here, and the new sockd took
	// over this one's size.
	if r := <-status; r.OK || !r.Retry {
		t.Fatalf("status cut off by the hand-over: %+v, want Retry", r)
	}
	// A follow ends with a record that says to ask the new sockd.
	if err := <-logs; !errors.Is(err, output.ErrRetry) || !strings.Contains(err.Error(), "handed over") {
		t.Fatalf("logs -f across the hand-over: %v, want output.ErrRetry", err)
	}
	if r := <-scale; r.OK || r.Retry || !strings.Contains(r.Error, "handed over to a new one while the request ran") {
		t.Fatalf("scale cut off by the hand-over: %+v, want an error that says so, without Retry", r)
	}
	<-oldDone
	nw := &fakeHandler{status: "new"}
	newCtx, stopNew := context.WithCancel(context.Background())
	newDone := make(chan struct{})
	go func() { Serve(newCtx, newLn, nw, log); close(newDone) }()
	t.Cleanup(func() { stopNew(); <-newDone })
	r, err := Call(context.Background(), path, Request{Command: "status"})
	if err != nil || string(r.Status) != `"new"` {
		t.Fatalf("status after the hand-over: %+v, %v", r, err)
	}
}

// Call sends a request again while the answer says Retry, at most
// maxRetries times.
func TestCallRetries(t *testing.T) {
	var mu sync.Mutex
	n := 0
	count := func() int { mu.Lock(); defer mu.Unlock(); return n }
	retryOnce := fakeSockd(t, func(c net.Conn) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			c.Write([]byte(`{"ok":false,"error":"this sockd handed over to a new one","retry":true}` + "\n"))
			return
		}
		c.Write([]byte(`{"ok":true,"status":"new"}` + "\n"))
	})
	r, err := Call(context.Background(), retryOnce, Request{Command: "status"})
	if err != nil || string(r.Status) != `"new"` || count() != 2 {
		t.Fatalf("Call: %+v, %v after %d connections; want the second one's answer", r, err, count())
	}
	var calls sync.WaitGroup
	calls.Add(1 + maxRetries)
	always := fakeSockd(t, func(c net.Conn) {
		c.Write([]byte(`{"ok":false,"error":"this sockd handed over to a new one","retry":true}` + "\n"))
		calls.Done()
	})
	if _, err := Call(context.Background(), always, Request{Command: "status"}); err == nil || !strings.Contains(err.Error(), "handed over") {
		t.Fatalf("Call on a sockd that always says Retry: %v", err)
	}
	calls.Wait() // exactly 1+maxRetries: one more would panic the WaitGroup
}

// A request that waits is asked again while sockd answers busy (a reload
// under way), until it goes through; one that does not wait gets the
// refusal at once.
func TestCallWaitsWhileBusy(t *testing.T) {
	var n atomic.Int32
	path := fakeSockd(t, func(c net.Conn) {
		if n.Add(1) <= 3 {
			c.Write([]byte(`{"ok":false,"error":"sockd is reloading; upgrade when it is running","busy":true}` + "\n"))
			return
		}
		c.Write([]byte(`{"ok":true}` + "\n"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Call(ctx, path, Request{Command: "upgrade"}); err == nil || !strings.Contains(err.Error(), "reloading") || n.Load() != 1 {
		t.Fatalf("without wait: %v after %d requests, want the refusal at once", err, n.Load())
	}
	if _, err := Call(ctx, path, Request{Command: "upgrade", Wait: true}); err != nil || n.Load() != 4 {
		t.Fatalf("with wait: %v after %d requests, want success at the fourth", err, n.Load())
	}
	// Busy for good: the waiting request ends with its context.
	n.Store(-1 << 30)
	short, cancel2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel2()
	if _, err := Call(short, path, Request{Command: "upgrade", Wait: true}); err == nil || !strings.Contains(err.Error(), "reloading") {
		t.Fatalf("busy until the deadline: %v", err)
	}
}

// handle marks a refusal wrapped with Busy, and only that.
func TestHandleBusy(t *testing.T) {
	for _, c := range []struct {
		err  error
		busy bool
	}{{Busy(errors.New("sockd is reloading")), true}, {fmt.Errorf("tagged: %w", Busy(errors.New("x"))), true}, {errors.New("no"), false}} {
		if r := handle(context.Background(), errHandler{&fakeHandler{}, c.err}, Request{Command: "upgrade"}); r.Busy != c.busy || r.OK {
			t.Errorf("%v: %+v, want busy %v", c.err, r, c.busy)
		}
	}
}

type errHandler struct {
	*fakeHandler
	err error
}

func (h errHandler) Upgrade(context.Context, bool) error { return h.err }

// A socket that is not a sockd's and answers without end (no newline):
// the client stops reading at MaxResponse and says so, instead of
// growing until the machine runs out of memory.
func TestCallBoundsTheAnswer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flood.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		chunk := bytes.Repeat([]byte("A"), 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Call(ctx, path, Request{Command: "status"})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("Call against a flood: %v", err)
	}
}

// PeerUID refuses a socket whose listener is another user's (a socket
// swapped between finding it and calling it), before a request goes out.
func TestCallCheckedPeerUID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b, _ := bufio.NewReader(c).ReadBytes('\n')
		got <- b
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = CallChecked(ctx, path, Request{Command: "reload"}, PeerUID(os.Getuid()+1))
	if err == nil || !strings.Contains(err.Error(), "not the sockd's") {
		t.Fatalf("CallChecked against another uid's listener: %v", err)
	}
	if b := <-got; len(b) != 0 {
		t.Fatalf("the request went out anyway: %q", b)
	}
}

// causeHandler's Scale waits for its context and says why it ended.
type causeHandler struct {
	fakeHandler
	cause chan error
}

func (h *causeHandler) Scale(ctx context.Context, n int, relative, wait bool) (int, error) {
	<-ctx.Done()
	h.cause <- context.Cause(ctx)
	return 0, ctx.Err()
}

// A scale --wait whose client hangs up stops waiting (ErrClientGone); one
// whose client only shut down its writing side is still waited for.
func TestScaleWaitEndsWhenTheClientHangsUp(t *testing.T) {
	h := &causeHandler{cause: make(chan error, 2)}
	s := startServer(t, h)
	send := func() *net.UnixConn {
		t.Helper()
		c, err := net.Dial("unix", s.path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(`{"command":"scale","workers":"+1","wait":true}` + "\n")); err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	half := send()
	defer half.Close()
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	gone := send()
	gone.Close()
	select {
	case err := <-h.cause:
		if !errors.Is(err, ErrClientGone) {
			t.Fatalf("the wait ended by %v, want ErrClientGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait of a client that hung up did not end")
	}
	// The half-closed client's wait goes on until the server stops.
	select {
	case err := <-h.cause:
		t.Fatalf("the half-closed client's wait ended: %v", err)
	case <-time.After(600 * time.Millisecond):
	}
	s.stop()
	if err := <-h.cause; errors.Is(err, ErrClientGone) {
		t.Fatalf("the half-closed client's wait ended by %v", err)
	}
}
