package suite

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// scaleLoadPeers are the peers of scenario (8), sockd in both modes.
var scaleLoadPeers = []string{"sockd-go", "sockd-go-rp"}

// scaleLoad is scenario (8): a paced load while sockd is scaled up by
// ScaleStep workers and back down, ScaleCycles times. It counts the failed
// requests (target 0 in both modes) and times, for each scale-up, the
// `sockd scale +K --wait` command and the moment every new worker has
// answered a request.
func (s *Suite) scaleLoad() error {
	for _, p := range s.selected(scaleLoadPeers...) {
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		r, err := s.scaleLoadRun(p)
		if err != nil {
			s.warnf("scaleload %s: %v", p.name, err)
		}
		if r == nil {
			continue
		}
		s.res.ScaleLoad = append(s.res.ScaleLoad, *r)
		s.logf("scaleload %-14s %d×(+%d, -%d) under %.0f req/s: %d requests, %d failed; scale --wait %.0f ms, every new worker answering %.0f ms (medians)",
			p.name, len(r.UpWaitMS), r.Step, r.Step, s.P.ReloadRate, r.Requests, r.Failed, median(r.UpWaitMS), median(r.UpServeMS))
	}
	return nil
}

func (s *Suite) scaleLoadRun(p *peer) (*ScaleLoadRun, error) {
	l, err := s.startLoaded(p, s.P.Workers, s.P.ReloadClients, s.P.ReloadRate)
	if err != nil {
		return nil, err
	}
	defer l.close()
	ctl := filepath.Join(l.in.dir, "sockd.sock")
	r := &ScaleLoadRun{Peer: p.name, Workers: s.P.Workers, Step: s.P.ScaleStep}
	scale := func(arg string) (time.Duration, error) {
		t0 := time.Now()
		out, err := exec.Command(s.Tools.Sockd, "scale", "--wait", "--control", ctl, arg).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("sockd scale %s: %v: %s", arg, err, out)
		}
		return time.Since(t0), nil
	}
	s.sleep(s.P.ReloadSteady)
	for i := 0; i < s.P.ScaleCycles && s.ctx.Err() == nil; i++ {
		before := map[int]bool{}
		for _, w := range l.in.workers() {
			before[w] = true
		}
		at := l.run.Since()
		took, err := scale("+" + strconv.Itoa(r.Step))
		if err != nil {
			return r, err
		}
		r.UpWaitMS = append(r.UpWaitMS, ms(took))
		// Every new worker has answered (the kernel spreads new
		// connections over every worker, in both modes).
		var fresh []int
		for _, w := range l.in.workers() {
			if !before[w] {
				fresh = append(fresh, w)
			}
		}
		if len(fresh) != r.Step {
			return r, fmt.Errorf("scaled up by %d, found %d new workers", r.Step, len(fresh))
		}
		var last time.Duration
		err = waitFor(30*time.Second, 2*time.Millisecond, func() bool {
			seen := l.run.Seen()
			for _, w := range fresh {
				t, ok := seen[int32(w)]
				if !ok {
					return false
				}
				last = max(last, t)
			}
			return true
		})
		if err != nil {
			return r, fmt.Errorf("new workers %v answered nothing within 30s", fresh)
		}
		r.UpServeMS = append(r.UpServeMS, ms(last-at))
		s.sleep(s.P.ReloadSteady)
		took, err = scale("-" + strconv.Itoa(r.Step))
		if err != nil {
			return r, err
		}
		r.DownWaitMS = append(r.DownWaitMS, ms(took))
		s.sleep(s.P.ReloadSteady)
	}
	res := l.result()
	st := res.Window(0, 0)
	r.Requests, r.Failed, r.ErrText = st.Requests, st.Failed, errText(res)
	return r, nil
}
