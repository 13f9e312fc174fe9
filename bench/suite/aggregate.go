package suite

import "sort"

// ovAgg is a peer's throughput runs (sections 1 and 4).
type ovAgg struct {
	name, label, base string
	runs              []float64
	rpsAt             map[int]float64 // by round
	rps, p50, p99     float64
	cpu               float64
	ratio             float64
	ratios            []float64 // per round
	failed            int
	bal, balNew       []float64
	shares, sharesNew [][]int // per run, per worker (sorted)
	p50s, p99s, cpus  []float64
}

// overheadAgg is the throughput runs by peer, in the order they ran.
func overheadAgg(res *Results) []*ovAgg {
	by := map[string]*ovAgg{}
	var out []*ovAgg
	for _, r := range res.Overhead {
		a := by[r.Peer]
		if a == nil {
			a = &ovAgg{name: r.Peer, label: infoOf(r.Peer).label, base: infoOf(r.Peer).baseline, rpsAt: map[int]float64{}}
			by[r.Peer] = a
			out = append(out, a)
		}
		a.add(r)
	}
	for _, a := range out {
		a.rps, a.p50, a.p99, a.cpu = median(a.runs), median(a.p50s), median(a.p99s), median(a.cpus)
		if b := by[a.base]; b != nil {
			for round, v := range a.rpsAt {
				if bv := b.rpsAt[round]; bv > 0 {
					a.ratios = append(a.ratios, v/bv)
				}
			}
			sort.Float64s(a.ratios)
			a.ratio = median(a.ratios)
		}
	}
	return out
}

func (a *ovAgg) add(r OverheadRun) {
	a.runs = append(a.runs, r.W.RPS)
	a.rpsAt[r.Round] = r.W.RPS
	a.failed += r.W.Failed
	a.p50s = append(a.p50s, float64(r.W.P50us)/1000)
	a.p99s = append(a.p99s, float64(r.W.P99us)/1000)
	a.cpus = append(a.cpus, r.W.CPUPerReq)
	a.shares = append(a.shares, r.PerWorker)
	a.sharesNew = append(a.sharesNew, r.PerNew)
	if n := len(r.PerWorker); n >= 2 && r.PerWorker[n-1] > 0 {
		a.bal = append(a.bal, float64(r.PerWorker[0])/float64(r.PerWorker[n-1]))
	}
	if n := len(r.PerNew); n >= 2 && r.PerNew[n-1] > 0 {
		a.balNew = append(a.balNew, float64(r.PerNew[0])/float64(r.PerNew[n-1]))
	}
}

// sockdShare is sockd's own account of a series of reloads, from its log.
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

// tputAgg is a peer's rounds of section 2b.
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

// tputAggs is the rounds of section 2b by peer, in the order they ran.
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
		a.add(r)
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

func (a *tputAgg) add(r ReloadTputRun) {
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
		a.cmdCPUms += r.CmdCPUsec * 1000 // summed, divided in tputAggs
	}
}
