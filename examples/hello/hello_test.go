package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary doubles as hello: sockd's pool runs it with
// HELLO_TEST_WORKER=1, through sockd's LISTEN_PID trampoline.
func TestMain(m *testing.M) {
	pool.Trampoline()
	if os.Getenv("HELLO_TEST_WORKER") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hello runs under sockd's pool, answers with its pid, slot and
// generation, and reloads under load without losing a request.
func TestHelloUnderSockd(t *testing.T) {
	ls, err := activation.Bind(context.Background(), []activation.Spec{{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	p, err := pool.New(pool.Options{
		Command: []string{os.Args[0]}, Listeners: ls, Workers: 2, StopTimeout: 10 * time.Second,
		Env: append(os.Environ(), "HELLO_TEST_WORKER=1", "GORACE=atexit_sleep_ms=0"),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	select {
	case <-p.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("hello workers not ready (READY=1) in 20s")
	}
	url := "http://" + ls[0].Addr + "/"
	check := func(resp *http.Response, body []byte) error {
		h := resp.Header
		want := fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n", h.Get("X-Sockd-Pid"), h.Get("X-Sockd-Worker"), h.Get("X-Sockd-Generation"))
		if string(body) != want || h.Get("X-Sockd-Pid") == "" || h.Get("X-Sockd-Generation") == "" {
			return fmt.Errorf("body %q, headers %v", body, h)
		}
		return nil
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := check(resp, body); err != nil || resp.Header.Get("X-Sockd-Generation") != "1" {
		t.Fatalf("first answer: %v (generation %q)", err, resp.Header.Get("X-Sockd-Generation"))
	}
	load := workertest.StartLoad(workertest.LoadConfig{URL: url, KeepAlive: 4, NewConns: 4, Sporadic: 2, Check: check})
	load.WaitOK(t, 100, 20*time.Second)
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := p.Reload(ctx)
		cancel()
		if err != nil {
			load.Stop()
			t.Fatalf("reload %d: %v", i+1, err)
		}
		load.WaitOK(t, 50, 20*time.Second)
	}
	stats := load.Stop()
	t.Logf("5 reloads of hello under load: %s", stats)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed: %v", stats.Errors, stats.Samples)
	}
}
