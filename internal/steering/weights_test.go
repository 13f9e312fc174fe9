package steering

import (
	"testing"
	"time"
)

func TestRampFollowsDuration(t *testing.T) {
	r := Ramp{Duration: 10 * time.Second}
	prev := 0
	for d := time.Duration(0); d <= 11*time.Second; d += 100 * time.Millisecond {
		w := r.Weight(d)
		want := max(10, int(100*d/r.Duration)) * Full / 100
		if d >= r.Duration {
			want = Full
		}
		if w < prev || w > want || w < want-Full*2/100 {
			t.Fatalf("weight after %v: %d, want %d (within one 2%% step below), not below %d", d, w, want, prev)
		}
		prev = w
	}
	if (Ramp{}).Weight(0) != Full {
		t.Fatal("no slow start: not full at once")
	}
	if got := (Ramp{Duration: time.Second, Floor: 30}).Weight(0); got != 300 {
		t.Fatalf("floor 30%%: %d", got)
	}
}

// A replacement ramps in while the worker it replaces keeps the rest of
// the pair's share; a new worker without one (scale-up, crash) ramps
// against everyone; starting, leaving and stalled sockets get nothing.
func TestWeights(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := Ramp{Duration: 10 * time.Second}
	es := []Entry{
		{Worker: "a", State: Ready, Since: t0.Add(-time.Hour)},
		{Worker: "b", State: Ready, Since: t0.Add(-time.Hour)},
		{Worker: "a2", State: Ready, Since: t0, Replaces: "a"},
		{Worker: "b2", State: Starting, Replaces: "b"},
		{Worker: "c", State: Leaving, Since: t0},
		{State: Free},
		{Worker: "d", State: Ready, Since: t0.Add(-5 * time.Second)}, // scale-up, half way
		{Worker: "e", State: Ready, Since: t0.Add(-time.Hour)},
	}
	w, why := Weights(es, t0.Add(4*time.Second), r, []bool{7: true})
	want := []int{600, 1000, 400, 0, 0, 0, 900, 0}
	wantWhy := []Reason{ReasonRamp, ReasonReady, ReasonRamp, ReasonNotReady, ReasonLeaving, ReasonFree, ReasonRamp, ReasonStalled}
	for i := range want {
		if w[i] != want[i] || why[i] != wantWhy[i] {
			t.Fatalf("socket %d (%s): %d %s, want %d %s (all: %v)", i, es[i].Worker, w[i], why[i], want[i], wantWhy[i], w)
		}
	}
	// Once the ramp is over the replaced worker has nothing left.
	w, why = Weights(es, t0.Add(11*time.Second), r, nil)
	if w[0] != 0 || why[0] != ReasonLeaving || w[2] != Full {
		t.Fatalf("after the ramp: %v %v", w, why)
	}
}

func TestWeightsFallBack(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		es   []Entry
		want []int
	}{
		{[]Entry{{State: Free}, {State: Free}}, []int{Full, Full}},
		{[]Entry{{Worker: "a", State: Starting}, {State: Free}, {Worker: "b", State: Leaving}}, []int{Full, 0, 0}},
		{[]Entry{{Worker: "a", State: Leaving}, {Worker: "b", State: Gone}}, []int{Full, 0}},
		{[]Entry{{Worker: "a", State: Ready, Since: t0}, {Worker: "b", State: Ready, Since: t0}}, []int{Full, Full}}, // both stalled
	} {
		w, why := Weights(c.es, t0, Ramp{}, []bool{true, true})
		for i := range w {
			if w[i] != c.want[i] || w[i] > 0 && why[i] != ReasonFallback {
				t.Fatalf("%v: %v %v, want %v", c.es, w, why, c.want)
			}
		}
	}
}
