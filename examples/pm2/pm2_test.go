// Package pm2 is an app written for PM2 cluster mode (app.js), run under
// sockd with --ready node-ipc and --stop-signal INT.
package pm2

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

func nodePath(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/setup installs Debian's nodejs)")
	}
	return node
}

// app.js becomes ready through process.send('ready') on Node's IPC channel
// and reloads under load with no failed request, stopped by SIGINT as PM2
// would stop it.
func TestPM2AppUnderSockd(t *testing.T) {
	script, err := filepath.Abs("app.js")
	if err != nil {
		t.Fatal(err)
	}
	p, url := pooltest.Start(t, pool.Config{
		Command: []string{nodePath(t), script}, Workers: 2, Ready: pool.ReadyRule{NodeIPC: true},
		ReadyTimeout: 20 * time.Second, StopTimeout: 20 * time.Second, StopSignal: unix.SIGINT,
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
	t.Logf("3 reloads of a PM2 app under sockd: %s", stats)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed: %v", stats.Errors, stats.Samples)
	}
	s, _ := p.Status(context.Background())
	if s.Generation != 4 || s.Ready != 2 {
		t.Fatalf("after 3 reloads: %+v", s)
	}
}

// Without the "ready" message a worker is not ready: --ready node-ipc
// waits for it (and a node that never sends it fails the reload).
func TestNodeIPCWithoutReadyMessage(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "silent.js")
	// Listens, never says ready, sends other messages; has no 'message'
	// listener, so it must still exit on SIGTERM by itself.
	os.WriteFile(script, []byte(`
const http = require('http');
const s = http.createServer((q, r) => r.end('x'));
s.listen({fd: 3}, () => { process.send({hello: 'world'}); process.send('not ready'); process.send('x'.repeat(100000)); });
process.on('SIGTERM', () => s.close());
`), 0o644)
	p, _ := pooltest.Run(t, pool.Config{
		Command: []string{nodePath(t), script}, Workers: 1, Ready: pool.ReadyRule{NodeIPC: true},
		ReadyTimeout: 2 * time.Second, StopTimeout: 10 * time.Second,
		RestartLimit: pool.RestartLimit{Burst: 1, Period: time.Minute},
	})
	select {
	case <-p.Ready():
		t.Fatal("ready without the ready message")
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("pool neither ready nor given up")
	}
	if err := p.Wait(); err == nil {
		t.Fatal("pool of never-ready workers did not give up")
	} else if want := "not ready within 2s, then exit status 0"; !strings.Contains(err.Error(), want) {
		t.Fatalf("gave up: %v, want %q (the worker exits on its own after SIGTERM)", err, want)
	}
}
