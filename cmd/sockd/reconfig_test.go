package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
)

// fullStatus is status --json with the configuration in force.
func (d *daemonProc) fullStatus() daemon.Status {
	d.t.Helper()
	var out bytes.Buffer
	if code := sockd([]string{"status", "--json", "--control", d.control}, &out, io.Discard); code != 0 {
		d.t.Fatalf("status exit %d", code)
	}
	var s daemon.Status
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

// environOf reads a live process's environment.
func environOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	m, err := readEnviron(pid)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readEnviron(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

func cmdlineOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// Standalone, the documented way: --env-file FILE, edited, then a reload.
// The new generation runs the edited settings, command line and
// variables with no failed request; an invalid edit is refused with one
// line and nothing changes; a removed variable is gone from the next
// generation.
func TestReloadAppliesEditedEnvFile(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	self := os.Args[0]
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(envFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("SOCKD_WORKERS=2\nAPP_COLOR=blue\nOLD_ONLY=1\nDB_PASSWORD=hunter2\nSOCKD_COMMAND=%s demo-worker --delay 1ms\n", self))
	d := startSockd(t, nil, "--env-file", envFile, "--listen", "tcp://127.0.0.1:0")
	before := d.fullStatus()
	if before.Size != 2 || before.Config.Revision == "" || before.Revision != before.Config.Revision {
		t.Fatalf("at start: %+v", before)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := load.Start(ctx, load.Config{Addr: d.mustStatus().Listeners[0].Address, KeepAlive: 2, Fresh: 2, Sporadic: 1, Careful: true})

	write(fmt.Sprintf("SOCKD_WORKERS=3\nAPP_COLOR=green\nDB_PASSWORD=swordfish\nSOCKD_COMMAND=%s demo-worker --delay 2ms\n", self))
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
		t.Fatalf("reload exit %d: %s", code, out.String())
	}
	waitFor(t, 20*time.Second, "3 workers of the new generation", func() bool {
		s := d.mustStatus()
		return s.Size == 3 && s.Ready == 3 && len(s.Workers) == 3 && s.Generation == before.Generation+1
	})
	after := d.fullStatus()
	for _, w := range after.Workers {
		env := environOf(t, w.PID)
		if env["APP_COLOR"] != "green" || env["DB_PASSWORD"] != "swordfish" {
			t.Fatalf("worker %d: APP_COLOR=%q DB_PASSWORD=%q", w.Slot, env["APP_COLOR"], env["DB_PASSWORD"])
		}
		if _, ok := env["OLD_ONLY"]; ok {
			t.Fatalf("worker %d still has OLD_ONLY", w.Slot)
		}
		if c := cmdlineOf(t, w.PID); strings.Join(c[1:], " ") != "demo-worker --delay 2ms" {
			t.Fatalf("worker %d runs %q", w.Slot, c)
		}
	}
	changes := strings.Join(after.Config.Changes, "\n")
	for _, want := range []string{`--workers "2" → "3"`, `APP_COLOR "blue" → "green"`, "DB_PASSWORD changed", `OLD_ONLY "1" removed`, "--delay 2ms"} {
		if !strings.Contains(changes, want) {
			t.Errorf("status's last changes lack %q:\n%s", want, changes)
		}
	}
	if strings.Contains(changes, "swordfish") || strings.Contains(changes, "hunter2") || strings.Contains(d.out.String(), "swordfish") {
		t.Error("a secret's value was shown")
	}
	if after.Config.Revision == before.Config.Revision || after.Revision != after.Config.Revision {
		t.Errorf("revision %s → %s (pool: %s)", before.Config.Revision, after.Config.Revision, after.Revision)
	}

	// An invalid edit: refused with one line naming the setting, and the
	// workers, their number and their environment stay as they are.
	write("SOCKD_WORKERS=lots\nAPP_COLOR=red\n")
	out.Reset()
	code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out)
	msg := strings.TrimSpace(out.String())
	if code == 0 || !strings.Contains(msg, `SOCKD_WORKERS="lots"`) || strings.Count(msg, "\n") != 0 {
		t.Fatalf("invalid edit: exit %d, %q", code, msg)
	}
	// The same without --wait (a SIGHUP): refused at once.
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the refusal logged twice", func() bool {
		return strings.Count(d.out.String(), "config_refused") >= 2
	})
	refused := d.fullStatus()
	if refused.Generation != after.Generation || refused.Size != 3 || !strings.Contains(refused.Config.Refused, "SOCKD_WORKERS") ||
		refused.LastReload == nil || refused.LastReload.OK || !strings.Contains(refused.Summary, "invalid configuration") {
		t.Fatalf("after an invalid edit: %+v", refused)
	}
	for i, w := range refused.Workers {
		if w.PID != after.Workers[i].PID || environOf(t, w.PID)["APP_COLOR"] != "green" {
			t.Fatalf("workers changed after an invalid edit: %+v", refused.Workers)
		}
	}

	// A valid configuration whose workers fail before they are ready: the
	// reload rolls back, and the configuration in force stays the old one.
	broken := filepath.Join(dir, "hello.conf")
	os.WriteFile(broken, []byte("broken\n"), 0o644)
	write(fmt.Sprintf("SOCKD_WORKERS=3\nAPP_COLOR=purple\nHELLO_CONFIG=%s\nSOCKD_COMMAND=%s demo-worker --delay 2ms\n", broken, self))
	out.Reset()
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code == 0 || !strings.Contains(out.String(), "still serving") {
		t.Fatalf("bad deploy: exit %d, %s", code, out.String())
	}
	if s := d.fullStatus(); s.Config.Revision != after.Config.Revision || s.Revision != after.Config.Revision || s.Ready != 3 ||
		environOf(t, slotOf(s.Status, 0).PID)["APP_COLOR"] != "green" {
		t.Fatalf("after a rolled-back reload: %+v", s)
	}

	// A listener is sockd's own: changing it needs a restart, and says so.
	write(fmt.Sprintf("SOCKD_WORKERS=3\nSOCKD_REUSEPORT=true\nSOCKD_COMMAND=%s demo-worker\n", self))
	out.Reset()
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code == 0 || !strings.Contains(out.String(), "--reuseport changed") || !strings.Contains(out.String(), "restart sockd") ||
		strings.Contains(out.String(), "socket unit") {
		t.Fatalf("reuseport change: exit %d, %s", code, out.String())
	}

	cancel()
	res := run.Wait()
	if f := res.Failures(); len(f) > 0 {
		t.Fatalf("%d of %d requests failed during the reloads, first: %+v", len(f), len(res.Records), f[0])
	}
	if len(res.Records) < 10 {
		t.Fatalf("only %d requests", len(res.Records))
	}
}

// A reload client's environment (sockd reload --update-env, the units'
// ExecReload=): the new generation runs with it, but for the variables a
// process has of its own, which stay sockd's.
func TestReloadUpdateEnv(t *testing.T) {
	d := startSockd(t, []string{"APP_MODE=one", "SOCKD_WORKERS=1"}, "--listen", "tcp://127.0.0.1:0")
	first := d.mustStatus().Workers[0]
	cmd, out := sockdCmd(t, []string{"APP_MODE=two", "SOCKD_WORKERS=2", "MAINPID=4242", "JOURNAL_STREAM=1:2"}, "reload", "--wait", "--update-env", "--control", d.control)
	if err := cmd.Run(); err != nil {
		t.Fatalf("reload --update-env: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, "2 new workers", func() bool {
		s := d.mustStatus()
		return s.Ready == 2 && len(s.Workers) == 2 && s.Workers[0].PID != first.PID
	})
	for _, w := range d.mustStatus().Workers {
		env := environOf(t, w.PID)
		if env["APP_MODE"] != "two" || env["MAINPID"] == "4242" || env["JOURNAL_STREAM"] == "1:2" {
			t.Fatalf("worker %d: APP_MODE=%q MAINPID=%q JOURNAL_STREAM=%q", w.Slot, env["APP_MODE"], env["MAINPID"], env["JOURNAL_STREAM"])
		}
	}
	// A plain reload afterwards keeps what --update-env brought.
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatal("plain reload failed")
	}
	waitFor(t, 20*time.Second, "the plain reload's workers", func() bool {
		s := d.mustStatus()
		return s.Ready == 2 && len(s.Workers) == 2 && procfs.Alive(s.Workers[0].PID) && environOf(t, s.Workers[0].PID)["APP_MODE"] == "two"
	})
}

// sockd upgrade keeps what reloads and scaling put in force: the
// environment a reload client handed over (--update-env, the units'
// ExecReload=) reaches the new sockd and its workers, and a size set
// with sockd scale survives a later reload that changes something else.
func TestUpgradeKeepsTheReloadedEnvironmentAndTheScaledSize(t *testing.T) {
	d := startSockd(t, []string{"APP_MODE=one"}, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	reload := func(env ...string) {
		t.Helper()
		cmd, out := sockdCmd(t, env, "reload", "--wait", "--update-env", "--control", d.control)
		if err := cmd.Run(); err != nil {
			t.Fatalf("reload --update-env: %v\n%s", err, out)
		}
	}
	workers := func(what string, n int, env string) {
		t.Helper()
		waitFor(t, 20*time.Second, what, func() bool {
			s, err := d.status()
			if err != nil || s.Size != n || s.Ready != n || len(s.Workers) != n {
				return false
			}
			for _, w := range s.Workers {
				if m, err := readEnviron(w.PID); err != nil || m["APP_MODE"] != env {
					return false
				}
			}
			return true
		})
	}
	reload("APP_MODE=two")
	workers("the reload's worker with APP_MODE=two", 1, "two")
	if code := sockd([]string{"scale", "--wait", "--control", d.control, "2"}, io.Discard, io.Discard); code != 0 {
		t.Fatal("scale 2 failed")
	}
	workers("2 workers", 2, "two")
	old := d.mustStatus().PID
	var errb bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
	}
	s := d.mustStatus()
	if s.PID == old {
		t.Fatal("the old sockd still answers after upgrade --wait")
	}
	if m, err := readEnviron(s.PID); err != nil || m["APP_MODE"] != "two" {
		t.Fatalf("the new sockd's APP_MODE %q (%v), want the reload's", m["APP_MODE"], err)
	}
	workers("the new sockd's 2 workers with APP_MODE=two", 2, "two")
	// A reload that changes something else keeps the scaled size.
	reload("APP_MODE=three")
	workers("2 workers with APP_MODE=three after the reload", 2, "three")
}

// A reload cannot change the workers' user (their directory, with the
// notify socket and the Node preload, is that user's alone): it is
// refused at once, says to restart, and the workers keep their user.
func TestReloadRefusesAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("--user needs root")
	}
	envFile := filepath.Join(t.TempDir(), "sockd.env")
	os.WriteFile(envFile, []byte("SOCKD_USER=nobody\n"), 0o644)
	d := startInstalled(t, worldExecutableCopy(t), "--env-file", envFile, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	before := d.mustStatus()
	os.WriteFile(envFile, []byte("SOCKD_USER=daemon\n"), 0o644)
	var out bytes.Buffer
	start := time.Now()
	code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out)
	if code != exitFailed || !strings.Contains(out.String(), "--user changed") || !strings.Contains(out.String(), "restart sockd") {
		t.Fatalf("reload to another user: exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), out.String())
	}
	s := d.mustStatus()
	if s.Generation != before.Generation || len(s.Workers) != 1 || s.Workers[0].PID != before.Workers[0].PID {
		t.Fatalf("after the refused reload: %+v", s)
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", s.Workers[0].PID)); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("the worker's uid: %v", err)
	}
}

// A SIGHUP whose reload hangs reading the configuration (an env file
// that became a FIFO nobody writes) does not hold up a SIGTERM after it.
func TestStopWhileAReloadReadsTheConfiguration(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "sockd.env")
	os.WriteFile(envFile, []byte("APP_MODE=one\n"), 0o644)
	d := startSockd(t, nil, "--env-file", envFile, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	os.Remove(envFile)
	if err := syscall.Mkfifo(envFile, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload to begin", func() bool { return strings.Contains(d.out.String(), "signal=hangup") })
	d.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sockd after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		// Open the FIFO's other end so that sockd can go on, and fail.
		if f, err := os.OpenFile(envFile, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		<-exited
		t.Fatal("sockd did not stop on SIGTERM while a reload read a FIFO")
	}
}

// The first generation after an upgrade takes a number no generation had
// before, not that of a reload that was rolled back: journal fields,
// "[w0 g3]" prefixes and metrics labels never mix two deploys.
func TestUpgradeAfterAFailedReloadTakesANewGeneration(t *testing.T) {
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	cmd, out := sockdCmd(t, []string{"SOCKD_READY_TIMEOUT=1s", "SOCKD_COMMAND=sleep 60"}, "reload", "--wait", "--update-env", "--control", d.control)
	if err := cmd.Run(); err == nil {
		t.Fatalf("a reload to workers that are never ready succeeded: %s", out)
	}
	s := d.mustStatus()
	if s.Generation != 1 || s.LastReload == nil || s.LastReload.Generation != 2 || s.LastReload.OK {
		t.Fatalf("after the failed reload: generation %d, last reload %+v", s.Generation, s.LastReload)
	}
	var errb bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
	}
	if s := d.mustStatus(); s.Generation != 3 {
		t.Fatalf("after the upgrade: generation %d, want 3 (2 was the failed reload's)", s.Generation)
	}
}

// A changed --listen is refused by a reload like any restart setting, and
// the refusal says that under systemd the socket unit's listeners are its
// own; other restart settings do not get that hint.
func TestReloadRefusesAChangedListener(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "app.env")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(envFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("SOCKD_WORKERS=1\nSOCKD_LISTEN=http=tcp://127.0.0.1:0\n")
	d := startSockd(t, nil, "--env-file", envFile)
	write("SOCKD_WORKERS=1\nSOCKD_LISTEN=http=tcp://127.0.0.1:1\n")
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code == 0 || !strings.Contains(out.String(), "--listen changed") ||
		!strings.Contains(out.String(), "restart the socket and the service") {
		t.Fatalf("listen change: exit %d, %s", code, out.String())
	}
}
