package output_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/journal/journaltest"
	"github.com/sockd/sockd/internal/output"
)

// Priorities: "<N>" first, then a JSON level (pino numbers, slog, hclog,
// winston, GCP), else the stream's.
func TestPriorities(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink})
	p, pid := spawn(t, r, 0, 1, "levels")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	want := map[string]int8{
		"plain": 6, "<4>warned": 4, `<7>{"level":50,"msg":"prefix wins"}`: 7,
		"pino info": 6, "pino error": 3, "pino fatal": 2, "pino trace": 7, "slog warn": 4, "slog error+2": 3,
		"slog debug": 7, "hclog warn": 4, "winston info": 6, "gcp critical": 2, "no such level": 6,
		"broken": 6, "no level": 6, "nested": 6,
		"stderr plain": 3, "info on stderr": 6, "<5>notice on stderr": 5,
	}
	ls := sink.all()
	if len(ls) != len(want) {
		t.Fatalf("%d lines, want %d", len(ls), len(want))
	}
	for _, l := range ls {
		key := l.data
		for k := range want {
			if strings.Contains(l.data, `"`+k+`"`) {
				key = k
			}
		}
		p, ok := want[key]
		if !ok {
			t.Errorf("unexpected line %q", l.data)
			continue
		}
		if l.prio != p {
			t.Errorf("%q: priority %d, want %d", l.data, l.prio, p)
		}
		if strings.HasPrefix(l.data, "<") && l.msg != l.data[3:] {
			t.Errorf("%q: message %q", l.data, l.msg)
		}
		isObj := strings.HasPrefix(l.msg, "{") && key != "broken"
		if (l.flags&output.JSONObject != 0) != isObj {
			t.Errorf("%q: JSON object flag %v", l.data, !isObj)
		}
	}
}

// batch is a hand-made batch for the sink formats.
func batch(s output.Stream, lines ...output.Line) *output.Batch {
	return &output.Batch{Worker: output.Worker{Slot: 1, Generation: 3, PID: 4242}, Stream: s,
		Time: time.Date(2026, 12, 5, 10, 0, 0, 123456789, time.UTC), Lines: lines}
}

func line(data string, prio int8, f output.Flags) output.Line {
	return output.Line{Data: []byte(data), Priority: prio, Flags: f}
}

func TestWriterSinkRawAndPrefix(t *testing.T) {
	for _, tc := range []struct {
		opts    output.WriterOptions
		out, er string
	}{
		{output.WriterOptions{Mode: output.Raw}, "a\n<4>b\x00\xff\n", "c\n"},
		{output.WriterOptions{Mode: output.Prefix}, "[w1 g3] a\n[w1 g3] <4>b\x00\xff\n", "[w1 g3 err] c\n"},
		{output.WriterOptions{Time: true}, "2026-12-05T10:00:00.123456789Z [w1 g3] a\n2026-12-05T10:00:00.123456789Z [w1 g3] <4>b\x00\xff\n",
			"2026-12-05T10:00:00.123456789Z [w1 g3 err] c\n"},
	} {
		var out, er bytes.Buffer
		tc.opts.Stdout, tc.opts.Stderr = &out, &er
		s, err := output.NewWriterSink(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		l := line("<4>b\x00\xff", 4, 0)
		l.Msg = 3
		s.Write(batch(output.Stdout, line("a", 6, 0), l))
		s.Write(batch(output.Stderr, line("c", 3, 0)))
		if out.String() != tc.out || er.String() != tc.er {
			t.Errorf("%s: stdout %q stderr %q, want %q %q", tc.opts.Mode, out.String(), er.String(), tc.out, tc.er)
		}
	}
	var out bytes.Buffer
	s, _ := output.NewWriterSink(output.WriterOptions{Stdout: &out, Stderr: &out})
	s.Write(batch(output.Stderr, line("piece 1", 3, output.Cut), line("piece 2", 3, output.Continued)))
	if want := "[w1 g3 err] piece 1\n[w1 g3 err +] piece 2\n"; out.String() != want {
		t.Errorf("cut line: %q, want %q", out.String(), want)
	}
	if _, err := output.NewWriterSink(output.WriterOptions{Mode: "xml"}); err == nil || !strings.Contains(err.Error(), "want raw, prefix or json") {
		t.Errorf("bad mode: %v", err)
	}
}

// The json format has the shape of sockd's own hclog JSON records: one
// parser reads both. A JSON line is embedded as an object.
func TestWriterSinkJSONLooksLikeHclog(t *testing.T) {
	var own bytes.Buffer
	hclog.New(&hclog.LoggerOptions{Name: "app", Output: &own, JSONFormat: true, TimeFormat: time.RFC3339Nano}).
		Info("hello", "generation", 3, "stream", "stdout", "worker", 1, "worker_pid", 4242)

	var out bytes.Buffer
	s, _ := output.NewWriterSink(output.WriterOptions{Mode: output.JSON, Stdout: &out, Name: "app"})
	obj := `{"level":50,"msg":"pino \"error\"","err":{"stack":"a\nb"}}`
	jl := line(obj, 3, output.JSONObject)
	pl := line("<4>warned", 4, 0)
	pl.Msg = 3
	s.Write(batch(output.Stdout, line("hello", 6, 0), jl, line("bad \xff\x00", 6, output.Continued), pl))
	recs := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(recs) != 4 {
		t.Fatalf("%d records: %q", len(recs), out.String())
	}
	var ownRec, rec map[string]any
	json.Unmarshal(own.Bytes(), &ownRec)
	if err := json.Unmarshal([]byte(recs[0]), &rec); err != nil {
		t.Fatalf("record %q: %v", recs[0], err)
	}
	delete(ownRec, "@timestamp")
	if rec["@timestamp"] != "2026-12-05T10:00:00.123456789Z" {
		t.Errorf("@timestamp %v", rec["@timestamp"])
	}
	delete(rec, "@timestamp")
	if a, b := mustJSON(ownRec), mustJSON(rec); a != b {
		t.Errorf("record\n%s\nwant hclog's\n%s", b, a)
	}
	// Keys in hclog's order: sorted.
	if !strings.HasPrefix(recs[0], `{"@level":"info","@message":"hello","@module":"app","@timestamp":`) {
		t.Errorf("record %s", recs[0])
	}
	var embedded struct {
		Level   string          `json:"@level"`
		Message string          `json:"@message"`
		JSON    json.RawMessage `json:"json"`
	}
	if err := json.Unmarshal([]byte(recs[1]), &embedded); err != nil {
		t.Fatalf("record %q: %v", recs[1], err)
	}
	if embedded.Level != "error" || embedded.Message != `pino "error"` || string(embedded.JSON) != obj {
		t.Errorf("embedded record %s", recs[1])
	}
	var bin struct {
		Message   string `json:"@message"`
		Raw       []byte `json:"message_base64"`
		Continued bool   `json:"continued"`
	}
	if err := json.Unmarshal([]byte(recs[2]), &bin); err != nil {
		t.Fatalf("record %q: %v", recs[2], err)
	}
	if bin.Message != "bad \ufffd\x00" || string(bin.Raw) != "bad \xff\x00" || !bin.Continued {
		t.Errorf("binary record %s", recs[2])
	}
	if !strings.HasPrefix(recs[3], `{"@level":"warn","@message":"warned"`) {
		t.Errorf("prefixed record %s", recs[3])
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Lines of two streams written concurrently to one writer never mix
// within a line.
func TestWriterSinkLinesNeverMix(t *testing.T) {
	var out lockedBuf
	s, _ := output.NewWriterSink(output.WriterOptions{Mode: output.Raw, Stdout: &out, Stderr: &out})
	var wg sync.WaitGroup
	for _, st := range []output.Stream{output.Stdout, output.Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				s.Write(batch(st, line(strings.Repeat(st.String(), 50), 6, 0), line(strings.Repeat(st.String(), 70), 6, 0)))
			}
		}()
	}
	wg.Wait()
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if l != strings.Repeat(l[:6], len(l)/6) {
			t.Fatalf("mixed line %q", l)
		}
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Real workers through the journal sink to a fake journald: the fields
// sockd promises, binary messages intact.
func TestJournalSinkFields(t *testing.T) {
	srv := journaltest.Start(t, 0)
	c, err := journal.Dial(srv.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := output.New(output.Options{Sink: output.NewJournalSink(output.JournalOptions{Conn: c, Name: "hello"})})
	p, pid := spawn(t, r, 2, 5, "levels")
	waitDone(t, p, 10*time.Second)
	reap(pid)
	p2, pid2 := spawn(t, r, 0, 5, "binary")
	waitDone(t, p2, 10*time.Second)
	reap(pid2)
	entries := srv.Wait(t, 24, 10*time.Second)
	if errs := srv.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	find := func(msg string) journaltest.Entry {
		for _, e := range entries {
			if m, _ := e.Get("MESSAGE"); m == msg {
				return e
			}
		}
		t.Fatalf("no entry with MESSAGE %q", msg)
		return nil
	}
	for msg, want := range map[string]map[string]string{
		"plain":                           {"PRIORITY": "6", "SOCKD_STREAM": "stdout"},
		"warned":                          {"PRIORITY": "4", "SOCKD_STREAM": "stdout"},
		"stderr plain":                    {"PRIORITY": "3", "SOCKD_STREAM": "stderr"},
		`{"level":60,"msg":"pino fatal"}`: {"PRIORITY": "2"},
	} {
		e := find(msg)
		want["SYSLOG_IDENTIFIER"], want["SOCKD_WORKER"], want["SOCKD_GENERATION"] = "hello", "2", "5"
		want["SOCKD_WORKER_PID"], want["SYSLOG_PID"] = strconv.Itoa(pid), strconv.Itoa(pid)
		for k, v := range want {
			if got, _ := e.Get(k); got != v {
				t.Errorf("%q: %s=%q, want %q", msg, k, got, v)
			}
		}
		if _, ok := e.Get("SOCKD_CONTINUED"); ok {
			t.Errorf("%q: SOCKD_CONTINUED on a whole line", msg)
		}
	}
	e := find("bad \xff\xfe utf8 \xc3")
	if w, _ := e.Get("SOCKD_WORKER"); w != "0" {
		t.Errorf("binary line from worker %q", w)
	}
	find("\x00nul\x00")
}

// journald gone: lines go to the fallback; without one they are counted
// as dropped.
func TestJournalSinkFallback(t *testing.T) {
	srv := journaltest.Start(t, 0)
	c, err := journal.Dial(srv.Path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	var fb bytes.Buffer
	ws, _ := output.NewWriterSink(output.WriterOptions{Stdout: &fb, Stderr: &fb})
	s := output.NewJournalSink(output.JournalOptions{Conn: c, Name: "x", Fallback: ws})
	if err := s.Write(batch(output.Stdout, line("one", 6, 0), line("two", 6, 0))); err != nil {
		t.Fatal(err)
	}
	if fb.String() != "[w1 g3] one\n[w1 g3] two\n" {
		t.Fatalf("fallback got %q", fb.String())
	}
	s = output.NewJournalSink(output.JournalOptions{Conn: c, Name: "x"})
	err = s.Write(batch(output.Stdout, line("one", 6, 0), line("two", 6, 0)))
	var le *output.LostError
	if !errors.As(err, &le) || le.Lines != 2 {
		t.Fatalf("err = %v", err)
	}
}
