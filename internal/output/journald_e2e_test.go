package output_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/e2e"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/output"
)

// The journal sink against the real journald of a systemd sandbox (systemd
// 252): the test binary runs as a transient unit, relays its re-executed
// workers' lines to /run/systemd/journal/socket, and journalctl shows the
// fields. Skips where the sandbox cannot boot (see e2e).

const e2eEnv = "OUTPUT_E2E_SENDER"

// journaldSender is the unit's main: a relay with the journal sink and
// workers printing; it prints what it measured as JSON.
func journaldSender(args []string) int {
	c, err := journal.Dial("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := output.New(output.Options{Sink: output.NewJournalSink(output.JournalOptions{Conn: c, Name: "e2eapp"})})
	start := time.Now()
	var ps []*output.Pipes
	for i, w := range strings.Split(args[0], ",") { // e.g. "levels,binary,flood:30000"
		argv := strings.SplitN(w, ":", 2)
		p, err := r.Open(i, 2)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out, errFD := p.FDs()
		pid, err := syscall.ForkExec(os.Args[0], append([]string{os.Args[0]}, argv...), &syscall.ProcAttr{
			Env: append(os.Environ(), workerEnv+"=1", e2eEnv+"="), Files: []uintptr{0, uintptr(out), uintptr(errFD)}})
		if err != nil {
			p.Abort()
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		p.Start(pid)
		ps = append(ps, p)
	}
	for _, p := range ps {
		<-p.Done()
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	out, errc := r.Totals()
	json.NewEncoder(os.Stdout).Encode(map[string]any{"elapsed_ms": time.Since(start).Milliseconds(),
		"cpu_ms": (syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)) / 1e6, "lines": out.Lines + errc.Lines})
	return 0
}

func startSandbox(t *testing.T) (*e2e.Sandbox, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "output.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	return e2e.Start(t, dir), bin
}

func TestRealJournaldFields(t *testing.T) {
	sb, bin := startSandbox(t)
	sb.MustRun(t, "systemd-run", "--unit=out-fields", "--wait", "--quiet", "-p", "Type=exec",
		"--setenv="+e2eEnv+"=1", bin, "levels,binary")
	var entries []e2e.JournalEntry
	e2e.WaitFor(t, 10*time.Second, func() (bool, string) {
		entries, _ = sb.Journal(t, "-u", "out-fields", "SYSLOG_IDENTIFIER=e2eapp")
		return len(entries) >= 24, fmt.Sprintf("%d entries", len(entries))
	})
	byMsg := map[string]e2e.JournalEntry{}
	for _, e := range entries {
		if m, ok := e["MESSAGE"].(string); ok {
			byMsg[m] = e
		} else if arr, ok := e["MESSAGE"].([]any); ok { // binary: an array of bytes
			b := make([]byte, len(arr))
			for i, v := range arr {
				b[i] = byte(v.(float64))
			}
			byMsg[string(b)] = e
		}
	}
	for msg, want := range map[string]map[string]string{
		"plain":        {"PRIORITY": "6", "SOCKD_WORKER": "0", "SOCKD_STREAM": "stdout"},
		"warned":       {"PRIORITY": "4", "SOCKD_WORKER": "0"},
		"stderr plain": {"PRIORITY": "3", "SOCKD_STREAM": "stderr"},
		`{"level":50,"msg":"pino error","err":{"type":"Error","stack":"a\nb"}}`: {"PRIORITY": "3"},
		"bad \xff\xfe utf8 \xc3": {"PRIORITY": "6", "SOCKD_WORKER": "1"},
		"\x00nul\x00":            {"SOCKD_WORKER": "1"},
	} {
		e, ok := byMsg[msg]
		if !ok {
			t.Errorf("no entry for %q", msg)
			continue
		}
		want["SYSLOG_IDENTIFIER"], want["SOCKD_GENERATION"] = "e2eapp", "2"
		for k, v := range want {
			if e.Field(k) != v {
				t.Errorf("%q: %s=%q, want %q", msg, k, e.Field(k), v)
			}
		}
		if pid := e.Field("SOCKD_WORKER_PID"); pid == "" || pid == e.Field("_PID") || e.Field("SYSLOG_PID") != pid {
			t.Errorf("%q: SOCKD_WORKER_PID %q SYSLOG_PID %q _PID %q", msg, pid, e.Field("SYSLOG_PID"), e.Field("_PID"))
		}
	}
	// journalctl's field match works on them.
	out := sb.MustRun(t, "journalctl", "-u", "out-fields", "SOCKD_WORKER=0", "SOCKD_STREAM=stderr", "-o", "cat", "--no-pager")
	if want := "stderr plain\n{\"level\":30,\"msg\":\"info on stderr\"}\nnotice on stderr\n"; out != want {
		t.Errorf("journalctl SOCKD_WORKER=0 SOCKD_STREAM=stderr:\n%q\nwant %q", out, want)
	}
}

// How many lines of a 100,000-line flood journald keeps with the default
// rate limit (RateLimitBurst=10000 per RateLimitIntervalSec=30s, per unit)
// and with LogRateLimitIntervalSec=0; and what it costs. A measurement:
// run with OUTPUT_E2E_RATELIMIT=1.
func TestRealJournaldRateLimit(t *testing.T) {
	if os.Getenv("OUTPUT_E2E_RATELIMIT") == "" {
		t.Skip("a measurement: set OUTPUT_E2E_RATELIMIT=1")
	}
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTPUT_E2E_LINES")); err == nil {
		n = v
	}
	sb, bin := startSandbox(t)
	qlen, _ := sb.Run(t, "cat", "/proc/sys/net/unix/max_dgram_qlen")
	t.Logf("net.unix.max_dgram_qlen in the sandbox: %s", strings.TrimSpace(qlen))
	// The sandbox's journald.conf turns the global limit off
	// (RateLimitIntervalSec=0): the unit sets journald's defaults itself.
	for _, tc := range []struct{ unit, prop string }{
		{"out-default", "LogRateLimitIntervalSec=30s"}, // and LogRateLimitBurst=10000, the default
		{"out-unlimited", "LogRateLimitIntervalSec=0"},
	} {
		res := sb.MustRun(t, "systemd-run", "--unit="+tc.unit, "--wait", "--quiet", "--pipe", "-p", "Type=exec", "-p", tc.prop, "-p", "LogRateLimitBurst=10000",
			"--setenv="+e2eEnv+"=1", bin, "flood:"+strconv.Itoa(n))
		var got int
		e2e.WaitFor(t, 30*time.Second, func() (bool, string) {
			out, _ := sb.Run(t, "sh", "-c", "journalctl -u "+tc.unit+" SYSLOG_IDENTIFIER=e2eapp -o cat --no-pager | wc -l")
			got, _ = strconv.Atoi(strings.TrimSpace(out))
			return got >= 1000, fmt.Sprint(got)
		})
		supp, _ := sb.Run(t, "sh", "-c", "journalctl -t systemd-journald --no-pager -o cat | grep -i "+tc.unit+" || true")
		t.Logf("%s (%s): %d of %d lines journaled; sender %s; journald: %s", tc.unit, tc.prop, got, n, strings.TrimSpace(res), strings.TrimSpace(supp))
	}
}
