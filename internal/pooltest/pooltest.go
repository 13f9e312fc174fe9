// Package pooltest runs a sockd pool on a fresh loopback socket for the
// tests of programs that are meant to run under sockd (the examples).
// The test binary must call pool.Trampoline() first thing in TestMain.
package pooltest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/pool"
)

// Start binds 127.0.0.1:0, starts a pool of cfg on it, waits until every
// worker is ready and stops the pool at the end of the test. It returns
// the pool and the URL of the socket.
func Start(t *testing.T, cfg pool.Config) (*pool.Pool, string) {
	t.Helper()
	p, url := Run(t, cfg)
	select {
	case <-p.Ready():
	case <-p.Done():
		t.Fatalf("pool stopped before it was ready: %v", p.Wait())
	case <-time.After(20 * time.Second):
		t.Fatal("workers not ready (READY=1) within 20s")
	}
	return p, url
}

// Run is Start without waiting for the workers.
func Run(t *testing.T, cfg pool.Config) (*pool.Pool, string) {
	t.Helper()
	ls, err := activation.Bind(context.Background(), []activation.Spec{{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	p, err := pool.New(cfg, pool.Deps{Listeners: ls})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil && !errors.Is(err, pool.ErrRestartLimit) {
			t.Errorf("shutdown: %v", err)
		}
	})
	return p, "http://" + ls[0].Addr + "/"
}

// Reload reloads p, at most a minute.
func Reload(t *testing.T, p *pool.Pool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return p.Reload(ctx, nil)
}

// CheckHello checks an answer of the hello protocol the examples speak:
// "hello from pid=P worker=W generation=G\n" with the same values in
// X-Sockd-Pid, X-Sockd-Worker and X-Sockd-Generation.
func CheckHello(resp *http.Response, body []byte) error {
	h := resp.Header
	want := fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n", h.Get("X-Sockd-Pid"), h.Get("X-Sockd-Worker"), h.Get("X-Sockd-Generation"))
	if string(body) != want || h.Get("X-Sockd-Pid") == "" || h.Get("X-Sockd-Generation") == "" {
		return fmt.Errorf("body %q, headers %v", body, h)
	}
	return nil
}
