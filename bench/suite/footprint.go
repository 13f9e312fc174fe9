package suite

import (
	"errors"
	"time"

	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
)

var footprintPeers = []string{"sockd-go", "sockd-node", "pm2", "cluster-rr", "gunicorn", "nginx"}

// footprint is scenario (6): idle supervisors' memory and CPU.
func (s *Suite) footprint() error {
	var ins []*instance
	defer func() {
		for _, in := range ins {
			in.stop()
		}
	}()
	for _, p := range s.selected(footprintPeers...) {
		in, err := p.start(s, p, s.P.Workers)
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
		load.Start(s.ctx, loadConfig(in.addr, 2, 0, 200*time.Millisecond)).Wait()
	}
	s.sleep(time.Second)
	before := make([]cpuSnap, len(ins))
	for i, in := range ins {
		before[i] = takeCPU(in)
	}
	t0 := time.Now()
	s.logf("footprint: %d supervisors idle for %s", len(ins), s.P.IdleSeconds)
	s.sleep(s.P.IdleSeconds)
	f := &Footprint{IdleSeconds: time.Since(t0).Seconds()}
	for i, in := range ins {
		sf := supFoot(in, before[i])
		f.Sups = append(f.Sups, sf)
		s.logf("footprint %-12s %-20s RSS %6d KiB, %.3f s CPU idle; with workers: %d processes, %d KiB", sf.Peer, sf.Process, sf.RSSKB, sf.CPUsec, sf.Procs, sf.TotalRSSKB)
	}
	s.res.Footprint = f
	return nil
}

// cpuSnap is the CPU time of a supervisor and of it with its descendants.
type cpuSnap struct{ sup, total time.Duration }

func takeCPU(in *instance) cpuSnap {
	pid := in.supervisor()
	st, _ := procfs.ReadProcess(pid)
	var tot time.Duration
	for _, d := range append(liveDescendants(pid), st) {
		tot += d.CPU()
	}
	return cpuSnap{st.CPU(), tot}
}

// supFoot is the footprint of in's supervisor since before.
func supFoot(in *instance, before cpuSnap) SupFoot {
	after := takeCPU(in)
	pid := in.supervisor()
	st, _ := procfs.ReadProcess(pid)
	sf := SupFoot{Peer: in.peer.name, Process: st.Comm, PID: pid, RSSKB: st.RSS() / 1024,
		CPUsec: (after.sup - before.sup).Seconds(), TotalCPU: (after.total - before.total).Seconds(), TotalRSSKB: st.RSS() / 1024, Procs: 1}
	for _, d := range liveDescendants(pid) {
		sf.TotalRSSKB += d.RSS() / 1024
		sf.Procs++
	}
	return sf
}
