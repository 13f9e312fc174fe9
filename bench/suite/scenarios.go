package suite

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/bench/load"
)

// overheadPeers is the order of the overhead runs: each sockd variant
// right after the variant without a supervisor it is compared with.
var overheadPeers = []string{
	"direct-go", "sockd-go", "direct-go-rp", "sockd-go-rp",
	"direct-node", "sockd-node", "sockd-node-rp", "pm2", "cluster-rr", "cluster-none",
	"direct-python", "sockd-python", "gunicorn",
	"nginx", "tableflip",
}

// reloadPeers are reloaded one reload after another under load.
var reloadPeers = []string{"sockd-go", "sockd-go-rp", "sockd-node", "sockd-node-rp", "pm2", "sockd-python", "gunicorn", "nginx", "tableflip"}

// tputPeers are the peers of the closed-loop reload runs: the reload peers
// and, before each app's sockd peers, the same app restarted by the runner
// with no supervisor (what reloads cost that app without sockd). The full
// run takes a subset (Params.TputPeers).
var tputPeers = []string{"restart-go", "sockd-go", "sockd-go-rp", "restart-node", "sockd-node", "sockd-node-rp", "pm2",
	"restart-python", "sockd-python", "gunicorn", "nginx", "tableflip"}

func window(res *load.Result, from, to time.Duration, cpu time.Duration) Window {
	st := res.Window(from, to)
	w := Window{From: st.From.Seconds(), To: st.To.Seconds(), Seconds: (st.To - st.From).Seconds(), OK: st.OK, Failed: st.Failed, RPS: st.Throughput(),
		P50us: st.P50.Microseconds(), P99us: st.P99.Microseconds(), MaxUs: st.Max.Microseconds(), CPUsec: cpu.Seconds()}
	if st.OK > 0 {
		w.CPUPerReq = cpu.Seconds() * 1e6 / float64(st.OK)
	}
	for k := load.Kind(1); k < load.NumKinds; k++ {
		if st.ByKind[k] > 0 {
			if w.ByKind == nil {
				w.ByKind = map[string]int{}
			}
			w.ByKind[k.String()] = st.ByKind[k]
		}
	}
	return w
}

func errText(res *load.Result) map[string][]string {
	if len(res.ErrorText) == 0 {
		return nil
	}
	m := map[string][]string{}
	for k, v := range res.ErrorText {
		m[k.String()] = v
	}
	return m
}

func sortedCounts(m map[int32]int) []int {
	var c []int
	for _, n := range m {
		c = append(c, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(c)))
	return c
}

// ---- (1) overhead and (4) balance ----

func (s *Suite) overhead() error {
	peers := s.selected(overheadPeers...)
	rounds := s.P.OverheadRounds
	if s.P.PairRounds > rounds {
		rounds = s.P.PairRounds
	}
	for round := 1; round <= rounds; round++ {
		for _, p := range peers {
			// Past OverheadRounds only the sockd/direct pairs run on.
			if round > s.P.OverheadRounds && !(p.sup == "direct" || (p.sup == "sockd" && baseline(p.name) != "")) {
				continue
			}
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			r, err := s.overheadRun(p, round)
			if err != nil {
				s.warnf("overhead %s round %d: %v", p.name, round, err)
				continue
			}
			s.res.Overhead = append(s.res.Overhead, *r)
			s.logf("overhead %-14s round %d: %7.0f req/s  p99 %5.2f ms  %5.1f µs CPU/req  failed %d  per worker %v",
				p.name, round, r.W.RPS, float64(r.W.P99us)/1000, r.W.CPUPerReq, r.W.Failed, r.PerWorker)
		}
	}
	return nil
}

func (s *Suite) overheadRun(p *peer, round int) (*OverheadRun, error) {
	in, err := p.start(s, s.P.Workers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	cfg := load.Config{Addr: in.addr, Clients: s.P.OverheadClients, Duration: s.P.OverheadWarm}
	load.Start(s.ctx, cfg).Wait()
	cfg.Duration = s.P.OverheadRun
	m0 := s.procs.mark()
	res := load.Start(s.ctx, cfg).Wait()
	m1 := s.procs.mark()
	st := res.Window(0, s.P.OverheadRun)
	return &OverheadRun{Peer: p.name, Round: round, Workers: in.n, Clients: cfg.Clients,
		W: window(res, 0, s.P.OverheadRun, m0.to(m1)), PerWorker: sortedCounts(st.PerPID), PerNew: sortedCounts(st.PerPIDNew),
		ErrText: errText(res)}, nil
}

// ---- (2) reload under load and (3) reload latency ----

func (s *Suite) reloads() error {
	for _, p := range s.selected(reloadPeers...) {
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		n := s.P.Reloads
		if p.app == "go" && p.sup == "sockd" {
			n = s.P.ReloadsSockdGo
		}
		// The time budget is per Reloads reloads (it is there for PM2,
		// whose reloads take seconds): the sockd Go peers' 1000 reloads
		// get ten times as long.
		budget := s.P.ReloadBudget * time.Duration(n) / time.Duration(max(s.P.Reloads, 1))
		r, err := s.reloadRun(p, n, budget)
		if err != nil {
			s.warnf("reload %s: %v", p.name, err)
		}
		if r == nil {
			continue
		}
		s.res.Reloads = append(s.res.Reloads, *r)
		first, gone := reloadLatencies(r.Events)
		s.logf("reload %-14s %d/%d reloads (%d failed) in %.1fs: %d failed requests of %d; p99 steady %.2f ms, during %.2f ms; first new answer %.0f ms, old gone %.0f ms (medians)",
			p.name, r.Done, r.Planned, r.FailedReloads, r.During.Seconds, r.During.Failed+r.Steady.Failed, r.During.OK+r.During.Failed+r.Steady.OK+r.Steady.Failed,
			float64(r.Steady.P99us)/1000, float64(r.During.P99us)/1000, median(first), median(gone))
		if sk := sockdShares(r.Events); sk.n > 0 {
			s.logf("reload %-14s sockd's log (medians, %d reloads): trigger → reload_start %.2f ms, new workers ready %.1f ms, SIGTERM → listeners released %.1f ms, SIGTERM → old workers exited %.1f ms",
				p.name, sk.n, median(sk.start), median(sk.ready), median(sk.handover), median(sk.gone))
		}
	}
	return nil
}

func reloadLatencies(evs []ReloadEvent) (first, gone []float64) {
	for _, e := range evs {
		if e.Err != "" {
			continue
		}
		if e.FirstNew > 0 {
			first = append(first, (e.FirstNew-e.T0)*1000)
		}
		if e.OldGone > 0 {
			gone = append(gone, (e.OldGone-e.T0)*1000)
		}
	}
	return first, gone
}

func (s *Suite) sockdCount(in *instance) *ProcCount {
	pid := in.supervisor()
	if in.peer.sup != "sockd" || pid == 0 {
		return nil
	}
	st, _ := readStat(pid)
	return &ProcCount{FDs: fdCount(pid), Threads: st.threads, Procs: len(liveDescendants(pid)) + 1, RSSKB: rssKB(pid), PeakRSSKB: peakRSSKB(pid)}
}

func (s *Suite) reloadRun(p *peer, planned int, budget time.Duration) (*ReloadRun, error) {
	in, err := p.start(s, s.P.Workers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	run := load.Start(ctx, load.Config{Addr: in.addr, Clients: s.P.ReloadClients, Rate: s.P.ReloadRate})
	r := &ReloadRun{Peer: p.name, Workers: in.n, Rate: s.P.ReloadRate, Clients: s.P.ReloadClients, Planned: planned}
	s.sleep(300 * time.Millisecond)
	r.Before = s.sockdCount(in)
	t0 := run.Since()
	m0 := s.procs.mark()
	s.sleep(s.P.ReloadSteady)
	t1 := run.Since()
	m1 := s.procs.mark()
	deadline := time.Now().Add(budget)
	var cmdCPU time.Duration
	for i := 0; i < planned && s.ctx.Err() == nil; i++ {
		if time.Now().After(deadline) {
			r.Capped = true
			break
		}
		if r.Before != nil && i%100 == 0 {
			r.RSSEvery100 = append(r.RSSEvery100, rssKB(in.supervisor()))
		}
		ev, cpu := s.reloadOnce(in, run)
		cmdCPU += cpu
		if err = s.bookReload("reload", p.name, ev, &r.Events, &r.FailedReloads); err != nil {
			break
		}
	}
	r.Done = len(r.Events) - r.FailedReloads
	t2 := run.Since()
	m2 := s.procs.mark()
	s.sleep(time.Second)
	r.After = s.sockdCount(in)
	cancel()
	res := run.Wait()
	r.Steady = window(res, t0, t1, m0.to(m1))
	r.During = window(res, t1, t2, m1.to(m2))
	r.CmdCPUsec = cmdCPU.Seconds()
	r.ErrText = errText(res)
	r.Failures = chargeFailures(res, r.Events)
	if in.logFile != "" {
		attachSockdLog(in.logFile, run.StartTime(), r.Events)
	}
	return r, err
}

// bookReload records ev, the next reload of a series, in events and
// failed; after the third failed reload it returns the error that ends the
// series.
func (s *Suite) bookReload(scenario, peer string, ev ReloadEvent, events *[]ReloadEvent, failed *int) error {
	*events = append(*events, ev)
	if ev.Err == "" {
		return nil
	}
	*failed++
	s.logf("%s %s #%d: %s", scenario, peer, len(*events), ev.Err)
	if *failed >= 3 {
		return fmt.Errorf("giving up after 3 failed reloads: %s", ev.Err)
	}
	return nil
}

// chargeFailures lists the failed requests of res and charges each to the
// reload it started in.
func chargeFailures(res *load.Result, evs []ReloadEvent) []Failure {
	var fs []Failure
	for _, f := range res.Failures() {
		fs = append(fs, Failure{T: time.Duration(f.Start).Seconds(), Kind: f.Kind.String(), KeepAlive: f.KeepAlive, Reused: f.Reused})
	}
	countFailures(evs, fs)
	return fs
}

// countFailures charges every failed request to the reload it started in.
func countFailures(evs []ReloadEvent, fs []Failure) {
	for i := range evs {
		for _, f := range fs {
			end := evs[i].Done
			if end == 0 {
				end = evs[i].T0 + 60
			}
			if f.T >= evs[i].T0 && f.T <= end {
				evs[i].Failed++
			}
		}
	}
}

// reloadOnce triggers a reload and waits until it is over: the old
// workers exited, as many new ones run (and said they are ready, for the
// peers with a ready file), and a new one has answered. Times are on the
// load's clock.
func (s *Suite) reloadOnce(in *instance, run *load.Run) (ReloadEvent, time.Duration) {
	old := in.workers()
	isOld := map[int]bool{}
	for _, p := range old {
		isOld[p] = true
	}
	sec := func() float64 { return run.Since().Seconds() }
	ev := ReloadEvent{T0: sec()}
	cpu, err := in.reloadFn()
	ev.Cmd = sec()
	ev.CmdCPUms = cpu.Seconds() * 1000
	if err != nil {
		ev.Err = err.Error()
	}
	deadline := time.Now().Add(60 * time.Second)
	lastScan := time.Time{}
	lastTrigger := time.Now()
	for {
		now := sec()
		if in.retrigger && ev.Err == "" && ev.OldGone == 0 && ev.FirstNew == 0 && time.Since(lastTrigger) > time.Second {
			in.reloadFn()
			ev.Retries++
			lastTrigger = time.Now()
		}
		if ev.OldGone == 0 {
			gone := true
			for _, p := range old {
				if alive(p) {
					gone = false
					break
				}
			}
			if gone {
				ev.OldGone = now
			}
		}
		var newFirst []float64
		for pid, t := range run.Seen() {
			if !isOld[int(pid)] {
				newFirst = append(newFirst, time.Duration(t).Seconds())
			}
		}
		sort.Float64s(newFirst)
		if len(newFirst) > 0 {
			ev.FirstNew = newFirst[0]
		}
		if len(newFirst) >= in.n && ev.AllNew == 0 {
			ev.AllNew = newFirst[in.n-1]
		}
		if ev.OldGone > 0 && len(newFirst) > 0 && time.Since(lastScan) > 10*time.Millisecond {
			lastScan = time.Now()
			cur := in.workers()
			ready := in.readyPIDs()
			ok := len(cur) >= in.n
			for _, p := range cur {
				if isOld[p] || (in.readyFile != "" && !ready[p]) {
					ok = false
				}
			}
			if ok {
				ev.Done = sec()
				break
			}
		}
		select {
		case <-run.Done():
			if ev.Err == "" {
				ev.Err = "the load ended before the reload was over"
			}
			deadline = time.Time{}
		default:
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			if ev.Err == "" {
				ev.Err = fmt.Sprintf("reload not over after 60s (old gone: %v, new workers answering: %d)", ev.OldGone > 0, len(newFirst))
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	run.Retire(old...)
	return ev, cpu
}

// ---- (2b) throughput and latency during reloads, closed loop ----

// reloadTputs runs, for every peer the reload scenario covers, a closed-loop
// load with a steady window and then a window of the same length with
// reloads spread evenly across it; rounds alternate the peers (A B C … A B
// C …) so that the machine's drifts hit every peer alike.
func (s *Suite) reloadTputs() error {
	names := tputPeers
	if len(s.Peers) == 0 && len(s.P.TputPeers) > 0 {
		names = s.P.TputPeers // the mode's subset, unless --peers chose
	}
	peers := s.selected(names...)
	for round := 1; round <= s.P.TputRounds; round++ {
		for _, p := range peers {
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			r, err := s.reloadTputRun(p, round)
			if err != nil {
				s.warnf("reloadtput %s round %d: %v", p.name, round, err)
			}
			if r == nil {
				continue
			}
			s.res.ReloadTput = append(s.res.ReloadTput, *r)
			s.logf("reloadtput %-14s round %d: %d/%d reloads (%d late) in %.1fs; req/s %.0f → %.0f (%.2f×), p99 %.2f → %.2f ms (%.2f×), p50 %.2f → %.2f ms, CPU %.1f → %.1f µs/req, failed %d → %d",
				p.name, round, r.Done, r.Planned, r.Late, r.During.Seconds, r.Steady.RPS, r.During.RPS, ratio(r.During.RPS, r.Steady.RPS),
				float64(r.Steady.P99us)/1000, float64(r.During.P99us)/1000, ratio(float64(r.During.P99us), float64(r.Steady.P99us)),
				float64(r.Steady.P50us)/1000, float64(r.During.P50us)/1000, r.Steady.CPUPerReq, r.During.CPUPerReq, r.Steady.Failed, r.During.Failed)
		}
	}
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (s *Suite) reloadTputRun(p *peer, round int) (*ReloadTputRun, error) {
	in, err := p.start(s, s.P.Workers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	length, planned := s.P.TputWindow, s.P.TputReloads
	steady := tputSteady(s.P)
	run := load.Start(ctx, load.Config{Addr: in.addr, Clients: s.P.TputClients})
	r := &ReloadTputRun{Peer: p.name, Round: round, Workers: in.n, Clients: s.P.TputClients, Planned: planned}
	s.sleep(s.P.TputWarm)
	t0 := run.Since()
	m0 := s.procs.mark()
	s.sleep(steady)
	t1 := run.Since()
	m1 := s.procs.mark()
	// Reload i is due at t1 + i×length/planned: the first at the start of
	// the window, the last one interval before its end. A reload still
	// running when the next is due delays that one (counted as late).
	every := length / time.Duration(max(planned, 1))
	var cmdCPU time.Duration
	for i := 0; i < planned && s.ctx.Err() == nil; i++ {
		due := t1 + time.Duration(i)*every
		if d := due - run.Since(); d > 0 {
			s.sleep(d)
		} else if i > 0 && -d > 5*time.Millisecond {
			r.Late++
		}
		if run.Since() > t1+3*length {
			r.Capped = true
			break
		}
		ev, cpu := s.reloadOnce(in, run)
		cmdCPU += cpu
		if err = s.bookReload("reloadtput", p.name, ev, &r.Events, &r.FailedReloads); err != nil {
			break
		}
	}
	r.Done = len(r.Events) - r.FailedReloads
	if d := t1 + length - run.Since(); d > 0 {
		s.sleep(d)
	}
	t2 := run.Since()
	m2 := s.procs.mark()
	cancel()
	res := run.Wait()
	r.Steady = window(res, t0, t1, m0.to(m1))
	r.During = window(res, t1, t2, m1.to(m2))
	r.CmdCPUsec = cmdCPU.Seconds()
	r.ErrText = errText(res)
	r.Failures = chargeFailures(res, r.Events)
	if in.logFile != "" {
		attachSockdLog(in.logFile, run.StartTime(), r.Events)
	}
	return r, err
}

// ---- latency over time across reloads (the plot) ----

func (s *Suite) timelines() error {
	for _, p := range s.selected(s.P.TimelinePeers...) {
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		t, err := s.timeline(p)
		if err != nil {
			s.warnf("timeline %s: %v", p.name, err)
			continue
		}
		s.res.Timelines = append(s.res.Timelines, *t)
		s.logf("timeline %-14s %d reloads, %d failed requests", p.name, len(t.Reloads), len(t.Failures))
	}
	return nil
}

func (s *Suite) timeline(p *peer) (*Timeline, error) {
	in, err := p.start(s, s.P.Workers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	run := load.Start(ctx, load.Config{Addr: in.addr, Clients: s.P.ReloadClients, Rate: s.P.ReloadRate})
	t := &Timeline{Peer: p.name, Rate: s.P.ReloadRate}
	// Reloads every TimelineEvery, the last one at least 1 s before the end
	// (the load goes on until every reload is over).
	for next := s.P.TimelineEvery; next+time.Second <= s.P.TimelineLength && s.ctx.Err() == nil; next += s.P.TimelineEvery {
		if d := next - run.Since(); d > 0 {
			s.sleep(d)
		}
		ev, _ := s.reloadOnce(in, run)
		t.Reloads = append(t.Reloads, ev)
	}
	if d := s.P.TimelineLength - run.Since(); d > 0 {
		s.sleep(d)
	}
	cancel()
	res := run.Wait()
	for _, b := range res.Buckets(100 * time.Millisecond) {
		t.Buckets = append(t.Buckets, Bucket{T: b.Start.Seconds(), OK: b.OK, Failed: b.Failed,
			P50ms: float64(b.P50.Microseconds()) / 1000, P99ms: float64(b.P99.Microseconds()) / 1000})
	}
	t.Failures = chargeFailures(res, t.Reloads)
	return t, nil
}

// ---- (5) crash recovery ----

var crashPeers = []string{"sockd-go", "sockd-go-rp", "sockd-node", "sockd-python", "pm2", "cluster-rr", "gunicorn", "nginx"}

func (s *Suite) crashes() error {
	for _, p := range s.selected(crashPeers...) {
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		c, err := s.crash(p)
		if err != nil {
			s.warnf("crash %s: %v", p.name, err)
		}
		if c == nil {
			continue
		}
		s.res.Crashes = append(s.res.Crashes, *c)
		var serve []float64
		failed := 0
		for _, k := range c.Kills {
			serve = append(serve, k.ServeMS)
			failed += k.Failed
		}
		s.logf("crash %-14s %d kills: replacement answering after %.0f ms (median), %d failed requests", p.name, len(c.Kills), median(serve), failed)
	}
	return nil
}

func (s *Suite) crash(p *peer) (*CrashRun, error) {
	in, err := p.start(s, s.P.CrashWorkers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	run := load.Start(ctx, load.Config{Addr: in.addr, Clients: s.P.ReloadClients, Rate: s.P.CrashRate})
	s.sleep(500 * time.Millisecond)
	c := &CrashRun{Peer: p.name, Workers: in.n}
	victims := in.workers()
	known := map[int]bool{}
	for _, v := range victims {
		known[v] = true
	}
	type kill struct {
		at float64
		ev CrashEvent
	}
	var kills []kill
	for _, victim := range victims {
		if s.ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		at := run.Since().Seconds()
		ev := CrashEvent{}
		if err := unix.Kill(victim, unix.SIGKILL); err != nil {
			ev.Err = err.Error()
			kills = append(kills, kill{at, ev})
			continue
		}
		var fresh int
		err := waitFor(30*time.Second, 2*time.Millisecond, func() bool {
			for _, w := range in.workers() {
				if !known[w] {
					fresh = w
					return true
				}
			}
			return false
		})
		if err != nil {
			ev.Err = "no replacement within 30s"
			kills = append(kills, kill{at, ev})
			continue
		}
		known[fresh] = true
		ev.SpawnMS = ms(time.Since(t0))
		err = waitFor(30*time.Second, 2*time.Millisecond, func() bool {
			if in.readyFile != "" && ev.ReadyMS == 0 && in.readyPIDs()[fresh] {
				ev.ReadyMS = ms(time.Since(t0))
			}
			if _, ok := run.Seen()[int32(fresh)]; ok && (in.readyFile == "" || ev.ReadyMS > 0) {
				return true
			}
			return false
		})
		if err != nil {
			ev.Err = "the replacement answered nothing within 30s"
		} else {
			ev.ServeMS = time.Duration(run.Seen()[int32(fresh)]).Seconds()*1000 - at*1000
		}
		run.Retire(victim)
		kills = append(kills, kill{at, ev})
		s.sleep(time.Second)
	}
	cancel()
	res := run.Wait()
	for _, k := range kills {
		k.ev.Failed = res.Window(time.Duration(k.at*float64(time.Second)), time.Duration((k.at+1)*float64(time.Second))).Failed
		c.Kills = append(c.Kills, k.ev)
	}
	return c, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ---- (6) footprint ----

var footprintPeers = []string{"sockd-go", "sockd-node", "pm2", "cluster-rr", "gunicorn", "nginx"}

func (s *Suite) footprint() error {
	var ins []*instance
	defer func() {
		for _, in := range ins {
			in.stop()
		}
	}()
	for _, p := range s.selected(footprintPeers...) {
		in, err := p.start(s, s.P.Workers)
		if err != nil {
			s.warnf("footprint %s: %v", p.name, err)
			continue
		}
		ins = append(ins, in)
	}
	if len(ins) == 0 {
		return errors.New("no peer started")
	}
	// One request each, so every worker has run its handler once.
	for _, in := range ins {
		load.Start(s.ctx, load.Config{Addr: in.addr, Clients: 2, Duration: 200 * time.Millisecond}).Wait()
	}
	s.sleep(time.Second)
	type snap struct{ sup, total time.Duration }
	take := func(in *instance) snap {
		pid := in.supervisor()
		st, _ := readStat(pid)
		var tot time.Duration
		for _, d := range append(liveDescendants(pid), st) {
			tot += d.cpu()
		}
		return snap{st.cpu(), tot}
	}
	before := make([]snap, len(ins))
	for i, in := range ins {
		before[i] = take(in)
	}
	t0 := time.Now()
	s.logf("footprint: %d supervisors idle for %s", len(ins), s.P.IdleSeconds)
	s.sleep(s.P.IdleSeconds)
	f := &Footprint{IdleSeconds: time.Since(t0).Seconds()}
	for i, in := range ins {
		after := take(in)
		pid := in.supervisor()
		st, _ := readStat(pid)
		sf := SupFoot{Peer: in.peer.name, Process: st.comm, PID: pid, RSSKB: rssKB(pid),
			CPUsec: (after.sup - before[i].sup).Seconds(), TotalCPU: (after.total - before[i].total).Seconds(), TotalRSSKB: rssKB(pid), Procs: 1}
		for _, d := range liveDescendants(pid) {
			sf.TotalRSSKB += d.rssPages * pageSize() / 1024
			sf.Procs++
		}
		f.Sups = append(f.Sups, sf)
		s.logf("footprint %-12s %-20s RSS %6d KiB, %.3f s CPU idle; with workers: %d processes, %d KiB", sf.Peer, sf.Process, sf.RSSKB, sf.CPUsec, sf.Procs, sf.TotalRSSKB)
	}
	s.res.Footprint = f
	return nil
}

// ---- (7) scale ----

func (s *Suite) scale() error {
	isGo := func(p *peer) bool { return p.name == "sockd-go" }
	has := func(xs []int, n int) bool {
		for _, x := range xs {
			if x == n {
				return true
			}
		}
		return false
	}
	var sizes []int
	for _, n := range append(append([]int{}, s.P.ScaleSizes...), s.P.ScaleSizesGo...) {
		if !has(sizes, n) {
			sizes = append(sizes, n)
		}
	}
	sort.Ints(sizes)
	for _, n := range sizes {
		for _, p := range s.selected(s.P.ScalePeers...) {
			if !has(s.P.ScaleSizes, n) && !(isGo(p) && has(s.P.ScaleSizesGo, n)) {
				continue
			}
			runs := 1
			if isGo(p) && s.P.ScaleRunsGo > 1 {
				runs = s.P.ScaleRunsGo
			}
			for i := 0; i < runs; i++ {
				if s.ctx.Err() != nil {
					return s.ctx.Err()
				}
				t0 := time.Now()
				in, err := p.start(s, n)
				r := ScaleRun{Peer: p.name, Workers: n, ReadyMS: ms(time.Since(t0))}
				if err != nil {
					r.Err = err.Error()
					s.warnf("scale %s %d: %v", p.name, n, err)
				} else {
					// sockd's own figure: every worker sent READY=1 (the
					// Node app through systemd-notify).
					if in.logFile != "" {
						r.LogMS = poolReadySeconds(in.logFile) * 1000
					}
					in.stop()
				}
				s.res.Scale = append(s.res.Scale, r)
				if r.LogMS > 0 {
					s.logf("scale %-14s %3d workers ready in %6.0f ms (sockd's pool_ready: %.1f ms)", p.name, n, r.ReadyMS, r.LogMS)
				} else {
					s.logf("scale %-14s %3d workers ready in %6.0f ms", p.name, n, r.ReadyMS)
				}
			}
		}
	}
	return nil
}
