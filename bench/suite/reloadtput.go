package suite

import "time"

// tputPeers are the peers of the closed-loop reload runs: the reload peers
// and, before each app's sockd peers, the same app restarted by the runner
// with no supervisor (what reloads cost that app without sockd). The full
// run takes a subset (Params.TputPeers).
var tputPeers = []string{"restart-go", "sockd-go", "sockd-go-rp", "restart-node", "sockd-node", "sockd-node-b1", "sockd-node-ipc", "sockd-node-rp", "pm2",
	"restart-python", "sockd-python", "gunicorn", "nginx", "tableflip"}

// reloadTputs is scenario (2b): for every peer, a closed-loop load with a
// steady window and then a window with reloads spread evenly across it;
// rounds alternate the peers (A B C … A B C …) so that the machine's
// drifts hit every peer alike.
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
			if r != nil {
				s.res.ReloadTput = append(s.res.ReloadTput, *r)
				s.logTputRun(r)
			}
		}
	}
	return nil
}

func (s *Suite) logTputRun(r *ReloadTputRun) {
	s.logf("reloadtput %-14s round %d: %d/%d reloads (%d late) in %.1fs; req/s %.0f → %.0f (%.2f×), p99 %.2f → %.2f ms (%.2f×), p50 %.2f → %.2f ms, CPU %.1f → %.1f µs/req, failed %d → %d",
		r.Peer, r.Round, r.Done, r.Planned, r.Late, r.During.Seconds, r.Steady.RPS, r.During.RPS, ratio(r.During.RPS, r.Steady.RPS),
		float64(r.Steady.P99us)/1000, float64(r.During.P99us)/1000, ratio(float64(r.During.P99us), float64(r.Steady.P99us)),
		float64(r.Steady.P50us)/1000, float64(r.During.P50us)/1000, r.Steady.CPUPerReq, r.During.CPUPerReq, r.Steady.Failed, r.During.Failed)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (s *Suite) reloadTputRun(p *peer, round int) (*ReloadTputRun, error) {
	l, err := s.startLoaded(p, s.P.Workers, s.P.TputClients, 0)
	if err != nil {
		return nil, err
	}
	defer l.close()
	r := &ReloadTputRun{Peer: p.name, Round: round, Workers: l.in.n, Clients: s.P.TputClients, Planned: s.P.TputReloads}
	s.sleep(s.P.TputWarm)
	a := s.point(l.run)
	s.sleep(tputSteady(s.P))
	b := s.point(l.run)
	cmdCPU, err := s.tputReloads(l, r, b.t)
	r.Done = len(r.Events) - r.FailedReloads
	if d := b.t + s.P.TputWindow - l.run.Since(); d > 0 {
		s.sleep(d)
	}
	c := s.point(l.run)
	r.book(l, l.result(), a, b, c, cmdCPU)
	return r, err
}

// tputReloads makes the reloads of the window starting at t1: reload i is
// due at t1 + i×window/planned, the first at the start of the window, the
// last one interval before its end. A reload still running when the next
// is due delays that one (counted as late).
func (s *Suite) tputReloads(l *loaded, r *ReloadTputRun, t1 time.Duration) (time.Duration, error) {
	length, planned := s.P.TputWindow, s.P.TputReloads
	every := length / time.Duration(max(planned, 1))
	var cmdCPU time.Duration
	for i := 0; i < planned && s.ctx.Err() == nil; i++ {
		due := t1 + time.Duration(i)*every
		if d := due - l.run.Since(); d > 0 {
			s.sleep(d)
		} else if i > 0 && -d > 5*time.Millisecond {
			r.Late++
		}
		if l.run.Since() > t1+3*length {
			r.Capped = true
			break
		}
		ev, cpu := s.reloadOnce(l.in, l.run)
		cmdCPU += cpu
		if err := s.bookReload("reloadtput", l.in.peer.name, ev, &r.Events, &r.FailedReloads); err != nil {
			return cmdCPU, err
		}
	}
	return cmdCPU, nil
}
