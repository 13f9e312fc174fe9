package output_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/output"
	"github.com/sockd/sockd/worker/workertest"
)

func ptr(n int) *int { return &n }

// serveLogs answers logs requests on a unix socket as the control server
// would: one request line, then ServeLogs.
func serveLogs(t *testing.T, r *output.Relay) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadBytes('\n')
				if err != nil {
					return
				}
				var q output.Query
				if err := json.Unmarshal(line, &q); err != nil {
					fmt.Fprintf(c, "{\"ok\":false,\"error\":%q}\n", err.Error())
					return
				}
				r.ServeLogs(ctx, c, q)
			}()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return path
}

func request(t *testing.T, path string, q output.Query) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]any{"command": "logs"}
	b, _ := json.Marshal(q)
	json.Unmarshal(b, &req)
	b, _ = json.Marshal(req)
	c.Write(append(b, '\n'))
	return c
}

func tail(t *testing.T, path string, q output.Query) []output.Record {
	t.Helper()
	c := request(t, path, q)
	defer c.Close()
	var recs []output.Record
	if err := output.ReadLogs(c, func(r output.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return recs
}

// The ring keeps the last lines of live and exited workers; tail filters
// by slot and generation, over the control socket's wire format.
func TestTailOverTheWire(t *testing.T) {
	r := output.New(output.Options{Ring: output.RingOptions{Lines: 50}})
	path := serveLogs(t, r)
	p1, pid1 := spawn(t, r, 1, 1, "lines", "100")
	waitDone(t, p1, 10*time.Second) // exited: its ring is kept
	reap(pid1)
	p2, pid2 := spawn(t, r, 2, 2, "levels")
	waitDone(t, p2, 10*time.Second)
	reap(pid2)

	recs := tail(t, path, output.Query{Worker: ptr(1), Lines: ptr(5)})
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	// The ring holds 50 lines of both streams: the last 25 of each.
	var texts []string
	for _, rec := range recs {
		if rec.Worker != 1 || rec.Generation != 1 || rec.PID != pid1 {
			t.Fatalf("record %+v", rec)
		}
		texts = append(texts, rec.Message)
	}
	if last := texts[len(texts)-1]; last != "out 99" && last != "err 99" {
		t.Fatalf("last lines %q", texts)
	}
	all := tail(t, path, output.Query{Lines: ptr(1000)})
	if len(all) != 50+20 {
		t.Fatalf("%d records in all, want 70", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("records out of order at %d", i)
		}
	}
	gen2 := tail(t, path, output.Query{Generation: ptr(2), Lines: ptr(3)})
	if len(gen2) != 3 {
		t.Fatalf("generation 2: %+v", gen2)
	}
	for _, rec := range gen2 {
		if rec.Generation != 2 || rec.PID != pid2 {
			t.Fatalf("generation 2: %+v", rec)
		}
	}
	if def := tail(t, path, output.Query{}); len(def) != output.DefaultTail {
		t.Fatalf("default tail: %d", len(def))
	}
	// What `sockd logs` prints.
	var text []byte
	for _, rec := range gen2 {
		text = rec.AppendText(text, false)
	}
	if !strings.Contains(string(text), "[w2 g2 err] notice on stderr\n") && !strings.Contains(string(text), "[w2 g2] ") {
		t.Fatalf("text %q", text)
	}
	// A bad query gets a one-line error.
	c := request(t, path, output.Query{Lines: ptr(-1)})
	defer c.Close()
	if err := output.ReadLogs(c, func(output.Record) error { return nil }); err == nil || !strings.Contains(err.Error(), "lines -1") {
		t.Fatalf("bad query: %v", err)
	}
}

// Exact bytes of binary lines survive the wire.
func TestTailCarriesBinary(t *testing.T) {
	r := output.New(output.Options{})
	path := serveLogs(t, r)
	p, pid := spawn(t, r, 0, 1, "binary")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	recs := tail(t, path, output.Query{})
	if len(recs) != 4 || !bytes.Equal(recs[1].Bytes(), []byte("bad \xff\xfe utf8 \xc3")) || recs[1].MessageBase64 == nil {
		t.Fatalf("records %+v", recs)
	}
	if !bytes.Equal(recs[2].Bytes(), []byte("\x00nul\x00")) || recs[2].MessageBase64 != nil {
		t.Fatalf("NUL line %+v", recs[2])
	}
}

// Follow: the tail, then the lines of a worker started afterwards, until
// the client closes.
func TestFollow(t *testing.T) {
	r := output.New(output.Options{})
	path := serveLogs(t, r)
	p, pid := spawn(t, r, 0, 1, "lines", "3")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	c := request(t, path, output.Query{Lines: ptr(2), Follow: true})
	recs := make(chan output.Record, 100)
	ended := make(chan error, 1)
	go func() { ended <- output.ReadLogs(c, func(r output.Record) error { recs <- r; return nil }) }()
	for range 2 {
		<-recs
	}
	p2, pid2 := spawn(t, r, 1, 2, "flood", "100")
	for i := range 100 {
		select {
		case rec := <-recs:
			if rec.PID != pid2 || rec.Message != fmt.Sprintf("%d %s", i, payload(i)) {
				t.Fatalf("followed %+v, want line %d of %d", rec, i, pid2)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("line %d not followed", i)
		}
	}
	waitDone(t, p2, 10*time.Second)
	reap(pid2)
	c.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end with the client")
	}
}

// A follower that does not read loses the lines the ring forgot, is told
// how many, and the workers never wait for it.
func TestSlowFollowerSkips(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink, Ring: output.RingOptions{Lines: 100}})
	path := serveLogs(t, r)
	c := request(t, path, output.Query{Lines: ptr(0), Follow: true})
	defer c.Close()
	br := bufio.NewReader(c)
	if head, _ := br.ReadString('\n'); head != "{\"ok\":true}\n" {
		t.Fatalf("head %q", head)
	}
	const n = 200_000
	p, pid := spawn(t, r, 0, 1, "flood", fmt.Sprint(n))
	waitDone(t, p, 60*time.Second) // the follower reads nothing meanwhile
	reap(pid)
	if sink.len() != n {
		t.Fatalf("sink got %d lines, want %d", sink.len(), n)
	}
	var lines, skipped uint64
	dec := json.NewDecoder(br)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for lines+skipped < n {
		var rec output.Record
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("after %d lines and %d skipped: %v", lines, skipped, err)
		}
		if rec.Skipped > 0 {
			skipped += rec.Skipped
		} else {
			lines++
		}
	}
	if skipped == 0 || r.FollowSkipped() != skipped {
		t.Fatalf("skipped %d, counted %d", skipped, r.FollowSkipped())
	}
}

// A crashed worker's last words outlast the lines of workers that exited
// as planned (a reload retires a whole generation of them): with room for
// 2 exited workers, the crashed one is kept through 3 planned exits.
func TestCrashedWorkersAreKeptLonger(t *testing.T) {
	r := output.New(output.Options{Ring: output.RingOptions{Lines: 50, Exited: 2}})
	path := serveLogs(t, r)
	p, pid := spawn(t, r, 0, 1, "levels")
	p.Crashed()
	waitDone(t, p, 10*time.Second)
	reap(pid)
	for gen := 2; gen <= 4; gen++ {
		p, pid := spawn(t, r, 0, gen, "levels")
		waitDone(t, p, 10*time.Second)
		reap(pid)
	}
	gens := map[int]bool{}
	for _, rec := range tail(t, path, output.Query{Lines: ptr(1000)}) {
		gens[rec.Generation] = true
	}
	if !gens[1] || len(gens) != 2 || !gens[4] {
		t.Fatalf("generations kept %v, want the crashed 1 and the last planned 4", gens)
	}
}

// `sockd logs --time` prints each record's UTC time in the local zone, as
// the prefix format's live lines have it; a time it cannot read stays as
// sockd sent it.
func TestAppendTextLocalTime(t *testing.T) {
	saved := time.Local
	time.Local = time.FixedZone("X", 5*3600+30*60)
	defer func() { time.Local = saved }()
	rec := output.Record{Time: "2026-12-05T10:00:00.123456789Z", Worker: 1, Generation: 3, Stream: "stderr", Message: "boom"}
	if got, want := string(rec.AppendText(nil, true)), "2026-12-05T15:30:00.123456789+05:30 [w1 g3 err] boom\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	rec.Time = "yesterday"
	if got := string(rec.AppendText(nil, true)); !strings.HasPrefix(got, "yesterday [w1 g3 err] ") {
		t.Fatalf("got %q", got)
	}
}

// By default the exited rings kept grow with the live workers: after a
// reload of 20 workers, every one of the old generation's last lines is
// still there (not only the 16 most recent).
func TestExitedRingsScaleWithWorkers(t *testing.T) {
	const n = output.DefaultRingExited + 4
	r := output.New(output.Options{})
	path := serveLogs(t, r)
	type w struct {
		p   *output.Pipes
		pid int
	}
	var old []w
	for slot := range n {
		p, pid := spawn(t, r, slot, 1, "hold")
		old = append(old, w{p, pid})
	}
	slots := func() map[int]bool {
		got := map[int]bool{}
		for _, rec := range tail(t, path, output.Query{Generation: ptr(1), Lines: ptr(1000)}) {
			got[rec.Worker] = true
		}
		return got
	}
	// Each has written its line before it is killed.
	workertest.Eventually(t, 10*time.Second, "a line from every worker of generation 1", func() bool { return len(slots()) == n })
	for slot := range n {
		spawn(t, r, slot, 2, "hold")
	}
	for _, o := range old {
		syscall.Kill(o.pid, syscall.SIGKILL)
		waitDone(t, o.p, 10*time.Second)
		reap(o.pid)
	}
	if got := slots(); len(got) != n {
		t.Fatalf("generation 1's lines from %d workers, want %d: %v", len(got), n, got)
	}
}
