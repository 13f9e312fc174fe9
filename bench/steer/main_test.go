package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScenarios runs both scenarios briefly against this tree's sockd
// (cold also under -keepalive, with -log, -raw and -timeline): the commands
// BENCHMARKS.md gives work, every request is answered, and the rows have
// the header's columns.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sockd and runs Node")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("no node: run scripts/setup")
	}
	bin := filepath.Join(t.TempDir(), "sockd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/sockd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir, _ := filepath.Abs(".")
	o := options{sockd: bin, dir: dir, rate: 200, reloads: 1, steady: 2 * time.Second, stall: 500 * time.Millisecond, slowStart: 500 * time.Millisecond}
	var b strings.Builder
	if err := stall(&b, o, "reuseport"); err != nil {
		t.Fatal(err)
	}
	if err := cold(&b, o, "slowstart"); err != nil {
		t.Fatal(err)
	}
	// -keepalive, with -log and -raw.
	ka := o
	var tl strings.Builder
	ka.keepAlive, ka.logs, ka.raw, ka.timeline = 4, t.TempDir(), t.TempDir(), &tl
	if err := cold(&b, ka, "slowstart"); err != nil {
		t.Fatal(err)
	}
	if log, err := os.ReadFile(filepath.Join(ka.logs, "cold-slowstart.log")); err != nil || !strings.Contains(string(log), "reload finished") {
		t.Errorf("-log: sockd's log has no reload: %v\n%s", err, log)
	}
	if raw, err := os.ReadFile(filepath.Join(ka.raw, "cold-slowstart.csv")); err != nil || strings.Count(string(raw), "\n") < 100 {
		t.Errorf("-raw with -keepalive: %d bytes, %v", len(raw), err)
	}
	if !strings.HasPrefix(tl.String(), "timeline slowstart (") || !strings.Contains(tl.String(), " 0.0s ") || !strings.Contains(tl.String(), "×/") {
		t.Errorf("-timeline: %q", tl.String())
	}
	for scenario, h := range headers {
		if l := strings.Split(h, "\n"); len(l) != 2 || strings.Count(l[0], "|") != strings.Count(l[1], "|") {
			t.Errorf("the %s table's delimiter row does not fit its header (a Markdown table then does not render): %q", scenario, h)
		}
	}
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i, scenario := range []string{"stall", "cold", "cold"} {
		cols := strings.Count(strings.SplitN(headers[scenario], "\n", 2)[0], "|")
		if len(rows) != 3 || strings.Count(rows[i], "|") != cols {
			t.Fatalf("rows %q do not fit the %s header", rows, scenario)
		}
		if f := strings.Fields(rows[i]); f[5] != "0" {
			t.Errorf("%s: %s requests failed: %s", scenario, f[5], rows[i])
		}
		if c := strings.Split(rows[i], "|"); scenario == "cold" && (strings.TrimSpace(c[12]) == "0.00" || !strings.HasSuffix(strings.TrimSpace(c[13]), "×")) {
			t.Errorf("cold: no during-reload p99 (%q, %q): %s", c[12], c[13], rows[i])
		}
	}
}
