package pool

import (
	"testing"
	"time"
)

// filled: every slot of the pool has a worker starting or ready.
func (s *sim) filled(t *testing.T, when string) {
	t.Helper()
	for _, sl := range s.p.st.slots {
		if sl.cur == nil && sl.next == nil {
			t.Fatalf("%s: slot %d is empty, and nothing will fill it (restart armed: %v); status %+v", when, sl.index, sl.restartArmed, s.status())
		}
	}
}

// A worker that announced its exit (STOPPING=1) and whose replacements
// crash: once it exits, its slot still gets a worker (the restart timer
// that fired while it was still there did not give up on the slot).
func TestSimLeavingWorkersSlotRefilled(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1 })
	s.readyAll()
	s.advance(time.Minute)
	old := s.livePIDs()[0]
	s.notify(old, "STOPPING=1")
	for i := range 2 {
		repl := s.starting()
		if len(repl) != 1 {
			t.Fatalf("replacement %d: starting %v", i+1, repl)
		}
		s.exit(repl[0])
		s.advance(time.Second)
	}
	s.exit(old)
	s.advance(time.Minute)
	s.filled(t, "after the leaving worker exited")
}

// The serving worker crashes while its recycle replacement starts, and
// then the replacement fails too: the slot is restarted as after a
// crash, not left to a recycle retry that looks for a worker to recycle.
func TestSimCrashDuringRecycleRefilled(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.Recycle.MaxMemory = 1 })
	s.readyAll()
	old := s.livePIDs()[0]
	s.usageOf(map[int]int64{old: 2})
	repl := s.starting()
	if len(repl) != 1 {
		t.Fatalf("recycle: starting %v", repl)
	}
	s.exit(old)
	s.exit(repl[0])
	s.advance(time.Minute)
	s.filled(t, "after the worker and its recycle replacement both died")
}

// A reload rolled back while a worker of the old generation was leaving
// (it announced its exit; the reload's worker was to be its
// replacement): the slot gets a replacement of its own.
func TestSimReloadAbortedWhileAWorkerLeaves(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1 })
	s.readyAll()
	s.advance(time.Minute)
	old := s.livePIDs()[0]
	res := s.reload()
	next := s.starting()
	if len(next) != 1 {
		t.Fatalf("reload: starting %v", next)
	}
	s.notify(old, "STOPPING=1")
	s.exit(next[0]) // fails before it is ready: rolled back
	if err := reply(t, res); err == nil {
		t.Fatal("the reload succeeded")
	}
	s.exit(old)
	s.advance(time.Minute)
	s.filled(t, "after the rolled-back reload and the leaving worker's exit")
}
