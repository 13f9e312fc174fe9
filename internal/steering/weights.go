package steering

import "time"

// Full is a ready worker's weight once its ramp is over.
const Full = 1000

// State is where a socket's worker is in its life, as steering sees it.
type State int

const (
	// Free: no worker holds the socket.
	Free State = iota
	// Starting: its worker was started and has not said READY=1.
	Starting
	// Ready: its worker is ready (since Entry.Since) and serves.
	Ready
	// Leaving: its worker drains; it gets no new connection.
	Leaving
	// Gone: its worker exited; connections may still wait in the queue
	// (handshakes steered to it before it left complete there).
	Gone
)

func (s State) String() string {
	switch s {
	case Free:
		return "free"
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Leaving:
		return "leaving"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// Reason says why a socket has the weight it has: the metrics' labels.
type Reason string

const (
	ReasonReady    Reason = "ready"     // full weight
	ReasonRamp     Reason = "ramp"      // slow start: part of the weight
	ReasonNotReady Reason = "not_ready" // starting: none
	ReasonStalled  Reason = "stalled"   // queue not taken from: none
	ReasonLeaving  Reason = "leaving"   // draining, replaced, or gone: none
	ReasonFree     Reason = "free"      // nobody's: none
	ReasonFallback Reason = "fallback"  // nobody is ready: the best there is
)

// Reasons lists every Reason, for metrics.
var Reasons = []Reason{ReasonReady, ReasonRamp, ReasonNotReady, ReasonStalled, ReasonLeaving, ReasonFree, ReasonFallback}

// Entry is one socket index of the groups and the worker holding it.
type Entry struct {
	Worker string
	State  State
	// Since is when the worker became ready (Ready), or left (Leaving,
	// Gone).
	Since time.Time
	// Replaces is the worker this one takes the place of: while this one
	// ramps up, that one keeps the rest of the pair's share.
	Replaces string
	// at is 1 + the index Replaces held when this one was assigned (a
	// hint that spares Weights a map; 0: unknown).
	at int
}

// Ramp is slow start: a ready worker's weight as a function of the time
// since it became ready. It rises linearly from Floor percent of Full to
// Full over Duration, in steps of Step percent (each step is one program
// update). Duration zero: Full at once.
//
// Linear in share, as HAProxy's slowstart and Envoy's slow_start_config
// with its default aggression of 1.0: a cold worker (JIT, caches, pools)
// warms by the requests it serves, so its load should grow steadily. The
// floor, Envoy's min_weight_percent (10 % there too), lets it start
// warming at once instead of getting nothing for the first part of the
// ramp and then a step.
type Ramp struct {
	Duration time.Duration
	Floor    int // percent; 0 means 10
	Step     int // percent; 0 means 2
}

// Weight is the weight of a worker ready for d.
func (r Ramp) Weight(d time.Duration) int {
	if r.Duration <= 0 || d >= r.Duration {
		return Full
	}
	floor, step := r.Floor, r.Step
	if floor <= 0 {
		floor = 10
	}
	if step <= 0 {
		step = 2
	}
	pct := max(floor, int(100*d/r.Duration))
	pct -= pct % step
	return max(pct, min(floor, 100)) * Full / 100
}

// Weights computes each socket's weight and the reason for it, from the
// entries, the time, the ramp and the sockets excluded as stalled. A
// worker that replaces a ready one takes its share from that one: the
// pair together keeps one full weight, so a whole generation ramps in
// while the one it replaces serves the rest. When no socket gets a
// weight (nobody ready, or everyone stalled), it falls back to the best
// there is rather than to nothing: the ready sockets, stalled or not, else
// the starting ones, else the leaving ones, else every socket.
func Weights(entries []Entry, now time.Time, ramp Ramp, stalled []bool) ([]int, []Reason) {
	w := make([]int, len(entries))
	why := make([]Reason, len(entries))
	var byWorker map[string]int
	find := func(e Entry) (int, bool) {
		if j := e.at - 1; j >= 0 && j < len(entries) && entries[j].Worker == e.Replaces && entries[j].State != Free {
			return j, true
		}
		if byWorker == nil {
			byWorker = make(map[string]int, len(entries))
			for i, e := range entries {
				if e.State != Free {
					byWorker[e.Worker] = i
				}
			}
		}
		j, ok := byWorker[e.Replaces]
		return j, ok
	}
	// What the replacements of each ready worker take from it.
	taken := make([]int, len(entries))
	for _, e := range entries {
		if e.State != Ready || e.Replaces == "" {
			continue
		}
		if j, ok := find(e); ok && entries[j].State == Ready {
			taken[j] = max(taken[j], ramp.Weight(now.Sub(e.Since)))
		}
	}
	any := false
	for i, e := range entries {
		switch e.State {
		case Free:
			why[i] = ReasonFree
		case Starting:
			why[i] = ReasonNotReady
		case Leaving, Gone:
			why[i] = ReasonLeaving
		case Ready:
			own := ramp.Weight(now.Sub(e.Since))
			w[i], why[i] = min(own, Full-taken[i]), ReasonReady
			if w[i] < Full {
				why[i] = ReasonRamp
			}
			if w[i] == 0 {
				why[i] = ReasonLeaving
			}
			if i < len(stalled) && stalled[i] {
				w[i], why[i] = 0, ReasonStalled
			}
		}
		any = any || w[i] > 0
	}
	if any {
		return w, why
	}
	for _, pass := range []func(Entry) bool{
		func(e Entry) bool { return e.State == Ready },
		func(e Entry) bool { return e.State == Starting },
		func(e Entry) bool { return e.State == Leaving },
		func(Entry) bool { return true },
	} {
		for i, e := range entries {
			if pass(e) {
				w[i], why[i] = Full, ReasonFallback
				any = true
			}
		}
		if any {
			return w, why
		}
	}
	return w, why
}
