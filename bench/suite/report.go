package suite

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// how each peer is reloaded, for the tables.
var triggers = map[string]string{
	"sockd": "`kill -HUP <sockd>`", "pm2": "`pm2 reload bench`", "gunicorn": "`kill -HUP <master>`",
	"nginx": "`nginx -s reload`", "tableflip": "`kill -HUP <current process>`",
}

type peerInfo struct{ label, sup, app, mode string }

func infoOf(name string) peerInfo {
	s := &Suite{Tools: Tools{Node: "x", PM2: "x", Gunicorn: "x", Python: "x", Nginx: "x", Tableflip: "x"}}
	if p := s.peer(name); p != nil {
		return peerInfo{p.label, p.sup, p.app, p.mode}
	}
	return peerInfo{label: name}
}

// baseline is the peer without supervisor each one is compared with.
func baseline(name string) string {
	switch {
	case name == "sockd-go":
		return "direct-go"
	case name == "sockd-go-rp":
		return "direct-go-rp"
	case name == "sockd-node", name == "sockd-node-rp", name == "pm2", name == "cluster-rr", name == "cluster-none":
		return "direct-node"
	case name == "sockd-python", name == "gunicorn":
		return "direct-python"
	}
	return ""
}

// Report writes BENCHMARKS.md into outDir and the plots into plotDir.
func Report(res *Results, outDir, plotDir, root, gnuplot string) error {
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	rel := func(p string) string {
		r, err := filepath.Rel(outDir, p)
		if err != nil {
			return p
		}
		return r
	}
	plots, perr := makePlots(res, plotDir, gnuplot)
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := res.Meta
	w("# Benchmarks: sockd against what users would pick instead\n\n")
	if m.Mode != string(Full) {
		w("> **%s run**: a smoke test of the harness with tiny durations and few reloads. Its numbers are not for comparison; `scripts/bench` (full) makes the published ones.\n\n", m.Mode)
	}
	w("Made by `%s` on %s in %.1f minutes (%s, commit %s). Everything runs on loopback (127.0.0.1) on one machine: ", m.Command, m.Date, m.Seconds/60, m.Versions["sockd"], m.Commit)
	w("%s, %d cores (%s), %.0f GiB, %s.\n\n", m.OS, m.Cores, m.CPU, m.MemGiB, m.Kernel)
	var vs []string
	for _, k := range []string{"go", "node", "pm2", "python", "gunicorn", "nginx", "tableflip"} {
		if v := m.Versions[k]; v != "" {
			vs = append(vs, fmt.Sprintf("%s %s", k, strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(v, "nginx version: "), "Python "), "gunicorn (version "), "nginx/"), ")")))
		}
	}
	w("Versions: %s. Kernel settings: %s.\n\n", strings.Join(vs, ", "), strings.Join(m.Sysctl, ", "))
	w("**Noise.** The load generator shares the 2 cores with the servers, and this machine is shared with other engineers' test runs (load average %s before the run, %s after). ", m.LoadBefore, m.LoadAfter)
	w("Throughput differences below about 10%% between two peers are within the run-to-run spread shown in the tables; failed requests, reload latencies and footprints are much less sensitive to it.\n\n")

	w("## Contents\n\n")
	w("1. [Summary](#summary)\n2. [How it is measured](#how-it-is-measured)\n3. [Overhead: throughput with 2 workers](#1-overhead-throughput-with-2-workers)\n")
	w("4. [Reload under load](#2-reload-under-load)\n5. [Reload latency](#3-reload-latency)\n6. [Balance between workers](#4-balance-between-workers)\n")
	w("7. [Crash recovery](#5-crash-recovery)\n8. [Footprint](#6-footprint)\n9. [Scale: time to all ready](#7-scale-time-to-all-ready)\n10. [Exact commands](#exact-commands)\n\n")

	ov := overheadAgg(res)
	w("## Summary\n\n")
	summary(&b, res, ov)

	w("\n## How it is measured\n\n")
	p := res.Params
	w("- **Load generator** (`bench/load`, Go, in the runner's process): %d client goroutines in the throughput runs, %d in the reload runs; ", p.OverheadClients, p.ReloadClients)
	w("half keep one HTTP/1.1 connection alive (reconnecting after an error or a `Connection: close`), half open a new connection for every request (`Connection: close`). ")
	w("Every request is recorded with its start, latency, the pid that answered (`X-Pid`/`X-Sockd-Pid` header or `pid=` in the body) and its outcome: a request is **failed** when it is refused, reset, times out (2 s), is closed before or during the response, or gets another status than 200. ")
	w("Throughput runs are closed loop (each client sends its next request when the previous one ended). Reload, crash and timeline runs send at a fixed %.0f requests/s in total and count latency from the scheduled start, so a stall is charged to every request it delayed.\n", p.ReloadRate)
	w("- **Same app everywhere**: every peer answers `hello from pid=…` with a pid header. The Node app (`bench/peers/node/app.js`) is one file that runs under sockd (fd 3), PM2 cluster mode, Node's cluster module or alone, and drains the same careful way in all of them (stop accepting, `Connection: close` on late requests, close idle connections after 1 s, exit when none is left), so differences come from the supervisors. The Python peers run the same WSGI app (`bench/peers/python/app.py`): gunicorn's sync workers, or `fdserve.py` (a one-request-per-connection loop like a sync worker, on fd 3) under sockd. nginx answers `return 200`. tableflip is its README's upgrade pattern around a Go `net/http` server (`bench/tableflip`).\n")
	w("- **direct** is the same worker processes with the same sockets but no supervisor: the runner binds the socket the way sockd does (Go listener, `SO_REUSEADDR`, backlog `somaxconn`, one `SO_REUSEPORT` socket per worker for `-rp`) and starts N workers on fd 3 itself. sockd/direct is therefore sockd's overhead.\n")
	w("- **Server CPU** is the CPU time of the whole server side: the runner is a child subreaper, so every process a peer starts (PM2's daemon included) stays its descendant; the CPU of a window is the sum over all descendants of utime+stime+cutime+cstime from `/proc/PID/stat` at the end minus at the start, plus what the runner reaped in between (wait4 rusage). The load generator and the reload commands (`pm2 reload`, `nginx -s reload`) are not in it; the commands' CPU is reported apart.\n")
	w("- **Alternation**: throughput runs go A B A B … (each peer started fresh for each of %d rounds of %s, after %s of warm-up; sockd and direct %d rounds), and the tables quote the median; sockd/direct ratios are the median of the per-round ratios of runs made seconds apart.\n", p.OverheadRounds, p.OverheadRun, p.OverheadWarm, max(p.OverheadRounds, p.PairRounds))
	w("- **Reloads** go one after another: the next one starts when the previous one is over, that is when every old worker has exited, as many new workers run (and, for the apps that can say it, said they listen) and a new one has answered.\n\n")

	// ---- overhead ----
	w("## 1. Overhead: throughput with 2 workers\n\n")
	if len(ov) == 0 {
		w("Not run.\n\n")
	} else {
		w("Closed loop, %d clients, %s per run, %d runs per peer alternated (%d for sockd and the direct runs it is compared with); medians.\n\n", p.OverheadClients, p.OverheadRun, p.OverheadRounds, max(p.OverheadRounds, p.PairRounds))
		w("| peer | req/s (median) | every run | vs direct: median (range) of the per-round ratios | p50 ms | p99 ms | server CPU µs/req | failed |\n|---|---:|---|---:|---:|---:|---:|---:|\n")
		for _, a := range ov {
			ratio := "–"
			if a.ratio > 0 {
				ratio = fmt.Sprintf("%.2f (%.2f–%.2f) of %s", a.ratio, a.ratios[0], a.ratios[len(a.ratios)-1], a.base)
			}
			w("| %s | %.0f | %s | %s | %.2f | %.2f | %.1f | %d |\n", a.label, a.rps, joinf(a.runs, "%.0f"), ratio, a.p50, a.p99, a.cpu, a.failed)
		}
		if pl, ok := plots["throughput"]; ok {
			w("\n![throughput per peer](%s)\n", rel(pl))
		}
		w("\n")
	}

	// ---- reloads ----
	w("## 2. Reload under load\n\n")
	if len(res.Reloads) == 0 {
		w("Not run.\n\n")
	} else {
		w("2 workers, %.0f requests/s paced, %d clients (half keep-alive). First %s steady, then reloads one after another until the planned number or %s have passed.\n\n", p.ReloadRate, p.ReloadClients, p.ReloadSteady, p.ReloadBudget)
		retried := false
		w("| peer | reloads done / planned | failed requests during reloads | of requests | how they failed | p99 steady → during (ms) | req/s steady → during | server CPU µs/req steady → during | reload command CPU per reload |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n")
		for _, r := range res.Reloads {
			done := fmt.Sprintf("%d / %d", r.Done, r.Planned)
			if r.Capped {
				done += " (time budget)"
			}
			if r.FailedReloads > 0 {
				done += fmt.Sprintf(", %d failed", r.FailedReloads)
			}
			retries := 0
			for _, e := range r.Events {
				retries += e.Retries
			}
			if retries > 0 {
				done += fmt.Sprintf(", %d needed the trigger again¹", retries)
				retried = true
			}
			cmd := "–"
			if r.CmdCPUsec > 0 && len(r.Events) > 0 {
				cmd = fmt.Sprintf("%.0f ms", r.CmdCPUsec*1000/float64(len(r.Events)))
			}
			w("| %s | %s | **%d** | %d | %s | %.2f → %.2f | %.0f → %.0f | %.0f → %.0f | %s |\n", infoOf(r.Peer).label, done, r.During.Failed,
				r.During.OK+r.During.Failed, kinds(r), float64(r.Steady.P99us)/1000, float64(r.During.P99us)/1000,
				r.Steady.RPS, r.During.RPS, r.Steady.CPUPerReq, r.During.CPUPerReq, cmd)
		}
		if retried {
			w("\n¹ tableflip refuses an upgrade (\"parent hasn't exited\") until it has noticed that the previous process exited, which it learns a little after the process is gone; the runner sends SIGHUP again after 1 s without progress. The latencies of section 3 count from the first SIGHUP.\n")
		}
		w("\nA failed request on a keep-alive connection that had already carried a response is the classic keep-alive race: the server closed the idle connection just as the client sent on it. Clients that retry idempotent requests on a reused connection (browsers, Go's net/http) hide those; the load generator counts them, as it counts everything.\n")
		w("\nThe paced load is far below every peer's capacity, so req/s stays at the offered rate unless a peer stalls; the CPU per request during reloads includes starting the new workers (the Node and Python interpreters cost far more than the Go demo).\n\n")
		if pl, ok := plots["timeline"]; ok {
			w("![latency over time across reloads](%s)\n\n", rel(pl))
			w("Latency over time (p50 and p99 per 100 ms, log scale) with a reload every %s: grey bands are reloads (trigger to over), red bars failed requests per 100 ms (right axis).\n\n", p.TimelineEvery)
		}
	}

	// ---- reload latency ----
	w("## 3. Reload latency\n\n")
	if len(res.Reloads) == 0 {
		w("Not run.\n\n")
	} else {
		w("From the reloads above: trigger sent → first answer from a new worker → last old worker gone → reload over (ms).\n\n")
		w("| peer | trigger | first new answer, median / max | old generation gone, median / max | reload over, median / max |\n|---|---|---:|---:|---:|\n")
		for _, r := range res.Reloads {
			first, gone := reloadLatencies(r.Events)
			var over []float64
			for _, e := range r.Events {
				if e.Err == "" && e.Done > 0 {
					over = append(over, (e.Done-e.T0)*1000)
				}
			}
			w("| %s | %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |\n", infoOf(r.Peer).label, triggers[infoOf(r.Peer).sup],
				median(first), maxf(first), median(gone), maxf(gone), median(over), maxf(over))
		}
		w("\nsockd and PM2 start the new workers and stop the old ones only once the new ones are ready (for the Node app under sockd that is the `--ready after:300ms` rule, since Node cannot send `READY=1`); gunicorn and nginx stop the old workers right away and let the new ones catch up; tableflip hands over as soon as the new process calls `Ready()`.\n\n")
	}

	// ---- balance ----
	w("## 4. Balance between workers\n\n")
	if len(ov) == 0 {
		w("Not run.\n\n")
	} else {
		w("From the throughput runs: answers of the busiest worker divided by those of the least busy one (1.00 is perfect), median of the runs; keep-alive connections stay with the worker that accepted them, so the new-connection column shows the kernel's (or the supervisor's) per-connection choice alone.\n\n")
		w("| peer | how connections are spread | busiest / least busy, all requests | new-connection requests only | every run (all requests) |\n|---|---|---:|---:|---|\n")
		for _, a := range ov {
			if len(a.bal) == 0 || infoOf(a.name).sup == "tableflip" {
				continue
			}
			w("| %s | %s | %.2f | %.2f | %s |\n", a.label, spread(a.name), median(a.bal), median(a.balNew), joinf(a.bal, "%.2f"))
		}
		if pl, ok := plots["balance"]; ok {
			w("\n![requests per worker](%s)\n", rel(pl))
		}
		w("\n")
	}

	// ---- crash ----
	w("## 5. Crash recovery\n\n")
	if len(res.Crashes) == 0 {
		w("Not run.\n\n")
	} else {
		w("%d workers under %.0f requests/s; each worker in turn gets SIGKILL, one per second. Times from the kill, ms.\n\n", p.CrashWorkers, p.CrashRate)
		w("| peer | kills | replacement process exists (median) | replacement listening (median) | replacement answered (median / max) | failed requests per kill (median / total) |\n|---|---:|---:|---:|---:|---:|\n")
		for _, c := range res.Crashes {
			var sp, rd, sv, fl []float64
			total, errs := 0, 0
			for _, k := range c.Kills {
				if k.Err != "" {
					errs++
					continue
				}
				sp = append(sp, k.SpawnMS)
				if k.ReadyMS > 0 {
					rd = append(rd, k.ReadyMS)
				}
				sv = append(sv, k.ServeMS)
				fl = append(fl, float64(k.Failed))
				total += k.Failed
			}
			ready := "–"
			if len(rd) > 0 {
				ready = fmt.Sprintf("%.0f", median(rd))
			}
			kills := fmt.Sprint(len(c.Kills))
			if errs > 0 {
				kills += fmt.Sprintf(" (%d without replacement)", errs)
			}
			w("| %s | %s | %.0f | %s | %.0f / %.0f | %.0f / %d |\n", infoOf(c.Peer).label, kills, median(sp), ready, median(sv), maxf(sv), median(fl), total)
		}
		w("\nA SIGKILL loses the requests in the killed worker's hands and resets its keep-alive connections under every supervisor; what differs is how fast a replacement serves. For the Node app under sockd, 'listening' comes before sockd calls it ready (after:300ms), and connections are queued on the socket meanwhile.\n\n")
	}

	// ---- footprint ----
	w("## 6. Footprint\n\n")
	if f := res.Footprint; f == nil {
		w("Not run.\n\n")
	} else {
		w("Each supervisor with 2 idle workers, after one short burst of requests, then %.0f s of nothing.\n\n", f.IdleSeconds)
		w("| peer | supervisor process | supervisor RSS (MiB) | supervisor CPU over the idle %.0f s (s) | processes | RSS with workers (MiB) | CPU with workers (s) |\n|---|---|---:|---:|---:|---:|---:|\n", f.IdleSeconds)
		for _, s := range f.Sups {
			w("| %s | `%s` | %.1f | %.3f | %d | %.1f | %.3f |\n", infoOf(s.Peer).label, s.Process, float64(s.RSSKB)/1024, s.CPUsec, s.Procs, float64(s.TotalRSSKB)/1024, s.TotalCPU)
		}
		w("\n")
	}
	var counted []ReloadRun
	for _, r := range res.Reloads {
		if r.Before != nil && r.After != nil {
			counted = append(counted, r)
		}
	}
	if len(counted) > 0 {
		w("sockd itself before and after the reloads of section 2 (descriptors, threads, processes: sockd and its workers, RSS):\n\n")
		w("| peer | reloads | fds before → after | threads | processes | sockd RSS (MiB) |\n|---|---:|---:|---:|---:|---:|\n")
		for _, r := range counted {
			w("| %s | %d | %d → %d | %d → %d | %d → %d | %.1f → %.1f |\n", infoOf(r.Peer).label, r.Done, r.Before.FDs, r.After.FDs,
				r.Before.Threads, r.After.Threads, r.Before.Procs, r.After.Procs, float64(r.Before.RSSKB)/1024, float64(r.After.RSSKB)/1024)
		}
		for _, r := range counted {
			if len(r.RSSEvery100) > 2 {
				var mb []float64
				for _, kb := range r.RSSEvery100 {
					mb = append(mb, float64(kb)/1024)
				}
				w("\nsockd's RSS every 100 reloads (%s, MiB): %s, %.1f at the end: it grows while the Go heap warms up, then stays flat.\n", r.Peer, joinf(mb, "%.1f"), float64(r.After.RSSKB)/1024)
			}
		}
		w("\n")
	}

	// ---- scale ----
	w("## 7. Scale: time to all ready\n\n")
	if len(res.Scale) == 0 {
		w("Not run.\n\n")
	} else {
		sizes := []int{}
		seen := map[int]bool{}
		byPeer := map[string]map[int]ScaleRun{}
		var order []string
		for _, s := range res.Scale {
			if !seen[s.Workers] {
				seen[s.Workers] = true
				sizes = append(sizes, s.Workers)
			}
			if byPeer[s.Peer] == nil {
				byPeer[s.Peer] = map[int]ScaleRun{}
				order = append(order, s.Peer)
			}
			byPeer[s.Peer][s.Workers] = s
		}
		sort.Ints(sizes)
		w("From the start command to every worker ready: sockd's Go demo worker when sockd logs `pool_ready` (every worker sent `READY=1`); the Node and Python apps when every worker has written its pid after it started listening (gunicorn: `post_worker_init`); nginx when its workers exist and the port answers. One run each, ms; with 64 workers on 2 cores these times depend heavily on what else the machine runs (sockd with 64 Node workers took from 2.3 s to 9 s in our runs).\n\n")
		w("| peer \\ workers |")
		for _, n := range sizes {
			w(" %d |", n)
		}
		w("\n|---|")
		for range sizes {
			w("---:|")
		}
		w("\n")
		for _, name := range order {
			w("| %s |", infoOf(name).label)
			for _, n := range sizes {
				s, ok := byPeer[name][n]
				switch {
				case !ok:
					w(" – |")
				case s.Err != "":
					w(" failed |")
				default:
					w(" %.0f |", s.ReadyMS)
				}
			}
			w("\n")
		}
		w("\n")
	}

	if len(res.Notes) > 0 || perr != nil {
		w("## Problems during the run\n\n")
		for _, n := range res.Notes {
			w("- %s\n", n)
		}
		if perr != nil {
			w("- plots: %v\n", perr)
		}
		w("\n")
	}

	w("## Exact commands\n\n")
	w("Everything above: `%s` (installs what it needs: Debian's gunicorn, nginx-light and gnuplot-nox, PM2 from npm into `bench/peers/node/node_modules`, Go modules; builds sockd, the runner and the tableflip peer; runs `sockd-bench suite`). Re-render this file from the raw results: `go run ./bench/cmd/sockd-bench report bench/results/<run>/results.json`. The load generator alone: `go run ./bench/cmd/sockd-bench load --addr 127.0.0.1:PORT --clients 16 --duration 10s [--rate N]`.\n\n", m.Command)
	w("Each peer was started like this (ports picked free per run, paths of the run's temporary directory shortened to `$D`):\n\n```\n")
	var names []string
	for n := range res.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w("%-14s %s\n", n+":", shorten(strings.Join(quoteArgs(res.Commands[n]), " "), root))
	}
	w("```\n\nWorkers of the direct peers get fd 3 and `LISTEN_FDS=1 LISTEN_FDNAMES=http SOCKD_WORKER=i SOCKD_GENERATION=1`; `BENCH_READY_FILE` is where the apps write their pid once listening.\n")
	w("\nScenario times: ")
	var st []string
	for _, s := range m.ScenarioSeconds {
		st = append(st, fmt.Sprintf("%s %.0f s", s.Name, s.Value))
	}
	w("%s.\n", strings.Join(st, ", "))
	return os.WriteFile(filepath.Join(outDir, "BENCHMARKS.md"), []byte(b.String()), 0o644)
}

func spread(name string) string {
	switch name {
	case "direct-go", "sockd-go", "direct-node", "sockd-node", "direct-python", "sockd-python", "gunicorn", "cluster-none":
		return "one shared socket: the kernel wakes an accepting worker"
	case "direct-go-rp", "sockd-go-rp", "sockd-node-rp":
		return "a SO_REUSEPORT socket per worker: the kernel hashes each connection"
	case "pm2", "cluster-rr":
		return "the primary accepts and hands connections round-robin"
	case "nginx":
		return "one shared socket, EPOLLEXCLUSIVE"
	}
	return ""
}

func kinds(r ReloadRun) string {
	if len(r.During.ByKind) == 0 {
		return "–"
	}
	var ks []string
	for k, n := range r.During.ByKind {
		ks = append(ks, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(ks)
	// The failures of the window of the reloads.
	from, to := r.During.From, r.During.To
	n, reused := 0, 0
	for _, f := range r.Failures {
		if f.T < from || f.T >= to {
			continue
		}
		n++
		if f.Reused {
			reused++
		}
	}
	s := strings.Join(ks, ", ")
	if n > 0 {
		s += fmt.Sprintf(" (%d of %d on keep-alive connections that had carried a response)", reused, n)
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

// ---- aggregation ----

type ovAgg struct {
	name, label, base string
	runs              []float64
	rps, p50, p99     float64
	cpu               float64
	ratio             float64
	ratios            []float64 // per round
	failed            int
	bal, balNew       []float64
	shares, sharesNew [][]int // per run, per worker (sorted)
}

func overheadAgg(res *Results) []*ovAgg {
	by := map[string]*ovAgg{}
	var order []string
	rpsAt := map[string]map[int]float64{}
	for _, r := range res.Overhead {
		a := by[r.Peer]
		if a == nil {
			a = &ovAgg{name: r.Peer, label: infoOf(r.Peer).label, base: baseline(r.Peer)}
			by[r.Peer] = a
			order = append(order, r.Peer)
			rpsAt[r.Peer] = map[int]float64{}
		}
		a.runs = append(a.runs, r.W.RPS)
		rpsAt[r.Peer][r.Round] = r.W.RPS
		a.failed += r.W.Failed
		a.shares = append(a.shares, r.PerWorker)
		a.sharesNew = append(a.sharesNew, r.PerNew)
		if len(r.PerWorker) >= 2 && r.PerWorker[len(r.PerWorker)-1] > 0 {
			a.bal = append(a.bal, float64(r.PerWorker[0])/float64(r.PerWorker[len(r.PerWorker)-1]))
		}
		if len(r.PerNew) >= 2 && r.PerNew[len(r.PerNew)-1] > 0 {
			a.balNew = append(a.balNew, float64(r.PerNew[0])/float64(r.PerNew[len(r.PerNew)-1]))
		}
	}
	out := make([]*ovAgg, 0, len(order))
	for _, n := range order {
		a := by[n]
		var p50, p99, cpu []float64
		for _, r := range res.Overhead {
			if r.Peer == n {
				p50 = append(p50, float64(r.W.P50us)/1000)
				p99 = append(p99, float64(r.W.P99us)/1000)
				cpu = append(cpu, r.W.CPUPerReq)
			}
		}
		a.rps, a.p50, a.p99, a.cpu = median(a.runs), median(p50), median(p99), median(cpu)
		if a.base != "" && rpsAt[a.base] != nil {
			var ratios []float64
			for round, v := range rpsAt[n] {
				if b := rpsAt[a.base][round]; b > 0 {
					ratios = append(ratios, v/b)
				}
			}
			sort.Float64s(ratios)
			a.ratio, a.ratios = median(ratios), ratios
		}
		out = append(out, a)
	}
	return out
}

func summary(b *strings.Builder, res *Results, ov []*ovAgg) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	get := func(n string) *ovAgg {
		for _, a := range ov {
			if a.name == n {
				return a
			}
		}
		return nil
	}
	if a, d := get("sockd-go"), get("direct-go"); a != nil && d != nil {
		w("- **Overhead**: sockd/direct throughput with 2 Go demo workers **%.2f** (shared socket) ", a.ratio)
		if r := get("sockd-go-rp"); r != nil {
			w("and **%.2f** (`--reuseport`)", r.ratio)
		}
		w("; %.0f vs %.0f req/s (medians; target ≥ 0.98; per-round ratios %s", a.rps, d.rps, joinf(a.ratios, "%.2f"))
		if r := get("sockd-go-rp"); r != nil {
			w(" and %s", joinf(r.ratios, "%.2f"))
		}
		w("). sockd is not in the data path (it only holds the sockets and waits), so the spread is the machine's noise; the server CPU per request is %.1f µs with sockd and %.1f µs without.", a.cpu, d.cpu)
		if n, dn := get("sockd-node"), get("direct-node"); n != nil && dn != nil {
			w(" With the Node app: sockd %.0f, direct %.0f", n.rps, dn.rps)
			for _, x := range []string{"sockd-node-rp", "pm2", "cluster-rr", "cluster-none"} {
				if o := get(x); o != nil {
					w(", %s %.0f", x, o.rps)
				}
			}
			w(" req/s")
			if pm, c := get("pm2"), n; pm != nil && pm.cpu > 0 {
				w(" (server CPU per request: sockd %.0f µs, PM2 %.0f µs: PM2's daemon, like Node's round-robin primary, accepts every connection and passes it on)", c.cpu, pm.cpu)
			}
			w(".")
		}
		w("\n")
	}
	if len(res.Reloads) > 0 {
		w("- **Reload under load** (failed requests while reloading one reload after another, %.0f req/s): ", res.Params.ReloadRate)
		var parts []string
		for _, r := range res.Reloads {
			parts = append(parts, fmt.Sprintf("%s **%d** in %d reloads", r.Peer, r.During.Failed, r.Done))
		}
		w("%s.\n", strings.Join(parts, ", "))
		var lat []string
		for _, r := range res.Reloads {
			first, gone := reloadLatencies(r.Events)
			lat = append(lat, fmt.Sprintf("%s %.0f/%.0f", r.Peer, median(first), median(gone)))
		}
		w("- **Reload latency** (median ms from trigger to first answer of a new worker / old generation gone): %s.\n", strings.Join(lat, ", "))
	}
	if len(ov) > 0 {
		var bal []string
		for _, a := range ov {
			if len(a.bal) > 0 && a.name != "tableflip" {
				bal = append(bal, fmt.Sprintf("%s %.2f/%.2f", a.name, median(a.bal), median(a.balNew)))
			}
		}
		w("- **Balance** (busiest/least busy worker, all requests/new connections only): %s.\n", strings.Join(bal, ", "))
	}
	if len(res.Crashes) > 0 {
		var cs []string
		for _, c := range res.Crashes {
			var sv []float64
			for _, k := range c.Kills {
				if k.Err == "" {
					sv = append(sv, k.ServeMS)
				}
			}
			cs = append(cs, fmt.Sprintf("%s %.0f", c.Peer, median(sv)))
		}
		w("- **Crash recovery** (median ms from SIGKILL to the replacement's first answer): %s.\n", strings.Join(cs, ", "))
	}
	if f := res.Footprint; f != nil {
		var fs []string
		for _, s := range f.Sups {
			fs = append(fs, fmt.Sprintf("%s %.1f MiB / %.2f s", s.Peer, float64(s.RSSKB)/1024, s.CPUsec))
		}
		w("- **Idle supervisor** (RSS / CPU over %.0f s): %s.\n", f.IdleSeconds, strings.Join(fs, ", "))
	}
	for _, r := range res.Reloads {
		if r.Before != nil && r.After != nil && r.Peer == "sockd-go" {
			w("- **No leak across reloads**: after %d reloads sockd holds %d descriptors (%d before) and runs %d processes with its workers (%d before).\n", r.Done, r.After.FDs, r.Before.FDs, r.After.Procs, r.Before.Procs)
		}
	}
	if len(res.Scale) > 0 {
		var sc []string
		for _, s := range res.Scale {
			if s.Err == "" && (s.Peer == "sockd-go" || s.Peer == "pm2" || s.Peer == "gunicorn") {
				sc = append(sc, fmt.Sprintf("%s×%d %.0f", s.Peer, s.Workers, s.ReadyMS))
			}
		}
		w("- **Time to all ready** (ms): %s.\n", strings.Join(sc, ", "))
	}
}
