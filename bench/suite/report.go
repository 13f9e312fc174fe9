package suite

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Report writes BENCHMARKS.md into outDir and the plots into plotDir.
func Report(res *Results, outDir, plotDir, root, gnuplot string) error {
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	r := &report{res: res, p: res.Params, outDir: outDir, root: root, ov: overheadAgg(res)}
	r.plots, r.plotErr = makePlots(res, plotDir, gnuplot)
	for _, section := range []func(*report){
		(*report).header, (*report).contents, (*report).summary, (*report).howMeasured,
		(*report).overheadSection, (*report).reloadSection, (*report).reloadTputSection, (*report).latencySection,
		(*report).balanceSection, (*report).crashSection, (*report).footprintSection, (*report).reloadCountsSection,
		(*report).scaleSection, (*report).scaleLoadSection, (*report).problemsSection, (*report).commandsSection,
	} {
		section(r)
	}
	return os.WriteFile(filepath.Join(outDir, "BENCHMARKS.md"), []byte(r.b.String()), 0o644)
}

// report is BENCHMARKS.md being written.
type report struct {
	b       strings.Builder
	res     *Results
	p       Params
	outDir  string
	root    string
	ov      []*ovAgg
	plots   map[string]string
	plotErr error
}

func (r *report) w(format string, args ...any) { fmt.Fprintf(&r.b, format, args...) }

// plot is the markdown image of plot name, "" if it was not made.
func (r *report) plot(name, alt string) string {
	pl, ok := r.plots[name]
	if !ok {
		return ""
	}
	if rel, err := filepath.Rel(r.outDir, pl); err == nil {
		pl = rel
	}
	return fmt.Sprintf("![%s](%s)", alt, pl)
}

func (r *report) header() {
	m := r.res.Meta
	r.w("# Benchmarks: sockd against what users would pick instead\n\n")
	if m.Mode != string(Full) {
		r.w("> **%s run**: a smoke test of the harness with tiny durations and few reloads. Its numbers are not for comparison; `scripts/bench` (full) makes the published ones.\n\n", m.Mode)
	}
	r.w("Made by `%s` on %s in %.1f minutes (%s, commit %s). Everything runs on loopback (127.0.0.1) on one machine: ", m.Command, m.Date, m.Seconds/60, m.Versions["sockd"], m.Commit)
	r.w("%s, %d cores (%s), %.0f GiB, %s.\n\n", m.OS, m.Cores, m.CPU, m.MemGiB, m.Kernel)
	var vs []string
	for _, k := range []string{"go", "node", "pm2", "python", "gunicorn", "nginx", "tableflip"} {
		if v := m.Versions[k]; v != "" {
			for _, prefix := range []string{"nginx version: ", "Python ", "gunicorn (version ", "nginx/"} {
				v = strings.TrimPrefix(v, prefix)
			}
			vs = append(vs, fmt.Sprintf("%s %s", k, strings.TrimSuffix(v, ")")))
		}
	}
	r.w("Versions: %s. Kernel settings: %s.\n\n", strings.Join(vs, ", "), strings.Join(m.Sysctl, ", "))
	r.w("**Noise.** The load generator shares the 2 cores with the servers, and this machine is shared with other engineers' test runs (load average %s before the run, %s after). ", m.LoadBefore, m.LoadAfter)
	r.w("Throughput differences below about 10%% between two peers are within the run-to-run spread shown in the tables; failed requests, reload latencies and footprints are much less sensitive to it.\n\n")
}

func (r *report) contents() {
	r.w("## Contents\n\n")
	r.w("1. [Summary](#summary)\n2. [How it is measured](#how-it-is-measured)\n3. [Overhead: throughput with 2 workers](#1-overhead-throughput-with-2-workers)\n")
	r.w("4. [Reload under load](#2-reload-under-load)\n5. [Throughput and latency during reloads](#2b-throughput-and-latency-during-reloads)\n6. [Reload latency](#3-reload-latency)\n7. [Balance between workers](#4-balance-between-workers)\n")
	r.w("8. [Crash recovery](#5-crash-recovery)\n9. [Footprint](#6-footprint)\n10. [Scale: time to all ready](#7-scale-time-to-all-ready)\n11. [Scaling under load](#8-scaling-under-load)\n12. [Exact commands](#exact-commands)\n\n")
}

func (r *report) howMeasured() {
	p := r.p
	r.w("\n## How it is measured\n\n")
	r.w("- **Load generator** (`internal/load`, Go, in the runner's process): %d client goroutines in the throughput runs, %d in the reload runs; ", p.OverheadClients, p.ReloadClients)
	r.w("half keep one HTTP/1.1 connection alive (reconnecting after an error or a `Connection: close`), half open a new connection for every request (`Connection: close`). ")
	r.w("Every request is recorded with its start, latency, the pid that answered (`X-Pid`/`X-Sockd-Pid` header or `pid=` in the body) and its outcome: a request is **failed** when it is refused, reset, times out (2 s), is closed before or during the response, or gets a status other than 2xx (the one definition of `internal/load`, which sockd's zero-loss tests use too; unlike them, the benchmark's clients send on a kept-alive connection without first looking whether the server closed it). ")
	r.w("Throughput runs and the reload runs of section 2b are closed loop (each client sends its next request when the previous one ended). The reload runs of section 2, crash and timeline runs send at a fixed %.0f requests/s in total and count latency from the scheduled start, so a stall is charged to every request it delayed.\n", p.ReloadRate)
	r.w("- **Same app everywhere**: every peer answers `hello from pid=…` with a pid header. The Node app (`bench/peers/node/app.js`) is one file that runs under sockd (fd 3), PM2 cluster mode, Node's cluster module or alone, and drains the same careful way in all of them (stop accepting, `Connection: close` on late requests, close idle connections after 1 s, exit when none is left), so differences come from the supervisors. The Python peers run the same WSGI app (`bench/peers/python/app.py`): gunicorn's sync workers, or `fdserve.py` (a one-request-per-connection loop like a sync worker, on fd 3) under sockd. nginx answers `return 200`. tableflip is its README's upgrade pattern around a Go `net/http` server (`bench/tableflip`).\n")
	r.w("- **direct** is the same worker processes with the same sockets but no supervisor: the runner binds the socket the way sockd does (Go listener, `SO_REUSEADDR`, backlog `somaxconn`, one `SO_REUSEPORT` socket per worker for `-rp`) and starts N workers on fd 3 itself. sockd/direct is therefore sockd's overhead.\n")
	r.w("- **Server CPU** is the CPU time of the whole server side: the runner is a child subreaper, so every process a peer starts (PM2's daemon included) stays its descendant; the CPU of a window is the sum over all descendants of utime+stime+cutime+cstime from `/proc/PID/stat` at the end minus at the start, plus what the runner reaped in between (wait4 rusage). The load generator and the reload commands (`pm2 reload`, `nginx -s reload`) are not in it; the commands' CPU is reported apart.\n")
	r.w("- **Alternation**: throughput runs go A B A B … (each peer started fresh for each of %d rounds of %s, after %s of warm-up; sockd and direct %d rounds), and the tables quote the median; sockd/direct ratios are the median of the per-round ratios of runs made seconds apart.\n", p.OverheadRounds, p.OverheadRun, p.OverheadWarm, max(p.OverheadRounds, p.PairRounds))
	r.w("- **Reloads** go one after another: the next one starts when the previous one is over, that is when every old worker has exited, as many new workers run (and, for the apps that can say it, said they listen) and a new one has answered.\n\n")
}

func (r *report) problemsSection() {
	if len(r.res.Notes) == 0 && r.plotErr == nil {
		return
	}
	r.w("## Problems during the run\n\n")
	for _, n := range r.res.Notes {
		r.w("- %s\n", n)
	}
	if r.plotErr != nil {
		r.w("- plots: %v\n", r.plotErr)
	}
	r.w("\n")
}

func (r *report) commandsSection() {
	m := r.res.Meta
	r.w("## Exact commands\n\n")
	r.w("Everything above: `%s` (installs what it needs: Debian's gunicorn, nginx-light and gnuplot-nox, PM2 from npm into `bench/peers/node/node_modules`, Go modules; builds sockd, the runner and the tableflip peer; runs `sockd-bench suite`). Re-render this file from the raw results: `go run ./bench/cmd/sockd-bench report bench/results/<run>/results.json`. The load generator alone: `go run ./bench/cmd/sockd-bench load --addr 127.0.0.1:PORT --clients 16 --duration 10s [--rate N]`.\n\n", m.Command)
	r.w("Each peer was started like this (ports picked free per run, paths of the run's temporary directory shortened to `$D`):\n\n```\n")
	var names []string
	for n := range r.res.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r.w("%-14s %s\n", n+":", shorten(strings.Join(quoteArgs(r.res.Commands[n]), " "), r.root))
	}
	r.w("```\n\nWorkers of the direct peers get fd 3 and `LISTEN_FDS=1 LISTEN_FDNAMES=http SOCKD_WORKER=i SOCKD_GENERATION=1`; `BENCH_READY_FILE` is where the apps write their pid once listening.\n")
	r.w("\nScenario times: ")
	var st []string
	for _, s := range m.ScenarioSeconds {
		st = append(st, fmt.Sprintf("%s %.0f s", s.Name, s.Value))
	}
	r.w("%s.\n", strings.Join(st, ", "))
}

func quoteArgs(a []string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		if strings.ContainsAny(s, " $\"'") && !strings.HasPrefix(s, "  #") {
			s = "'" + s + "'"
		}
		out[i] = s
	}
	return out
}

// shorten replaces the run's temporary directories and the repository
// path with short names.
func shorten(s, root string) string {
	if root != "" {
		s = strings.ReplaceAll(s, root+"/", "")
	}
	tmp := os.TempDir()
	for {
		i := strings.Index(s, tmp+"/sockd-bench-")
		if i < 0 {
			break
		}
		j := i + len(tmp) + 1
		// /tmp/sockd-bench-NNN/peer-NNN
		k := strings.IndexByte(s[j:], '/')
		if k < 0 {
			break
		}
		l := strings.IndexAny(s[j+k+1:], "/ '\"")
		end := len(s)
		if l >= 0 {
			end = j + k + 1 + l
		}
		s = s[:i] + "$D" + s[end:]
	}
	return s
}

func joinf(xs []float64, f string) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf(f, x))
	}
	return strings.Join(s, ", ")
}

// msf formats milliseconds: one decimal below 10 ms, none above.
func msf(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// plural is "1 round", "2 rounds".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
