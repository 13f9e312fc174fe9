package steering

import (
	"math/rand"
	"testing"
	"time"
)

// feed runs a detector over samples every period: depth(step, i) gives
// socket i's queue at each step. It returns, per step, which sockets were
// excluded after it.
func feed(d *Detector, n, steps int, period time.Duration, eligible []bool, depth func(step, i int) int) [][]bool {
	t0 := time.Unix(1000, 0)
	var out [][]bool
	for s := 0; s < steps; s++ {
		q := make([]int, n)
		for i := range q {
			q[i] = depth(s, i)
		}
		d.Observe(t0.Add(time.Duration(s)*period), q, eligible)
		out = append(out, d.Excluded(n))
	}
	return out
}

func all(n int) []bool {
	e := make([]bool, n)
	for i := range e {
		e[i] = true
	}
	return e
}

const period = 20 * time.Millisecond

// A worker that stops taking connections (stopped, or its loop blocked)
// while its peers keep up is excluded within StallAfter plus one period of
// the first sample that saw a connection wait, stays excluded while the
// queue waits, and is readmitted once it drained it.
func TestDetectorExcludesAStall(t *testing.T) {
	d := &Detector{}
	stallAt, resumeAt := 10, 40
	ex := feed(d, 4, 60, period, all(4), func(s, i int) int {
		if i != 2 || s < stallAt {
			return 0
		}
		if s < resumeAt {
			return min(s-stallAt+1, 5) // arrivals until excluded, then none
		}
		return 0
	})
	first := -1
	for s, e := range ex {
		if e[2] && first < 0 {
			first = s
		}
		for i := range e {
			if i != 2 && e[i] {
				t.Fatalf("step %d: healthy socket %d excluded", s, i)
			}
		}
	}
	if first < 0 {
		t.Fatal("the stalled socket was never excluded")
	}
	if lag := time.Duration(first-stallAt) * period; lag > DefaultStallAfter+period {
		t.Fatalf("excluded %v after its queue was first seen waiting, want at most %v", lag, DefaultStallAfter+period)
	}
	for s := first; s < resumeAt; s++ {
		if !ex[s][2] {
			t.Fatalf("step %d: readmitted while its queue still waits", s)
		}
	}
	if ex[resumeAt][2] {
		t.Fatal("not readmitted once its queue drained")
	}
}

// Saturation: every queue grows, with noise (some samples go down): no
// socket is ever excluded, however long it lasts.
func TestDetectorSaturationExcludesNone(t *testing.T) {
	r := rand.New(rand.NewSource(8))
	for _, n := range []int{2, 4, 16} {
		d := &Detector{}
		q := make([]int, n)
		ex := feed(d, n, 3000, period, all(n), func(s, i int) int {
			if i == 0 {
				for j := range q {
					q[j] = max(1, q[j]+r.Intn(7)-2) // drifts up, never empty
				}
			}
			return q[i]
		})
		for s, e := range ex {
			for i, x := range e {
				if x {
					t.Fatalf("%d workers, step %d: socket %d excluded under saturation", n, s, i)
				}
			}
		}
	}
}

// Busy but keeping up: queues that wait a few samples at a time and then
// empty are never excluded.
func TestDetectorBusyIsNotStalled(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	d := &Detector{}
	runs := make([]int, 4)
	ex := feed(d, 4, 5000, period, all(4), func(s, i int) int {
		if runs[i] > 0 {
			runs[i]--
			return 1 + r.Intn(3)
		}
		if r.Intn(3) == 0 {
			runs[i] = r.Intn(3) // waits up to 3 samples, under StallAfter
		}
		return 0
	})
	for s, e := range ex {
		for i, x := range e {
			if x {
				t.Fatalf("step %d: socket %d excluded", s, i)
			}
		}
	}
}

// A queue that waits but goes down now and then is served, slowly: not
// a stall.
func TestDetectorProgressIsNotAStall(t *testing.T) {
	d := &Detector{}
	ex := feed(d, 3, 500, period, all(3), func(s, i int) int {
		if i == 0 {
			return 10 + s%3 // 10 11 12 10 …: someone takes connections
		}
		return 0
	})
	for s, e := range ex {
		if e[0] {
			t.Fatalf("step %d: a queue that goes down was excluded", s)
		}
	}
}

// At most half the eligible sockets are excluded, the longest stuck
// first; a group of one is never excluded.
func TestDetectorExcludesAtMostHalf(t *testing.T) {
	d := &Detector{}
	ex := feed(d, 4, 50, period, all(4), func(s, i int) int {
		if i == 3 || s < i*3 {
			return 0
		}
		return 1 + s // sockets 0, 1, 2 stall one after another
	})
	last := ex[len(ex)-1]
	if !last[0] || !last[1] || last[2] || last[3] {
		t.Fatalf("excluded %v, want the two oldest stalls (0 and 1)", last)
	}
	d = &Detector{}
	ex = feed(d, 1, 50, period, all(1), func(s, i int) int { return s })
	if ex[len(ex)-1][0] {
		t.Fatal("a lone socket was excluded")
	}
}

// Only eligible sockets are judged, and only against eligible peers: a
// starting worker's queue (weight 0 anyway) is neither excluded nor a
// healthy peer.
func TestDetectorJudgesEligibleOnly(t *testing.T) {
	d := &Detector{}
	eligible := []bool{true, true, false}
	ex := feed(d, 3, 50, period, eligible, func(s, i int) int {
		if i == 2 {
			return 0
		}
		return s + 1 // both ready workers saturated; the starting one idle
	})
	for s, e := range ex {
		if e[0] || e[1] || e[2] {
			t.Fatalf("step %d: excluded %v with no healthy eligible peer", s, e)
		}
	}
}

// Readmitted sockets need a full StallAfter of new evidence before they
// are excluded again: the cycle is bounded below by StallAfter.
func TestDetectorDoesNotFlap(t *testing.T) {
	d := &Detector{}
	// Socket 0 stalls for 3 samples, drains for 1, stalls again, …
	ex := feed(d, 3, 1000, period, all(3), func(s, i int) int {
		if i != 0 || s%4 == 3 {
			return 0
		}
		return s%4 + 1
	})
	for s, e := range ex {
		if e[0] {
			t.Fatalf("step %d: excluded on %v of evidence", s, 3*period)
		}
	}
}
