// Package e2e boots a throwaway, fully isolated systemd for end-to-end tests.
//
// Start boots systemd (via scripts/systemd-sandbox) as PID 1 of fresh mount,
// pid, net, uts, ipc and cgroup namespaces over a tmpfs overlay of /, with the
// repository checkout bind-mounted read-only at its own path, and powers it off
// again in t.Cleanup. Commands run inside with Run/MustRun/Command. See
// README.md in this directory.
//
// Start skips the test, loudly, when the machine cannot boot the sandbox (not
// Linux, not root, missing unshare/nsenter/setpriv/systemd); set
// SOCKD_E2E_REQUIRE=1 to make that a failure instead (CI).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	modulePath = "github.com/sockd/sockd"
	systemdBin = "/lib/systemd/systemd"
	// RequireEnv, when set to 1, turns "cannot run the sandbox here" skips into failures.
	RequireEnv = "SOCKD_E2E_REQUIRE"
)

// Sandbox is a running systemd sandbox. Its fields are read-only.
type Sandbox struct {
	// StateDir is the sandbox's state directory on the host (pid files,
	// console.log, mount points).
	StateDir string
	// PID is the host pid of the sandbox's PID 1 (systemd).
	PID int
	// RepoRoot is the repository checkout, bind-mounted read-only at the same
	// path inside the sandbox.
	RepoRoot string
	// Cgroups are the host cgroup directories created for the sandbox (one
	// per cgroup hierarchy); down removes them.
	Cgroups []string
	// RunTimeout bounds each Run/MustRun (default 2 minutes).
	RunTimeout time.Duration

	script   string
	stopOnce sync.Once
	stopErr  error
}

// Start boots a sandbox for t and registers its teardown with t.Cleanup.
// binds are host directories (or files) made visible read-write at the same
// paths inside, e.g. a directory of freshly built binaries; the repository
// root is always bound read-only.
func Start(t testing.TB, binds ...string) *Sandbox {
	t.Helper()
	SkipUnlessCapable(t)
	root := RepoRoot(t)
	script := filepath.Join(root, "scripts", "systemd-sandbox")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("e2e: sandbox script missing: %v", err)
	}
	// Not t.TempDir: the name must be short and free of ',' and ':' (it ends
	// up in overlayfs mount options).
	state, err := os.MkdirTemp("", "sockd-sandbox-")
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(state) }) // runs after the teardown below

	args := []string{"up", state, "--bind-ro", root, "--owner-pid", strconv.Itoa(os.Getpid())}
	for _, b := range binds {
		abs, err := filepath.Abs(b)
		if err != nil {
			t.Fatalf("e2e: bind %q: %v", b, err)
		}
		args = append(args, "--bind", abs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	if err := cmd.Run(); err != nil {
		console, _ := os.ReadFile(filepath.Join(state, "console.log"))
		_ = exec.Command(script, "down", state).Run()
		t.Fatalf("e2e: systemd-sandbox up failed: %v\nstderr: %s\nconsole.log: %s",
			err, strings.TrimSpace(stderr.String()), tail(string(console), 40))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(stdout.String()))
	if err != nil || pid <= 1 {
		_ = exec.Command(script, "down", state).Run()
		t.Fatalf("e2e: systemd-sandbox up printed %q, want the host pid of the sandbox's PID 1", stdout.String())
	}
	s := &Sandbox{StateDir: state, PID: pid, RepoRoot: root, RunTimeout: 2 * time.Minute, script: script}
	if data, err := os.ReadFile(filepath.Join(state, "cgroups")); err == nil {
		s.Cgroups = strings.Fields(string(data))
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("e2e: sandbox teardown: %v", err)
		}
	})
	t.Logf("e2e: systemd sandbox up in %v (PID 1 = host pid %d, state %s)", time.Since(begin).Round(time.Millisecond), pid, state)
	return s
}

// Stop powers the sandbox off, waits for its PID 1 to disappear and removes its
// cgroups. It is idempotent; Start registers it with t.Cleanup.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, s.script, "down", s.StateDir).CombinedOutput()
		if err != nil {
			s.stopErr = fmt.Errorf("systemd-sandbox down: %v: %s", err, strings.TrimSpace(string(out)))
			return
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", s.PID)); !errors.Is(err, fs.ErrNotExist) {
			s.stopErr = fmt.Errorf("sandbox PID 1 (host pid %d) still exists after down", s.PID)
		}
	})
	return s.stopErr
}

// Command returns a command that runs args inside the sandbox (all of its
// namespaces, its root, cwd /, PATH=/usr/local/sbin:...:/bin, clean
// environment; use "env K=V cmd" for variables). The caller wires up
// stdin/stdout/stderr and runs it. Commands still running at teardown are
// killed.
func (s *Sandbox) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, s.script, append([]string{"exec", s.StateDir, "--"}, args...)...)
}

// Run runs args inside the sandbox and returns its stdout. A non-zero exit is
// an error that includes the exit status and stderr.
func (s *Sandbox) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return s.RunInput(t, nil, args...)
}

// RunInput is Run with stdin.
func (s *Sandbox) RunInput(t testing.TB, stdin []byte, args ...string) (string, error) {
	t.Helper()
	if len(args) == 0 {
		return "", errors.New("e2e: Run: no command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.RunTimeout)
	defer cancel()
	cmd := s.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", s.RunTimeout, err)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("sandbox %q: %w; stderr: %s", args, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustRun is Run that fails the test on error.
func (s *Sandbox) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.Run(t, args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s", err, out)
	}
	return out
}

// WriteFile writes data to path inside the sandbox (e.g. a unit file under
// /run/systemd/system), creating parent directories.
func (s *Sandbox) WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if _, err := s.RunInput(t, data, "sh", "-c", `mkdir -p "$(dirname "$1")" && cat >"$1"`, "sh", path); err != nil {
		t.Fatalf("e2e: write %s: %v", path, err)
	}
}

// JournalEntry is one record of `journalctl -o json`. Values are strings,
// except binary or repeated fields, which journalctl renders as arrays.
type JournalEntry map[string]any

// Field returns a string field ("" if missing or not a string).
func (e JournalEntry) Field(name string) string {
	v, _ := e[name].(string)
	return v
}

// Journal runs `journalctl -o json --no-pager ARGS...` inside and parses it.
func (s *Sandbox) Journal(t testing.TB, args ...string) ([]JournalEntry, error) {
	t.Helper()
	out, err := s.Run(t, append([]string{"journalctl", "-o", "json", "--no-pager"}, args...)...)
	if err != nil {
		return nil, err
	}
	var entries []JournalEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line == "-- No entries --" {
			continue
		}
		var e JournalEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return entries, fmt.Errorf("journalctl -o json: %v in %q", err, line)
		}
		entries = append(entries, e)
	}
	return entries, sc.Err()
}

// WaitFor polls cond (every 50ms) until it returns true or timeout passes, and
// then fails the test with the last status cond returned.
func WaitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v; last status: %s", timeout, status)
		}
		<-tick.C
	}
}

// RepoRoot returns the repository checkout containing the test's working
// directory (the directory of this module's go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.Contains(string(data), "module "+modulePath+"\n") {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("e2e: no go.mod of %s above %s", modulePath, dir)
		}
	}
}

// SkipUnlessCapable skips t (fails it with SOCKD_E2E_REQUIRE=1) unless this
// machine can boot a sandbox. Start calls it; call it first in tests that do
// expensive set-up (builds) before Start.
func SkipUnlessCapable(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case runtime.GOOS != "linux":
		why = "needs Linux (systemd, namespaces, cgroups), GOOS=" + runtime.GOOS
	case os.Geteuid() != 0:
		why = fmt.Sprintf("needs root to boot systemd in fresh namespaces (euid %d); run the e2e tests as root", os.Geteuid())
	default:
		for _, tool := range []string{"unshare", "nsenter", "setpriv", "findmnt", "mount", "umount", "pivot_root", "timeout", "tail"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = "needs " + tool + " in PATH (util-linux, coreutils)"
				break
			}
		}
		if why == "" {
			if _, err := os.Stat(systemdBin); err != nil {
				why = "needs systemd installed (" + systemdBin + ": " + err.Error() + ")"
			}
		}
		if why == "" {
			why = namespaceProbe()
		}
	}
	if why == "" {
		return
	}
	msg := "e2e: SKIPPING systemd sandbox test: " + why
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(msg + " (" + RequireEnv + "=1)")
	}
	t.Skip(msg)
}

var (
	probeOnce sync.Once
	probeWhy  string
)

// namespaceProbe creates, once per test binary, the namespaces the sandbox
// needs (unshare(1) with the flags scripts/systemd-sandbox uses): root
// without CAP_SYS_ADMIN, as in many containers, cannot. It returns why
// not, or "".
func namespaceProbe() string {
	probeOnce.Do(func() {
		out, err := exec.Command("unshare", "--mount", "--pid", "--fork", "--net", "--uts", "--ipc", "--cgroup", "true").CombinedOutput()
		if err != nil {
			probeWhy = fmt.Sprintf("cannot create mount, pid, net, uts, ipc and cgroup namespaces (unshare: %v: %s); needs CAP_SYS_ADMIN",
				err, strings.TrimSpace(string(out)))
		}
	})
	return probeWhy
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
