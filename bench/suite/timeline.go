package suite

import "time"

// timelines is the latency over time across reloads (the plot).
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
	l, err := s.startLoaded(p, s.P.Workers, s.P.ReloadClients, s.P.ReloadRate)
	if err != nil {
		return nil, err
	}
	defer l.close()
	t := &Timeline{Peer: p.name, Rate: s.P.ReloadRate}
	// Reloads every TimelineEvery, the last one at least 1 s before the end
	// (the load goes on until every reload is over).
	for next := s.P.TimelineEvery; next+time.Second <= s.P.TimelineLength && s.ctx.Err() == nil; next += s.P.TimelineEvery {
		if d := next - l.run.Since(); d > 0 {
			s.sleep(d)
		}
		ev, _ := s.reloadOnce(l.in, l.run)
		t.Reloads = append(t.Reloads, ev)
	}
	if d := s.P.TimelineLength - l.run.Since(); d > 0 {
		s.sleep(d)
	}
	res := l.result()
	for _, b := range res.Buckets(100 * time.Millisecond) {
		t.Buckets = append(t.Buckets, Bucket{T: b.Start.Seconds(), OK: b.OK, Failed: b.Failed,
			P50ms: float64(b.P50.Microseconds()) / 1000, P99ms: float64(b.P99.Microseconds()) / 1000})
	}
	t.Failures = chargeFailures(res, t.Reloads)
	return t, nil
}
