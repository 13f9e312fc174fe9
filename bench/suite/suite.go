// Package suite is sockd's benchmark runner: it starts sockd and the
// tools users would pick instead (PM2 cluster mode, Node's cluster module,
// gunicorn, nginx, tableflip, and the same workers without any
// supervisor), loads each one on loopback with package internal/load, and
// writes BENCHMARKS.md and its plots. See BENCHMARKS.md for what is
// measured.
//
// The files, by role: params.go (the sizes of a run), peers.go (the table
// of peers) and start_*.go (how each one is started), procs.go (the child
// subreaper: spawning, reaping, server CPU), sockdlog.go (sockd's JSON
// log), loadrun.go (the load and its windows), one file per scenario
// (overhead, reload with reloadwatch, reloadtput, timeline, crash,
// footprint, scale), results.go (results.json), and the report:
// report.go (BENCHMARKS.md, one function per section), report_*.go,
// summary.go, aggregate.go, plot.go.
package suite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config is what to run.
type Config struct {
	Root      string   // the repository
	Mode      Mode     // full, quick or tiny
	Tools     Tools    // from Detect, Sockd and Tableflip filled in by the caller
	Scenarios []string // nil: all
	Peers     []string // nil: all that the tools allow
	RawDir    string   // raw results and logs
	Log       io.Writer
	Command   string // the command line, for the report
}

// Suite runs scenarios.
type Suite struct {
	Config
	P     Params
	Tools Tools

	procs *procs
	work  string
	mu    sync.Mutex
	res   *Results
	ctx   context.Context
}

// Scenarios, in the order they run.
var Scenarios = []string{"overhead", "reload", "reloadtput", "timeline", "crash", "footprint", "scale", "scaleload"}

// scenarioFuncs runs each scenario.
var scenarioFuncs = map[string]func(*Suite) error{
	"overhead": (*Suite).overhead, "reload": (*Suite).reloads, "reloadtput": (*Suite).reloadTputs,
	"timeline": (*Suite).timelines, "crash": (*Suite).crashes, "footprint": (*Suite).footprint, "scale": (*Suite).scale,
	"scaleload": (*Suite).scaleLoad,
}

// Run runs the scenarios and returns the results (also written to
// RawDir/results.json).
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	pr, err := newProcs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.RawDir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "sockd-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		keepLogs(work, filepath.Join(cfg.RawDir, "logs"))
		os.RemoveAll(work)
	}()
	s := &Suite{Config: cfg, P: paramsFor(cfg.Mode), Tools: cfg.Tools, procs: pr, work: work, ctx: ctx}
	s.res = &Results{Meta: machineFacts(cfg), Commands: map[string][]string{}, Params: s.P}
	start := time.Now()
	s.res.Meta.LoadBefore = loadavg()
	defer pr.killAll(5 * time.Second)
	for _, sc := range Scenarios {
		if len(s.Scenarios) > 0 && !contains(s.Scenarios, sc) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.runScenario(sc)
	}
	s.res.Meta.Seconds = time.Since(start).Seconds()
	s.res.Meta.LoadAfter = loadavg()
	b, _ := json.MarshalIndent(s.res, "", " ")
	if err := os.WriteFile(filepath.Join(cfg.RawDir, "results.json"), b, 0o644); err != nil {
		return s.res, err
	}
	return s.res, ctx.Err()
}

func (s *Suite) runScenario(sc string) {
	t := time.Now()
	s.logf("== %s", sc)
	if err := scenarioFuncs[sc](s); err != nil {
		s.warnf("%s: %v", sc, err)
	}
	s.procs.killAll(5 * time.Second)
	s.res.Meta.ScenarioSeconds = append(s.res.Meta.ScenarioSeconds, NamedFloat{sc, time.Since(t).Seconds()})
	s.logf("== %s done in %s", sc, time.Since(t).Round(time.Second))
}

func (s *Suite) logf(format string, args ...any) {
	fmt.Fprintf(s.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (s *Suite) warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.logf("WARNING: %s", msg)
	s.mu.Lock()
	s.res.Notes = append(s.res.Notes, msg)
	s.mu.Unlock()
}

// note records the command line that started a peer (first one wins).
func (s *Suite) note(peer string, argv []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.res.Commands[peer]; !ok {
		s.res.Commands[peer] = append([]string{}, argv...)
	}
}

// sleep waits (pacing a scenario), or returns false when the run is
// cancelled.
func (s *Suite) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-s.ctx.Done():
		return false
	}
}

// keepLogs copies the peers' logs (*.log files) out of the work directory.
func keepLogs(work, dst string) {
	filepath.WalkDir(work, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		rel, _ := filepath.Rel(work, path)
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755)
			os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		}
		return nil
	})
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	c := append([]float64{}, xs...)
	sort.Float64s(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func maxf(xs []float64) float64 {
	m := 0.0
	for i, x := range xs {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}
