package suite

import (
	"sort"
	"time"
)

// scale is scenario (7): from the start command to every worker ready,
// with more and more workers.
func (s *Suite) scale() error {
	var sizes []int
	for _, n := range append(append([]int{}, s.P.ScaleSizes...), s.P.ScaleSizesGo...) {
		if !contains(sizes, n) {
			sizes = append(sizes, n)
		}
	}
	sort.Ints(sizes)
	for _, n := range sizes {
		for _, p := range s.selected(s.P.ScalePeers...) {
			isGo := p.name == "sockd-go"
			if !contains(s.P.ScaleSizes, n) && !(isGo && contains(s.P.ScaleSizesGo, n)) {
				continue
			}
			runs := 1
			if isGo && s.P.ScaleRunsGo > 1 {
				runs = s.P.ScaleRunsGo
			}
			for i := 0; i < runs; i++ {
				if s.ctx.Err() != nil {
					return s.ctx.Err()
				}
				s.res.Scale = append(s.res.Scale, s.scaleRun(p, n))
			}
		}
	}
	return nil
}

func (s *Suite) scaleRun(p *peer, n int) ScaleRun {
	t0 := time.Now()
	in, err := p.start(s, p, n)
	r := ScaleRun{Peer: p.name, Workers: n, ReadyMS: ms(time.Since(t0))}
	if err != nil {
		r.Err = err.Error()
		s.warnf("scale %s %d: %v", p.name, n, err)
	} else {
		// sockd's own figure: every worker sent READY=1 (the Node app
		// through systemd-notify).
		if in.logFile != "" {
			r.LogMS = poolReadySeconds(in.logFile) * 1000
		}
		in.stop()
	}
	if r.LogMS > 0 {
		s.logf("scale %-14s %3d workers ready in %6.0f ms (sockd's pool_ready: %.1f ms)", p.name, n, r.ReadyMS, r.LogMS)
	} else {
		s.logf("scale %-14s %3d workers ready in %6.0f ms", p.name, n, r.ReadyMS)
	}
	return r
}
