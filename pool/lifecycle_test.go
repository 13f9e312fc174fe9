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

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// A worker that sends STOPPING=1 and exits right away retires; it does not
// crash. The message and the exit reach sockd by two paths (the notify
// socket, the pidfd), and the exit must not overtake the message. Four
// chatty workers leave at once, 20 times: their last words queue behind
// each other's.
func TestStoppingThenImmediateExitIsNeverACrash(t *testing.T) {
	h := startPool(t, "quit", func(o *pool.Options) {
		o.Workers = 4
		o.MinServe = time.Millisecond
		o.RestartLimit = pool.RestartLimit{Burst: 100, Period: time.Minute}
	})
	h.waitReady()
	for round := 0; round < 20; round++ {
		old := h.status().Workers
		waitFor(t, 5*time.Second, "workers ready for a few milliseconds", func() bool {
			for _, w := range old {
				if time.Since(w.StartedAt) < 5*time.Millisecond {
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
	h := startPool(t, "leaveearly", func(o *pool.Options) {
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

// The backoff must not stretch a crash loop so thin that the budget is
// never spent. A worker that crashes as soon as it starts, under a limit of
// 12 crashes in 8 s: with a backoff doubling from 10 ms up to 30 s, the
// 13th crash would come more than 20 s after the first, every window of
// 8 s would hold fewer than 13, and sockd would restart it forever.
func TestFastCrashLoopAlwaysSpendsTheBudget(t *testing.T) {
	h := startPool(t, "crash", func(o *pool.Options) {
		o.Workers = 1
		o.RestartLimit = pool.RestartLimit{Burst: 12, Period: 8 * time.Second}
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
	h := startPool(t, "forker", func(o *pool.Options) {
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
}

// A worker asked to stop leaves the rest of its group until the stop
// deadline; then it is killed, and the pool is done only after that.
func TestStoppedWorkersGroupGetsTheStopTimeout(t *testing.T) {
	h := startPool(t, "forker", func(o *pool.Options) {
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
