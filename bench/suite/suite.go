// Package suite is sockd's benchmark runner: it starts sockd and the
// tools users would pick instead (PM2 cluster mode, Node's cluster module,
// gunicorn, nginx, tableflip, and the same workers without any
// supervisor), loads each one on loopback with package load, and writes
// BENCHMARKS.md and its plots. See BENCHMARKS.md for what is measured.
package suite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mode sets the sizes of a run.
type Mode string

// Modes.
const (
	Full  Mode = "full"  // the published numbers: about 15 minutes on 2 cores
	Quick Mode = "quick" // a smoke run of about 2 minutes
	Tiny  Mode = "tiny"  // the Go test's: seconds, a few peers
)

// Params are the sizes of every scenario.
type Params struct {
	Workers int // workers of every peer but where a scenario says otherwise

	OverheadRounds  int
	PairRounds      int // rounds of the sockd/direct pairs (at least OverheadRounds)
	OverheadRun     time.Duration
	OverheadWarm    time.Duration
	OverheadClients int

	ReloadRate     float64 // paced load during reload runs, requests/s
	ReloadClients  int
	ReloadSteady   time.Duration
	Reloads        int           // per peer
	ReloadsSockdGo int           // for the sockd Go demo peers
	ReloadBudget   time.Duration // per Reloads planned reloads: a peer stops reloading after this long

	// reloadtput: a closed-loop load of TputClients; per peer and round a
	// steady window of TputSteady, then one of TputWindow with TputReloads
	// reloads spread evenly; TputRounds rounds, peers alternated.
	TputPeers   []string // nil: tputPeers
	TputClients int
	TputWarm    time.Duration
	TputSteady  time.Duration // 0: TputWindow
	TputWindow  time.Duration
	TputReloads int
	TputRounds  int

	TimelinePeers  []string
	TimelineLength time.Duration
	TimelineEvery  time.Duration

	CrashWorkers int
	CrashRate    float64

	IdleSeconds time.Duration

	ScaleSizes   []int // every scale peer
	ScaleSizesGo []int // sockd-go also (it takes milliseconds)
	ScaleRunsGo  int   // runs of sockd-go per size (the others: one)
	ScalePeers   []string
}

func paramsFor(m Mode) Params {
	switch m {
	case Tiny:
		return Params{Workers: 2, OverheadRounds: 1, PairRounds: 1, OverheadRun: 700 * time.Millisecond, OverheadWarm: 200 * time.Millisecond, OverheadClients: 4,
			ReloadRate: 300, ReloadClients: 4, ReloadSteady: 500 * time.Millisecond, Reloads: 3, ReloadsSockdGo: 3, ReloadBudget: 10 * time.Second,
			TputPeers: []string{"sockd-go", "sockd-go-rp"}, TputClients: 4, TputWarm: 200 * time.Millisecond, TputWindow: time.Second, TputReloads: 2, TputRounds: 1,
			TimelinePeers: []string{"sockd-go"}, TimelineLength: 2 * time.Second, TimelineEvery: time.Second,
			CrashWorkers: 2, CrashRate: 200, IdleSeconds: time.Second, ScaleSizes: []int{1, 4}, ScalePeers: []string{"sockd-go"}}
	case Quick:
		return Params{Workers: 2, OverheadRounds: 3, PairRounds: 3, OverheadRun: 700 * time.Millisecond, OverheadWarm: 200 * time.Millisecond, OverheadClients: 16,
			ReloadRate: 1000, ReloadClients: 16, ReloadSteady: time.Second, Reloads: 5, ReloadsSockdGo: 20, ReloadBudget: 15 * time.Second,
			TputPeers: []string{"sockd-go", "pm2"}, TputClients: 16, TputWarm: 500 * time.Millisecond, TputWindow: 4 * time.Second, TputReloads: 3, TputRounds: 1,
			TimelinePeers: []string{"sockd-node", "pm2", "sockd-python", "gunicorn"}, TimelineLength: 4 * time.Second, TimelineEvery: 1500 * time.Millisecond,
			CrashWorkers: 2, CrashRate: 500, IdleSeconds: 5 * time.Second, ScaleSizes: []int{1, 8}, ScaleSizesGo: []int{4, 16}, ScaleRunsGo: 3,
			ScalePeers: []string{"sockd-go", "sockd-node", "pm2", "cluster-rr", "sockd-python", "gunicorn", "nginx"}}
	default:
		// Budget (2 cores; the scenario times of the run of 2026-11-28,
		// which took 18.6 minutes on a machine 1.5-2× slower than usual):
		// overhead ~150 s (54 runs × ~2.7 s), reload ~450 s (of which
		// 1000 reloads for each sockd Go peer ~80 s each, PM2 90 s), then
		// reloadtput ~280 s (9 peers × 2 rounds × ~15 s), timeline ~44 s,
		// crash ~48 s, footprint ~65 s, scale ~73 s. To stay under 15
		// minutes there (the run at cf0cf61 still took 17.5 minutes on that
		// machine): a peer stops reloading after 60 s per 100 planned
		// reloads (was 90 s; only PM2, whose reloads take 1-2 s each,
		// should get there: 100 Node reloads under sockd took 45-53 s,
		// 1000 of the Go demo 76-83 s); reloadtput's
		// steady window is 4 s (its p99 rests on some 50000 requests) and
		// runs neither restart-go (the Go demo worker meets sockd's target
		// anyway) nor sockd-node-rp (sockd-node tells the same); the scale runs skip the peers whose
		// start is the same as another's (cluster-rr: a Node primary like
		// PM2's; nginx). reloadtput does issue 5's 10 reloads in 14 s per
		// peer as 2 rounds of 5 reloads in 7 s (one reload every 1.4 s).
		return Params{Workers: 2, OverheadRounds: 3, PairRounds: 4, OverheadRun: 2 * time.Second, OverheadWarm: 500 * time.Millisecond, OverheadClients: 16,
			ReloadRate: 1000, ReloadClients: 16, ReloadSteady: time.Second, Reloads: 100, ReloadsSockdGo: 1000, ReloadBudget: 60 * time.Second,
			TputPeers:   []string{"sockd-go", "sockd-go-rp", "restart-node", "sockd-node", "pm2", "restart-python", "sockd-python", "gunicorn", "nginx", "tableflip"},
			TputClients: 16, TputWarm: 500 * time.Millisecond, TputSteady: 4 * time.Second, TputWindow: 7 * time.Second, TputReloads: 5, TputRounds: 2,
			TimelinePeers: []string{"sockd-node", "pm2", "sockd-python", "gunicorn"}, TimelineLength: 10 * time.Second, TimelineEvery: 1500 * time.Millisecond,
			CrashWorkers: 4, CrashRate: 500, IdleSeconds: 60 * time.Second, ScaleSizes: []int{1, 8, 64}, ScaleSizesGo: []int{4, 16}, ScaleRunsGo: 3,
			ScalePeers: []string{"sockd-go", "sockd-node", "pm2", "sockd-python", "gunicorn"}}
	}
}

// Scenarios, in the order they run.
var Scenarios = []string{"overhead", "reload", "reloadtput", "timeline", "crash", "footprint", "scale"}

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
		if !s.wants(sc) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t := time.Now()
		s.logf("== %s", sc)
		var err error
		switch sc {
		case "overhead":
			err = s.overhead()
		case "reload":
			err = s.reloads()
		case "reloadtput":
			err = s.reloadTputs()
		case "timeline":
			err = s.timelines()
		case "crash":
			err = s.crashes()
		case "footprint":
			err = s.footprint()
		case "scale":
			err = s.scale()
		}
		if err != nil {
			s.warnf("%s: %v", sc, err)
		}
		pr.killAll(5 * time.Second)
		s.res.Meta.ScenarioSeconds = append(s.res.Meta.ScenarioSeconds, NamedFloat{sc, time.Since(t).Seconds()})
		s.logf("== %s done in %s", sc, time.Since(t).Round(time.Second))
	}
	s.res.Meta.Seconds = time.Since(start).Seconds()
	s.res.Meta.LoadAfter = loadavg()
	b, _ := json.MarshalIndent(s.res, "", " ")
	if err := os.WriteFile(filepath.Join(cfg.RawDir, "results.json"), b, 0o644); err != nil {
		return s.res, err
	}
	return s.res, ctx.Err()
}

func (s *Suite) wants(sc string) bool {
	if len(s.Scenarios) == 0 {
		return true
	}
	for _, x := range s.Scenarios {
		if x == sc {
			return true
		}
	}
	return false
}

// selected filters names to the peers that exist (tools found) and were
// asked for.
func (s *Suite) selected(names ...string) []*peer {
	var out []*peer
	for _, n := range names {
		p := s.peer(n)
		if p == nil {
			continue
		}
		if len(s.Peers) > 0 {
			ok := false
			for _, w := range s.Peers {
				if w == n {
					ok = true
				}
			}
			if !ok {
				continue
			}
		}
		out = append(out, p)
	}
	return out
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

// sleep waits, or returns false when the run is cancelled.
func (s *Suite) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-s.ctx.Done():
		return false
	}
}

func machineFacts(cfg Config) Meta {
	m := Meta{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Mode: string(cfg.Mode), Cores: runtime.NumCPU(), Command: cfg.Command}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemGiB = float64(kb) / (1 << 20)
	}
	out := func(name string, args ...string) string {
		if name == "" {
			return ""
		}
		b, _ := exec.Command(name, args...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	m.Kernel = out("uname", "-sr")
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	t := cfg.Tools
	m.Versions = map[string]string{"go": runtime.Version()}
	m.Versions["sockd"] = out(t.Sockd, "version")
	if t.Node != "" {
		m.Versions["node"] = out(t.Node, "--version")
	}
	if t.PM2 != "" {
		if b, err := os.ReadFile(filepath.Join(cfg.Root, "bench/peers/node/node_modules/pm2/package.json")); err == nil {
			var pj struct{ Version string }
			json.Unmarshal(b, &pj)
			m.Versions["pm2"] = pj.Version
		}
	}
	if t.Gunicorn != "" {
		m.Versions["gunicorn"] = out(t.Gunicorn, "--version")
	}
	if t.Python != "" {
		m.Versions["python"] = out(t.Python, "--version")
	}
	if t.Nginx != "" {
		m.Versions["nginx"] = out(t.Nginx, "-v")
	}
	if t.Tableflip != "" {
		m.Versions["tableflip"] = "v1.2.3"
	}
	if b, err := exec.Command("git", "-C", cfg.Root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(b))
		if st, _ := exec.Command("git", "-C", cfg.Root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	for _, k := range []string{"net.core.somaxconn", "net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range"} {
		b, _ := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
		m.Sysctl = append(m.Sysctl, k+" = "+strings.Join(strings.Fields(string(b)), " "))
	}
	return m
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

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
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
