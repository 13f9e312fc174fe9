package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/http1"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// pythonParser finds Debian's python3 with prometheus_client (scripts/setup
// installs python3-prometheus-client): the scrapes are checked by a real
// parser, not by this code's own idea of the format.
func pythonParser(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import prometheus_client").Run() == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("python3 with prometheus_client is missing (scripts/setup installs python3-prometheus-client)")
	}
	t.Skip("SKIPPING: python3 with prometheus_client is missing (apt-get install python3-prometheus-client)")
	return ""
}

// sampleKey is a sample's name and labels, as the parser gives them.
type parsed map[string]float64 // "name{a=x,b=y}" (labels sorted) → value

const parseScript = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families as text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
data = sys.stdin.read()
parse = om if sys.argv[1] == "om" else text
out = {}
for fam in parse(data):
    for s in fam.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
json.dump(out, sys.stdout)
`

// scrape GETs /metrics from the unix socket at path and parses it with
// prometheus_client, as text or as OpenMetrics.
func scrape(t *testing.T, python, path string, openMetrics bool) parsed {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	h := map[string]string{}
	mode := "text"
	if openMetrics {
		h["Accept"] = "application/openmetrics-text; version=1.0.0"
		mode = "om"
	}
	code, body, err := http1.Get(c, "sockd", "/metrics", h, 64<<20)
	if err != nil || code != 200 {
		t.Fatalf("scrape: %d %v", code, err)
	}
	cmd := exec.Command(python, "-c", parseScript, mode)
	cmd.Stdin = strings.NewReader(string(body))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("prometheus_client cannot parse the %s scrape: %v\n%s\n--- scrape:\n%s", mode, err, out, body)
	}
	var p parsed
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// count counts the samples of name.
func (p parsed) count(name string) int {
	n := 0
	for k := range p {
		if strings.HasPrefix(k, name+"{") {
			n++
		}
	}
	return n
}

// Scraped with a real Prometheus parser, in both formats: sockd counts a
// crash, a reload and a rolled-back reload; the workers' own metrics come
// with their slot and generation; per-worker series stay as many as there
// are workers, reload after reload.
func TestMetricsScrape(t *testing.T) {
	python := pythonParser(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "hello.conf")
	os.WriteFile(conf, []byte("ok\n"), 0o644)
	msock := filepath.Join(dir, "metrics.sock")
	d := startSockd(t, []string{"HELLO_CONFIG=" + conf}, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--metrics", "unix://"+msock, "--name", "shop")
	for _, om := range []bool{false, true} {
		p := scrape(t, python, msock, om)
		for _, want := range []string{"sockd_generation{}", "sockd_workers{state=ready}", "sockd_workers_target{}", "sockd_uptime_seconds{}",
			"sockd_worker_starts_total{}", "sockd_reloads_total{result=done}", "sockd_worker_ready_seconds_count{}", "process_resident_memory_bytes{}",
			"sockd_info{name=shop}"} {
			if _, ok := p[want]; !ok {
				t.Fatalf("openmetrics=%v: no %s in %v", om, want, p)
			}
		}
		if p["sockd_workers{state=ready}"] != 2 || p["sockd_workers_target{}"] != 2 {
			t.Fatalf("workers: %v", p)
		}
	}
	// The workers' own metrics, with their labels.
	waitFor(t, 10*time.Second, "both workers' own metrics", func() bool {
		return scrape(t, python, msock, false).count("hello_requests_total") == 2
	})
	for _, w := range d.mustStatus().Workers {
		key := fmt.Sprintf("hello_requests_total{generation=%d,pid=%d,slot=%d}", w.Generation, w.PID, w.Slot)
		if _, ok := scrape(t, python, msock, false)[key]; !ok {
			t.Fatalf("no %s", key)
		}
	}
	// A crash.
	victim := d.mustStatus().Workers[0]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "the crash counted and the worker replaced", func() bool {
		p := scrape(t, python, msock, false)
		return p["sockd_worker_restarts_total{reason=crash}"] == 1 && p["sockd_worker_exits_total{reason=crash}"] == 1 && p["sockd_workers{state=ready}"] == 2
	})
	// A reload, and one rolled back.
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("reload: exit %d", code)
	}
	os.WriteFile(conf, []byte("broken\n"), 0o644)
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != exitFailed {
		t.Fatalf("broken reload: exit %d", code)
	}
	p := scrape(t, python, msock, true)
	if p["sockd_reloads_total{result=done}"] != 1 || p["sockd_reloads_total{result=rolled_back}"] != 1 || p["sockd_reload_duration_seconds_count{}"] != 1 {
		t.Fatalf("reloads not counted: %v", p)
	}
	// Twenty more reloads: per-worker series are the live workers' only.
	os.WriteFile(conf, []byte("ok\n"), 0o644)
	for i := 0; i < 20; i++ {
		if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
			t.Fatalf("reload %d: exit %d", i, code)
		}
	}
	waitFor(t, 20*time.Second, "the retired workers gone", func() bool { return len(d.mustStatus().Workers) == 2 })
	p = scrape(t, python, msock, false)
	if n := p.count("sockd_worker_ready"); n != 2 {
		t.Fatalf("after 22 reloads %d sockd_worker_ready series for 2 workers", n)
	}
	if n := p.count("sockd_worker_uptime_seconds"); n != 2 {
		t.Fatalf("after 22 reloads %d sockd_worker_uptime_seconds series for 2 workers", n)
	}
}

// The accept-queue gauge rises while the workers are stopped (SIGSTOP) and
// connections arrive, and falls once they go on.
func TestMetricsQueueDepth(t *testing.T) {
	python := pythonParser(t)
	msock := filepath.Join(t.TempDir(), "metrics.sock")
	d := startSockd(t, nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0", "--metrics", "unix://"+msock)
	st := d.mustStatus()
	for _, w := range st.Workers {
		syscall.Kill(w.PID, syscall.SIGSTOP)
	}
	for _, w := range st.Workers { // stopped, not about to be
		waitFor(t, 10*time.Second, fmt.Sprintf("worker %d stopped", w.PID), func() bool {
			state, _, _ := procfs.Stat(w.PID)
			return state == 'T'
		})
	}
	defer func() {
		for _, w := range st.Workers {
			syscall.Kill(w.PID, syscall.SIGCONT)
		}
	}()
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", st.Listeners[0].Address)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	p := scrape(t, python, msock, false)
	if q := p["sockd_listener_queue_depth{listener=http,socket=0}"]; q != 10 {
		t.Fatalf("queue depth %v with 10 connections waiting for stopped workers: %v", q, p)
	}
	if l := p["sockd_listener_queue_limit{listener=http,socket=0}"]; l < 10 {
		t.Fatalf("queue limit %v", l)
	}
	for _, w := range st.Workers {
		syscall.Kill(w.PID, syscall.SIGCONT)
	}
	waitFor(t, 10*time.Second, "the queue drained", func() bool {
		return scrape(t, python, msock, false)["sockd_listener_queue_depth{listener=http,socket=0}"] == 0
	})
}

// A worker whose metrics endpoint hangs does not stall the scrape beyond
// its timeout, nor fail it: it is left out, and says so.
func TestMetricsHungWorkerEndpoint(t *testing.T) {
	python := pythonParser(t)
	msock := filepath.Join(t.TempDir(), "metrics.sock")
	d := startSockd(t, []string{"HELLO_METRICS_HANG=1"}, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--metrics", "unix://"+msock)
	waitFor(t, 10*time.Second, "the workers listening on their metrics sockets", func() bool {
		for _, w := range d.mustStatus().Workers {
			if fi, err := os.Stat(w.MetricsSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
				return false
			}
		}
		return true
	})
	start := time.Now()
	p := scrape(t, python, msock, false)
	took := time.Since(start)
	if p["sockd_workers{state=ready}"] != 2 || p.count("hello_requests_total") != 0 || p.count("sockd_worker_metrics_up") != 2 {
		t.Fatalf("scrape with hung workers: %v", p)
	}
	for k, v := range p {
		if strings.HasPrefix(k, "sockd_worker_metrics_up{") && v != 0 {
			t.Fatalf("%s = %v for a hung endpoint", k, v)
		}
	}
	// The endpoints were reached and hung: the scrape waited for them,
	// the 2s sockd allows each (all at once), and not much longer.
	if took < 2*time.Second || took > 10*time.Second {
		t.Fatalf("the scrape took %s", took)
	}
	t.Logf("scrape with 2 hung worker endpoints took %s (each waited at most 2s)", took.Round(time.Millisecond))
}

// inTmux runs script in a tmux session of cols × rows on a tmux server of
// its own (a real terminal) and returns a function that runs tmux commands
// on that server, and the session's name. The server is killed when the
// test ends.
func inTmux(t *testing.T, script string, cols, rows int) (tm func(args ...string) (string, error), session string) {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux is missing (scripts/setup installs it)")
		}
		t.Skip("SKIPPING: tmux is not installed")
	}
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	session = fmt.Sprintf("sockd-%d", os.Getpid())
	tm = func(args ...string) (string, error) {
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := tm("new-session", "-d", "-s", session, "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), "sh", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { tm("kill-server") })
	return tm, session
}

// sockd top in a real terminal (tmux): it shows the workers' pids, and q
// ends it with exit status 0.
func TestTopInATerminal(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	dir := t.TempDir()
	status := filepath.Join(dir, "exit")
	script := fmt.Sprintf("SOCKDTEST_MAIN=1 %q top --interval 200ms --control %q; echo $? > %q", os.Args[0], d.control, status)
	tm, session := inTmux(t, script, 160, 40)
	var pane string
	waitFor(t, 20*time.Second, "top showing both workers", func() bool {
		pane, _ = tm("capture-pane", "-p", "-t", session)
		for _, w := range d.mustStatus().Workers {
			if !strings.Contains(pane, strconv.Itoa(w.PID)) {
				return false
			}
		}
		return strings.Contains(pane, "RECENT EVENTS") && strings.Contains(pane, "2/2 workers ready")
	})
	t.Logf("sockd top in tmux:\n%s", pane)
	if _, err := tm("send-keys", "-t", session, "q"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "top exited", func() bool {
		b, err := os.ReadFile(status)
		return err == nil && len(b) > 0
	})
	if b, _ := os.ReadFile(status); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("top exited %s after q", b)
	}
	if s := d.mustStatus(); s.State != pool.StateRunning {
		t.Fatalf("sockd after top: %+v", s)
	}
}

// sockd top in a terminal too small for its table: the header stays on
// the first line and the cut says so; after a resize (SIGWINCH) it redraws
// at once at the new size, though its next refresh is an hour away.
func TestTopFitsAndFollowsTheTerminal(t *testing.T) {
	d := startSockd(t, nil, "--workers", "16", "--listen", "tcp://127.0.0.1:0")
	waitFor(t, 20*time.Second, "16 workers ready", func() bool { return d.mustStatus().Ready == 16 })
	script := fmt.Sprintf("SOCKDTEST_MAIN=1 %q top --interval 1h --control %q", os.Args[0], d.control)
	tm, session := inTmux(t, script, 60, 12)
	var pane string
	waitFor(t, 20*time.Second, "top drawn in 60x12", func() bool {
		pane, _ = tm("capture-pane", "-p", "-t", session)
		return strings.Contains(pane, "more lines: a taller terminal shows them")
	})
	lines := strings.Split(strings.TrimRight(pane, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "sockd pid ") || len(lines) != 11 {
		t.Fatalf("in 60x12: first line %q, %d lines (want the header first, 11 lines):\n%s", lines[0], len(lines), pane)
	}
	if _, err := tm("resize-window", "-t", session, "-x", "120", "-y", "50"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "top redrawn in 120x50 with every worker", func() bool {
		pane, _ = tm("capture-pane", "-p", "-t", session)
		if strings.Contains(pane, "more lines") || !strings.Contains(pane, "RECENT EVENTS") {
			return false
		}
		for _, w := range d.mustStatus().Workers {
			if !strings.Contains(pane, strconv.Itoa(w.PID)) {
				return false
			}
		}
		return true
	})
	if first := strings.SplitN(pane, "\n", 2)[0]; !strings.HasPrefix(first, "sockd pid ") {
		t.Fatalf("after the resize, first line %q:\n%s", first, pane)
	}
}

// sockd top -n 1 (a health script's one look): the rates are there, not
// "-": top takes a first sample silently and draws the second.
func TestTopOnceShowsRates(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	for i := 0; i < 5; i++ {
		getGen(t, d.url())
	}
	var out bytes.Buffer
	if code := sockd([]string{"top", "-n", "1", "--control", d.control}, &out, &out); code != 0 {
		t.Fatalf("top exit %d: %s", code, out.String())
	}
	rows := 0
	for _, w := range d.mustStatus().Workers {
		for _, line := range strings.Split(out.String(), "\n") {
			f := strings.Fields(line)
			if len(f) >= 9 && f[2] == strconv.Itoa(w.PID) {
				rows++
				if _, err := strconv.ParseFloat(f[5], 64); err != nil {
					t.Errorf("CPU%% of worker %d is %q:\n%s", w.PID, f[5], out.String())
				}
			}
		}
	}
	if rows != 2 {
		t.Fatalf("%d worker rows:\n%s", rows, out.String())
	}
}

// docs/reference.md's Python example, as it stands there: a worker that
// runs it serves its prometheus_client metrics on SOCKD_METRICS_SOCKET, and
// sockd's scrape has them with the worker's labels.
func TestDocsPythonMetricsExample(t *testing.T) {
	python := pythonParser(t)
	b, err := os.ReadFile("../../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "```python\n# Python, prometheus_client\n")
	snippet, _, ok2 := strings.Cut(after, "```\n")
	if !ok || !ok2 {
		t.Fatal("docs/reference.md has no Python prometheus_client example")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "worker.py")
	os.WriteFile(script, []byte(snippet+`
from prometheus_client import Counter
Counter("docs_example_hits", "Hits.").inc(3)
threading.Event().wait()
`), 0o644)
	msock := filepath.Join(dir, "metrics.sock")
	startSockd(t, nil, "--workers", "2", "--listen", "none", "--ready", "after:100ms", "--metrics", "unix://"+msock, "--", python, script)
	for _, om := range []bool{false, true} {
		var p parsed
		waitFor(t, 20*time.Second, "both workers' example counters in the scrape", func() bool {
			p = scrape(t, python, msock, om)
			return p.count("docs_example_hits_total") == 2
		})
		for k, v := range p {
			if strings.HasPrefix(k, "docs_example_hits_total{") && (v != 3 || !strings.Contains(k, "slot=")) {
				t.Fatalf("openmetrics=%v: %s = %v", om, k, v)
			}
		}
	}
}
