package suite

import (
	"fmt"
	"sort"
	"strings"
)

func (r *report) overheadSection() {
	p := r.p
	r.w("## 1. Overhead: throughput with 2 workers\n\n")
	if len(r.ov) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("Closed loop, %d clients, %s per run, %d runs per peer alternated (%d for sockd and the direct runs it is compared with); medians.\n\n", p.OverheadClients, p.OverheadRun, p.OverheadRounds, max(p.OverheadRounds, p.PairRounds))
	r.w("| peer | req/s (median) | every run | vs direct: median (range) of the per-round ratios | p50 ms | p99 ms | server CPU µs/req | failed |\n|---|---:|---|---:|---:|---:|---:|---:|\n")
	for _, a := range r.ov {
		ratio := "–"
		if a.ratio > 0 {
			ratio = fmt.Sprintf("%.2f (%.2f–%.2f) of %s", a.ratio, a.ratios[0], a.ratios[len(a.ratios)-1], a.base)
		}
		r.w("| %s | %.0f | %s | %s | %.2f | %.2f | %.1f | %d |\n", a.label, a.rps, joinf(a.runs, "%.0f"), ratio, a.p50, a.p99, a.cpu, a.failed)
	}
	if pl := r.plot("throughput", "throughput per peer"); pl != "" {
		r.w("\n%s\n", pl)
	}
	r.w("\n")
}

func (r *report) reloadSection() {
	p := r.p
	r.w("## 2. Reload under load\n\n")
	if len(r.res.Reloads) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("2 workers, %.0f requests/s paced, %d clients (half keep-alive). First %s steady, then reloads one after another until the planned number, or until %s per %d planned reloads have passed.\n\n", p.ReloadRate, p.ReloadClients, p.ReloadSteady, p.ReloadBudget, p.Reloads)
	retried := false
	r.w("| peer | reloads done / planned | failed requests during reloads | of requests | how they failed | p99 steady → during (ms) | req/s steady → during | server CPU µs/req steady → during | reload command CPU per reload |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n")
	for _, run := range r.res.Reloads {
		done, retries := reloadsDone(run)
		retried = retried || retries
		cmd := "–"
		if run.CmdCPUsec > 0 && len(run.Events) > 0 {
			cmd = fmt.Sprintf("%.0f ms", run.CmdCPUsec*1000/float64(len(run.Events)))
		}
		r.w("| %s | %s | **%d** | %d | %s | %.2f → %.2f | %.0f → %.0f | %.0f → %.0f | %s |\n", infoOf(run.Peer).label, done, run.During.Failed,
			run.During.OK+run.During.Failed, kinds(run), float64(run.Steady.P99us)/1000, float64(run.During.P99us)/1000,
			run.Steady.RPS, run.During.RPS, run.Steady.CPUPerReq, run.During.CPUPerReq, cmd)
	}
	if retried {
		r.w("\n¹ tableflip refuses an upgrade (\"parent hasn't exited\") until it has noticed that the previous process exited, which it learns a little after the process is gone; the runner sends SIGHUP again after 1 s without progress. The latencies of section 3 count from the first SIGHUP.\n")
	}
	r.w("\nA failed request on a keep-alive connection that had already carried a response is the classic keep-alive race: the server closed the idle connection just as the client sent on it. Clients that retry idempotent requests on a reused connection (browsers, Go's net/http) hide those; the load generator counts them, as it counts everything.\n")
	r.w("\nThe paced load is far below every peer's capacity, so req/s stays at the offered rate unless a peer stalls (section 2b measures throughput and p99 during reloads under a closed-loop load); the CPU per request during reloads includes starting the new workers (the Node and Python interpreters cost far more than the Go demo).\n\n")
	if pl := r.plot("timeline", "latency over time across reloads"); pl != "" {
		r.w("%s\n\n", pl)
		r.w("Latency over time (p50 and p99 per 100 ms, log scale) with a reload every %s: grey bands are reloads (trigger to over), red bars failed requests per 100 ms (right axis).\n\n", p.TimelineEvery)
	}
}

// reloadsDone is the "reloads done / planned" cell of a reload run, and
// whether a reload needed its trigger again.
func reloadsDone(r ReloadRun) (string, bool) {
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
	}
	return done, retries > 0
}

// kinds says how the requests of the window of the reloads failed.
func kinds(r ReloadRun) string {
	if len(r.During.ByKind) == 0 {
		return "–"
	}
	var ks []string
	for k, n := range r.During.ByKind {
		ks = append(ks, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(ks)
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

func (r *report) latencySection() {
	r.w("## 3. Reload latency\n\n")
	if len(r.res.Reloads) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("From the reloads of section 2: trigger sent → first answer from a new worker → last old worker gone → reload over (ms), as the runner sees them. For sockd, the last four columns are the same reloads as sockd's own log tells them (medians, ms): ")
	r.w("trigger → `reload_start` (sockd receives the signal and starts the new generation: **sockd's own share**), `ready_seconds` (reload start → every new worker ready: the new workers' start-up, which sockd only forks and waits for), ")
	r.w("then sockd sends SIGTERM to the old generation in the same step (commit → SIGTERM is sockd's too, and immediate), `handover_seconds` (SIGTERM → no old worker holds a listening socket) and SIGTERM → last old worker exited (`old_gone_seconds`, or the last `worker_exit` of the retired generation): the old workers' drain.\n\n")
	r.w("| peer | trigger | first new answer, median / max | old generation gone, median / max | reload over, median / max | sockd: trigger → reload_start | sockd: new workers ready | sockd: SIGTERM → listeners released | sockd: SIGTERM → old workers exited |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var shares []string
	for _, run := range r.res.Reloads {
		first, gone := reloadLatencies(run.Events)
		var over []float64
		for _, e := range run.Events {
			if e.Err == "" && e.Done > 0 {
				over = append(over, (e.Done-e.T0)*1000)
			}
		}
		sl := "– | – | – | –"
		if sk := sockdShares(run.Events); sk.n > 0 {
			sl = fmt.Sprintf("%s | %s | %s | %s", msf(median(sk.start)), msf(median(sk.ready)), msf(median(sk.handover)), msf(median(sk.gone)))
			shares = append(shares, fmt.Sprintf("%s %s ms of %.0f ms (%d of %d reloads found in the log)", run.Peer, msf(median(sk.start)), median(gone), sk.n, len(run.Events)))
		}
		r.w("| %s | %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %s |\n", infoOf(run.Peer).label, infoOf(run.Peer).trigger,
			median(first), maxf(first), median(gone), maxf(gone), median(over), maxf(over), sl)
	}
	if len(shares) > 0 {
		r.w("\nsockd's own share of a reload (trigger → `reload_start`, median) against the whole of it (trigger → old generation gone, median): %s. The rest is the new workers starting and the old ones draining (and, in the runner's figure, its own polling of `/proc` every 2 ms).\n", strings.Join(shares, ", "))
	}
	r.w("\nsockd and PM2 start the new workers and stop the old ones only once the new ones are ready (the Node app sends `READY=1` through `systemd-notify --ready` once it listens, since Node cannot send unix datagrams itself); gunicorn and nginx stop the old workers right away and let the new ones catch up; tableflip hands over as soon as the new process calls `Ready()`.\n\n")
}

func (r *report) balanceSection() {
	r.w("## 4. Balance between workers\n\n")
	if len(r.ov) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("From the throughput runs: answers of the busiest worker divided by those of the least busy one (1.00 is perfect), median of the runs; keep-alive connections stay with the worker that accepted them, so the new-connection column shows the kernel's (or the supervisor's) per-connection choice alone.\n\n")
	r.w("| peer | how connections are spread | busiest / least busy, all requests | new-connection requests only | every run (all requests) |\n|---|---|---:|---:|---|\n")
	for _, a := range r.ov {
		if len(a.bal) == 0 || infoOf(a.name).sup == "tableflip" {
			continue
		}
		r.w("| %s | %s | %.2f | %.2f | %s |\n", a.label, infoOf(a.name).spread, median(a.bal), median(a.balNew), joinf(a.bal, "%.2f"))
	}
	if pl := r.plot("balance", "requests per worker"); pl != "" {
		r.w("\n%s\n", pl)
	}
	r.w("\n")
}

func (r *report) crashSection() {
	r.w("## 5. Crash recovery\n\n")
	if len(r.res.Crashes) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("%d workers under %.0f requests/s; each worker in turn gets SIGKILL, one per second. Times from the kill, ms.\n\n", r.p.CrashWorkers, r.p.CrashRate)
	r.w("| peer | kills | replacement process exists (median) | replacement listening (median) | replacement answered (median / max) | failed requests per kill (median / total) |\n|---|---:|---:|---:|---:|---:|\n")
	for _, c := range r.res.Crashes {
		r.w("%s", crashRow(c))
	}
	r.w("\nA SIGKILL loses the requests in the killed worker's hands and resets its keep-alive connections under every supervisor; what differs is how fast a replacement serves.\n\n")
}

func crashRow(c CrashRun) string {
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
	return fmt.Sprintf("| %s | %s | %.0f | %s | %.0f / %.0f | %.0f / %d |\n", infoOf(c.Peer).label, kills, median(sp), ready, median(sv), maxf(sv), median(fl), total)
}

func (r *report) footprintSection() {
	r.w("## 6. Footprint\n\n")
	f := r.res.Footprint
	if f == nil {
		r.w("Not run.\n\n")
		return
	}
	r.w("Each supervisor with 2 idle workers, after one short burst of requests, then %.0f s of nothing. Processes: the supervisor and all its descendants (for sockd, its `sockd-guard` helper too, when it runs one).\n\n", f.IdleSeconds)
	r.w("| peer | supervisor process | supervisor RSS (MiB) | supervisor CPU over the idle %.0f s (s) | processes | RSS with workers (MiB) | CPU with workers (s) |\n|---|---|---:|---:|---:|---:|---:|\n", f.IdleSeconds)
	for _, s := range f.Sups {
		r.w("| %s | `%s` | %.1f | %.3f | %d | %.1f | %.3f |\n", infoOf(s.Peer).label, s.Process, float64(s.RSSKB)/1024, s.CPUsec, s.Procs, float64(s.TotalRSSKB)/1024, s.TotalCPU)
	}
	r.w("\n")
}

// reloadCountsSection is sockd's own resources before and after the
// reloads of section 2 (part of section 6).
func (r *report) reloadCountsSection() {
	var counted []ReloadRun
	for _, run := range r.res.Reloads {
		if run.Before != nil && run.After != nil {
			counted = append(counted, run)
		}
	}
	if len(counted) == 0 {
		return
	}
	r.w("sockd itself before and after the reloads of section 2 (descriptors, threads, processes: sockd, its workers and its guard if any, RSS):\n\n")
	r.w("| peer | reloads | fds before → after | threads | processes | sockd RSS (MiB) | sockd peak RSS (VmHWM, MiB) |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, run := range counted {
		b, a := run.Before, run.After
		r.w("| %s | %d | %d → %d | %d → %d | %d → %d | %.1f → %.1f | %s |\n", infoOf(run.Peer).label, run.Done, b.FDs, a.FDs,
			b.Threads, a.Threads, b.Procs, a.Procs, float64(b.RSSKB)/1024, float64(a.RSSKB)/1024, peakText(a.PeakRSSKB))
	}
	for _, run := range counted {
		if len(run.RSSEvery100) > 2 {
			var mb []float64
			for _, kb := range run.RSSEvery100 {
				mb = append(mb, float64(kb)/1024)
			}
			r.w("\nsockd's RSS every 100 reloads (%s, MiB): %s, %.1f at the end; %s MiB at most (VmHWM).\n", run.Peer, joinf(mb, "%.1f"), float64(run.After.RSSKB)/1024, peakText(run.After.PeakRSSKB))
		}
	}
	r.w("\n")
}

// peakText is a VmHWM in MiB, "–" when the results predate it.
func peakText(kb int64) string {
	if kb <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

func (r *report) scaleSection() {
	r.w("## 7. Scale: time to all ready\n\n")
	if len(r.res.Scale) == 0 {
		r.w("Not run.\n\n")
		return
	}
	sizes, order, byPeer := scaleTable(r.res.Scale)
	r.w("From the start command to every worker ready: sockd's Go demo worker when sockd logs `pool_ready` (every worker sent `READY=1`); the Node and Python apps when every worker has written its pid after it started listening (gunicorn: `post_worker_init`); nginx when its workers exist and the port answers. ")
	r.w("ms; the runner polls for readiness every 5 ms. sockd-go ran %d times per size (median shown); every other cell is one run. In parentheses, sockd's own figure from its `pool_ready` line (`seconds`: from the start of its worker pool, just before the first worker is forked, to the last `READY=1`; without sockd's own start-up before it and the runner's polling); the Node app sends `READY=1` through `systemd-notify --ready`. With 64 workers on 2 cores these times depend heavily on what else the machine runs (sockd with 64 Node workers took from 2.3 s to 9 s in our runs).\n\n", max(r.p.ScaleRunsGo, 1))
	r.w("| peer \\ workers |")
	for _, n := range sizes {
		r.w(" %d |", n)
	}
	r.w("\n|---|")
	for range sizes {
		r.w("---:|")
	}
	r.w("\n")
	for _, name := range order {
		r.w("| %s |", infoOf(name).label)
		for _, n := range sizes {
			r.w(" %s |", scaleCell(byPeer[name][n]))
		}
		r.w("\n")
	}
	r.w("\n")
}

// scaleTable groups the scale runs by peer (in the order they ran) and
// size.
func scaleTable(runs []ScaleRun) (sizes []int, order []string, byPeer map[string]map[int][]ScaleRun) {
	byPeer = map[string]map[int][]ScaleRun{}
	for _, s := range runs {
		if !contains(sizes, s.Workers) {
			sizes = append(sizes, s.Workers)
		}
		if byPeer[s.Peer] == nil {
			byPeer[s.Peer] = map[int][]ScaleRun{}
			order = append(order, s.Peer)
		}
		byPeer[s.Peer][s.Workers] = append(byPeer[s.Peer][s.Workers], s)
	}
	sort.Ints(sizes)
	return sizes, order, byPeer
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

func (r *report) scaleLoadSection() {
	r.w("## 8. Scaling under load\n\n")
	if len(r.res.ScaleLoad) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.w("sockd with %d Go demo workers under a paced load (%.0f req/s, %d clients), scaled up by %d workers with `sockd scale +%d --wait` and back down with `sockd scale -%d --wait`, %d times. ",
		r.p.Workers, r.p.ReloadRate, r.p.ReloadClients, r.p.ScaleStep, r.p.ScaleStep, r.p.ScaleStep, r.p.ScaleCycles)
	r.w("Up: from the command to its return (every new worker ready), and to every new worker having answered a request (medians, ms). Failed: every request of the run (the target is 0 in both modes: a scale-down drains the retired workers, and with `--reuseport` their sockets' queued connections first).\n\n")
	r.w("| peer | cycles | requests | failed | up: --wait returned | up: new workers answering | down: --wait returned |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.res.ScaleLoad {
		r.w("| %s | %d | %d | %d | %s | %s | %s |\n", infoOf(s.Peer).label, len(s.UpWaitMS), s.Requests, s.Failed,
			msf(median(s.UpWaitMS)), msf(median(s.UpServeMS)), msf(median(s.DownWaitMS)))
	}
	r.w("\n")
}
