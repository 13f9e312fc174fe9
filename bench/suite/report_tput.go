package suite

import (
	"fmt"
	"strings"
	"time"
)

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

func tputSteady(p Params) time.Duration {
	if p.TputSteady > 0 {
		return p.TputSteady
	}
	return p.TputWindow
}

func (r *report) reloadTputSection() {
	r.w("## 2b. Throughput and latency during reloads\n\n")
	aggs := tputAggs(r.res)
	if len(aggs) == 0 {
		r.w("Not run.\n\n")
		return
	}
	r.tputIntro()
	r.w("| peer | reloads done (late) | req/s steady → during | req/s during / steady | p99 ms steady → during | p99 during / steady | p50 ms steady → during | failed requests steady / during | server CPU µs/req steady → during | sockd's target: p99 ≤ %.1f×, req/s ≥ %.2f× |\n", targetP99Ratio, targetRPSRatio)
	r.w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	var cmds []string
	for _, a := range aggs {
		r.w("| %s | %s | %.0f → %.0f | **%s** | %.2f → %.2f | **%s** | %.2f → %.2f | %d / %d | %.1f → %.1f | %s |\n", infoOf(a.name).label, tputDone(a),
			median(a.rpsS), median(a.rpsD), ratioText(a.rpsRatio), median(a.p99S), median(a.p99D), ratioText(a.p99Ratio),
			median(a.p50S), median(a.p50D), a.failedS, a.failedD, median(a.cpuS), median(a.cpuD), targetText(a))
		if a.cmdCPUms > 0 {
			cmds = append(cmds, fmt.Sprintf("%s %.0f ms", a.name, a.cmdCPUms))
		}
	}
	r.w("\nThe load generator runs in the runner and shares the 2 cores with the servers, so whatever CPU a reload costs is taken from the throughput: starting the new workers (a Node or Python interpreter costs far more than the Go demo worker; it shows in the CPU per request during reloads) and, for the peers reloaded by a command, the command itself")
	if len(cmds) > 0 {
		r.w(" (CPU per reload: %s; not in the server CPU column)", strings.Join(cmds, ", "))
	}
	r.w(". That is a real cost of reloading on a small machine, so it is left in.\n\n")
	r.restartTable(aggs)
}

func (r *report) tputIntro() {
	p := r.p
	every := (p.TputWindow / time.Duration(max(p.TputReloads, 1))).Round(time.Millisecond)
	r.w("Closed loop (each client sends its next request as soon as the previous one ended, so the load takes whatever the servers give), %d clients (half keep-alive), 2 workers. ", p.TputClients)
	r.w("Each peer is started afresh for each round; after %s of warm-up a steady window of %s, then a window of %s with %d reloads, one every %s (the first at its start), each waited for until it is over as in section 2; ", p.TputWarm, tputSteady(p), p.TputWindow, p.TputReloads, every)
	r.w("a reload still running when the next one is due delays that one (\"late\"), and the window then lasts until the last one is over. ")
	alt := ", the peers alternated (A B C … A B C …)"
	if p.TputRounds < 2 {
		alt = ""
	}
	r.w("%s%s, so every peer had %d reloads in %s of reload window in all. Ratios are reload window / steady window of the same run, median (and range) over the rounds; the other figures are medians over the rounds. ", plural(p.TputRounds, "round"), alt, p.TputRounds*p.TputReloads, time.Duration(p.TputRounds)*p.TputWindow)
	r.w("**sockd's target** (issue 5): p99 during reloads ≤ %.1f× steady and throughput during reloads ≥ %.2f× steady, checked on the medians.\n\n", targetP99Ratio, targetRPSRatio)
}

// tputDone is the "reloads done (late)" cell.
func tputDone(a *tputAgg) string {
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
	return done
}

// restartTable compares each sockd peer with the same app restarted by the
// runner itself (the restart-* peers): the same reloads made without sockd.
func (r *report) restartTable(aggs []*tputAgg) {
	by := map[string]*tputAgg{}
	for _, a := range aggs {
		by[a.name] = a
	}
	var rows []string
	for _, a := range aggs {
		i := infoOf(a.name)
		h := by["restart-"+i.app]
		if i.sup != "sockd" || h == nil || len(a.rpsRatio) == 0 || len(h.rpsRatio) == 0 || len(a.p99Ratio) == 0 || len(h.p99Ratio) == 0 {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %.2f× | %.2f× | **%.2f** | %.2f× | %.2f× | **%.2f** |\n", i.label,
			median(h.rpsRatio), median(a.rpsRatio), median(a.rpsRatio)/median(h.rpsRatio),
			median(h.p99Ratio), median(a.p99Ratio), median(a.p99Ratio)/median(h.p99Ratio)))
	}
	if len(rows) == 0 {
		return
	}
	r.w("**Against the app restarted by hand.** The `restart-*` rows above are no supervisor at all: the runner itself restarts the app the way sockd reloads it (start new workers on the same socket, wait until each one said `READY=1`, SIGTERM the old ones), with the same app, the same reloads and the same load; a reference made the same way without sockd. What they lose comes from the app: its interpreter's start-up and, for Node, V8's warm-up (a fresh worker answers far fewer requests until its JIT has compiled the hot paths; see the addendum if there is one). The sockd / by hand columns compare the two (1.00: the same; within this machine's noise otherwise):\n\n")
	r.w("| sockd peer | restarted by hand: req/s during / steady | sockd: req/s during / steady | sockd / by hand | by hand: p99 during / steady | sockd: p99 during / steady | sockd / by hand |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range rows {
		r.w("%s", row)
	}
	r.w("\n")
}
