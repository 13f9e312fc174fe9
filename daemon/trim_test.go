package daemon

import (
	"sync/atomic"
	"testing"
	"time"
)

// One trim after a burst of requests, not one per request; and one at
// least every trimMaxWait while requests keep coming.
func TestTrimmerDebounces(t *testing.T) {
	var n atomic.Int32
	tr := &trimmer{free: func() { n.Add(1) }}
	defer tr.stop()
	for i := 0; i < 20; i++ {
		tr.soon()
	}
	waitFor(t, 5*time.Second, "one trim after the burst", func() bool { return n.Load() == 1 })
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond) // requests closer together than trimQuiet
	defer tick.Stop()
	for n.Load() < 2 && time.Since(start) < 3*trimMaxWait {
		tr.soon()
		<-tick.C
	}
	if n.Load() < 2 {
		t.Fatalf("no trim within %s of steady requests", 3*trimMaxWait)
	}
	if took := time.Since(start); took < trimMaxWait-100*time.Millisecond {
		t.Fatalf("trimmed after %s of steady requests, before trimMaxWait", took)
	}
}
