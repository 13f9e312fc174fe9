package main

import (
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/pooltest"
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
	p, url := pooltest.Start(t, pool.Config{
		Command: []string{os.Args[0]}, Workers: 2, StopTimeout: 10 * time.Second,
		Env: append(os.Environ(), "HELLO_TEST_WORKER=1", "GORACE=atexit_sleep_ms=0"),
	})
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := pooltest.CheckHello(resp, body); err != nil || resp.Header.Get("X-Sockd-Generation") != "1" {
		t.Fatalf("first answer: %v (generation %q)", err, resp.Header.Get("X-Sockd-Generation"))
	}
	load := workertest.StartLoad(workertest.LoadConfig{URL: url, KeepAlive: 4, NewConns: 4, Sporadic: 2, Check: pooltest.CheckHello})
	load.WaitOK(t, 100, 20*time.Second)
	for i := 0; i < 5; i++ {
		if err := pooltest.Reload(t, p); err != nil {
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
