package pool

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// A slot parked by a scale-down, taken back by a scale-up after a reload:
// its worker is of the generation before the reload, so a worker of the
// generation in force takes the slot over (the parked one serves until
// then), and one that announced its exit meanwhile is not taken back as
// a serving worker.
func TestSimUnparkAfterAReload(t *testing.T) {
	for _, leaving := range []bool{false, true} {
		s := newSimMode(t, true, nil)
		s.readyAll()
		parked := s.p.st.slots[1].cur
		s.queue[1] = 5 // it drains a queue: parked, not retired yet
		if _, err := s.scale(1, false); err != nil {
			t.Fatal(err)
		}
		c := s.reload()
		s.readyAll()
		s.exitStopped()
		if err := reply(t, c); err != nil {
			t.Fatal(err)
		}
		if leaving {
			s.notify(parked.pid, "STOPPING=1")
		}
		if _, err := s.scale(2, false); err != nil {
			t.Fatal(err)
		}
		gen := s.p.st.gen
		next := s.p.st.slots[1].next
		if next == nil || next.gen != gen {
			t.Fatalf("leaving %v: slot 1 taken back with worker of generation %d, and nothing of generation %d starting", leaving, parked.gen, gen)
		}
		s.readyAll()
		if w := s.p.st.slots[1].cur; w == nil || w.gen != gen {
			t.Fatalf("leaving %v: slot 1 serves %+v, want generation %d", leaving, w, gen)
		}
		if leaving && parked.owner != s.p.retired {
			t.Fatalf("the worker that announced its exit is owned by %T", parked.owner)
		}
	}
}

// A replacement that announces its exit before it is ready and then says
// READY=1 takes nothing over: the worker it was to replace serves on.
func TestSimReadyAfterStoppingIgnored(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.Recycle.MaxMemory = 1 })
	s.readyAll()
	old := s.livePIDs()[0]
	s.usageOf(map[int]int64{old: 2})
	repl := s.starting()
	if len(repl) != 1 {
		t.Fatalf("recycle: starting %v", repl)
	}
	s.notify(repl[0], "STOPPING=1")
	s.notify(repl[0], "READY=1")
	if s.signalled(old, unix.SIGTERM) || s.p.st.slots[0].cur.pid != old {
		t.Fatal("a replacement that announced its exit before it was ready took the slot over")
	}
	if !s.signalled(repl[0], unix.SIGTERM) {
		t.Fatal("the replacement that announced its exit was not stopped (with --ready after:D nothing else would)")
	}
}

// A recycle whose worker and replacement both die restarts the slot and
// goes on with the other slots marked meanwhile.
func TestSimRecycleGoesOnAfterACrash(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 2; o.Recycle.MaxMemory = 1 })
	s.readyAll()
	pids := s.livePIDs()
	s.usageOf(map[int]int64{pids[0]: 2, pids[1]: 2}) // both over: one at a time
	repl := s.starting()
	if len(repl) != 1 {
		t.Fatalf("recycle: starting %v", repl)
	}
	first := s.p.st.byPID[repl[0]].slot
	s.exit(s.p.st.slots[first].cur.pid)
	s.exit(repl[0])
	for _, pid := range s.starting() {
		if w := s.p.st.byPID[pid]; w.slot != first {
			return // the other slot's recycle started
		}
	}
	t.Fatalf("after the crash, the other slot's recycle did not start: starting %v", s.starting())
}

// A reload's worker that announces its exit rolls the reload back, and
// the caller hears of it only once that worker let go of the listeners,
// as for the batch's other workers (a ready canary accepts until then).
func TestSimRollbackWaitsForALeavingCanary(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.ReloadSoak = 10 * time.Second })
	s.readyAll()
	c := s.reload()
	canary := s.starting()
	if len(canary) != 1 {
		t.Fatalf("reload: starting %v", canary)
	}
	s.ready(canary...)
	s.holding[canary[0]] = true
	s.notify(canary[0], "STOPPING=1")
	noReply(t, c, "the canary still holds the listeners")
	s.holding[canary[0]] = false
	s.exit(canary[0])
	s.advance(time.Second)
	if err := reply(t, c); err == nil {
		t.Fatal("the reload succeeded")
	}
}

// An old worker whose leader exited while its process group drains on
// (a wrapper script's server) may still accept: the reload is answered
// only once the group is gone.
func TestSimReloadWaitsForALingeringGroup(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.StopTimeout = 10 * time.Second })
	s.readyAll()
	old := s.livePIDs()[0]
	s.holding[old] = true // until it exits
	c := s.reload()
	s.readyAll()
	if !s.signalled(old, unix.SIGTERM) {
		t.Fatal("the old worker was not asked to stop")
	}
	s.procs[old].group = true
	s.exit(old)
	s.advance(time.Second)
	noReply(t, c, "the old worker's group drains on")
	s.procs[old].group = false
	s.advance(time.Second)
	if err := reply(t, c); err != nil {
		t.Fatal(err)
	}
}
