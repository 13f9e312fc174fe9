package suite

import (
	"fmt"
	"time"

	"github.com/sockd/sockd/internal/procfs"
)

// reloadPeers are reloaded one reload after another under load.
var reloadPeers = []string{"sockd-go", "sockd-go-rp", "sockd-node", "sockd-node-rp", "pm2", "sockd-python", "gunicorn", "nginx", "tableflip"}

// reloads is scenarios (2) reload under load and (3) reload latency.
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
		if r != nil {
			s.res.Reloads = append(s.res.Reloads, *r)
			s.logReloadRun(r)
		}
	}
	return nil
}

func (s *Suite) logReloadRun(r *ReloadRun) {
	first, gone := reloadLatencies(r.Events)
	s.logf("reload %-14s %d/%d reloads (%d failed) in %.1fs: %d failed requests of %d; p99 steady %.2f ms, during %.2f ms; first new answer %.0f ms, old gone %.0f ms (medians)",
		r.Peer, r.Done, r.Planned, r.FailedReloads, r.During.Seconds, r.During.Failed+r.Steady.Failed, r.During.OK+r.During.Failed+r.Steady.OK+r.Steady.Failed,
		float64(r.Steady.P99us)/1000, float64(r.During.P99us)/1000, median(first), median(gone))
	if sk := sockdShares(r.Events); sk.n > 0 {
		s.logf("reload %-14s sockd's log (medians, %d reloads): trigger → reload_start %.2f ms, new workers ready %.1f ms, SIGTERM → listeners released %.1f ms, SIGTERM → old workers exited %.1f ms",
			r.Peer, sk.n, median(sk.start), median(sk.ready), median(sk.handover), median(sk.gone))
	}
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

// sockdCount is sockd's own resources now (nil for other peers).
func (s *Suite) sockdCount(in *instance) *ProcCount {
	pid := in.supervisor()
	if in.peer.sup != "sockd" || pid == 0 {
		return nil
	}
	st, _ := procfs.ReadProcess(pid)
	fds, err := procfs.FDs(pid)
	nfds := len(fds)
	if err != nil {
		nfds = -1
	}
	peak, _ := procfs.PeakRSS(pid)
	return &ProcCount{FDs: nfds, Threads: st.Threads, Procs: len(liveDescendants(pid)) + 1, RSSKB: st.RSS() / 1024, PeakRSSKB: peak / 1024}
}

func (s *Suite) reloadRun(p *peer, planned int, budget time.Duration) (*ReloadRun, error) {
	l, err := s.startLoaded(p, s.P.Workers, s.P.ReloadClients, s.P.ReloadRate)
	if err != nil {
		return nil, err
	}
	defer l.close()
	r := &ReloadRun{Peer: p.name, Workers: l.in.n, Rate: s.P.ReloadRate, Clients: s.P.ReloadClients, Planned: planned}
	s.sleep(300 * time.Millisecond)
	r.Before = s.sockdCount(l.in)
	a := s.point(l.run)
	s.sleep(s.P.ReloadSteady)
	b := s.point(l.run)
	cmdCPU, err := s.reloadSeries(l, r, planned, time.Now().Add(budget))
	r.Done = len(r.Events) - r.FailedReloads
	c := s.point(l.run)
	s.sleep(time.Second)
	r.After = s.sockdCount(l.in)
	r.book(l, l.result(), a, b, c, cmdCPU)
	return r, err
}

// reloadSeries reloads in one reload after another, planned times or
// until deadline, and returns the reload commands' CPU time.
func (s *Suite) reloadSeries(l *loaded, r *ReloadRun, planned int, deadline time.Time) (time.Duration, error) {
	var cmdCPU time.Duration
	for i := 0; i < planned && s.ctx.Err() == nil; i++ {
		if time.Now().After(deadline) {
			r.Capped = true
			break
		}
		if r.Before != nil && i%100 == 0 {
			r.RSSEvery100 = append(r.RSSEvery100, rssKB(l.in.supervisor()))
		}
		ev, cpu := s.reloadOnce(l.in, l.run)
		cmdCPU += cpu
		if err := s.bookReload("reload", l.in.peer.name, ev, &r.Events, &r.FailedReloads); err != nil {
			return cmdCPU, err
		}
	}
	return cmdCPU, nil
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
