package suite

import (
	"github.com/sockd/sockd/internal/load"
)

// overheadPeers is the order of the overhead runs: each sockd variant
// right after the variant without a supervisor it is compared with.
var overheadPeers = []string{
	"direct-go", "sockd-go", "direct-go-rp", "sockd-go-rp",
	"direct-node", "sockd-node", "sockd-node-rp", "pm2", "cluster-rr", "cluster-none",
	"direct-python", "sockd-python", "gunicorn",
	"nginx", "tableflip",
}

// overhead is scenarios (1) overhead and (4) balance: closed-loop runs of
// every peer, alternated round after round.
func (s *Suite) overhead() error {
	peers := s.selected(overheadPeers...)
	for round := 1; round <= max(s.P.OverheadRounds, s.P.PairRounds); round++ {
		for _, p := range peers {
			// Past OverheadRounds only the sockd/direct pairs run on.
			if round > s.P.OverheadRounds && !(p.sup == "direct" || (p.sup == "sockd" && p.baseline != "")) {
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
	in, err := p.start(s, p, s.P.Workers)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	load.Start(s.ctx, loadConfig(in.addr, s.P.OverheadClients, 0, s.P.OverheadWarm)).Wait()
	cfg := loadConfig(in.addr, s.P.OverheadClients, 0, s.P.OverheadRun)
	m0 := s.procs.mark()
	res := load.Start(s.ctx, cfg).Wait()
	m1 := s.procs.mark()
	st := res.Window(0, s.P.OverheadRun)
	return &OverheadRun{Peer: p.name, Round: round, Workers: in.n, Clients: cfg.KeepAlive + cfg.Fresh,
		W: window(res, 0, s.P.OverheadRun, m0.to(m1)), PerWorker: sortedCounts(st.PerPID), PerNew: sortedCounts(st.PerPIDFresh),
		ErrText: errText(res)}, nil
}
