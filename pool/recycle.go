package pool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/procfs"
)

// Recycling replaces a worker that is over one of the Recycle limits the
// way a worker that announces STOPPING=1 is replaced: its replacement
// starts in its slot, and only once that one is ready does the worker
// drain. One slot recycles at a time; a recycle is not a crash. If the
// replacement fails, the worker keeps serving and the slot tries again
// after a backoff.

// Recycle says when a worker is replaced by a fresh one of the same
// generation. Zero fields set no limit.
type Recycle struct {
	// MaxMemory is the resident memory of the worker's whole process
	// tree, in bytes.
	MaxMemory int64
	// MaxRequests is the number of requests it reported (SOCKD_REQUESTS=).
	MaxRequests Jitter
	// MaxAge is how long it has been ready.
	MaxAge DurationJitter
}

// Jitter is a limit N±J: each worker gets its own, drawn evenly from
// [N-J, N+J], so that workers started together do not reach it together.
type Jitter struct{ N, J int64 }

// DurationJitter is a duration D±J, drawn like Jitter.
type DurationJitter struct{ D, J time.Duration }

func (j Jitter) String() string {
	if j.J == 0 {
		return strconv.FormatInt(j.N, 10)
	}
	return fmt.Sprintf("%d±%d", j.N, j.J)
}

func (j DurationJitter) String() string {
	if j.J == 0 {
		return j.D.String()
	}
	return j.D.String() + "±" + j.J.String()
}

// cutJitter splits "A±B" (or "A+-B") into A and B, and says whether there
// was a separator.
func cutJitter(s string) (string, string, bool) {
	for _, sep := range []string{"±", "+-", "+/-"} {
		if a, b, ok := strings.Cut(s, sep); ok {
			return a, b, true
		}
	}
	return s, "", false
}

// ParseJitter reads "N" or "N±J" (also "N+-J"), 0 ≤ J ≤ N.
func ParseJitter(s string) (Jitter, error) {
	a, b, jittered := cutJitter(s)
	n, err := strconv.ParseInt(a, 10, 64)
	var j int64
	if jittered {
		var jerr error
		j, jerr = strconv.ParseInt(b, 10, 64)
		err = errors.Join(err, jerr)
	}
	if err != nil || n < 0 || j < 0 || j > n {
		return Jitter{}, fmt.Errorf("%q: want N or N±J with 0 ≤ J ≤ N, like 1000±100", s)
	}
	return Jitter{N: n, J: j}, nil
}

// ParseDurationJitter reads "D" or "D±J" (also "D+-J"), 0 ≤ J ≤ D.
func ParseDurationJitter(s string) (DurationJitter, error) {
	a, b, jittered := cutJitter(s)
	d, err := time.ParseDuration(a)
	var j time.Duration
	if jittered {
		var jerr error
		j, jerr = time.ParseDuration(b)
		err = errors.Join(err, jerr)
	}
	if err != nil || d < 0 || j < 0 || j > d {
		return DurationJitter{}, fmt.Errorf("%q: want D or D±J with 0 ≤ J ≤ D, like 6h±30m", s)
	}
	return DurationJitter{D: d, J: j}, nil
}

// draw picks a worker's own limit from a jittered one.
func (p *Pool) draw(n, j int64) int64 {
	if j <= 0 {
		return n
	}
	return n - j + p.rand(2*j+1)
}

// DefaultSampleInterval is how often the workers' memory and CPU time are
// read while MaxMemory is set.
const DefaultSampleInterval = time.Second

// sampleLoop samples every SampleInterval while the configuration in
// force has a memory limit to enforce, and sleeps while it has none (a
// reload may set one or take it away: setConf nudges it). Without one,
// nothing is read until someone asks (Sample): an idle sockd reads no
// /proc files and allocates nothing.
func (p *Pool) sampleLoop() {
	var tick <-chan time.Time
	var t *time.Ticker
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		c := p.inForce.Load()
		switch on := c.Recycle.MaxMemory > 0; {
		case on && t == nil:
			t = time.NewTicker(c.SampleInterval)
			tick = t.C
		case !on && t != nil:
			t.Stop()
			t, tick = nil, nil
		}
		select {
		case <-tick:
			if p.Sample(context.Background()) != nil {
				return
			}
		case <-p.newConf:
		case <-p.done:
			return
		}
	}
}

// Sample reads what every live worker's process tree (or cgroup) uses,
// off the loop, unless it was read less than half a SampleInterval ago;
// Status then shows it. sockd samples before it answers a status request
// or a scrape, so what they show is at most that old.
func (p *Pool) Sample(ctx context.Context) error {
	p.sampleMu.Lock()
	defer p.sampleMu.Unlock()
	if !p.sampled.IsZero() && p.env.now().Sub(p.sampled) < p.inForce.Load().SampleInterval/2 {
		return nil
	}
	reply := make(chan []sampleTarget, 1)
	if !p.post(sampleRequest{reply}) {
		return ErrStopping
	}
	var targets []sampleTarget
	select {
	case targets = <-reply:
	case <-p.done:
		return ErrStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	got := make(map[int]procfs.Usage, len(targets))
	for _, t := range targets {
		if u, err := p.env.usage(t); err == nil {
			got[t.pid] = u
		}
	}
	if !p.post(usageEvent{got}) {
		return ErrStopping
	}
	p.sampled = p.env.now()
	return nil
}

// sampleTarget is a worker to sample: its pid, and its cgroup if it has
// one (both never change once it runs).
type sampleTarget struct {
	pid    int
	cgroup *cgroup.Group
}

// onUsage records what the workers use.
func (p *Pool) onUsage(got map[int]procfs.Usage) {
	now := p.env.now()
	var ws []*worker
	for pid, u := range got {
		if w := p.st.byPID[pid]; w != nil {
			// A counter: a process of the tree that ended without being
			// waited for inside it (reparented to sockd) takes its time
			// away from the sum; the worker's CPU time never goes down.
			u.CPU = max(u.CPU, w.usage.CPU)
			w.usage, w.sampledAt = u, now
			ws = append(ws, w)
		}
	}
	// In slot order, so that what policies decide does not depend on
	// the order of a map.
	sort.Slice(ws, func(i, j int) bool {
		return ws[i].slot < ws[j].slot || ws[i].slot == ws[j].slot && ws[i].pid < ws[j].pid
	})
	for _, w := range ws {
		for _, pol := range p.policies {
			pol.sampled(w)
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// recycler is the recycling policy, and the owner of the replacements it
// starts: one slot at a time, never during a reload (which replaces
// every worker anyway).
type recycler struct {
	p      *Pool
	active *slot // the slot whose replacement is starting
	count  int   // workers replaced
}

// The recycler's timers.
type (
	ageTimer struct {
		w   *worker
		age time.Duration
	}
	recycleRetry struct{ s *slot }
)

func (e ageTimer) apply(p *Pool) {
	p.recycler.mark(e.w, "age", fmt.Sprintf("reached its age limit (%s after it was ready)", e.age))
	p.recycler.next()
}

func (e recycleRetry) apply(p *Pool) {
	e.s.restartArmed = false
	p.recycler.next()
}

// promoted gives a worker that took over its slot its own limits.
func (rc *recycler) promoted(w *worker) {
	p := rc.p
	r := p.cfg.Recycle
	if r.MaxRequests.N > 0 {
		w.maxRequests = p.draw(r.MaxRequests.N, r.MaxRequests.J)
	}
	if r.MaxAge.D > 0 {
		age := time.Duration(p.draw(int64(r.MaxAge.D), int64(r.MaxAge.J)))
		w.timers = append(w.timers, p.after(age, ageTimer{w: w, age: age}))
	}
}

// reported checks a worker's reported request count against its limit.
func (rc *recycler) reported(w *worker) {
	if w.maxRequests > 0 && w.requests >= w.maxRequests {
		rc.mark(w, "requests", fmt.Sprintf("served %d requests (limit %d)", w.requests, w.maxRequests))
		rc.next()
	}
}

// sampled checks a worker's memory against MaxMemory.
func (rc *recycler) sampled(w *worker) {
	if max := rc.p.cfg.Recycle.MaxMemory; max > 0 && w.usage.RSS > max {
		rc.mark(w, "memory", fmt.Sprintf("uses %s of memory (limit %s)", mib(w.usage.RSS), mib(max)))
		rc.next()
	}
}

func (*recycler) gone(*worker) {}

// mark marks the worker serving a slot for replacement.
func (rc *recycler) mark(w *worker, kind, why string) {
	if w.owner != rc.p.serving || w.recycle != "" || w.exited || w.state != Ready {
		return
	}
	w.recycle, w.recycleKind = why, kind
	rc.p.wlog(w).Info("worker over a recycle limit", "event", "worker_recycle_due", "reason", why)
}

// next starts the replacement of one marked worker, unless a slot is
// recycling already or a reload runs.
func (rc *recycler) next() {
	p := rc.p
	if rc.active != nil || p.state() == StateStopping || p.state() == StateReloading {
		return
	}
	var due *slot
	for _, s := range p.st.slots {
		if w := s.cur; w != nil && w.recycle != "" && w.owner == p.serving && s.next == nil && !s.restartArmed {
			due = s
			break
		}
	}
	if due == nil {
		return
	}
	w := due.cur
	p.wlog(w).Info("recycling worker: starting its replacement", "event", "worker_recycle", "reason", w.recycle)
	p.event(Event{Kind: EventRecycle, Slot: w.slot, Generation: w.gen, PID: w.pid, Reason: w.recycleKind, Detail: w.recycle})
	rc.active = due
	if err := p.startAs(due, rc); err != nil {
		rc.failed(due, err.Error())
	}
}

// failed: the replacement did not start or did not get ready. The worker
// keeps serving; the slot tries again after a backoff.
func (rc *recycler) failed(s *slot, how string) {
	p := rc.p
	rc.active = nil
	s.crashes++
	delay := max(p.backoff(s.crashes), p.cfg.BackoffMin)
	p.log.Warn("recycle failed; the worker keeps serving", "event", "worker_recycle_failed", "worker", s.index, "reason", how, "retry", delay)
	s.restartArmed = true
	p.after(delay, recycleRetry{s})
}

// The recycler as the owner of a replacement: ready, it takes the slot
// over; failed, the worker it was to replace keeps serving.

func (rc *recycler) ready(w *worker) {
	s := w.home
	rc.p.promote(s)
	rc.active = nil
	s.crashes = 0
	rc.count++
	rc.next()
}

func (rc *recycler) readyTimeout(w *worker) { rc.p.failReady(w) }
func (rc *recycler) stopping(w *worker)     { rc.p.failEarly(w) }
func (rc *recycler) dropped(*worker)        { rc.active = nil }

func (rc *recycler) exited(w *worker, how string) {
	s := w.home
	if s.next == w {
		s.next = nil
	}
	if s.cur == nil {
		// The worker it was to replace died meanwhile (its crash was
		// left to this replacement): the slot is restarted as after a
		// crash, not left to a recycle retry, which finds nothing there
		// to recycle.
		rc.active = nil
		rc.p.crashed(s, w, how)
		rc.next() // the other slots' workers marked meanwhile
		return
	}
	if w.failure != "" {
		how = w.failure + ", then " + how
	}
	rc.p.log.Warn("worker's replacement exited before it took over", "worker", w.slot)
	rc.failed(s, how)
}
