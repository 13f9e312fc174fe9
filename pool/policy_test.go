package pool

import "testing"

// A policy written here, outside the mechanism: "replace slot 0 every
// time its worker has served 3 requests". It watches reports (a policy),
// starts the replacement with an owner of its own, and its owner decides
// what ready and failed mean. Nothing in loop.go, slot.go or owner.go
// knows it exists.
type everyThree struct {
	p        *Pool
	replaced int
	failed   int
}

func (e *everyThree) promoted(*worker) {}
func (e *everyThree) sampled(*worker)  {}
func (e *everyThree) gone(*worker)     {}

func (e *everyThree) reported(w *worker) {
	s := w.home
	if w.slot != 0 || w.owner != e.p.serving || w.requests < 3 || s.next != nil {
		return
	}
	if err := e.p.startAs(s, e); err != nil {
		e.failed++
	}
}

// As an owner: ready, it takes the slot over; failed, the old worker
// keeps serving and the failure is only counted.
func (e *everyThree) ready(w *worker) {
	e.p.promote(w.home)
	e.replaced++
}
func (e *everyThree) readyTimeout(w *worker) { e.p.failReady(w) }
func (e *everyThree) stopping(w *worker)     { e.p.failEarly(w) }
func (e *everyThree) dropped(*worker)        {}
func (e *everyThree) exited(w *worker, _ string) {
	if w.home.next == w {
		w.home.next = nil
	}
	e.failed++
}

func TestToyPolicy(t *testing.T) {
	s := newSim(t, nil)
	toy := &everyThree{p: s.p}
	s.p.policies = append(s.p.policies, toy)
	s.readyAll()
	first := s.p.st.slots[0].cur.pid
	s.notify(first, "SOCKD_REQUESTS=2")
	if len(s.starting()) != 0 {
		t.Fatal("replaced before 3 requests")
	}
	s.notify(first, "SOCKD_REQUESTS=3")
	next := s.starting()
	if len(next) != 1 || s.procs[next[0]].slot != 0 {
		t.Fatalf("starting %v, want slot 0's replacement", next)
	}
	s.ready(next[0])
	if s.p.st.slots[0].cur.pid != next[0] || !s.signalled(first, s.p.cfg.StopSignal) || toy.replaced != 1 {
		t.Fatalf("slot 0 runs %d, old one stopped %v, replaced %d", s.p.st.slots[0].cur.pid, s.signalled(first, s.p.cfg.StopSignal), toy.replaced)
	}
	s.exitStopped() // the replaced worker drains: a retirement, not a crash
	if st := s.status(); st.Restarts != 0 || st.Ready != 2 {
		t.Fatalf("after the old worker left: %+v", st)
	}

	// A replacement that dies before it is ready: the worker it was to
	// replace keeps serving, the budget is untouched, the toy counts it.
	s.notify(next[0], "SOCKD_REQUESTS=5")
	doomed := s.starting()[0]
	s.exit(doomed)
	if s.p.st.slots[0].cur.pid != next[0] || toy.failed != 1 || len(s.p.st.crashes) != 0 || s.status().Ready != 2 {
		t.Fatalf("after the failed replacement: slot 0 runs %d, failed %d, crashes %d", s.p.st.slots[0].cur.pid, toy.failed, len(s.p.st.crashes))
	}
	// Slot 1 is not the toy's business; slot 0's next report tries again.
	s.notify(s.p.st.slots[1].cur.pid, "SOCKD_REQUESTS=100")
	if len(s.starting()) != 0 {
		t.Fatalf("slot 1 replaced: starting %v", s.starting())
	}
	s.notify(next[0], "SOCKD_REQUESTS=6")
	if got := s.starting(); len(got) != 1 || s.procs[got[0]].slot != 0 {
		t.Fatalf("starting %v, want slot 0's second try", got)
	}
}
