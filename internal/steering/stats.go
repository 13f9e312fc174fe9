package steering

// Stats is what steering does, for status and metrics.
type Stats struct {
	// Workers: one per socket a worker holds (or held, while gone).
	Workers []WorkerStats
	// Decisions counts the changes of a socket's weight or of its
	// reason, by the new reason (not_ready, ramp, ready, stalled,
	// leaving, …).
	Decisions map[Reason]uint64
	// Samples counts queue samples; Updates programs attached;
	// AttachErrors programs the kernel refused.
	Samples, Updates, AttachErrors uint64
	// Sampling: traffic is flowing and the queues are being sampled.
	Sampling bool
	// Sockets is the number of sockets in each group.
	Sockets int
	// Exact is false when a group's program had to coarsen the weights
	// to fit the kernel's limits.
	Exact bool
}

// WorkerStats is one worker's socket as steering sees it.
type WorkerStats struct {
	Worker string
	Index  int
	State  State
	// Weight is its weight and Share its part of new connections in the
	// first reuseport group; Reason why (the worst over the groups:
	// stalled in any is stalled).
	Weight int
	Share  float64
	Reason Reason
}

// Stats returns a snapshot.
func (s *Steering) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Decisions: make(map[Reason]uint64, len(s.stats.decisions)),
		Samples:   s.stats.samples, Updates: s.stats.updates, AttachErrors: s.stats.attachErrors,
		Sampling: s.stats.sampling, Sockets: len(s.entries), Exact: true,
	}
	for r, n := range s.stats.decisions {
		st.Decisions[r] = n
	}
	for _, g := range s.groups {
		if g.prog != nil && !g.prog.Exact {
			st.Exact = false
		}
	}
	g := s.groups[0]
	for k, e := range s.entries {
		if e.Worker == "" {
			continue
		}
		ws := WorkerStats{Worker: e.Worker, Index: k, State: e.State}
		if k < len(g.weights) {
			ws.Weight, ws.Reason = g.weights[k], g.why[k]
		}
		if g.prog != nil && k < len(g.prog.Units) {
			ws.Share = g.prog.Share(k)
		}
		for _, o := range s.groups {
			if k < len(o.why) && o.why[k] == ReasonStalled {
				ws.Reason = ReasonStalled
			}
		}
		st.Workers = append(st.Workers, ws)
	}
	return st
}
