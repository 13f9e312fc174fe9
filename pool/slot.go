package pool

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// slot is one place in the pool, and the pool's one mechanism: replacing
// the worker of a slot. At most two workers belong to a slot: cur, the one
// that took the slot over (once it was ready), and next, the one starting
// to take its place. Every worker enters a slot as next; when it is ready
// it is promoted to cur and the worker it replaces is asked to drain. If
// next fails before that, cur was never touched.
//
// What differs between a first start, a crash restart, a scale-up, a
// replacement after STOPPING=1, a recycle and a reload is only when a next
// is started and whether its promotion waits: a reload marks the slots of
// its batch, whose workers are promoted together once the whole batch is
// ready (reload.go).
type slot struct {
	index int
	cur   *worker
	next  *worker
	// want is the generation the slot runs, or is being moved to by a
	// reload's batch.
	want int
	// batch: next belongs to the running reload's batch.
	batch bool
	// crashes counts consecutive crashes, for backoff; restarts counts
	// crash restarts since the slot's generation took over (shown per
	// worker in status).
	crashes, restarts int
	restartArmed      bool // a restartTimer is pending
	removed           bool // dropped by a scale-down
	// served: new connections are steered to the slot's reuseport
	// sockets (it had a ready worker, or was there from the start).
	served   bool
	parkedAt time.Time // when a scale-down steered connections away from it
	// recycling: next replaces a worker over a Recycle limit.
	recycling bool
}

type role int

const (
	roleNone role = iota // retiring, or of a slot that no longer exists
	roleCur
	roleNext
)

// slotOf finds w's slot and w's role in it.
func (p *Pool) slotOf(w *worker) (*slot, role) {
	st := &p.st
	if w.slot < 0 || w.slot >= len(st.slots) {
		return nil, roleNone
	}
	s := st.slots[w.slot]
	switch w {
	case s.cur:
		return s, roleCur
	case s.next:
		return s, roleNext
	}
	return s, roleNone
}

// startNext forks the worker that is to take slot s over, of the slot's
// wanted generation.
func (p *Pool) startNext(s *slot) error {
	p.st.seq++
	w := &worker{slot: s.index, gen: s.want, state: Starting, started: p.env.now(), id: fmt.Sprintf("%d-%d", p.self, p.st.seq)}
	pid, err := p.env.start(w)
	if err != nil {
		p.st.spawnFailures++
		reason := "error"
		if ShortOf(err) != "" {
			reason = "resources"
		}
		p.event(Event{Kind: EventSpawnFailed, Slot: w.slot, Generation: w.gen, Reason: reason, Detail: err.Error()})
		if n, ok := p.st.spawnLog.note(p.env.now()); ok {
			p.log.Error("cannot start worker", "event", "worker_spawn_failed", "generation", w.gen, "worker", w.slot, "error", err, "failures", n)
		}
		return err
	}
	p.st.spawnLog = rateLog{}
	w.pid = pid
	if !s.batch {
		w.restarts = s.restarts
	}
	s.next = w
	p.st.byPID[pid] = w
	p.guardAdd(pid)
	p.wlog(w).Info("worker started", "event", "worker_start")
	p.event(Event{Kind: EventStart, Slot: w.slot, Generation: w.gen, PID: w.pid})
	if d := p.opts.Ready.After; d > 0 {
		w.timers = append(w.timers, p.after(d, readyTimer{w}))
	} else {
		w.timers = append(w.timers, p.after(p.opts.ReadyTimeout, readyTimeout{w}))
	}
	return nil
}

// startOrCrash starts a worker in s outside a reload; a failure to fork
// counts as a crash of the slot, unless sockd ran short of a resource.
func (p *Pool) startOrCrash(s *slot) {
	err := p.startNext(s)
	switch {
	case err == nil:
	case ShortOf(err) != "":
		p.shortOf(s, err)
	default:
		p.crashed(s, &worker{slot: s.index, gen: s.want}, err.Error())
	}
}

// ShortOf says which resource err says the system or a limit ran short
// of, naming the limit that may be the cause ("RLIMIT_NOFILE 64"), or ""
// for any other error.
func ShortOf(err error) string {
	var lim int
	var name string
	switch {
	case errors.Is(err, unix.EMFILE):
		lim, name = unix.RLIMIT_NOFILE, "RLIMIT_NOFILE"
	case errors.Is(err, unix.EAGAIN):
		lim, name = unix.RLIMIT_NPROC, "RLIMIT_NPROC"
	case errors.Is(err, unix.ENFILE):
		return "open files (the system's file table is full)"
	case errors.Is(err, unix.ENOMEM):
		return "memory"
	case errors.Is(err, unix.ENOSPC):
		return "space (a file system is full)"
	default:
		return ""
	}
	var rl unix.Rlimit
	if unix.Getrlimit(lim, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
		return fmt.Sprintf("%s %d", name, rl.Cur)
	}
	return name
}

// shortOf handles a worker sockd could not start for want of a resource
// (descriptors, processes, memory): not the worker's fault, so it does
// not spend the restart budget. Before the pool was ever ready it gives
// up (ErrResources: the service cannot run as configured); later the
// slot is tried again with backoff while the others serve, the failures
// logged at most once every rateLogEvery.
func (p *Pool) shortOf(s *slot, err error) {
	if !p.st.announced {
		p.giveUp(fmt.Errorf("%w: worker %d: %w (short of %s)", ErrResources, s.index, err, ShortOf(err)))
		return
	}
	s.crashes++
	s.restartArmed = true
	p.after(max(p.backoff(s.crashes), p.opts.BackoffMin), restartTimer{s})
}

// rateLog lets a repeated failure be logged at most once every
// rateLogEvery, with how many happened: a storm of them must cost next to
// nothing and not flood the journal.
type rateLog struct {
	n    int
	last time.Time
}

const rateLogEvery = 10 * time.Second

// note counts one more failure and says whether to log it now, with the
// count since the last line.
func (r *rateLog) note(now time.Time) (int, bool) {
	r.n++
	if !r.last.IsZero() && now.Sub(r.last) < rateLogEvery {
		return r.n, false
	}
	n := r.n
	r.n, r.last = 0, now
	return n, true
}

// promote makes s.next the worker of slot s and asks the one it replaces to
// drain (unless it is leaving on its own already). It returns that one.
func (p *Pool) promote(s *slot) *worker {
	old := s.cur
	s.cur, s.next = s.next, nil
	p.armRecycle(s.cur)
	if !s.served {
		s.served = true
		p.steer()
	}
	if old != nil && !old.leaving {
		p.stopWorker(old)
	}
	if s.recycling {
		p.recycled(s)
	}
	return old
}

// countReady counts the slots whose worker is ready and serving.
func (p *Pool) countReady() int {
	n := 0
	for _, s := range p.st.slots {
		if s.cur != nil && s.cur.state == Ready {
			n++
		}
	}
	return n
}

// crashed accounts for a worker of a slot that died without being asked
// to (or failed to start) and schedules its replacement with backoff, or
// gives up when the restart budget is spent.
func (p *Pool) crashed(s *slot, w *worker, how string) {
	st := &p.st
	now := p.env.now()
	lim := p.opts.RestartLimit
	kept := st.crashes[:0]
	for _, t := range st.crashes {
		if now.Sub(t) < lim.Period {
			kept = append(kept, t)
		}
	}
	st.crashes = append(kept, now)
	if len(st.crashes) > lim.Burst {
		p.giveUp(fmt.Errorf("%w: %d crashes within %s (last: worker %d, %s)", ErrRestartLimit, len(st.crashes), lim.Period, w.slot, how))
		return
	}
	switch {
	case s.removed:
		return
	case s.next != nil:
		// A reload's worker is already starting in this slot.
		p.log.Info("not restarting a worker whose slot is being taken over", "generation", w.gen, "worker", w.slot)
		return
	case s.cur != nil && !s.cur.leaving:
		// A replacement that failed: the worker it was to replace keeps
		// serving.
		p.log.Info("replacement failed; the slot's worker keeps serving", "generation", s.cur.gen, "worker", s.index)
		return
	}
	if !w.readyAt.IsZero() && now.Sub(w.readyAt) >= DefaultStableAfter {
		s.crashes = 0
	}
	s.crashes++
	delay := p.backoff(s.crashes)
	s.restarts++
	st.restarts++
	p.event(Event{Kind: EventRestart, Slot: s.index, Generation: s.want, Reason: p.exitReason(w), Detail: how})
	p.log.Info("restarting worker", "event", "worker_restart", "generation", s.want, "worker", s.index, "delay", delay)
	if delay == 0 {
		p.startOrCrash(s)
		return
	}
	s.restartArmed = true
	p.after(delay, restartTimer{s})
}

// backoff is 0 for a slot's first crash, then BackoffMin doubling up to
// maxBackoff.
func (p *Pool) backoff(consecutive int) time.Duration {
	if consecutive <= 1 {
		return 0
	}
	top := p.maxBackoff()
	d := p.opts.BackoffMin
	for i := 2; i < consecutive && d < top; i++ {
		d *= 2
	}
	return min(d, top)
}

// maxBackoff is BackoffMax, but never more than Period/(2·Burst) of the
// restart limit: the backoff must not stretch a crash loop so thin that it
// never spends the budget. With it, a worker that crashes within
// Period/(2·Burst) of starting (3 s with 10/60s) always exhausts the budget
// and sockd gives up, instead of restarting it every BackoffMax forever.
func (p *Pool) maxBackoff() time.Duration {
	top := p.opts.BackoffMax
	if lim := p.opts.RestartLimit; lim.Burst > 0 {
		top = min(top, lim.Period/time.Duration(2*lim.Burst))
	}
	return max(top, p.opts.BackoffMin)
}

func (p *Pool) onRestartTimer(s *slot) {
	s.restartArmed = false
	if p.st.stopping || s.removed || s.cur != nil || s.next != nil {
		return
	}
	p.startOrCrash(s)
}

func (p *Pool) giveUp(err error) {
	p.log.Error("giving up", "event", "give_up", "error", err)
	p.event(Event{Kind: EventGiveUp, Detail: err.Error()})
	p.st.fatal = err
	p.beginStop()
}
