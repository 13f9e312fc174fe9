package pool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// A worker that sends STOPPING=1 and exits right away retires; it does not
// crash. The message and the exit reach sockd by two paths (the notify
// socket, the pidfd), and the exit must not overtake the message. Four
// chatty workers leave at once, 20 times: their last words queue behind
// each other's.
func TestStoppingThenImmediateExitIsNeverACrash(t *testing.T) {
	t.Parallel()
	h := startPool(t, "quit", func(o *options) {
		o.Workers = 4
		o.MinServe = time.Millisecond
		o.RestartLimit = pool.RestartLimit{Burst: 100, Period: time.Minute}
	})
	h.waitReady()
	for round := 0; round < 20; round++ {
		old := h.status().Workers
		// Ready for longer than MinServe, so that STOPPING=1 is a
		// planned exit (sockd's clock: the status comes from this process).
		waitFor(t, 5*time.Second, "workers ready for longer than MinServe", func() bool {
			for _, w := range old {
				if w.ReadyAt.IsZero() || time.Since(w.ReadyAt) <= time.Millisecond {
					return false
				}
			}
			return true
		})
		for _, w := range old {
			syscall.Kill(w.PID, syscall.SIGUSR1)
		}
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d: replacements ready, old workers gone", round), func() bool {
			s := h.status()
			if s.Ready != 4 || len(s.Workers) != 4 {
				return false
			}
			for _, w := range old {
				if procfs.Alive(w.PID) || contains(pids(s), w.PID) {
					return false
				}
			}
			return true
		})
		if s := h.status(); s.Restarts != 0 {
			t.Fatalf("round %d: announced exits were counted as crashes (%d restarts)", round, s.Restarts)
		}
	}
}

// A worker that announces its exit before it served anything is a crash
// loop in disguise: it spends the restart budget like any crash.
func TestEarlyStoppingCountsAsCrash(t *testing.T) {
	t.Parallel()
	h := startPool(t, "leaveearly", func(o *options) {
		o.Workers = 1
		o.RestartLimit = pool.RestartLimit{Burst: 3, Period: time.Minute}
		o.BackoffMin = time.Millisecond
	})
	select {
	case <-h.p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("pool kept replacing a worker that leaves as soon as it is ready")
	}
	err := h.p.Wait()
	if !errors.Is(err, pool.ErrRestartLimit) || !strings.Contains(err.Error(), "announced STOPPING=1") {
		t.Fatalf("Wait() = %v, want the restart limit, naming the early STOPPING=1", err)
	}
}

// A real crash loop spends the budget and the pool gives up. (That the
// backoff never stretches a loop so thin that it never does is the
// simulator's TestSimBackoffAndBudget: here a worker's start-up alone
// takes most of a second on a loaded machine, so the limit leaves room
// for it: 3 crashes in 60 s.)
func TestFastCrashLoopAlwaysSpendsTheBudget(t *testing.T) {
	t.Parallel()
	h := startPool(t, "crash", func(o *options) {
		o.Workers = 1
		o.RestartLimit = pool.RestartLimit{Burst: 3, Period: 60 * time.Second}
		o.BackoffMin = 10 * time.Millisecond
	})
	select {
	case <-h.p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("pool never gave up on a worker that crashes at once: %+v", h.status())
	}
	if err := h.p.Wait(); !errors.Is(err, pool.ErrRestartLimit) {
		t.Fatalf("Wait() = %v, want the restart limit", err)
	}
}

func childOf(t *testing.T, dir string, pid int) int {
	t.Helper()
	var child int
	waitFor(t, 10*time.Second, fmt.Sprintf("worker %d's child", pid), func() bool {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.child", pid)))
		return err == nil && len(b) > 0 && func() bool { _, err := fmt.Sscan(string(b), &child); return err == nil }()
	})
	return child
}

// What a crashed worker started goes down with it, at once, so nothing of
// it keeps accepting beside its replacement.
func TestCrashedWorkersProcessGroupIsKilled(t *testing.T) {
	t.Parallel()
	h := startPool(t, "forker", func(o *options) {
		o.Workers = 1
		o.StopTimeout = time.Minute // the child is not given its stop deadline
	})
	h.waitReady()
	w := h.status().Workers[0]
	child := childOf(t, h.dir, w.PID)
	if !procfs.Alive(child) {
		t.Fatal("the worker's child is not running")
	}
	syscall.Kill(w.PID, syscall.SIGUSR2) // the worker crashes
	waitGone(t, []int{w.PID, child}, 10*time.Second)
	waitFor(t, 10*time.Second, "replacement ready", func() bool {
		s := h.status()
		return s.Ready == 1 && s.Restarts == 1
	})
	// The replacement's child ignores SIGTERM too: without this the stop
	// at the end would wait out its minute before killing it.
	syscall.Kill(childOf(t, h.dir, h.status().Workers[0].PID), syscall.SIGKILL)
}

// A worker's group that empties by itself after the worker exited does
// not hold the pool up until the stop deadline.
func TestStoppedWorkersGroupThatEmptiesIsNotWaitedFor(t *testing.T) {
	t.Parallel()
	h := startPool(t, "forker", func(o *options) {
		o.Workers = 1
		o.StopTimeout = time.Minute
		o.Env = append(o.Env, "POOL_TEST_CHILD_MODE=lingerer")
	})
	h.waitReady()
	w := h.status().Workers[0]
	child := childOf(t, h.dir, w.PID) // exits 200 ms after SIGTERM
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatalf("the pool waited for a process group that had emptied: %v", err)
	}
	if procfs.Alive(child) {
		t.Fatal("the pool stopped while the worker's child still ran")
	}
}

// A worker asked to stop leaves the rest of its group until the stop
// deadline; then it is killed, and the pool is done only after that.
func TestStoppedWorkersGroupGetsTheStopTimeout(t *testing.T) {
	t.Parallel()
	h := startPool(t, "forker", func(o *options) {
		o.Workers = 1
		o.StopTimeout = 700 * time.Millisecond
	})
	h.waitReady()
	w := h.status().Workers[0]
	child := childOf(t, h.dir, w.PID) // ignores SIGTERM
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if procfs.Alive(child) {
		t.Fatal("the pool stopped while a process of a worker's group still ran")
	}
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Fatalf("the worker's child was killed after %s, before the stop timeout", took)
	}
}

// inode is what /proc shows for a descriptor: "socket:[12345]".
func inode(t *testing.T, fd int) string {
	t.Helper()
	target, err := procfs.FDTarget(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// With --reuseport every slot has its own socket, and whichever worker
// runs in slot i gets slot i's socket: after a crash, after a reload. So
// the reuseport group never loses a member and no accept queue is
// orphaned.
func TestReuseportSlotKeepsItsSocket(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", func(o *options) { o.Workers = 3 }, "reuseport")
	h.waitReady()
	want := map[int]string{}
	for slot := 0; slot < 3; slot++ {
		want[slot] = inode(t, h.ls[0].FD(slot))
		for other := 0; other < slot; other++ {
			if want[other] == want[slot] {
				t.Fatalf("slots %d and %d share socket %s", other, slot, want[slot])
			}
		}
	}
	check := func(when string) {
		t.Helper()
		for _, w := range h.status().Workers {
			r := readReport(t, h.dir, w.PID)
			if got := r.FDs[3]; got != want[w.Slot] {
				t.Fatalf("%s: worker %d in slot %d has %s at fd 3, want slot %d's socket %s", when, w.PID, w.Slot, got, w.Slot, want[w.Slot])
			}
			for fd, target := range r.FDs {
				if fd != 3 && strings.HasPrefix(target, "socket:") {
					t.Fatalf("%s: worker %d got more than its slot's socket: %v", when, w.PID, r.FDs)
				}
			}
		}
	}
	check("at start")
	victim := h.status().Workers[1]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "replacement ready", func() bool {
		s := h.status()
		return s.Ready == 3 && !contains(pids(s), victim.PID)
	})
	check("after a crash")
	if err := reload(t, h); err != nil {
		t.Fatal(err)
	}
	check("after a reload")
}

// Every worker exits by itself within the stop timeout: the listener it
// got was non-blocking (a blocking one leaves Go servers stuck in accept),
// sockd never made it blocking, and nobody needed SIGKILL.
func TestWorkersGetNonBlockingListenersAndStopInTime(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", func(o *options) {
		o.Workers = 4
		o.StopTimeout = time.Minute // a SIGKILL would come far too late
	})
	h.waitReady()
	for _, w := range h.status().Workers {
		if r := readReport(t, h.dir, w.PID); r.Blocked {
			t.Fatalf("worker %d found its listener blocking at start", w.PID)
		}
	}
	for round := 0; round < 3; round++ {
		if err := reload(t, h); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatalf("workers did not all exit on SIGTERM within 20s (stop timeout 1m): %v", err)
	}
	fl, err := unix.FcntlInt(uintptr(h.ls[0].FD(0)), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("listener flags %#x (%v): lost O_NONBLOCK", fl, err)
	}
}

// A worker of the old generation that ignores SIGTERM keeps the reload
// from being over (it may still accept) until the stop timeout, when it is
// killed; then the reload is done and the worker gone.
func TestReloadWaitsForAnOldWorkerThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "ignoreterm")
	h := startPool(t, "", func(o *options) {
		withModeFile(path)(o)
		o.Workers = 1
		o.StopTimeout = 1500 * time.Millisecond
	})
	h.waitReady()
	old := h.status().Workers[0]
	set("serve")
	start := time.Now()
	if err := reload(t, h); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if procfs.Alive(old.PID) {
		waitGone(t, []int{old.PID}, 5*time.Second)
	}
	if took < 1500*time.Millisecond {
		t.Fatalf("reload over after %s, while the old worker still held the socket (stop timeout 1.5s)", took)
	}
	waitFor(t, 5*time.Second, "the old worker reaped", func() bool { return len(h.status().Workers) == 1 })
	s := h.status()
	if s.Generation != 2 || s.LastReload == nil || !s.LastReload.OK {
		t.Fatalf("after the reload: %+v", s)
	}
}

// Healthy, which gates sockd's WATCHDOG=1 to systemd, holds only while a
// worker of the serving generation is ready: not while every worker is
// down and restarting, not once the pool stops.
func TestHealthyOnlyWithAReadyWorker(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "serve")
	h := startPool(t, "", func(o *options) {
		withModeFile(path)(o)
		o.Workers = 1
		o.BackoffMin = 300 * time.Millisecond
	})
	h.waitReady()
	healthy := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h.p.Healthy(ctx)
	}
	if !healthy() {
		t.Fatal("not healthy with its worker ready")
	}
	set("crash")
	syscall.Kill(h.status().Workers[0].PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "unhealthy while the only worker crash-loops", func() bool { return !healthy() })
	set("serve")
	waitFor(t, 20*time.Second, "healthy again once a worker is ready", healthy)
	h.p.Stop()
	waitFor(t, 20*time.Second, "unhealthy once stopping", func() bool { return !healthy() })
}
