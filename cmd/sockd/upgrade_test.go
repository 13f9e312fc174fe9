package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// installCopy puts a copy of this test binary (which is also sockd) where a
// test can replace it, as a deploy replaces /usr/local/bin/sockd.
func installCopy(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "sockd")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceBinary swaps the file at path atomically (rename), leaving the
// running process's inode alone.
func replaceBinary(t *testing.T, path string, content []byte) {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startInstalled(t *testing.T, bin string, args ...string) *daemonProc {
	t.Helper()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, append([]string{"run", "--control", ctl, "--stop-timeout", "5s"}, args...)...)
	cmd.Path = bin
	cmd.Args[0] = bin
	return launch(t, cmd, out, ctl)
}

func TestUpgradeUnderLoadLosesNothing(t *testing.T) {
	bin := installCopy(t)
	d := startInstalled(t, bin, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	before := d.mustStatus()
	// A status connection may still be open for a moment: take the
	// smallest of a few readings.
	oldFDs, _ := procfs.FDs(before.PID)
	for i := 0; i < 10; i++ {
		if fds, _ := procfs.FDs(before.PID); len(fds) < len(oldFDs) {
			oldFDs = fds
		}
	}
	load := workertest.StartLoad(workertest.LoadConfig{URL: d.url(), KeepAlive: 4, NewConns: 4, Sporadic: 2})
	load.WaitOK(t, 200, 20*time.Second)
	var stderr bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr); code != 0 {
		load.Stop()
		t.Fatalf("upgrade --wait: exit %d: %s", code, stderr.String())
	}
	// The old sockd drains its workers and exits 0. (Process.Wait: the
	// output pipe stays open in the new sockd, which inherited it.)
	if st, err := d.cmd.Process.Wait(); err != nil || !st.Success() {
		load.Stop()
		t.Fatalf("old sockd after the upgrade: %v %v", st, err)
	}
	load.WaitOK(t, 200, 20*time.Second)
	stats := load.Stop()
	after := d.mustStatus()
	t.Logf("upgrade under load: %s; sockd pid %d → %d", stats, before.PID, after.PID)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed across the upgrade: %v", stats.Errors, stats.Samples)
	}
	if after.PID == before.PID || after.Generation != before.Generation+1 || after.Listeners[0].Address != before.Listeners[0].Address {
		t.Fatalf("after upgrade: %+v", after)
	}
	for _, w := range before.Workers {
		if procfs.Alive(w.PID) {
			t.Errorf("old worker %d still running", w.PID)
		}
	}
	var newFDs []int
	waitFor(t, 5*time.Second, "the new sockd's fd count to match the old one's", func() bool {
		newFDs, _ = procfs.FDs(after.PID)
		return len(newFDs) <= len(oldFDs)
	})
	// And the new sockd reloads and answers as usual.
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("reload after upgrade: exit %d", code)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(d.url())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if g := resp.Header.Get("X-Sockd-Generation"); g != "3" {
		t.Fatalf("generation %q after upgrade + reload, want 3", g)
	}
}

func TestBrokenUpgradeKeepsOldSockdServing(t *testing.T) {
	bin := installCopy(t)
	d := startInstalled(t, bin, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--reload-timeout", "1s")
	before := d.mustStatus()
	for _, c := range []struct{ script, want string }{
		{"#!/bin/sh\necho 'sockd: broken build' >&2\nexit 1\n", "exited before it was ready"},
		{"#!/bin/sh\nexec sleep 60\n", "not ready in time"},
	} {
		replaceBinary(t, bin, []byte(c.script))
		var stderr bytes.Buffer
		code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr)
		if code != exitFailed || !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "old sockd keeps serving") {
			t.Fatalf("upgrade to a broken binary: exit %d, %q", code, stderr.String())
		}
		s := d.mustStatus()
		if s.PID != before.PID || s.Generation != before.Generation || s.Ready != 2 {
			t.Fatalf("after a failed upgrade: %+v", s)
		}
		if g := getGen(t, d.url()); g != "1" {
			t.Fatalf("generation %q serves after a failed upgrade", g)
		}
	}
	if procfs.Alive(before.PID) != true {
		t.Fatal("old sockd died")
	}
}
