package suite

import (
	"context"
	"sort"
	"time"

	"github.com/sockd/sockd/internal/load"
)

// requestTimeout bounds one request of the benchmarks' loads, connect
// included.
const requestTimeout = 2 * time.Second

// loadConfig is the benchmarks' load on addr: clients (rounded up to an
// even number, at least 2) half keep-alive, half a new connection per
// request, GET /, paced at rate (0: closed loop) for d (0: until the
// context ends). The clients are internal/load's plain ones: they send on a
// kept-alive connection without first looking whether the server closed
// it, so the keep-alive race counts as a failed request.
func loadConfig(addr string, clients int, rate float64, d time.Duration) load.Config {
	half := (max(clients, 2) + 1) / 2
	return load.Config{Addr: addr, KeepAlive: half, Fresh: half, Rate: rate, Duration: d, Timeout: requestTimeout}
}

// loaded is a peer running under a load.
type loaded struct {
	in     *instance
	run    *load.Run
	cancel context.CancelFunc
}

// startLoaded starts p with n workers, then a load of clients at rate
// (0: closed loop) on it, until close.
func (s *Suite) startLoaded(p *peer, n, clients int, rate float64) (*loaded, error) {
	in, err := p.start(s, p, n)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	return &loaded{in: in, run: load.Start(ctx, loadConfig(in.addr, clients, rate, 0)), cancel: cancel}, nil
}

// result ends the load and returns it.
func (l *loaded) result() *load.Result {
	l.cancel()
	return l.run.Wait()
}

// close ends the load and stops the peer.
func (l *loaded) close() {
	l.result()
	l.in.stop()
}

// point is a moment of a load: its time and the server side's CPU.
type point struct {
	t   time.Duration
	cpu cpuMark
}

func (s *Suite) point(run *load.Run) point { return point{run.Since(), s.procs.mark()} }

// book fills the series from the load's result: the steady window from a
// to b, the reloads' window from b to c.
func (sr *ReloadSeries) book(l *loaded, res *load.Result, a, b, c point, cmdCPU time.Duration) {
	sr.Steady, sr.During = window(res, a.t, b.t, a.cpu.to(b.cpu)), window(res, b.t, c.t, b.cpu.to(c.cpu))
	sr.CmdCPUsec, sr.ErrText = cmdCPU.Seconds(), errText(res)
	sr.Failures = chargeFailures(res, sr.Events)
	if l.in.logFile != "" {
		attachSockdLog(l.in.logFile, l.run.StartTime(), sr.Events)
	}
}

// window is the load between from and to (since the load started), with
// the server CPU spent meanwhile.
func window(res *load.Result, from, to time.Duration, cpu time.Duration) Window {
	st := res.Window(from, to)
	w := Window{From: st.From.Seconds(), To: st.To.Seconds(), Seconds: (st.To - st.From).Seconds(), OK: st.OK, Failed: st.Failed, RPS: st.Throughput(),
		P50us: st.P50.Microseconds(), P99us: st.P99.Microseconds(), MaxUs: st.Max.Microseconds(), CPUsec: cpu.Seconds()}
	if st.OK > 0 {
		w.CPUPerReq = cpu.Seconds() * 1e6 / float64(st.OK)
	}
	if k := st.Kinds(); len(k) > 0 {
		w.ByKind = k
	}
	return w
}

// errText is up to 5 error messages per kind of failure.
func errText(res *load.Result) map[string][]string {
	errs := res.Errors(5)
	if len(errs) == 0 {
		return nil
	}
	m := map[string][]string{}
	for k, v := range errs {
		m[k.String()] = v
	}
	return m
}

// sortedCounts is the answers per process, largest first.
func sortedCounts(m map[int32]int) []int {
	var c []int
	for _, n := range m {
		c = append(c, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(c)))
	return c
}

// chargeFailures lists the failed requests of res and charges each to the
// reload it started in.
func chargeFailures(res *load.Result, evs []ReloadEvent) []Failure {
	var fs []Failure
	for _, f := range res.Failures() {
		fs = append(fs, Failure{T: f.Start.Seconds(), Kind: f.Kind.String(), KeepAlive: f.Mode != load.Fresh, Reused: f.Reused > 0})
	}
	for i := range evs {
		end := evs[i].Done
		if end == 0 {
			end = evs[i].T0 + 60
		}
		for _, f := range fs {
			if f.T >= evs[i].T0 && f.T <= end {
				evs[i].Failed++
			}
		}
	}
	return fs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
