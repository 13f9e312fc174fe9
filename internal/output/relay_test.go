package output_test

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/output"
)

// Two workers of two generations: every line is attributed to its slot,
// generation, pid and stream, in order per stream, with stdout at
// priority 6 and stderr at 3.
func TestAttributionAndOrder(t *testing.T) {
	check := fdtest.Track(t, "relay")
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p1, pid1 := spawn(t, r, 1, 2, "lines", "200")
	p2, pid2 := spawn(t, r, 0, 3, "lines", "200")
	waitDone(t, p1, 10*time.Second)
	waitDone(t, p2, 10*time.Second)
	all := sink.all()
	if len(all) != 800 {
		t.Fatalf("%d lines, want 800", len(all))
	}
	next := map[string]int{}
	for _, l := range all {
		var want output.Worker
		switch l.w.PID {
		case pid1:
			want = output.Worker{Slot: 1, Generation: 2, PID: pid1}
		case pid2:
			want = output.Worker{Slot: 0, Generation: 3, PID: pid2}
		default:
			t.Fatalf("line %q from pid %d", l.data, l.w.PID)
		}
		if l.w != want {
			t.Fatalf("line %q attributed to %+v, want %+v", l.data, l.w, want)
		}
		prefix, prio := "out", int8(6)
		if l.stream == output.Stderr {
			prefix, prio = "err", 3
		}
		key := fmt.Sprint(l.w.PID, l.stream)
		if want := fmt.Sprintf("%s %d", prefix, next[key]); l.data != want {
			t.Fatalf("pid %d %v: %q, want %q", l.w.PID, l.stream, l.data, want)
		}
		next[key]++
		if l.prio != prio {
			t.Fatalf("%q: priority %d, want %d", l.data, l.prio, prio)
		}
	}
	reap(pid1)
	reap(pid2)
	check()
}

// 500,000 lines from one worker as fast as it can write them: all arrive,
// whole and in order.
func TestFloodArrivesWholeAndInOrder(t *testing.T) {
	const n = 500_000
	sink := &checkSink{t: t}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "flood", strconv.Itoa(n))
	waitDone(t, p, 120*time.Second)
	if sink.next != n {
		t.Fatalf("%d lines arrived, want %d", sink.next, n)
	}
	out, _ := r.Totals()
	if out.Lines != n || out.Cut != 0 || out.Dropped != 0 {
		t.Fatalf("counts %+v", out)
	}
	if st := reap(pid); st != 0 {
		t.Fatalf("worker exited %d", st)
	}
}

// checkSink checks the flood's lines as they come, keeping none.
type checkSink struct {
	t    testing.TB
	next int
	bad  string
}

func (c *checkSink) Write(b *output.Batch) error {
	for i := range b.Lines {
		want := strconv.Itoa(c.next) + " " + payload(c.next)
		if got := string(b.Lines[i].Data); got != want && c.bad == "" {
			c.bad = got
			c.t.Errorf("line %d: %q, want %q", c.next, got, want)
		}
		c.next++
	}
	return nil
}

// A line of 10 MB is cut into pieces of at most MaxLine bytes, marked
// continued, that join to the line; the next line is whole.
func TestHugeLineIsCutIntoMarkedPieces(t *testing.T) {
	check := fdtest.Track(t, "relay")
	const size = 10 << 20
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "big", strconv.Itoa(size))
	waitDone(t, p, 60*time.Second)
	ls := sink.all()
	var joined strings.Builder
	i := 0
	for ; i < len(ls); i++ {
		if i > 0 && ls[i].flags&output.Continued == 0 {
			break
		}
		if len(ls[i].data) > output.DefaultMaxLine {
			t.Fatalf("piece %d has %d bytes", i, len(ls[i].data))
		}
		if last := ls[i].flags&output.Cut == 0; last != (i == size/output.DefaultMaxLine-1) {
			t.Fatalf("piece %d flags %b", i, ls[i].flags)
		}
		joined.WriteString(ls[i].data)
	}
	if joined.Len() != size || i != size/output.DefaultMaxLine {
		t.Fatalf("pieces join to %d bytes in %d pieces", joined.Len(), i)
	}
	for k, c := range []byte(joined.String()) {
		if c != 'A'+byte(k%26) {
			t.Fatalf("byte %d is %q", k, c)
		}
	}
	if i != len(ls)-1 || ls[i].data != "after" || ls[i].flags != 0 {
		t.Fatalf("after the pieces: %d lines, last %+v", len(ls)-i, ls[len(ls)-1])
	}
	out, _ := r.Totals()
	if out.Cut != 1 || out.Bytes != size+1+6 {
		t.Fatalf("counts %+v", out)
	}
	reap(pid)
	check()
}

// A cut never splits a UTF-8 character.
func TestCutKeepsCharactersWhole(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink, MaxLine: 1000})
	p, pid := spawn(t, r, 0, 1, "utf8", "3000")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	ls := sink.all()
	var joined string
	for i, l := range ls {
		if !utf8.ValidString(l.data) || len(l.data) > 1000 || len(l.data) < 997 && i < len(ls)-1 {
			t.Fatalf("piece %d: %d bytes, valid UTF-8 %v", i, len(l.data), utf8.ValidString(l.data))
		}
		joined += l.data
	}
	if joined != strings.Repeat("é€😀", 3000) {
		t.Fatalf("pieces join to %d bytes", len(joined))
	}
}

// Binary and invalid UTF-8 pass byte for byte (only the newline ends a
// line; a CR stays).
func TestBinaryPassesUnchanged(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "binary")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	var all []byte
	for c := range 256 {
		if c != '\n' {
			all = append(all, byte(c))
		}
	}
	want := []string{string(all), "bad \xff\xfe utf8 \xc3", "\x00nul\x00", "crlf\r"}
	got := of(sink.all(), output.Stdout)
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// A worker that closes its stdout and goes on on stderr; one whose stderr
// is closed and writes to it: both streams end cleanly, nothing leaks.
func TestClosedStreams(t *testing.T) {
	check := fdtest.Track(t, "relay")
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "closestdout")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	ls := sink.all()
	if out := of(ls, output.Stdout); len(out) != 1 || out[0] != "before close" {
		t.Fatalf("stdout %q", out)
	}
	errs := of(ls, output.Stderr)
	if len(errs) != 101 || errs[99] != "err 99" || !strings.Contains(errs[100], "bad file descriptor") {
		t.Fatalf("stderr: %d lines, last %q", len(errs), errs[len(errs)-1])
	}

	sink2 := &memSink{}
	r2 := output.New(output.Options{Sink: sink2})
	p2, pid2 := spawn(t, r2, 0, 1, "closedstderr")
	waitDone(t, p2, 10*time.Second)
	reap(pid2)
	if out := of(sink2.all(), output.Stdout); len(out) != 1 || !strings.Contains(out[0], "bad file descriptor") {
		t.Fatalf("stdout %q", out)
	}
	check()
}

// Lines written just before the worker exits, and a last line without a
// newline, all arrive.
func TestExitWithBufferedOutput(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "exitbuffered", "5000")
	reap(pid)
	waitDone(t, p, 10*time.Second)
	ls := of(sink.all(), output.Stdout)
	if len(ls) != 5001 {
		t.Fatalf("%d lines, want 5001", len(ls))
	}
	for i := range 5000 {
		if ls[i] != fmt.Sprintf("%d %s", i, payload(i)) {
			t.Fatalf("line %d: %q", i, ls[i])
		}
	}
	last := sink.all()[5000]
	if last.data != "no newline at the end" || last.flags&output.NoNewline == 0 {
		t.Fatalf("last line %+v", last)
	}
}

// A grandchild keeps the pipes open after the worker exited: Close reads
// what they hold and closes them; the grandchild's next write fails
// instead of blocking.
func TestGrandchildHoldingThePipe(t *testing.T) {
	check := fdtest.Track(t, "relay")
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "grandchild", "1000")
	if st := reap(pid); st != 0 {
		t.Fatalf("worker exited %d", st)
	}
	// The worker is gone, its pipes are not: the grandchild holds them.
	select {
	case <-p.Done():
		t.Fatal("pipes ended while the grandchild holds them")
	default:
	}
	p.Close(10 * time.Millisecond)
	waitDone(t, p, 10*time.Second)
	ls := of(sink.all(), output.Stdout)
	if len(ls) < 1001 {
		t.Fatalf("%d lines, want at least 1001", len(ls))
	}
	// The worker's line naming the grandchild (the grandchild's own
	// "held" may come before it: both write to the pipe).
	var gpid int
	for _, l := range ls {
		if _, err := fmt.Sscanf(l, "grandchild %d", &gpid); err == nil {
			break
		}
	}
	if gpid <= 0 {
		t.Fatalf("no line names the grandchild; first lines %q", ls[:2])
	}
	defer func() { syscall.Kill(gpid, syscall.SIGKILL); reap(gpid) }()
	for i := range 1000 {
		if !contains(ls, fmt.Sprintf("%d %s", i, payload(i))) {
			t.Fatalf("line %d missing", i)
		}
	}
	syscall.Kill(gpid, syscall.SIGKILL)
	reap(gpid)
	if !gone(gpid) {
		t.Fatalf("grandchild %d not gone", gpid)
	}
	check()
}

func contains(ls []string, s string) bool {
	for _, l := range ls {
		if l == s {
			return true
		}
	}
	return false
}
