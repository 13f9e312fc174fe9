package suite

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
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
	w("4. [Reload under load](#2-reload-under-load)\n5. [Throughput and latency during reloads](#2b-throughput-and-latency-during-reloads)\n6. [Reload latency](#3-reload-latency)\n7. [Balance between workers](#4-balance-between-workers)\n")
	w("8. [Crash recovery](#5-crash-recovery)\n9. [Footprint](#6-footprint)\n10. [Scale: time to all ready](#7-scale-time-to-all-ready)\n11. [Exact commands](#exact-commands)\n\n")

	ov := overheadAgg(res)
	w("## Summary\n\n")
	summary(&b, res, ov)

	w("\n## How it is measured\n\n")
	p := res.Params
	w("- **Load generator** (`bench/load`, Go, in the runner's process): %d client goroutines in the throughput runs, %d in the reload runs; ", p.OverheadClients, p.ReloadClients)
	w("half keep one HTTP/1.1 connection alive (reconnecting after an error or a `Connection: close`), half open a new connection for every request (`Connection: close`). ")
	w("Every request is recorded with its start, latency, the pid that answered (`X-Pid`/`X-Sockd-Pid` header or `pid=` in the body) and its outcome: a request is **failed** when it is refused, reset, times out (2 s), is closed before or during the response, or gets another status than 200. ")
	w("Throughput runs and the reload runs of section 2b are closed loop (each client sends its next request when the previous one ended). The reload runs of section 2, crash and timeline runs send at a fixed %.0f requests/s in total and count latency from the scheduled start, so a stall is charged to every request it delayed.\n", p.ReloadRate)
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
		w("2 workers, %.0f requests/s paced, %d clients (half keep-alive). First %s steady, then reloads one after another until the planned number, or until %s per %d planned reloads have passed.\n\n", p.ReloadRate, p.ReloadClients, p.ReloadSteady, p.ReloadBudget, p.Reloads)
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
		w("\nThe paced load is far below every peer's capacity, so req/s stays at the offered rate unless a peer stalls (section 2b measures throughput and p99 during reloads under a closed-loop load); the CPU per request during reloads includes starting the new workers (the Node and Python interpreters cost far more than the Go demo).\n\n")
		if pl, ok := plots["timeline"]; ok {
			w("![latency over time across reloads](%s)\n\n", rel(pl))
			w("Latency over time (p50 and p99 per 100 ms, log scale) with a reload every %s: grey bands are reloads (trigger to over), red bars failed requests per 100 ms (right axis).\n\n", p.TimelineEvery)
		}
	}

	// ---- throughput and latency during reloads ----
	reloadTputSection(&b, res)

	// ---- reload latency ----
	w("## 3. Reload latency\n\n")
	if len(res.Reloads) == 0 {
		w("Not run.\n\n")
	} else {
		w("From the reloads of section 2: trigger sent → first answer from a new worker → last old worker gone → reload over (ms), as the runner sees them. For sockd, the last four columns are the same reloads as sockd's own log tells them (medians, ms): ")
		w("trigger → `reload_start` (sockd receives the signal and starts the new generation: **sockd's own share**), `ready_seconds` (reload start → every new worker ready: the new workers' start-up, which sockd only forks and waits for), ")
		w("then sockd sends SIGTERM to the old generation in the same step (commit → SIGTERM is sockd's too, and immediate), `handover_seconds` (SIGTERM → no old worker holds a listening socket) and SIGTERM → last old worker exited (`old_gone_seconds`, or the last `worker_exit` of the retired generation): the old workers' drain.\n\n")
		w("| peer | trigger | first new answer, median / max | old generation gone, median / max | reload over, median / max | sockd: trigger → reload_start | sockd: new workers ready | sockd: SIGTERM → listeners released | sockd: SIGTERM → old workers exited |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range res.Reloads {
			first, gone := reloadLatencies(r.Events)
			var over []float64
			for _, e := range r.Events {
				if e.Err == "" && e.Done > 0 {
					over = append(over, (e.Done-e.T0)*1000)
				}
			}
			sl := "– | – | – | –"
			if sk := sockdShares(r.Events); sk.n > 0 {
				sl = fmt.Sprintf("%s | %s | %s | %s", msf(median(sk.start)), msf(median(sk.ready)), msf(median(sk.handover)), msf(median(sk.gone)))
			}
			w("| %s | %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %s |\n", infoOf(r.Peer).label, triggers[infoOf(r.Peer).sup],
				median(first), maxf(first), median(gone), maxf(gone), median(over), maxf(over), sl)
		}
		var shares []string
		for _, r := range res.Reloads {
			if sk := sockdShares(r.Events); sk.n > 0 {
				_, gone := reloadLatencies(r.Events)
				shares = append(shares, fmt.Sprintf("%s %s ms of %.0f ms (%d of %d reloads found in the log)", r.Peer, msf(median(sk.start)), median(gone), sk.n, len(r.Events)))
			}
		}
		if len(shares) > 0 {
			w("\nsockd's own share of a reload (trigger → `reload_start`, median) against the whole of it (trigger → old generation gone, median): %s. The rest is the new workers starting and the old ones draining (and, in the runner's figure, its own polling of `/proc` every 2 ms).\n", strings.Join(shares, ", "))
		}
		w("\nsockd and PM2 start the new workers and stop the old ones only once the new ones are ready (the Node app sends `READY=1` through `systemd-notify --ready` once it listens, since Node cannot send unix datagrams itself); gunicorn and nginx stop the old workers right away and let the new ones catch up; tableflip hands over as soon as the new process calls `Ready()`.\n\n")
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
		w("\nA SIGKILL loses the requests in the killed worker's hands and resets its keep-alive connections under every supervisor; what differs is how fast a replacement serves.\n\n")
	}

	// ---- footprint ----
	w("## 6. Footprint\n\n")
	if f := res.Footprint; f == nil {
		w("Not run.\n\n")
	} else {
		w("Each supervisor with 2 idle workers, after one short burst of requests, then %.0f s of nothing. Processes: the supervisor and all its descendants (for sockd, its `sockd-guard` helper too, when it runs one).\n\n", f.IdleSeconds)
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
		w("sockd itself before and after the reloads of section 2 (descriptors, threads, processes: sockd, its workers and its guard if any, RSS):\n\n")
		w("| peer | reloads | fds before → after | threads | processes | sockd RSS (MiB) | sockd peak RSS (VmHWM, MiB) |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range counted {
			w("| %s | %d | %d → %d | %d → %d | %d → %d | %.1f → %.1f | %s |\n", infoOf(r.Peer).label, r.Done, r.Before.FDs, r.After.FDs,
				r.Before.Threads, r.After.Threads, r.Before.Procs, r.After.Procs, float64(r.Before.RSSKB)/1024, float64(r.After.RSSKB)/1024,
				peakText(r.After.PeakRSSKB))
		}
		for _, r := range counted {
			if len(r.RSSEvery100) > 2 {
				var mb []float64
				for _, kb := range r.RSSEvery100 {
					mb = append(mb, float64(kb)/1024)
				}
				w("\nsockd's RSS every 100 reloads (%s, MiB): %s, %.1f at the end; %s MiB at most (VmHWM).\n", r.Peer, joinf(mb, "%.1f"), float64(r.After.RSSKB)/1024, peakText(r.After.PeakRSSKB))
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
		byPeer := map[string]map[int][]ScaleRun{}
		var order []string
		for _, s := range res.Scale {
			if !seen[s.Workers] {
				seen[s.Workers] = true
				sizes = append(sizes, s.Workers)
			}
			if byPeer[s.Peer] == nil {
				byPeer[s.Peer] = map[int][]ScaleRun{}
				order = append(order, s.Peer)
			}
			byPeer[s.Peer][s.Workers] = append(byPeer[s.Peer][s.Workers], s)
		}
		sort.Ints(sizes)
		w("From the start command to every worker ready: sockd's Go demo worker when sockd logs `pool_ready` (every worker sent `READY=1`); the Node and Python apps when every worker has written its pid after it started listening (gunicorn: `post_worker_init`); nginx when its workers exist and the port answers. ")
		w("ms; the runner polls for readiness every 5 ms. sockd-go ran %d times per size (median shown); every other cell is one run. In parentheses, sockd's own figure from its `pool_ready` line (`seconds`: from the start of its worker pool, just before the first worker is forked, to the last `READY=1`; without sockd's own start-up before it and the runner's polling); the Node app sends `READY=1` through `systemd-notify --ready`. With 64 workers on 2 cores these times depend heavily on what else the machine runs (sockd with 64 Node workers took from 2.3 s to 9 s in our runs).\n\n", max(p.ScaleRunsGo, 1))
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
				w(" %s |", scaleCell(byPeer[name][n]))
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
	}
	b.WriteString(tputSummary(res))
	if len(res.Reloads) > 0 {
		var lat []string
		for _, r := range res.Reloads {
			first, gone := reloadLatencies(r.Events)
			lat = append(lat, fmt.Sprintf("%s %.0f/%.0f", r.Peer, median(first), median(gone)))
		}
		w("- **Reload latency** (median ms from trigger to first answer of a new worker / old generation gone): %s.", strings.Join(lat, ", "))
		var own []string
		for _, r := range res.Reloads {
			if sk := sockdShares(r.Events); sk.n > 0 {
				own = append(own, fmt.Sprintf("%s %s ms", r.Peer, msf(median(sk.start))))
			}
		}
		if len(own) > 0 {
			w(" sockd's own share, from its log (trigger → `reload_start`; the rest is the workers starting and draining): %s.", strings.Join(own, ", "))
		}
		w("\n")
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
			w("- **No leak across reloads**: after %d reloads sockd holds %d descriptors (%d before) and runs %d processes with its workers (%d before); its RSS went %.1f → %.1f MiB, %s MiB at most (VmHWM; target ≤ 7 MB = 6.7 MiB).\n",
				r.Done, r.After.FDs, r.Before.FDs, r.After.Procs, r.Before.Procs, float64(r.Before.RSSKB)/1024, float64(r.After.RSSKB)/1024, peakText(r.After.PeakRSSKB))
		}
	}
	if len(res.Scale) > 0 {
		type key struct {
			peer string
			n    int
		}
		runs := map[key][]ScaleRun{}
		var keys []key
		for _, s := range res.Scale {
			if s.Peer == "sockd-go" || s.Peer == "pm2" || s.Peer == "gunicorn" {
				k := key{s.Peer, s.Workers}
				if runs[k] == nil {
					keys = append(keys, k)
				}
				runs[k] = append(runs[k], s)
			}
		}
		sort.SliceStable(keys, func(i, j int) bool {
			if keys[i].n != keys[j].n {
				return keys[i].n < keys[j].n
			}
			return false
		})
		var sc []string
		for _, k := range keys {
			if c := scaleCell(runs[k]); c != "failed" {
				sc = append(sc, fmt.Sprintf("%s×%d %s", k.peer, k.n, c))
			}
		}
		w("- **Time to all ready** (ms; for sockd in parentheses its own `pool_ready` figure): %s.\n", strings.Join(sc, ", "))
	}
}

// ---- sockd's own account of its reloads ----

type sockdShare struct {
	n                            int
	start, ready, handover, gone []float64
}

func sockdShares(evs []ReloadEvent) sockdShare {
	var sk sockdShare
	for _, e := range evs {
		if e.Err != "" || e.Sockd == nil || e.Sockd.TotalMS == 0 {
			continue
		}
		sk.n++
		sk.start = append(sk.start, e.Sockd.StartMS)
		sk.ready = append(sk.ready, e.Sockd.ReadyMS)
		sk.handover = append(sk.handover, e.Sockd.HandoverMS)
		if e.Sockd.OldGoneMS > 0 {
			sk.gone = append(sk.gone, e.Sockd.OldGoneMS)
		}
	}
	return sk
}

// msf formats milliseconds: one decimal below 10 ms, none above.
func msf(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// ---- (2b) throughput and latency during reloads ----

type tputAgg struct {
	name                   string
	rounds                 int
	planned, done, late    int
	failedReloads          int
	capped                 bool
	rpsS, rpsD             []float64
	rpsRatio, p99Ratio     []float64 // per round, sorted
	p50S, p50D, p99S, p99D []float64
	cpuS, cpuD             []float64
	failedS, failedD       int
	cmdCPUms               float64 // per reload
	secS, secD             []float64
}

// sockd's targets for reloads (issue 5): p99 during reloads at most 1.2×
// steady, throughput at least 0.95× steady.
const (
	targetP99Ratio = 1.2
	targetRPSRatio = 0.95
)

func tputAggs(res *Results) []*tputAgg {
	by := map[string]*tputAgg{}
	var out []*tputAgg
	for _, r := range res.ReloadTput {
		a := by[r.Peer]
		if a == nil {
			a = &tputAgg{name: r.Peer}
			by[r.Peer] = a
			out = append(out, a)
		}
		a.rounds++
		a.planned += r.Planned
		a.done += r.Done
		a.late += r.Late
		a.failedReloads += r.FailedReloads
		a.capped = a.capped || r.Capped
		a.rpsS = append(a.rpsS, r.Steady.RPS)
		a.rpsD = append(a.rpsD, r.During.RPS)
		if r.Steady.RPS > 0 {
			a.rpsRatio = append(a.rpsRatio, r.During.RPS/r.Steady.RPS)
		}
		if r.Steady.P99us > 0 {
			a.p99Ratio = append(a.p99Ratio, float64(r.During.P99us)/float64(r.Steady.P99us))
		}
		a.p50S = append(a.p50S, float64(r.Steady.P50us)/1000)
		a.p50D = append(a.p50D, float64(r.During.P50us)/1000)
		a.p99S = append(a.p99S, float64(r.Steady.P99us)/1000)
		a.p99D = append(a.p99D, float64(r.During.P99us)/1000)
		a.cpuS = append(a.cpuS, r.Steady.CPUPerReq)
		a.cpuD = append(a.cpuD, r.During.CPUPerReq)
		a.secS = append(a.secS, r.Steady.Seconds)
		a.secD = append(a.secD, r.During.Seconds)
		a.failedS += r.Steady.Failed
		a.failedD += r.During.Failed
		if len(r.Events) > 0 {
			a.cmdCPUms += r.CmdCPUsec * 1000 // summed, divided below
		}
	}
	for _, a := range out {
		sort.Float64s(a.rpsRatio)
		sort.Float64s(a.p99Ratio)
		if n := a.done + a.failedReloads; n > 0 {
			a.cmdCPUms /= float64(n)
		}
	}
	return out
}

// ratioText is "median (lo–hi)" of sorted per-round ratios.
func ratioText(xs []float64) string {
	switch len(xs) {
	case 0:
		return "–"
	case 1:
		return fmt.Sprintf("%.2f×", xs[0])
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", median(xs), xs[0], xs[len(xs)-1])
}

// targetText is sockd's verdict: ✓ or ✗ for p99 and for throughput.
func targetText(a *tputAgg) string {
	if infoOf(a.name).sup != "sockd" || len(a.rpsRatio) == 0 || len(a.p99Ratio) == 0 {
		return "–"
	}
	mark := func(ok bool) string {
		if ok {
			return "✓"
		}
		return "✗"
	}
	return fmt.Sprintf("p99 %s, req/s %s", mark(median(a.p99Ratio) <= targetP99Ratio), mark(median(a.rpsRatio) >= targetRPSRatio))
}

func reloadTputSection(b *strings.Builder, res *Results) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p := res.Params
	w("## 2b. Throughput and latency during reloads\n\n")
	aggs := tputAggs(res)
	if len(aggs) == 0 {
		w("Not run.\n\n")
		return
	}
	every := (p.TputWindow / time.Duration(max(p.TputReloads, 1))).Round(time.Millisecond)
	w("Closed loop (each client sends its next request as soon as the previous one ended, so the load takes whatever the servers give), %d clients (half keep-alive), 2 workers. ", p.TputClients)
	w("Each peer is started afresh for each round; after %s of warm-up a steady window of %s, then a window of %s with %d reloads, one every %s (the first at its start), each waited for until it is over as in section 2; ", p.TputWarm, tputSteady(p), p.TputWindow, p.TputReloads, every)
	w("a reload still running when the next one is due delays that one (\"late\"), and the window then lasts until the last one is over. ")
	alt := ", the peers alternated (A B C … A B C …)"
	if p.TputRounds < 2 {
		alt = ""
	}
	w("%s%s, so every peer had %d reloads in %s of reload window in all. Ratios are reload window / steady window of the same run, median (and range) over the rounds; the other figures are medians over the rounds. ", plural(p.TputRounds, "round"), alt, p.TputRounds*p.TputReloads, time.Duration(p.TputRounds)*p.TputWindow)
	w("**sockd's target** (issue 5): p99 during reloads ≤ %.1f× steady and throughput during reloads ≥ %.2f× steady, checked on the medians.\n\n", targetP99Ratio, targetRPSRatio)
	w("| peer | reloads done (late) | req/s steady → during | req/s during / steady | p99 ms steady → during | p99 during / steady | p50 ms steady → during | failed requests steady / during | server CPU µs/req steady → during | sockd's target: p99 ≤ %.1f×, req/s ≥ %.2f× |\n", targetP99Ratio, targetRPSRatio)
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	var cmds []string
	for _, a := range aggs {
		done := fmt.Sprintf("%d / %d", a.done, a.planned)
		if a.late > 0 {
			done += fmt.Sprintf(" (%d late)", a.late)
		}
		if a.failedReloads > 0 {
			done += fmt.Sprintf(", %d failed", a.failedReloads)
		}
		if a.capped {
			done += ", capped"
		}
		if d, s := median(a.secD), median(a.secS); s > 0 && d > s*1.05 {
			done += fmt.Sprintf(", window %.1f s", d)
		}
		w("| %s | %s | %.0f → %.0f | **%s** | %.2f → %.2f | **%s** | %.2f → %.2f | %d / %d | %.1f → %.1f | %s |\n", infoOf(a.name).label, done,
			median(a.rpsS), median(a.rpsD), ratioText(a.rpsRatio), median(a.p99S), median(a.p99D), ratioText(a.p99Ratio),
			median(a.p50S), median(a.p50D), a.failedS, a.failedD, median(a.cpuS), median(a.cpuD), targetText(a))
		if a.cmdCPUms > 0 {
			cmds = append(cmds, fmt.Sprintf("%s %.0f ms", a.name, a.cmdCPUms))
		}
	}
	w("\nThe load generator runs in the runner and shares the 2 cores with the servers, so whatever CPU a reload costs is taken from the throughput: starting the new workers (a Node or Python interpreter costs far more than the Go demo worker; it shows in the CPU per request during reloads) and, for the peers reloaded by a command, the command itself")
	if len(cmds) > 0 {
		w(" (CPU per reload: %s; not in the server CPU column)", strings.Join(cmds, ", "))
	}
	w(". That is a real cost of reloading on a small machine, so it is left in.\n\n")
	restartTable(b, aggs)
}

// peakText is a VmHWM in MiB, "–" when the results predate it.
func peakText(kb int64) string {
	if kb <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

// restartTable compares each sockd peer with the same app restarted by the
// runner itself (the restart-* peers): the same reloads made without sockd.
func restartTable(b *strings.Builder, aggs []*tputAgg) {
	by := map[string]*tputAgg{}
	for _, a := range aggs {
		by[a.name] = a
	}
	var rows []string
	for _, a := range aggs {
		i := infoOf(a.name)
		r := by["restart-"+i.app]
		if i.sup != "sockd" || r == nil || len(a.rpsRatio) == 0 || len(r.rpsRatio) == 0 || len(a.p99Ratio) == 0 || len(r.p99Ratio) == 0 {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %.2f× | %.2f× | **%.2f** | %.2f× | %.2f× | **%.2f** |\n", i.label,
			median(r.rpsRatio), median(a.rpsRatio), median(a.rpsRatio)/median(r.rpsRatio),
			median(r.p99Ratio), median(a.p99Ratio), median(a.p99Ratio)/median(r.p99Ratio)))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "**Against the app restarted by hand.** The `restart-*` rows above are no supervisor at all: the runner itself restarts the app the way sockd reloads it (start new workers on the same socket, wait until each one said `READY=1`, SIGTERM the old ones), with the same app, the same reloads and the same load; a reference made the same way without sockd. What they lose comes from the app: its interpreter's start-up and, for Node, V8's warm-up (a fresh worker answers far fewer requests until its JIT has compiled the hot paths; see the addendum if there is one). The sockd / by hand columns compare the two (1.00: the same; within this machine's noise otherwise):\n\n")
	b.WriteString("| sockd peer | restarted by hand: req/s during / steady | sockd: req/s during / steady | sockd / by hand | by hand: p99 during / steady | sockd: p99 during / steady | sockd / by hand |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		b.WriteString(r)
	}
	b.WriteString("\n")
}

func tputSteady(p Params) time.Duration {
	if p.TputSteady > 0 {
		return p.TputSteady
	}
	return p.TputWindow
}

func tputSummary(res *Results) string {
	aggs := tputAggs(res)
	if len(aggs) == 0 {
		return ""
	}
	p := res.Params
	var parts, failed []string
	for _, a := range aggs {
		if len(a.rpsRatio) == 0 || len(a.p99Ratio) == 0 {
			continue
		}
		part := fmt.Sprintf("%s **%.2f×** / **%.2f×**", a.name, median(a.rpsRatio), median(a.p99Ratio))
		if t := targetText(a); t != "–" {
			part += " (" + t + ")"
		}
		parts = append(parts, part)
		if a.failedD > 0 {
			failed = append(failed, fmt.Sprintf("%s %d", a.name, a.failedD))
		}
	}
	s := fmt.Sprintf("- **Throughput and p99 during reloads** (closed loop, %d clients, %d reloads in %s against a steady %s, medians of %s; reload window / steady window, req/s / p99; sockd's target ≥ %.2f× / ≤ %.1f×): %s.",
		p.TputClients, p.TputReloads, p.TputWindow, tputSteady(p), plural(p.TputRounds, "round"), targetRPSRatio, targetP99Ratio, strings.Join(parts, ", "))
	if len(failed) > 0 {
		s += fmt.Sprintf(" Failed requests in the reload windows: %s; none for the others.", strings.Join(failed, ", "))
	} else {
		s += " No failed request in any reload window."
	}
	return s + "\n"
}

// scaleCell is the median of the runs that worked, with sockd's own
// pool_ready figure in parentheses.
func scaleCell(runs []ScaleRun) string {
	if len(runs) == 0 {
		return "–"
	}
	var ready, logged []float64
	for _, r := range runs {
		if r.Err != "" {
			continue
		}
		ready = append(ready, r.ReadyMS)
		if r.LogMS > 0 {
			logged = append(logged, r.LogMS)
		}
	}
	if len(ready) == 0 {
		return "failed"
	}
	c := fmt.Sprintf("%.0f", median(ready))
	if len(logged) > 0 {
		c += " (" + msf(median(logged)) + ")"
	}
	if n := len(runs) - len(ready); n > 0 {
		c += fmt.Sprintf(", %d failed", n)
	}
	return c
}

// plural is "1 round", "2 rounds".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
