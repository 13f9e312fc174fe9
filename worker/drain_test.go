package worker

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

// startDrainer serves h in-process; drainStarted is closed by OnDrain.
func startDrainer(t *testing.T, h http.Handler, opts Options) (d *Drainer, addr string, drainStarted chan struct{}) {
	t.Helper()
	l := workertest.Listen(t)
	drainStarted = make(chan struct{})
	opts.OnDrain = func() { close(drainStarted) }
	d = NewDrainer(&http.Server{Handler: h}, opts)
	d.Start([]net.Listener{l})
	<-d.Ready()
	return d, l.Addr().String(), drainStarted
}

// rawConn is a client connection driven by hand, to control timing.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{c, bufio.NewReader(c)}
}

func (c *rawConn) get(t *testing.T) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// expectEOF checks that the server closed the connection.
func (c *rawConn) expectEOF(t *testing.T) {
	t.Helper()
	if b, err := c.r.ReadByte(); err == nil {
		t.Fatalf("read %q, want the server to close the connection", b)
	}
}

func drainAsync(d *Drainer, timeout time.Duration) chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- d.Drain(ctx)
	}()
	return done
}

// TestDrainAnswersIdleConnection: a keep-alive connection idle when the
// drain starts is not closed under its client; its next request is served
// with "Connection: close", then the server closes it.
func TestDrainAnswersIdleConnection(t *testing.T) {
	const grace = 10 * time.Second
	d, addr, started := startDrainer(t, http.HandlerFunc(helperHandler), Options{IdleGrace: grace})
	c := dialRaw(t, addr)
	if resp := c.get(t); resp.Close {
		t.Fatal("response before the drain says Connection: close")
	}
	begin := time.Now()
	done := drainAsync(d, time.Minute)
	<-started
	resp := c.get(t)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request during drain: status %d, close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	c.expectEOF(t)
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if took := time.Since(begin); took >= grace {
		t.Errorf("drain took %v, waiting out the grace for a connection that was answered", took)
	}
	if d.Requests() != 2 {
		t.Errorf("Requests() = %d, want 2", d.Requests())
	}
}

// TestDrainClosesIdleAfterGrace: connections that stay idle (after a
// request, or accepted without one) are closed once the grace is over.
func TestDrainClosesIdleAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	d, addr, _ := startDrainer(t, http.HandlerFunc(helperHandler), Options{IdleGrace: grace})
	idle := dialRaw(t, addr)
	idle.get(t)
	fresh := dialRaw(t, addr)
	workertest.Eventually(t, 5*time.Second, "two connections tracked", func() bool {
		return d.conns.Open() == 2
	})
	begin := time.Now()
	if err := <-drainAsync(d, time.Minute); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("drain took %v, closing idle connections before the %v grace", took, grace)
	}
	idle.expectEOF(t)
	fresh.expectEOF(t)
}

// TestDrainDeadline: a request still running at the deadline makes Drain
// close its connection and return an error.
func TestDrainDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})
	d, addr, _ := startDrainer(t, h, Options{})
	c := dialRaw(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	err := <-drainAsync(d, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "1 connections open") {
		t.Fatalf("Drain = %v, want a deadline error with 1 connection open", err)
	}
	c.expectEOF(t)
}
