package pool

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/notify"
)

// The sizes, counts and durations of flags and environment: what parses
// prints back (String) to what parses the same, within the documented
// bounds.
func FuzzParseLimits(f *testing.F) {
	for _, s := range []string{"512M", "1G", "10B", "1048576", "1000±100", "1000+-100", "6h±30m", "10/60s", "0/1s", "notify", "node-ipc",
		"after:500ms", "after:-1s", "TERM", "SIGINT", "15", "", "±", "9999999999T", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if j, err := ParseJitter(s); err == nil {
			if j.N < 0 || j.J < 0 || j.J > j.N {
				t.Fatalf("ParseJitter(%q) = %+v", s, j)
			}
			if again, err := ParseJitter(strings.ReplaceAll(j.String(), "±", "+-")); err != nil || again != j {
				t.Fatalf("ParseJitter(%q) = %+v, printed %q, back %+v %v", s, j, j.String(), again, err)
			}
		}
		if d, err := ParseDurationJitter(s); err == nil {
			if d.D < 0 || d.J < 0 || d.J > d.D {
				t.Fatalf("ParseDurationJitter(%q) = %+v", s, d)
			}
			if again, err := ParseDurationJitter(d.String()); err != nil || again != d {
				t.Fatalf("ParseDurationJitter(%q) = %+v, printed %q, back %+v %v", s, d, d.String(), again, err)
			}
		}
		if l, err := ParseRestartLimit(s); err == nil {
			if l.Burst < 0 || l.Period <= 0 {
				t.Fatalf("ParseRestartLimit(%q) = %+v", s, l)
			}
			if again, err := ParseRestartLimit(l.String()); err != nil || again != l {
				t.Fatalf("ParseRestartLimit(%q) = %+v, printed %q, back %+v %v", s, l, l.String(), again, err)
			}
		}
		if r, err := ParseReadyRule(s); err == nil {
			if again, err := ParseReadyRule(r.String()); err != nil || again != r || r.After < 0 {
				t.Fatalf("ParseReadyRule(%q) = %+v, printed %q, back %+v %v", s, r, r.String(), again, err)
			}
		}
		if sig, err := ParseSignal(s); err == nil && (sig < 1 || sig > 64) {
			t.Fatalf("ParseSignal(%q) = %d", s, sig)
		}
	})
}

// A notify datagram changes the pool's state only if it comes from a live
// worker (or one of its descendants) and carries a key sockd knows:
// messages from anyone else, or with other keys, change nothing.
func FuzzNotifyChangesOnlyWorkers(f *testing.F) {
	f.Add([]byte("READY=1"), 101, false)
	f.Add([]byte("STOPPING=1"), 102, false)
	f.Add([]byte("READY=1\nSTATUS=x"), 999, false)
	f.Add([]byte("FOO=1\nBAR=2"), 101, false)
	f.Add([]byte("READY=1"), 4242, true)
	f.Fuzz(func(t *testing.T, datagram []byte, pid int, descendant bool) {
		fields, err := notify.Parse(datagram)
		if err != nil {
			return
		}
		s := newSim(t, func(o *simOpts) { o.Logger = nil })
		s.advance(time.Hour) // ready workers would be past MinServe
		before := fmt.Sprintf("%+v", s.status())
		m := notify.Message{PID: pid, Fields: fields}
		if descendant {
			m.Ancestors = []int{pid + 1, 101}
		}
		s.step(notifyEvent{msg: m})
		after := fmt.Sprintf("%+v", s.status())
		worker := (pid == 101 || pid == 102 || descendant) && pid > 0
		known := false
		for _, k := range []string{"READY", "STOPPING", "STATUS", "WATCHDOG", "SOCKD_REQUESTS"} {
			if _, ok := fields[k]; ok {
				known = true
			}
		}
		if after != before && (!worker || !known) {
			t.Fatalf("%q from pid %d (descendant %v) changed the pool:\n%s\n%s", datagram, pid, descendant, before, after)
		}
	})
}
