package pool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// modeFile lets a test decide what the next generation's workers do.
func modeFile(t *testing.T, mode string) (string, func(string)) {
	path := filepath.Join(t.TempDir(), "mode")
	set := func(m string) {
		if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set(mode)
	return path, set
}

func withModeFile(path string) func(*options) {
	return func(o *options) { o.Env = append(o.Env, "POOL_TEST_MODE_FILE="+path) }
}

func reload(t *testing.T, h *harness) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.p.Reload(ctx, nil)
}

func TestReloadReplacesGeneration(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", nil)
	h.waitReady()
	old := pids(h.status())
	if err := reload(t, h); err != nil {
		t.Fatal(err)
	}
	s := h.status()
	if s.Generation != 2 || s.LastReload == nil || !s.LastReload.OK {
		t.Fatalf("after reload: %+v", s)
	}
	// Right after Reload returns, answers come from generation 2.
	for i := 0; i < 10; i++ {
		_, gen, err := get(freshClient(), h.url)
		if err != nil || gen != "2" {
			t.Fatalf("answer from generation %q (%v), want 2", gen, err)
		}
	}
	waitGone(t, old, 10*time.Second)
	if !h.notified("RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("systemd not told RELOADING=1 with MONOTONIC_USEC: %q", h.sent)
	}
}

func TestReloadRollsBackWhenNewWorkersNeverReady(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "serve")
	h := startPool(t, "", func(o *options) {
		withModeFile(path)(o)
		o.ReloadTimeout = 3 * time.Second
	})
	h.waitReady()
	old := pids(h.status())
	set("noready")
	err := reload(t, h)
	var re *pool.ReloadError
	if !errors.As(err, &re) || re.Generation != 2 || re.Serving != 1 || !strings.Contains(re.Reason, "ready within") {
		t.Fatalf("Reload() = %v, want a ReloadError about readiness", err)
	}
	assertServing(t, h, old, "1")
	s := h.status()
	if s.LastReload == nil || s.LastReload.OK || !strings.Contains(s.Summary, "last reload failed") {
		t.Fatalf("status does not show the failed reload: %+v", s)
	}
	waitFor(t, 10*time.Second, "failed generation gone", func() bool { return len(h.status().Workers) == 2 })
	// Restart budget untouched: a failed reload is not a crash.
	if s := h.status(); s.Restarts != 0 {
		t.Fatalf("failed reload counted %d restarts", s.Restarts)
	}
	// A fixed deploy reloads fine afterwards.
	set("serve")
	if err := reload(t, h); err != nil {
		t.Fatal(err)
	}
	if g := h.status().Generation; g != 3 {
		t.Fatalf("generation %d after fixed reload, want 3", g)
	}
}

func TestReloadRollsBackWhenNewWorkersExit(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "serve")
	h := startPool(t, "", withModeFile(path))
	h.waitReady()
	old := pids(h.status())
	set("crash")
	err := reload(t, h)
	var re *pool.ReloadError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "exited before it was ready (exit status 3)") {
		t.Fatalf("Reload() = %v", err)
	}
	assertServing(t, h, old, "1")
}

func assertServing(t *testing.T, h *harness, pids_ []int, gen string) {
	t.Helper()
	for i := 0; i < 10; i++ {
		pid, g, err := get(freshClient(), h.url)
		if err != nil || g != gen {
			t.Fatalf("answer from generation %q (%v), want %s", g, err, gen)
		}
		if !contains(pids_, atoi(pid)) {
			t.Fatalf("answer from pid %s, not one of %v", pid, pids_)
		}
	}
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

func TestReloadStormIsCoalesced(t *testing.T) {
	t.Parallel()
	h := startPool(t, "serve", nil)
	h.waitReady()
	stop := make(chan struct{})
	maxGens := make(chan int, 1)
	go func() { // watch the number of generations alive at once
		most := 0
		for {
			select {
			case <-stop:
				maxGens <- most
				return
			default:
			}
			gens := map[int]bool{}
			st, _ := h.p.Status(context.Background())
			for _, w := range st.Workers {
				if procfs.Alive(w.PID) {
					gens[w.Generation] = true
				}
			}
			most = max(most, len(gens))
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- reload(t, h)
		}()
		syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil) // 10 requests within 100 ms
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "a single generation", func() bool {
		s := h.status()
		return len(s.Workers) == 2 && s.Workers[0].Generation == s.Workers[1].Generation
	})
	close(stop)
	s := h.status()
	if most := <-maxGens; most > 2 {
		t.Fatalf("%d generations alive at once", most)
	}
	// How many reloads 10 requests make depends on how fast a reload is
	// here (requests that come after one finished start another); that
	// they are coalesced exactly is TestSimReloadsAreCoalesced's job.
	if s.Generation < 2 || s.Generation > 11 {
		t.Fatalf("10 reload requests ended in generation %d", s.Generation)
	}
	t.Logf("10 reload requests became %d reloads", s.Generation-1)
}

func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "serve")
	h := startPool(t, "", withModeFile(path))
	h.waitReady()
	set("noready")
	res := make(chan error, 1)
	go func() { res <- reload(t, h) }()
	waitFor(t, 10*time.Second, "new generation starting", func() bool { return len(h.status().Workers) == 4 })
	all := pids(h.status())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, pool.ErrStopping) {
		t.Fatalf("reload during stop returned %v", err)
	}
	waitGone(t, all, time.Second)
}

func TestOldWorkerCrashDuringReloadNotRestarted(t *testing.T) {
	t.Parallel()
	path, set := modeFile(t, "serve")
	h := startPool(t, "", func(o *options) {
		withModeFile(path)(o)
		// The reload fails when the test makes it (below), not on a
		// timer that a loaded machine could reach first.
		o.ReloadTimeout = time.Minute
	})
	h.waitReady()
	old := h.status().Workers
	set("noready")
	res := make(chan error, 1)
	go func() { res <- reload(t, h) }()
	waitFor(t, 10*time.Second, "new generation starting", func() bool { return len(h.status().Workers) == 4 })
	for _, w := range h.status().Workers {
		readReport(t, h.dir, w.PID) // written after the worker read its mode
	}
	syscall.Kill(old[0].PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "old worker reaped", func() bool { return len(h.status().Workers) == 3 })
	set("serve") // what the rollback's refill will run
	for _, w := range h.status().Workers {
		if w.Generation == 1 && w.Slot == old[0].Slot {
			t.Fatalf("old generation restarted during a reload: %+v", w)
		}
	}
	// The reload fails (a new worker exits before it is ready); the
	// rollback refills the old generation's slot.
	for _, w := range h.status().Workers {
		if w.Generation == 2 {
			syscall.Kill(w.PID, syscall.SIGUSR2)
			break
		}
	}
	if err := <-res; err == nil {
		t.Fatal("reload of never-ready workers succeeded")
	}
	waitFor(t, 10*time.Second, "slot refilled", func() bool {
		s := h.status()
		return s.Ready == 2 && s.Generation == 1
	})
}

func TestManyReloadsLeakNothing(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 30
	}
	h := startPool(t, "serve", func(o *options) { o.Workers = 2 })
	h.waitReady()
	if err := reload(t, h); err != nil { // warm up: first reload allocates
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "one generation", func() bool { return len(h.status().Workers) == 2 })
	// Descriptors come and go for a moment (a /proc directory being read,
	// a pidfd being closed): take the fewest of a few readings.
	fdsBefore := stableFDs()
	var all []int
	for i := 0; i < n; i++ {
		all = append(all, pids(h.status())...)
		if err := reload(t, h); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	waitFor(t, 20*time.Second, "one generation", func() bool { return len(h.status().Workers) == 2 })
	waitGone(t, all, 10*time.Second)
	var fdsAfter []int
	deadline := time.Now().Add(5 * time.Second)
	for fdsAfter = stableFDs(); len(fdsAfter) > len(fdsBefore) && time.Now().Before(deadline); fdsAfter = stableFDs() {
	}
	if len(fdsAfter) > len(fdsBefore) {
		t.Fatalf("sockd fds %d before %d reloads, %d after:\nbefore %v\nafter  %v", len(fdsBefore), n, len(fdsAfter), fdTargets(fdsBefore), fdTargets(fdsAfter))
	}
	s := h.status()
	if s.Generation != n+2 {
		t.Fatalf("generation %d after %d reloads", s.Generation, n+1)
	}
	t.Logf("%d reloads: fds %d → %d, %d worker processes retired", n, len(fdsBefore), len(fdsAfter), len(all))
}

func fdTargets(fds []int) []string {
	var ts []string
	for _, fd := range fds {
		target, _ := procfs.FDTarget(os.Getpid(), fd)
		ts = append(ts, fmt.Sprintf("%d:%s", fd, target))
	}
	return ts
}

// stableFDs lists this process's descriptors, the shortest of 20 readings
// 5 ms apart.
func stableFDs() []int {
	best, _ := procfs.FDs(os.Getpid())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 20; i++ {
		<-tick.C
		if fds, _ := procfs.FDs(os.Getpid()); len(fds) < len(best) {
			best = fds
		}
	}
	return best
}
