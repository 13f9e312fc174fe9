package pool

import (
	"context"
	"fmt"
	"time"
)

// ScaleError says why a scale request was refused.
type ScaleError struct{ Reason string }

func (e *ScaleError) Error() string { return "scale: " + e.Reason }

// Scale sets the number of worker slots: to n, or, with relative, by n
// (+1, -2). New slots start at once; the highest slots are retired. It
// returns the new target. During a reload the change waits for the reload
// to end.
func (p *Pool) Scale(ctx context.Context, n int, relative bool) (int, error) {
	reply := make(chan scaleReply, 1)
	if !p.post(scaleRequest{n: n, relative: relative, reply: reply}) {
		return 0, ErrStopping
	}
	select {
	case r := <-reply:
		return r.target, r.err
	case <-p.done:
		return 0, ErrStopping
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type scaleReply struct {
	target int
	err    error
}

// parkPoll is how often a scale-down looks at the accept queues of the
// reuseport sockets steered away from; parkDwell is the least it waits
// after steering away, for handshakes under way to complete (a SYN the
// kernel gave a socket just before the steering lands in that socket's
// queue one round trip later).
const (
	parkPoll  = 10 * time.Millisecond
	parkDwell = time.Second
)

func (p *Pool) onScale(r scaleRequest) {
	st := &p.st
	target := r.n
	if r.relative {
		target = p.targetSize() + r.n
	}
	switch {
	case st.stopping:
		r.reply <- scaleReply{err: ErrStopping}
		return
	case target < 1 || target > MaxWorkers:
		r.reply <- scaleReply{target: p.targetSize(), err: &ScaleError{fmt.Sprintf("%d workers: want 1 to %d (now %d)", target, MaxWorkers, p.targetSize())}}
		return
	}
	r.reply <- scaleReply{target: target}
	if st.reload != nil {
		p.log.Info("scaling after the running reload", "event", "scale_queued", "workers", target)
		st.pendingSize = target
		return
	}
	p.scaleTo(target)
}

// targetSize is the size asked for last.
func (p *Pool) targetSize() int {
	if n := p.st.pendingSize; n > 0 {
		return n
	}
	return len(p.st.slots)
}

func (p *Pool) scaleTo(n int) {
	st := &p.st
	st.pendingSize = 0
	if n == len(st.slots) {
		return
	}
	p.log.Info("scaling", "event", "scale", "from", len(st.slots), "workers", n)
	p.event(Event{Kind: EventScale, Detail: fmt.Sprintf("%d → %d workers", len(st.slots), n)})
	if err := p.resize(n, false); err != nil {
		p.log.Error("cannot scale", "event", "scale_failed", "workers", n, "error", err)
	}
}

// resize makes the pool n slots long. New slots run the serving generation
// and start at once (a slot still draining from a scale-down is taken back
// instead). Slots beyond n are retired: their workers drain at once, or,
// for reuseport sockets, once new connections are steered away and the
// slots' accept queues are empty, so that no connection waits in a queue
// nobody takes from.
func (p *Pool) resize(n int, initial bool) error {
	st := &p.st
	if err := p.env.grow(n); err != nil {
		return err
	}
	for len(st.slots) < n {
		i := len(st.slots)
		if s := p.unpark(i); s != nil {
			st.slots = append(st.slots, s)
			if w := s.cur; w.leaving || w.gen != st.gen {
				// A reload since the park left it behind, or it announced
				// its exit: it serves on until a worker of the generation
				// in force takes the slot over.
				s.want, s.cfg = st.gen, p.cfg
				p.startOrCrash(s)
			}
			continue
		}
		// The first slots' sockets were bound for them: served from the start.
		s := &slot{index: i, want: st.gen, cfg: p.cfg, served: initial}
		st.slots = append(st.slots, s)
		p.startOrCrash(s)
		if st.fatal != nil {
			return nil
		}
	}
	var retired []*slot
	for len(st.slots) > n {
		s := st.slots[len(st.slots)-1]
		st.slots = st.slots[:len(st.slots)-1]
		s.removed = true
		if w := s.next; w != nil {
			p.drop(w)
		}
		if w := s.cur; w != nil {
			w.owner = p.parking
		}
		retired = append(retired, s)
	}
	if !p.steer() {
		for _, s := range retired {
			p.retireSlot(s)
		}
		return nil
	}
	for _, s := range retired {
		if s.cur == nil {
			continue
		}
		s.parkedAt = p.env.now()
		if len(st.parked) == 0 {
			p.after(parkPoll, parkTimer{})
		}
		st.parked = append(st.parked, s)
	}
	return nil
}

// retireSlot retires the worker of a removed slot: its slot was replaced
// by nothing.
func (p *Pool) retireSlot(s *slot) {
	if w := s.cur; w != nil {
		s.cur = nil
		p.retire(w, time.Time{})
	}
}

// parker owns the worker of a slot a scale-down removed. With reuseport
// sockets it serves on while new connections are steered away from its
// slot's sockets and the connections queued there drain; then it is
// retired (onParkTimer). Its exit is no crash, and nothing replaces it.
type parker struct{ p *Pool }

func (parker) ready(*worker)        {}
func (parker) readyTimeout(*worker) {}
func (parker) dropped(*worker)      {}
func (o parker) stopping(w *worker) { o.p.leave(w) }
func (o parker) exited(w *worker, _ string) {
	o.p.takeOverQueue(w)
	if s := w.home; s.cur == w {
		s.cur = nil
	}
}

// The scale-down's request and timer.
type (
	scaleRequest struct {
		n        int
		relative bool
		reply    chan scaleReply
	}
	parkTimer struct{}
)

func (e scaleRequest) apply(p *Pool) { p.onScale(e) }
func (parkTimer) apply(p *Pool)      { p.onParkTimer() }

// unpark takes back the draining slot i, if there is one.
func (p *Pool) unpark(i int) *slot {
	st := &p.st
	for j, s := range st.parked {
		if s.index == i && s.cur != nil && !s.cur.exited {
			st.parked = append(st.parked[:j], st.parked[j+1:]...)
			s.removed, s.parkedAt = false, time.Time{}
			if !s.cur.leaving {
				s.cur.owner = p.serving
			}
			return s
		}
	}
	return nil
}

// steer makes the kernel hand new connections to the sockets of the
// leading slots that serve; false if no listener is a reuseport group.
func (p *Pool) steer() bool {
	st := &p.st
	k := 0
	for k < len(st.slots) && st.slots[k].served {
		k++
	}
	if k == 0 {
		return st.steered > 0
	}
	if k == st.steered {
		return true
	}
	if !p.env.steer(k) {
		return false
	}
	st.steered = k
	return true
}

// onParkTimer retires the parked slots whose queues have drained.
func (p *Pool) onParkTimer() {
	st := &p.st
	now := p.env.now()
	kept := st.parked[:0]
	for _, s := range st.parked {
		switch {
		case s.cur == nil || s.cur.exited || s.cur.stopSent:
		case now.Sub(s.parkedAt) < parkDwell || p.env.queued(s.index) > 0 && now.Sub(s.parkedAt) < s.cur.cfg.StopTimeout:
			kept = append(kept, s)
		default:
			if q := p.env.queued(s.index); q > 0 {
				p.wlog(s.cur).Warn("connections still queued on a retired slot's socket; retiring its worker anyway", "event", "scale_queue_left", "queued", q)
			}
			p.retireSlot(s)
		}
	}
	st.parked = kept
	if len(kept) > 0 && !st.stopping {
		p.after(parkPoll, parkTimer{})
	}
}
