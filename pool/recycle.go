package pool

import (
	"context"
	"errors"
	"fmt"
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

// ParseSize reads a size in bytes: "1048576", "512K", "512M", "2G" (also
// KiB, MiB, GiB; powers of 1024).
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want bytes, or a number with K, M, G or T (powers of 1024), like 512M", s)
	}
	return n * mult, nil
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

// sampleLoop samples every SampleInterval while there is a memory limit
// to enforce. Without one, nothing is read until someone asks (Sample):
// an idle sockd reads no /proc files and allocates nothing.
func (p *Pool) sampleLoop() {
	if p.opts.Recycle.MaxMemory <= 0 {
		return
	}
	t := time.NewTicker(p.opts.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.done:
			return
		}
		if p.Sample(context.Background()) != nil {
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
	if !p.sampled.IsZero() && time.Since(p.sampled) < p.opts.SampleInterval/2 {
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
	p.sampled = time.Now()
	return nil
}

// sampleTarget is a worker to sample: its pid, and its cgroup if it has
// one (both never change once it runs).
type sampleTarget struct {
	pid    int
	cgroup *cgroup.Group
}

// onUsage records what the workers use and marks those over MaxMemory.
func (p *Pool) onUsage(got map[int]procfs.Usage) {
	now := p.env.now()
	for pid, u := range got {
		w := p.st.byPID[pid]
		if w == nil {
			continue
		}
		w.usage, w.sampledAt = u, now
		if max := p.opts.Recycle.MaxMemory; max > 0 && u.RSS > max {
			p.markRecycle(w, "memory", fmt.Sprintf("uses %s of memory (limit %s)", mib(u.RSS), mib(max)))
		}
	}
	p.recycleNext()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// armRecycle gives a worker that took over its slot its own limits.
func (p *Pool) armRecycle(w *worker) {
	r := p.opts.Recycle
	if r.MaxRequests.N > 0 {
		w.maxRequests = p.draw(r.MaxRequests.N, r.MaxRequests.J)
	}
	if r.MaxAge.D > 0 {
		age := time.Duration(p.draw(int64(r.MaxAge.D), int64(r.MaxAge.J)))
		w.timers = append(w.timers, p.after(age, ageTimer{w: w, age: age}))
	}
}

// onRequests checks a worker's reported request count against its limit.
func (p *Pool) onRequests(w *worker) {
	if w.maxRequests > 0 && w.requests >= w.maxRequests {
		p.markRecycle(w, "requests", fmt.Sprintf("served %d requests (limit %d)", w.requests, w.maxRequests))
		p.recycleNext()
	}
}

func (p *Pool) onAgeTimer(w *worker, age time.Duration) {
	p.markRecycle(w, "age", fmt.Sprintf("reached its age limit (%s after it was ready)", age))
	p.recycleNext()
}

// markRecycle marks the worker serving a slot for replacement.
func (p *Pool) markRecycle(w *worker, kind, why string) {
	if _, role := p.slotOf(w); role != roleCur || w.recycle != "" || w.exited || w.state != Ready || w.leaving || w.stopSent {
		return
	}
	w.recycle, w.recycleKind = why, kind
	p.wlog(w).Info("worker over a recycle limit", "event", "worker_recycle_due", "reason", why)
}

// recycleNext starts the replacement of one marked worker, unless a slot
// is recycling already or a reload runs (which replaces them all anyway).
func (p *Pool) recycleNext() {
	st := &p.st
	if st.stopping || st.reload != nil {
		return
	}
	var due *slot
	for _, s := range st.slots {
		if s.recycling {
			return
		}
		if due == nil && s.cur != nil && s.cur.recycle != "" && s.next == nil && !s.restartArmed && !s.cur.stopSent && !s.cur.leaving {
			due = s
		}
	}
	if due == nil {
		return
	}
	w := due.cur
	p.wlog(w).Info("recycling worker: starting its replacement", "event", "worker_recycle", "reason", w.recycle)
	p.event(Event{Kind: EventRecycle, Slot: w.slot, Generation: w.gen, PID: w.pid, Reason: w.recycleKind, Detail: w.recycle})
	due.recycling = true
	if err := p.startNext(due); err != nil {
		p.recycleFailed(due, err.Error())
	}
}

// recycleFailed: the replacement did not start or did not get ready. The
// worker keeps serving; the slot tries again after a backoff.
func (p *Pool) recycleFailed(s *slot, how string) {
	s.recycling = false
	s.crashes++
	delay := max(p.backoff(s.crashes), p.opts.BackoffMin)
	p.log.Warn("recycle failed; the worker keeps serving", "event", "worker_recycle_failed", "worker", s.index, "reason", how, "retry", delay)
	s.restartArmed = true
	p.after(delay, recycleRetry{s})
}

func (p *Pool) onRecycleRetry(s *slot) {
	s.restartArmed = false
	p.recycleNext()
}

// recycled is called when a slot's recycle replacement took over.
func (p *Pool) recycled(s *slot) {
	s.recycling = false
	s.crashes = 0
	p.st.recycles++
	p.recycleNext()
}
