package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/pooltest"
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
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		t.Skip("systemd-notify is not installed: server.js cannot say READY=1")
	}
	script, err := filepath.Abs("server.js")
	if err != nil {
		t.Fatal(err)
	}
	p, url := pooltest.Start(t, pool.Config{
		Command: []string{node, script}, Workers: 2, ReadyTimeout: 20 * time.Second,
		StopTimeout: 20 * time.Second, Env: append(os.Environ(), "IDLE_GRACE_MS=1000"),
	})
	load := workertest.StartLoad(workertest.LoadConfig{URL: url, KeepAlive: 4, NewConns: 2, Sporadic: 2, Check: pooltest.CheckHello})
	load.WaitOK(t, 100, 20*time.Second)
	for i := 0; i < 3; i++ {
		if err := pooltest.Reload(t, p); err != nil {
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
	if s.Generation != 4 || s.Ready != 2 || s.Workers[0].Generation != 4 {
		t.Fatalf("after 3 reloads: %+v", s)
	}
}
