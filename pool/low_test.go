package pool_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/pool"
)

// policies counts the scheduling policies of every thread of pid.
func policies(t *testing.T, pid int) map[uint32]int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]int{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if a, err := unix.SchedGetAttr(tid, 0); err == nil {
			got[a.Policy]++
		}
	}
	return got
}

// With IdleStart, the worker a reload starts runs every thread at
// SCHED_IDLE until it is ready, then at sockd's own policy; the first
// generation, started with nobody serving, never ran idle.
func TestIdleStartUntilReady(t *testing.T) {
	t.Parallel()
	self, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if self.Policy == unix.SCHED_IDLE {
		t.Skip("the test itself runs at the idle priority")
	}
	mode, setMode := modeFile(t, "serve")
	h := startPool(t, "", func(o *options) {
		withModeFile(mode)(o)
		o.Workers = 1
		o.IdleStart = time.Minute
	})
	h.waitReady()
	first := pids(h.status())[0]
	if got := policies(t, first); got[unix.SCHED_IDLE] != 0 {
		t.Fatalf("first worker's threads: %v, none should be SCHED_IDLE", got)
	}
	setMode("gated")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- h.p.Reload(ctx, nil)
	}()
	var next int
	waitFor(t, 10*time.Second, "the reload's worker started", func() bool {
		for _, w := range h.status().Workers {
			if w.Generation == 2 && w.State == pool.Starting && w.PID != 0 {
				next = w.PID
				return true
			}
		}
		return false
	})
	// Forked idle: every thread it has is idle (and so is every thread it
	// starts later). Checked at once, not after it ran: on a busy machine
	// an idle process may not run for seconds.
	if got := policies(t, next); got[unix.SCHED_IDLE] == 0 || len(got) != 1 {
		t.Fatalf("starting worker's threads by policy: %v, want every one SCHED_IDLE (%d)", got, unix.SCHED_IDLE)
	}
	// The pool's own thread that forked it is back at its policy.
	if got := policies(t, os.Getpid()); got[unix.SCHED_IDLE] != 0 {
		t.Fatalf("the pool's process has threads at SCHED_IDLE after the fork: %v", got)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := policies(t, next)
	if got[self.Policy] == 0 || len(got) != 1 {
		t.Fatalf("ready worker's threads by policy: %v, want every one %d (sockd's)", got, self.Policy)
	}
}
