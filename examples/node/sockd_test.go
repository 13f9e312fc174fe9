package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker/workertest"
)

// Pools in these tests start node through sockd's LISTEN_PID trampoline,
// which is this test binary re-executed.
func TestMain(m *testing.M) {
	pool.Trampoline()
	os.Exit(m.Run())
}

// server.js under sockd itself, as README shows it: two copies on one
// socket, ready when they say READY=1 (through systemd-notify, since Node
// cannot send unix datagrams), reloaded three times under load without a
// failed request.
func TestServerJSUnderSockd(t *testing.T) {
	node := nodePath(t)
	script, err := filepath.Abs("server.js")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := activation.Bind(context.Background(), []activation.Spec{{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		t.Skip("systemd-notify is not installed: server.js cannot say READY=1")
	}
	p, err := pool.New(pool.Options{
		Command: []string{node, script}, Listeners: ls, Workers: 2, ReadyTimeout: 20 * time.Second,
		StopTimeout: 20 * time.Second, Env: append(os.Environ(), "IDLE_GRACE_MS=1000"),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	select {
	case <-p.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("node workers not ready in 20s")
	}
	url := "http://" + ls[0].Addr + "/"
	gens := map[string]bool{}
	check := func(resp *http.Response, body []byte) error {
		h := resp.Header
		want := fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n", h.Get("X-Sockd-Pid"), h.Get("X-Sockd-Worker"), h.Get("X-Sockd-Generation"))
		if string(body) != want {
			return fmt.Errorf("body %q, headers %v", body, h)
		}
		return nil
	}
	load := workertest.StartLoad(workertest.LoadConfig{URL: url, KeepAlive: 4, NewConns: 2, Sporadic: 2, Check: check})
	load.WaitOK(t, 100, 20*time.Second)
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := p.Reload(ctx)
		cancel()
		if err != nil {
			load.Stop()
			t.Fatalf("reload %d: %v", i+1, err)
		}
		load.WaitOK(t, 50, 20*time.Second)
	}
	stats := load.Stop()
	t.Logf("3 reloads of server.js under sockd: %s", stats)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed: %v", stats.Errors, stats.Samples)
	}
	s, _ := p.Status(context.Background())
	for _, w := range s.Workers {
		gens[fmt.Sprint(w.Generation)] = true
	}
	if s.Generation != 4 || !gens["4"] {
		t.Fatalf("after 3 reloads: %+v", s)
	}
}
