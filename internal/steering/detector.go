package steering

import (
	"sort"
	"time"
)

// Detector tells stalled sockets from busy ones by their accept queues
// alone: it is fed the depth of every socket's queue at each sample and
// decides which sockets to exclude from new connections. Pure logic; the
// caller owns the clock.
//
// A socket is stuck when its queue was not empty and never went down
// between samples for StallAfter: nobody took a connection from it while
// they waited. Its worker may be stopped (SIGSTOP, a debugger), or alive
// with its accept loop blocked behind CPU work (a blocked event loop,
// which /proc shows as a busy process, not a stopped one): the queue is
// what tells, and it tells the same for both.
//
// A stuck socket is excluded only against healthy peers: at least one
// eligible socket of the group must be keeping up (its queue empty at
// this sample), and at most half the eligible sockets are excluded at
// once. When every worker is busy (saturation: no queue is ever empty)
// nobody is healthy, so nobody is excluded, and exclusions already made
// stay until their queues drain: steering does not chase the load around.
//
// An excluded socket is readmitted once its queue is empty: its worker
// took every connection that waited (it was resumed, or its loop got to
// accept again). Since an excluded socket gets no new connection, its
// queue can only shrink; a worker that is still stopped keeps it
// excluded, and the connections already queued wait for it: the kernel
// cannot move them to another socket while sockd holds this one.
//
// So a worker that stalls loses new connections at most StallAfter plus
// one sample period after the first connection waits for it (sampled
// from then on), and cannot flap faster than it drains: each exclusion
// needs StallAfter of evidence, each readmission an empty queue.
type Detector struct {
	// StallAfter is how long a queue must wait untouched (default 60ms).
	StallAfter time.Duration

	socks []sockStat
}

type sockStat struct {
	depth    int
	seen     bool      // depth is from a sample
	stuck    time.Time // since when the queue waits untouched; zero: it does not
	excluded bool
}

// DefaultStallAfter is Detector.StallAfter's default.
const DefaultStallAfter = 60 * time.Millisecond

// Observe takes one sample: depth[i] is socket i's accept-queue depth
// (negative: not sampled this time) and eligible[i] says whether socket i
// would get new connections but for a stall (its worker is ready and has
// weight). It returns whether the set of excluded sockets changed.
func (d *Detector) Observe(now time.Time, depth []int, eligible []bool) bool {
	after := d.StallAfter
	if after <= 0 {
		after = DefaultStallAfter
	}
	for len(d.socks) < len(depth) {
		d.socks = append(d.socks, sockStat{})
	}
	changed := false
	for i := range d.socks {
		s := &d.socks[i]
		if i >= len(depth) || depth[i] < 0 {
			continue
		}
		q := depth[i]
		switch {
		case q == 0 || s.seen && q < s.depth:
			s.stuck = time.Time{} // empty, or someone took a connection
		case s.stuck.IsZero():
			s.stuck = now
		}
		s.depth, s.seen = q, true
		el := i < len(eligible) && eligible[i]
		if s.excluded && (q == 0 || !el) {
			s.excluded, changed = false, true // drained (or no longer ours to judge)
		}
	}
	// Who may be excluded now: eligible, stuck long enough, oldest first.
	var cand []int
	eligibleN, excludedN, healthy := 0, 0, 0
	for i := range d.socks {
		s := &d.socks[i]
		if i >= len(eligible) || !eligible[i] {
			continue
		}
		eligibleN++
		switch {
		case s.excluded:
			excludedN++
		case !s.stuck.IsZero() && now.Sub(s.stuck) >= after:
			cand = append(cand, i)
		case s.depth == 0:
			healthy++
		}
	}
	if healthy == 0 {
		return changed
	}
	sort.SliceStable(cand, func(a, b int) bool { return d.socks[cand[a]].stuck.Before(d.socks[cand[b]].stuck) })
	for _, i := range cand {
		if excludedN >= eligibleN/2 {
			break
		}
		d.socks[i].excluded = true
		excludedN++
		changed = true
	}
	return changed
}

// Excluded returns which sockets are excluded as stalled.
func (d *Detector) Excluded(n int) []bool {
	out := make([]bool, n)
	for i := range d.socks {
		if i < n {
			out[i] = d.socks[i].excluded
		}
	}
	return out
}

// Busy reports whether any sampled queue was not empty at the last sample.
func (d *Detector) Busy() bool {
	for _, s := range d.socks {
		if s.depth > 0 {
			return true
		}
	}
	return false
}

// Forget drops what the detector knows of socket i (a new worker took it).
func (d *Detector) Forget(i int) {
	if i < len(d.socks) {
		d.socks[i] = sockStat{}
	}
}
