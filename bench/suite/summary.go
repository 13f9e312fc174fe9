package suite

import (
	"fmt"
	"sort"
	"strings"
)

// summary is the Summary section: one bullet per scenario that ran.
func (r *report) summary() {
	r.w("## Summary\n\n")
	r.summaryOverhead()
	r.summaryReloads()
	r.summaryTput()
	r.summaryLatency()
	r.summaryBalance()
	r.summaryCrash()
	r.summaryFootprint()
	r.summaryLeak()
	r.summaryScale()
}

// ovOf is the throughput runs of peer n, nil if none.
func (r *report) ovOf(n string) *ovAgg {
	for _, a := range r.ov {
		if a.name == n {
			return a
		}
	}
	return nil
}

func (r *report) summaryOverhead() {
	a, d := r.ovOf("sockd-go"), r.ovOf("direct-go")
	if a == nil || d == nil {
		return
	}
	rp := r.ovOf("sockd-go-rp")
	r.w("- **Overhead**: sockd/direct throughput with 2 Go demo workers **%.2f** (shared socket) ", a.ratio)
	if rp != nil {
		r.w("and **%.2f** (`--reuseport`)", rp.ratio)
	}
	r.w("; %.0f vs %.0f req/s (medians; target ≥ 0.98; per-round ratios %s", a.rps, d.rps, joinf(a.ratios, "%.2f"))
	if rp != nil {
		r.w(" and %s", joinf(rp.ratios, "%.2f"))
	}
	r.w("). sockd is not in the data path (it only holds the sockets and waits), so the spread is the machine's noise; the server CPU per request is %.1f µs with sockd and %.1f µs without.", a.cpu, d.cpu)
	if n, dn := r.ovOf("sockd-node"), r.ovOf("direct-node"); n != nil && dn != nil {
		r.w(" With the Node app: sockd %.0f, direct %.0f", n.rps, dn.rps)
		for _, x := range []string{"sockd-node-rp", "pm2", "cluster-rr", "cluster-none"} {
			if o := r.ovOf(x); o != nil {
				r.w(", %s %.0f", x, o.rps)
			}
		}
		r.w(" req/s")
		if pm := r.ovOf("pm2"); pm != nil && pm.cpu > 0 {
			r.w(" (server CPU per request: sockd %.0f µs, PM2 %.0f µs: PM2's daemon, like Node's round-robin primary, accepts every connection and passes it on)", n.cpu, pm.cpu)
		}
		r.w(".")
	}
	r.w("\n")
}

func (r *report) summaryReloads() {
	if len(r.res.Reloads) == 0 {
		return
	}
	var parts []string
	for _, run := range r.res.Reloads {
		parts = append(parts, fmt.Sprintf("%s **%d** in %d reloads", run.Peer, run.During.Failed, run.Done))
	}
	r.w("- **Reload under load** (failed requests while reloading one reload after another, %.0f req/s): %s.\n", r.p.ReloadRate, strings.Join(parts, ", "))
}

func (r *report) summaryTput() {
	aggs := tputAggs(r.res)
	if len(aggs) == 0 {
		return
	}
	p := r.p
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
	r.w("- **Throughput and p99 during reloads** (closed loop, %d clients, %d reloads in %s against a steady %s, medians of %s; reload window / steady window, req/s / p99; sockd's target ≥ %.2f× / ≤ %.1f×): %s.",
		p.TputClients, p.TputReloads, p.TputWindow, tputSteady(p), plural(p.TputRounds, "round"), targetRPSRatio, targetP99Ratio, strings.Join(parts, ", "))
	if len(failed) > 0 {
		r.w(" Failed requests in the reload windows: %s; none for the others.\n", strings.Join(failed, ", "))
	} else {
		r.w(" No failed request in any reload window.\n")
	}
}

func (r *report) summaryLatency() {
	if len(r.res.Reloads) == 0 {
		return
	}
	var lat, own []string
	for _, run := range r.res.Reloads {
		first, gone := reloadLatencies(run.Events)
		lat = append(lat, fmt.Sprintf("%s %.0f/%.0f", run.Peer, median(first), median(gone)))
		if sk := sockdShares(run.Events); sk.n > 0 {
			own = append(own, fmt.Sprintf("%s %s ms", run.Peer, msf(median(sk.start))))
		}
	}
	r.w("- **Reload latency** (median ms from trigger to first answer of a new worker / old generation gone): %s.", strings.Join(lat, ", "))
	if len(own) > 0 {
		r.w(" sockd's own share, from its log (trigger → `reload_start`; the rest is the workers starting and draining): %s.", strings.Join(own, ", "))
	}
	r.w("\n")
}

func (r *report) summaryBalance() {
	if len(r.ov) == 0 {
		return
	}
	var bal []string
	for _, a := range r.ov {
		if len(a.bal) > 0 && a.name != "tableflip" {
			bal = append(bal, fmt.Sprintf("%s %.2f/%.2f", a.name, median(a.bal), median(a.balNew)))
		}
	}
	r.w("- **Balance** (busiest/least busy worker, all requests/new connections only): %s.\n", strings.Join(bal, ", "))
}

func (r *report) summaryCrash() {
	if len(r.res.Crashes) == 0 {
		return
	}
	var cs []string
	for _, c := range r.res.Crashes {
		var sv []float64
		for _, k := range c.Kills {
			if k.Err == "" {
				sv = append(sv, k.ServeMS)
			}
		}
		cs = append(cs, fmt.Sprintf("%s %.0f", c.Peer, median(sv)))
	}
	r.w("- **Crash recovery** (median ms from SIGKILL to the replacement's first answer): %s.\n", strings.Join(cs, ", "))
}

func (r *report) summaryFootprint() {
	f := r.res.Footprint
	if f == nil {
		return
	}
	var fs []string
	for _, s := range f.Sups {
		fs = append(fs, fmt.Sprintf("%s %.1f MiB / %.2f s", s.Peer, float64(s.RSSKB)/1024, s.CPUsec))
	}
	r.w("- **Idle supervisor** (RSS / CPU over %.0f s): %s.\n", f.IdleSeconds, strings.Join(fs, ", "))
}

func (r *report) summaryLeak() {
	for _, run := range r.res.Reloads {
		if b, a := run.Before, run.After; b != nil && a != nil && run.Peer == "sockd-go" {
			r.w("- **No leak across reloads**: after %d reloads sockd holds %d descriptors (%d before) and runs %d processes with its workers (%d before); its RSS went %.1f → %.1f MiB, %s MiB at most (VmHWM; target ≤ 7 MB = 6.7 MiB).\n",
				run.Done, a.FDs, b.FDs, a.Procs, b.Procs, float64(b.RSSKB)/1024, float64(a.RSSKB)/1024, peakText(a.PeakRSSKB))
		}
	}
}

func (r *report) summaryScale() {
	if len(r.res.Scale) == 0 {
		return
	}
	type key struct {
		peer string
		n    int
	}
	runs := map[key][]ScaleRun{}
	var keys []key
	for _, s := range r.res.Scale {
		if s.Peer == "sockd-go" || s.Peer == "pm2" || s.Peer == "gunicorn" {
			k := key{s.Peer, s.Workers}
			if runs[k] == nil {
				keys = append(keys, k)
			}
			runs[k] = append(runs[k], s)
		}
	}
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].n < keys[j].n })
	var sc []string
	for _, k := range keys {
		if c := scaleCell(runs[k]); c != "failed" {
			sc = append(sc, fmt.Sprintf("%s×%d %s", k.peer, k.n, c))
		}
	}
	r.w("- **Time to all ready** (ms; for sockd in parentheses its own `pool_ready` figure): %s.\n", strings.Join(sc, ", "))
}
