package pool_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

// A client load of new and keep-alive connections runs through 20
// back-to-back reloads: not one request may fail, in either sharing mode.
func TestReloadsUnderLoadLoseNothingShared(t *testing.T) { testZeroLoss(t) }

func TestReloadsUnderLoadLoseNothingReuseport(t *testing.T) { testZeroLoss(t, "reuseport") }

func testZeroLoss(t *testing.T, extra ...string) {
	h := startPool(t, "careful", func(o *options) { o.Workers = 2 }, extra...)
	h.waitReady()
	if n := h.ls[0].Slots(); len(extra) > 0 && n != 2 {
		t.Fatalf("reuseport listener has %d sockets, want one per slot", n)
	}
	var mu sync.Mutex
	gens := map[string]int{}
	load := workertest.StartLoad(workertest.LoadConfig{
		URL: h.url, KeepAlive: 4, NewConns: 4, Sporadic: 2,
		Check: func(resp *http.Response, _ []byte) error {
			mu.Lock()
			gens[resp.Header.Get("X-Generation")]++
			mu.Unlock()
			return nil
		},
	})
	load.WaitOK(t, 200, 20*time.Second)
	const reloads = 20
	for i := 0; i < reloads; i++ {
		if err := reload(t, h); err != nil {
			load.Stop()
			t.Fatalf("reload %d: %v", i+1, err)
		}
		load.WaitOK(t, 50, 20*time.Second)
	}
	stats := load.Stop()
	t.Logf("%d reloads under load: %s; answers per generation: %v", reloads, stats, gens)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed across %d reloads: %v", stats.Errors, reloads, stats.Samples)
	}
	if last := fmt.Sprint(reloads + 1); gens[last] == 0 || len(gens) < reloads/2 {
		t.Fatalf("answers did not follow the reloads: %v", gens)
	}
}

// Scaling 2 → 4 → 1 → 3 under a load of new and keep-alive connections
// fails no request, in either sharing mode: new slots take connections
// once ready, retired ones drain what they were given (with --reuseport,
// what waits in their sockets' queues too).
func TestScaleUnderLoadLosesNothingShared(t *testing.T) { testScaleUnderLoad(t) }

func TestScaleUnderLoadLosesNothingReuseport(t *testing.T) { testScaleUnderLoad(t, "reuseport") }

func testScaleUnderLoad(t *testing.T, extra ...string) {
	h := startPool(t, "careful", func(o *options) { o.Workers = 2 }, extra...)
	h.waitReady()
	var mu sync.Mutex
	pids := map[string]int{}
	load := workertest.StartLoad(workertest.LoadConfig{
		URL: h.url, KeepAlive: 4, NewConns: 4, Sporadic: 2,
		Check: func(resp *http.Response, _ []byte) error {
			mu.Lock()
			pids[resp.Header.Get("X-Pid")]++
			mu.Unlock()
			return nil
		},
	})
	load.WaitOK(t, 200, 20*time.Second)
	for _, n := range []int{4, 1, 3} {
		got, err := h.p.Scale(context.Background(), n, false)
		if err != nil || got != n {
			load.Stop()
			t.Fatalf("scale to %d: %d %v", n, got, err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("%d workers, all ready, none draining", n), func() bool {
			s := h.status()
			return s.Size == n && s.Ready == n && s.Current == n && len(s.Workers) == n
		})
		if l := h.ls[0]; len(extra) > 0 && l.Slots() < n {
			t.Fatalf("reuseport listener has %d sockets for %d slots", l.Slots(), n)
		}
		load.WaitOK(t, 100, 20*time.Second)
	}
	stats := load.Stop()
	t.Logf("scaled 2 → 4 → 1 → 3 under load: %s; answers per pid: %v", stats, pids)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed while scaling: %v", stats.Errors, stats.Samples)
	}
	if len(pids) < 5 {
		t.Fatalf("answers came from %d workers; the scaled-up ones never served", len(pids))
	}
}

// A worker that grows past MaxMemory is replaced, its replacement first,
// under load, with no failed request and no crash counted.
func TestRecycleBloatedWorkerUnderLoad(t *testing.T) {
	h := startPool(t, "bloat", func(o *options) {
		o.Workers = 2
		o.Recycle.MaxMemory = 200 << 20
		o.SampleInterval = 50 * time.Millisecond
	})
	h.waitReady()
	load := workertest.StartLoad(workertest.LoadConfig{URL: h.url, KeepAlive: 2, NewConns: 2, Sporadic: 2})
	load.WaitOK(t, 100, 20*time.Second)
	waitFor(t, 30*time.Second, "the bloated worker recycled", func() bool {
		s := h.status()
		return s.Recycles == 1 && s.Ready == 2 && len(s.Workers) == 2
	})
	load.WaitOK(t, 100, 20*time.Second)
	stats := load.Stop()
	s := h.status()
	t.Logf("recycled under load: %s; workers now %+v", stats, s.Workers)
	if stats.Errors != 0 || s.Restarts != 0 {
		t.Fatalf("%d failed requests, %d restarts: %v", stats.Errors, s.Restarts, stats.Samples)
	}
	for _, w := range s.Workers {
		if w.RSSBytes == 0 || w.RSSBytes > 200<<20 {
			t.Fatalf("worker %d: RSS %d after the recycle", w.PID, w.RSSBytes)
		}
	}
}

// A memory limit that a reload sets (none at start) is enforced from the
// reload on, with nobody asking for status: the sampler wakes for it.
func TestRecycleLimitSetByAReload(t *testing.T) {
	h := startPool(t, "bloat", func(o *options) {
		o.Workers = 2
		o.SampleInterval = 50 * time.Millisecond
	})
	h.waitReady()
	// The reload's workers bloat (the first generation's one did too,
	// with no limit to catch it).
	if err := os.Remove(filepath.Join(h.dir, "bloated")); err != nil {
		t.Fatal(err)
	}
	c := h.p.Config()
	c.Recycle.MaxMemory = 200 << 20
	if err := h.p.Reload(context.Background(), &c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a worker of the reload recycled", func() bool {
		s := h.status()
		return s.Recycles >= 1
	})
}
