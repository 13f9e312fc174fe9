package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScenarios runs both scenarios briefly against this tree's sockd:
// the commands BENCHMARKS.md gives work, every request is answered, and
// the rows have the header's columns.
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
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i, scenario := range []string{"stall", "cold"} {
		cols := strings.Count(strings.SplitN(headers[scenario], "\n", 2)[0], "|")
		if len(rows) != 2 || strings.Count(rows[i], "|") != cols {
			t.Fatalf("rows %q do not fit the %s header", rows, scenario)
		}
		if f := strings.Fields(rows[i]); f[5] != "0" {
			t.Errorf("%s: %s requests failed: %s", scenario, f[5], rows[i])
		}
	}
}
