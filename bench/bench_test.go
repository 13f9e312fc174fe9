// Package bench_test proves that the benchmark suite still runs: it builds
// sockd and runs the runner in its tiny mode against the peers that need
// nothing but Go (sockd and the same workers without a supervisor), then
// renders the report. The numbers are not checked, only that every step
// measured something. With -short only a few throughput runs.
package bench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/bench/suite"
)

func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no go tool to build sockd with")
	}
	return p
}

func TestSuiteRuns(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sockd := filepath.Join(dir, "sockd")
	build := exec.Command(goTool(t), "build", "-o", sockd, "./cmd/sockd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build sockd: %v\n%s", err, out)
	}
	tools := suite.Detect(root)
	tools.Sockd = sockd
	scenarios := []string{"overhead", "reload", "reloadtput", "crash", "scale"}
	peers := []string{"direct-go", "sockd-go", "sockd-go-rp", "restart-go"}
	overheadPeers := 3 // restart-go is only in reloadtput
	if testing.Short() {
		scenarios, peers, overheadPeers = []string{"overhead"}, []string{"direct-go", "sockd-go"}, 2
	}
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := suite.Run(ctx, suite.Config{Root: root, Mode: suite.Tiny, Tools: tools, Scenarios: scenarios, Peers: peers,
		RawDir: filepath.Join(dir, "raw"), Log: &log, Command: "go test ./bench"})
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Notes) > 0 {
		t.Errorf("problems: %q", res.Notes)
	}
	if len(res.Overhead) != overheadPeers {
		t.Fatalf("%d throughput runs, want %d", len(res.Overhead), overheadPeers)
	}
	for _, r := range res.Overhead {
		if r.W.OK == 0 || r.W.CPUsec <= 0 || len(r.PerWorker) != 2 {
			t.Errorf("%s: %d answers, %.3f s CPU, per worker %v: want answers from 2 workers and some CPU", r.Peer, r.W.OK, r.W.CPUsec, r.PerWorker)
		}
	}
	if !testing.Short() {
		if len(res.Reloads) != 2 || len(res.Crashes) != 2 || len(res.Scale) == 0 {
			t.Fatalf("%d reload runs, %d crash runs, %d scale runs", len(res.Reloads), len(res.Crashes), len(res.Scale))
		}
		for _, r := range res.Reloads {
			if r.Done != r.Planned || r.Steady.OK == 0 || r.During.OK == 0 {
				t.Errorf("%s: %d of %d reloads, %d+%d answers", r.Peer, r.Done, r.Planned, r.Steady.OK, r.During.OK)
			}
			for _, e := range r.Events {
				if e.FirstNew < e.T0 || e.OldGone < e.T0 || e.Done < e.OldGone {
					t.Errorf("%s: reload times out of order: %+v", r.Peer, e)
				}
			}
			if n := r.During.Failed + r.Steady.Failed; n > 0 {
				t.Logf("%s: %d failed requests during %d reloads: %v", r.Peer, n, r.Done, r.ErrText)
			}
		}
		if len(res.ReloadTput) != 3 {
			t.Fatalf("%d reloadtput runs, want 3 (restart-go, sockd-go, sockd-go-rp)", len(res.ReloadTput))
		}
		for _, r := range res.ReloadTput {
			if r.Done != r.Planned || r.Steady.OK == 0 || r.During.OK == 0 || r.Steady.RPS <= 0 || r.During.CPUsec <= 0 {
				t.Errorf("reloadtput %s: %d of %d reloads, %d+%d answers, %.0f req/s steady, %.3f s CPU during", r.Peer, r.Done, r.Planned, r.Steady.OK, r.During.OK, r.Steady.RPS, r.During.CPUsec)
			}
		}
		for _, r := range res.Reloads {
			for i, e := range r.Events {
				if e.Sockd == nil || e.Sockd.TotalMS <= 0 || e.Sockd.ReadyMS <= 0 || e.Sockd.StartMS < 0 {
					t.Errorf("%s reload %d: sockd's log not matched: %+v", r.Peer, i+1, e.Sockd)
				}
			}
		}
		for _, s := range res.Scale {
			if s.Err == "" && s.LogMS <= 0 {
				t.Errorf("scale %s×%d: no pool_ready figure from sockd's log", s.Peer, s.Workers)
			}
		}
		for _, c := range res.Crashes {
			for _, k := range c.Kills {
				if k.Err != "" || k.ServeMS <= 0 {
					t.Errorf("%s: kill %+v", c.Peer, k)
				}
			}
		}
	}
	out := filepath.Join(dir, "report")
	if err := suite.Report(res, out, filepath.Join(out, "plots"), root, tools.Gnuplot); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "BENCHMARKS.md"))
	if err != nil || !strings.Contains(string(md), "| sockd, Go demo worker, shared socket |") ||
		(!testing.Short() && !strings.Contains(string(md), "## 2b. Throughput and latency during reloads\n\nClosed loop")) {
		t.Fatalf("report: %v\n%s", err, md)
	}
}
