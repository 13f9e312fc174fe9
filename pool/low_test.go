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

// prios counts the scheduling priorities (policy and nice value) of
// every thread of pid.
func prios(t *testing.T, pid int) map[[2]int]int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]int]int{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if a, err := unix.SchedGetAttr(tid, 0); err == nil {
			got[[2]int{int(a.Policy), int(a.Nice)}]++
		}
	}
	return got
}

// With LowStart, the worker a reload starts runs every thread ten nice
// levels below sockd until it is ready, then at sockd's own priority;
// the first generation, started with nobody serving, never ran low.
func TestLowStartUntilReady(t *testing.T) {
	t.Parallel()
	self, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if self.Policy != unix.SCHED_NORMAL && self.Policy != unix.SCHED_BATCH || self.Nice > 9 {
		t.Skipf("the test itself runs at policy %d, nice %d: nothing to lower", self.Policy, self.Nice)
	}
	own := [2]int{int(self.Policy), int(self.Nice)}
	low := [2]int{int(self.Policy), int(self.Nice) + 10}
	mode, setMode := modeFile(t, "serve")
	h := startPool(t, "", func(o *options) {
		withModeFile(mode)(o)
		o.Workers = 1
		o.LowStart = true
	})
	h.waitReady()
	first := pids(h.status())[0]
	if got := prios(t, first); len(got) != 1 || got[own] == 0 {
		t.Fatalf("first worker's threads by (policy, nice): %v, want every one %v (sockd's)", got, own)
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
	// Forked low: every thread it has is low (and so is every thread it
	// starts later).
	if got := prios(t, next); len(got) != 1 || got[low] == 0 {
		t.Fatalf("starting worker's threads by (policy, nice): %v, want every one %v", got, low)
	}
	// The pool's own thread that forked it is back at its priority.
	if got := prios(t, os.Getpid()); got[low] != 0 {
		t.Fatalf("the pool's process has threads at %v after the fork: %v", low, got)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Every thread, once raise's second pass is over (a thread being
	// cloned from a low one during the first is restored by the second).
	var got map[[2]int]int
	defer func() {
		if t.Failed() && got != nil {
			t.Logf("last seen, threads by (policy, nice): %v", got)
		}
	}()
	waitFor(t, 10*time.Second, "every thread of the ready worker at sockd's priority", func() bool {
		got = prios(t, next)
		return len(got) == 1 && got[own] != 0
	})
}
