package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
)

// The benchmark of issue 22 (bench/reconf/run.sh runs it; BENCHMARKS.md
// has the results): the worker count of a sockd@ instance changed
// 2 → 3 → 2 by editing its env file, applied by `systemctl reload` (the
// new way) or by `systemctl restart` (the way docs/systemd.md told before),
// under a paced load, for the Go demo worker and the Node example
// (examples/node/server.js), in the systemd sandbox. It is skipped unless
// SOCKD_BENCH_RECONF=1: it takes a few minutes and measures, it does not
// test.

const (
	benchEnv    = "SOCKD_BENCH_RECONF"        // 1: run the benchmark
	benchRounds = "SOCKD_BENCH_RECONF_ROUNDS" // rounds per app and method (default 3)
	benchRate   = "SOCKD_BENCH_RECONF_RATE"   // requests per second (default 200)
	benchOut    = "SOCKD_BENCH_RECONF_OUT"    // a file for the markdown tables
	steady      = time.Second                 // load before, between and after the changes
	slowAnswer  = 100 * time.Millisecond      // answers slower than this are counted
)

type benchApp struct {
	name, addr, env string
}

// benchRun is one round of one app and method: two changes under one load.
type benchRun struct {
	app, method string
	round       int
	took        [2]time.Duration // 2 → 3, 3 → 2: the systemctl command
	sockdPIDs   [3]int           // before, after the first change, after the second
	requests    int
	failed      int
	kinds       map[string]int
	steadyP50   time.Duration
	steadyP99   time.Duration
	changeP50   time.Duration // requests due from the first change on
	changeP99   time.Duration
	slow        int // of those, answered after more than slowAnswer
	max         time.Duration
}

func TestBenchReconfigure(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skipf("a benchmark: set %s=1 (bench/reconf/run.sh)", benchEnv)
	}
	rounds := envInt(t, benchRounds, 3)
	rate := envInt(t, benchRate, 200)
	root := RepoRoot(t)
	apps := []benchApp{
		{"go", "127.0.0.1:8081", "SOCKD_COMMAND=\n"},
		{"node", "127.0.0.1:8082", "SOCKD_COMMAND=/usr/bin/node " + filepath.Join(root, "examples/node/server.js") + "\n"},
	}
	files := map[string]string{}
	var install []string
	for _, a := range apps {
		files["/etc/sockd/"+a.name+".env"] = "SOCKD_WORKERS=2\n" + a.env
		install = append(install, "--instance", a.name+"="+a.addr)
	}
	sb := installed(t, files, append(install, "--now")...)
	for _, a := range apps {
		sb.once(t, a.addr) // starts the instance
		sb.waitWorkers(t, a, 2)
		// Warm-up, so that the first round does not begin on cold workers.
		sb.MustRun(t, filepath.Join(sb.bin, "loadclient"), "-addr", a.addr, "-rate", strconv.Itoa(rate), "-duration", "2s")
	}
	begin := time.Now()
	var runs []benchRun
	for r := 1; r <= rounds; r++ {
		methods := []string{"reload", "restart"}
		if r%2 == 0 {
			slices.Reverse(methods)
		}
		for _, a := range apps {
			for _, m := range methods {
				run := sb.benchRound(t, a, m, r, rate)
				t.Logf("%s %s round %d: %s", a.name, m, r, run.line())
				runs = append(runs, run)
			}
		}
	}
	md := benchMarkdown(runs, apps, rounds, rate, time.Since(begin))
	t.Logf("results:\n%s", md)
	if out := os.Getenv(benchOut); out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchRound changes app's worker count 2 → 3 → 2 by method under a paced
// load, with a steady second before, between and after.
func (sb *sockdSandbox) benchRound(t *testing.T, a benchApp, method string, round, rate int) benchRun {
	t.Helper()
	unit := "sockd@" + a.name + ".service"
	run := benchRun{app: a.name, method: method, round: round}
	run.sockdPIDs[0] = sb.mainPID(t, unit)
	l := sb.startLoad(t, "-addr", a.addr, "-rate", strconv.Itoa(rate), "-keepalive", "4", "-fresh", "4", "-sporadic", "0",
		"-timeout", "10s", "-records")
	t.Cleanup(func() { l.stdin.Close() }) // ends the load first, should the round fail (see TestSockdReconfigureTemplate)
	var first time.Time
	for i, n := range []int{3, 2} {
		<-time.After(steady) // a steady window of the load, not a synchronisation
		sb.WriteFile(t, "/etc/sockd/"+a.name+".env", []byte(fmt.Sprintf("SOCKD_WORKERS=%d\n%s", n, a.env)))
		from := time.Now()
		if out, err := sb.Run(t, "systemctl", method, unit); err != nil {
			l.stop(t)
			t.Fatalf("systemctl %s %s: %v %s", method, unit, err, out)
		}
		run.took[i] = time.Since(from)
		if i == 0 {
			first = from
		}
		sb.waitWorkers(t, a, n)
		run.sockdPIDs[i+1] = sb.mainPID(t, unit)
	}
	<-time.After(steady)
	rep := l.stop(t)
	if p := sb.props(t, unit, "NRestarts", "ActiveState"); p["NRestarts"] != "0" || p["ActiveState"] != "active" {
		t.Errorf("%s after the %s round: %v", unit, method, p)
	}
	if method == "reload" && (run.sockdPIDs[1] != run.sockdPIDs[0] || run.sockdPIDs[2] != run.sockdPIDs[0]) {
		t.Errorf("%s: sockd's pid changed across reloads: %v", unit, run.sockdPIDs)
	}
	run.tally(rep, first)
	return run
}

// tally sums up the load of a round: failures, and latency before the
// first change (the baseline) and from the first change on (the two
// changes, the steady second between them and the one after, which is
// when a backlog a change left is worked off), by when each request was
// due.
func (run *benchRun) tally(rep *load.Report, first time.Time) {
	st := rep.Summary
	run.requests, run.failed, run.kinds, run.max = st.Requests, st.Failed, st.Kinds(), st.Max
	var before, during []time.Duration
	for _, q := range rep.Records {
		if q.Kind != load.OK {
			continue
		}
		if rep.At(q.Start).Before(first) {
			before = append(before, q.Latency)
		} else {
			during = append(during, q.Latency)
		}
	}
	run.steadyP50 = quantile(before, 0.50)
	run.steadyP99 = quantile(before, 0.99)
	run.changeP50 = quantile(during, 0.50)
	run.changeP99 = quantile(during, 0.99)
	run.slow = 0
	for _, d := range during {
		if d > slowAnswer {
			run.slow++
		}
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// waitWorkers waits until app's sockd runs n ready workers and no reload.
func (sb *sockdSandbox) waitWorkers(t *testing.T, a benchApp, n int) {
	t.Helper()
	control := "/run/sockd-" + a.name + "/sockd.sock"
	WaitFor(t, 30*time.Second, func() (bool, string) {
		s, err := sb.status(t, control)
		if err != nil {
			return false, err.Error()
		}
		return s.Size == n && s.Ready == n && len(s.Workers) == n && s.Reload == nil, s.Summary
	})
}

func (run benchRun) line() string {
	return fmt.Sprintf("took %v / %v, %d requests, %d failed %v; p50/p99 before %s/%s ms, from the first change on %s/%s ms (%d over %v), max %s ms; sockd pids %v",
		run.took[0].Round(time.Millisecond), run.took[1].Round(time.Millisecond), run.requests, run.failed, run.kinds,
		ms(run.steadyP50), ms(run.steadyP99), ms(run.changeP50), ms(run.changeP99), run.slow, slowAnswer, ms(run.max), run.sockdPIDs)
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// benchMarkdown is the results as BENCHMARKS.md shows them: one row per
// app and method with the medians over the rounds and every round's value.
func benchMarkdown(runs []benchRun, apps []benchApp, rounds, rate int, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d rounds per app and method, alternated; %d req/s paced (4 keep-alive and 4 new-connection clients); %.0f s in all.\n\n",
		rounds, rate, took.Seconds())
	fmt.Fprintf(&b, "| app | applied by | failed requests | p99 from the first change on, ms | max, ms | answers over %v | p99 before, ms | systemctl 2 → 3, s | systemctl 3 → 2, s | sockd pid |\n", slowAnswer)
	b.WriteString("|---|---|---:|---|---|---|---|---|---|---|\n")
	for _, a := range apps {
		for _, m := range []string{"reload", "restart"} {
			var sel []benchRun
			for _, r := range runs {
				if r.app == a.name && r.method == m {
					sel = append(sel, r)
				}
			}
			failed, kinds := 0, map[string]int{}
			for _, r := range sel {
				failed += r.failed
				for k, n := range r.kinds {
					kinds[k] += n
				}
			}
			f := strconv.Itoa(failed)
			if failed > 0 {
				f += fmt.Sprintf(" %v", kinds)
			}
			pid := "same"
			if slices.ContainsFunc(sel, func(r benchRun) bool { return r.sockdPIDs[1] != r.sockdPIDs[0] || r.sockdPIDs[2] != r.sockdPIDs[1] }) {
				pid = "new at each change"
			}
			fmt.Fprintf(&b, "| %s | `systemctl %s` | %s | %s | %s | %s | %s | %s | %s | %s |\n", a.name, m, f,
				series(sel, 2, func(r benchRun) float64 { return float64(r.changeP99) / 1e6 }),
				series(sel, 2, func(r benchRun) float64 { return float64(r.max) / 1e6 }),
				series(sel, 0, func(r benchRun) float64 { return float64(r.slow) }),
				series(sel, 2, func(r benchRun) float64 { return float64(r.steadyP99) / 1e6 }),
				series(sel, 2, func(r benchRun) float64 { return r.took[0].Seconds() }),
				series(sel, 2, func(r benchRun) float64 { return r.took[1].Seconds() }), pid)
		}
	}
	b.WriteString("\nEach cell: **median** (every round).\n")
	return b.String()
}

// series is "**median** (v1, v2, …)" of f over runs, with prec decimals.
func series(runs []benchRun, prec int, f func(benchRun) float64) string {
	var vs []string
	var xs []float64
	for _, r := range runs {
		x := f(r)
		xs = append(xs, x)
		vs = append(vs, strconv.FormatFloat(x, 'f', prec, 64))
	}
	slices.Sort(xs)
	med := 0.0
	if n := len(xs); n > 0 {
		med = xs[n/2]
		if n%2 == 0 {
			med = (xs[n/2-1] + xs[n/2]) / 2
		}
	}
	return fmt.Sprintf("**%s** (%s)", strconv.FormatFloat(med, 'f', prec, 64), strings.Join(vs, ", "))
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
