package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/pool"
)

// The binaries the sockd tests install and run inside the sandbox, built
// once per test binary (static, CGO_ENABLED=0) into a directory that every
// sandbox binds.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries returns the directory holding sockd and loadclient, building
// them on first use. It skips (loudly) where the sandbox cannot run.
func binaries(t *testing.T) string {
	t.Helper()
	SkipUnlessCapable(t)
	buildOnce.Do(func() {
		begin := time.Now()
		buildDir, buildErr = os.MkdirTemp("", "sockd-e2e-bin-")
		if buildErr != nil {
			return
		}
		root := RepoRoot(t)
		for _, b := range []struct{ out, pkg string }{{"sockd", "./cmd/sockd"}, {"loadclient", "./e2e/internal/loadclient"}} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=e2e", "-o", filepath.Join(buildDir, b.out), b.pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
		t.Logf("built sockd and loadclient in %v", time.Since(begin).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// sockdSandbox is a booted sandbox with sockd installed by scripts/install.
type sockdSandbox struct {
	*Sandbox
	bin string // host directory of the binaries, bound at the same path
}

// installed boots a sandbox and runs scripts/install inside with the
// freshly built binary (and extra install arguments), then writes the
// given files (drop-ins, configuration) and reloads systemd.
func installed(t *testing.T, files map[string]string, installArgs ...string) *sockdSandbox {
	t.Helper()
	bin := binaries(t)
	sb := &sockdSandbox{Sandbox: Start(t, bin), bin: bin}
	args := append([]string{filepath.Join(sb.RepoRoot, "scripts", "install"), "--binary", filepath.Join(bin, "sockd")}, installArgs...)
	out := sb.MustRun(t, args...)
	t.Logf("scripts/install:\n%s", strings.TrimSpace(out))
	if len(files) > 0 {
		names := make([]string, 0, len(files))
		for name := range files {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			sb.WriteFile(t, name, []byte(files[name]))
		}
		sb.MustRun(t, "systemctl", "daemon-reload")
	}
	return sb
}

// e2eDropIn configures sockd.service for the tests the way an admin would,
// with a drop-in: 3 workers, and the demo worker's HELLO_CONFIG (which a
// test turns "broken" to simulate a bad deploy).
func e2eDropIn(extra string) map[string]string {
	return map[string]string{
		"/etc/systemd/system/sockd.service.d/50-e2e.conf": "[Service]\nEnvironment=SOCKD_WORKERS=3 HELLO_CONFIG=/etc/sockd/hello.conf\n" + extra,
		"/etc/sockd/hello.conf":                           "greeting = hello\n",
	}
}

// props returns `systemctl show` properties of unit.
func (sb *sockdSandbox) props(t *testing.T, unit string, names ...string) map[string]string {
	t.Helper()
	out := sb.MustRun(t, "systemctl", "show", unit, "-p", strings.Join(names, ","))
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (sb *sockdSandbox) prop(t *testing.T, unit, name string) string {
	t.Helper()
	return sb.props(t, unit, name)[name]
}

func (sb *sockdSandbox) mainPID(t *testing.T, unit string) int {
	t.Helper()
	n, _ := strconv.Atoi(sb.prop(t, unit, "MainPID"))
	return n
}

// status runs `sockd status --json` inside (control "" means the default,
// /run/sockd/sockd.sock for root).
func (sb *sockdSandbox) status(t *testing.T, control string) (pool.Status, error) {
	t.Helper()
	args := []string{"/usr/local/bin/sockd", "status", "--json", "--timeout", "5s"}
	if control != "" {
		args = append(args, "--control", control)
	}
	out, err := sb.Run(t, args...)
	var s pool.Status
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("sockd status --json: %v in %q", err, out)
	}
	return s, nil
}

func (sb *sockdSandbox) mustStatus(t *testing.T, control string) pool.Status {
	t.Helper()
	s, err := sb.status(t, control)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitServing waits until sockd (at control) serves generation gen with
// every one of its workers ready and no reload under way.
func (sb *sockdSandbox) waitServing(t *testing.T, control string, gen, workers int) pool.Status {
	t.Helper()
	var s pool.Status
	WaitFor(t, 20*time.Second, func() (bool, string) {
		var err error
		if s, err = sb.status(t, control); err != nil {
			return false, err.Error()
		}
		return s.State == pool.StateRunning && s.Generation == gen && s.Ready == workers && len(s.Workers) == workers,
			fmt.Sprintf("state %s, generation %d, %d/%d ready, %d workers", s.State, s.Generation, s.Ready, s.Size, len(s.Workers))
	})
	return s
}

func workerPIDs(s pool.Status) []int {
	var pids []int
	for _, w := range s.Workers {
		pids = append(pids, w.PID)
	}
	sort.Ints(pids)
	return pids
}

// answer is one request made from inside the sandbox on a new connection
// (loadclient -once).
type answer struct {
	Generation, PID int
	ConnAt          time.Time     // when its connection began to connect
	Waited          time.Duration // from then to the end of the answer
	Kind            load.Kind
	Err             string
}

// once sends one request from inside the sandbox on a new connection.
func (sb *sockdSandbox) once(t *testing.T, addr string) answer {
	t.Helper()
	q, err := sb.tryOnce(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// tryOnce is once without failing the test (for goroutines).
func (sb *sockdSandbox) tryOnce(t *testing.T, addr string) (answer, error) {
	out, err := sb.Run(t, filepath.Join(sb.bin, "loadclient"), "-once", "-addr", addr, "-timeout", "10s")
	var r load.Report
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || len(r.Records) != 1 {
		return answer{}, fmt.Errorf("loadclient -once: %v (output %q, %v)", jerr, out, err)
	}
	rec := r.Records[0]
	q := answer{Generation: int(rec.Gen), PID: int(rec.PID), ConnAt: r.At(rec.Conn), Waited: rec.End() - rec.Conn, Kind: rec.Kind, Err: rec.Err}
	if err != nil || rec.Kind != load.OK {
		return q, fmt.Errorf("request to %s from inside the sandbox failed: %+v (%v)", addr, q, err)
	}
	return q, nil
}

// proc is what /proc/PID/stat says of a process.
type proc struct {
	pid, ppid int
	state     string
	start     uint64 // starttime, in clock ticks since boot: tells a reused pid apart
}

// procs reads /proc/PID/stat inside the sandbox for each pid; missing pids
// are absent from the map.
func (sb *sockdSandbox) procs(t *testing.T, pids ...int) map[int]proc {
	t.Helper()
	args := []string{"sh", "-c", `for p; do s=$(cat /proc/$p/stat 2>/dev/null) && echo "$s"; done; true`, "sh"}
	for _, p := range pids {
		args = append(args, strconv.Itoa(p))
	}
	out := sb.MustRun(t, args...)
	m := map[int]proc{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		// pid (comm) state ppid ... field 22 is starttime; comm may hold anything, so split after the last ')'.
		i := strings.LastIndexByte(line, ')')
		if i < 0 {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(line[:i])[0])
		f := strings.Fields(line[i+1:])
		if len(f) < 20 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		start, _ := strconv.ParseUint(f[19], 10, 64)
		m[pid] = proc{pid: pid, ppid: ppid, state: f[0], start: start}
	}
	return m
}

// running returns the processes among want that still run: present in /proc
// with the same start time and in a state other than zombie (Z) or dead (X).
func (sb *sockdSandbox) running(t *testing.T, want map[int]proc) []proc {
	t.Helper()
	var pids []int
	for pid := range want {
		pids = append(pids, pid)
	}
	var alive []proc
	for pid, p := range sb.procs(t, pids...) {
		if p.start == want[pid].start && p.state != "Z" && p.state != "X" {
			alive = append(alive, p)
		}
	}
	return alive
}

// cgroupPIDs lists the processes in unit's cgroup (nil once it is gone).
func (sb *sockdSandbox) cgroupPIDs(t *testing.T, unit, cgroup string) []int {
	t.Helper()
	if cgroup == "" {
		cgroup = sb.prop(t, unit, "ControlGroup")
	}
	if cgroup == "" {
		return nil
	}
	out := sb.MustRun(t, "sh", "-c", `for d in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
		f=$d$1/cgroup.procs; if [ -r "$f" ]; then cat "$f"; exit 0; fi; done`, "sh", cgroup)
	var pids []int
	for _, f := range strings.Fields(out) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	sort.Ints(pids)
	return pids
}

// journal returns unit's journal entries (journalctl -u UNIT -o json).
func (sb *sockdSandbox) journal(t *testing.T, args ...string) []JournalEntry {
	t.Helper()
	entries, err := sb.Journal(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// loadRun is a loadclient running inside the sandbox.
type loadRun struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	cancel context.CancelFunc
}

// syncBuffer is a strings.Builder safe for the goroutine exec copies into
// it and a test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLoad starts loadclient inside with args and waits until it has had
// its first answer.
func (sb *sockdSandbox) startLoad(t *testing.T, args ...string) *loadRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := sb.Command(ctx, append([]string{filepath.Join(sb.bin, "loadclient")}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &loadRun{cmd: cmd, stdin: stdin, lines: make(chan string, 4), stderr: &syncBuffer{}, cancel: cancel}
	cmd.Stderr = l.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	select {
	case line := <-l.lines:
		if line != "running" {
			t.Fatalf("loadclient said %q, want running; stderr: %s", line, l.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("loadclient got no answer within 15s; stderr: %s", l.stderr)
	}
	return l
}

// stop ends the load (closes its stdin), waits for the requests in flight
// and returns the report.
func (l *loadRun) stop(t *testing.T) *load.Report {
	t.Helper()
	l.stdin.Close()
	var r load.Report
	select {
	case line, ok := <-l.lines:
		if !ok {
			t.Fatalf("loadclient printed no report; stderr: %s", l.stderr)
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("loadclient report: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("loadclient did not stop within 30s; stderr: %s", l.stderr)
	}
	if err := l.cmd.Wait(); err != nil {
		t.Errorf("loadclient: %v; stderr: %s", err, l.stderr)
	}
	return &r
}

// summary is one line about a load report.
func summary(r *load.Report) string {
	st := r.Summary
	secs := r.Duration.Seconds()
	gens := make([]int32, 0, len(st.Gens))
	for g := range st.Gens {
		gens = append(gens, g)
	}
	slices.Sort(gens)
	var parts []string
	for _, g := range gens {
		parts = append(parts, fmt.Sprintf("g%d:%d", g, st.Gens[g].Requests))
	}
	return fmt.Sprintf("%d requests in %.1fs (%.0f/s), %d failed %v, %d connections, %d closed by a draining worker, %d idle ones found closed; by generation %s",
		st.Requests, secs, float64(st.Requests)/secs, st.Failed, st.Kinds(), r.Conns, r.ServerClosed, r.IdleClosed, strings.Join(parts, " "))
}

func describeFailures(r *load.Report, max int) string {
	var b strings.Builder
	for i, f := range r.Failures {
		if i == max {
			fmt.Fprintf(&b, "  … %d more\n", len(r.Failures)-max)
			break
		}
		fmt.Fprintf(&b, "  client %d (%s) %s at %s: %s (connection begun %s, request #%d on it)\n", f.Client, f.Mode, f.Kind,
			r.At(f.Start).Format("15:04:05.000000"), f.Err, r.At(f.Conn).Format("15:04:05.000000"), f.Reused)
	}
	return b.String()
}
