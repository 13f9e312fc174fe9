package output

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
	"unicode/utf8"
)

// The `sockd logs` exchange on the control socket (internal/control: one
// line of JSON each way, then the connection closes) extended by a stream
// of records:
//
//	→ {"command":"logs","worker":1,"generation":3,"lines":50,"follow":true}
//	← {"ok":true}
//	← {"seq":812,"time":"2026-12-05T10:00:00.123456789Z","worker":1,"generation":3,"pid":4242,"stream":"stderr","priority":3,"message":"boom"}
//	← {"worker":1,"generation":3,"pid":4242,"skipped":120}      a follower fell behind by 120 lines
//	← {"end":true}                                              the tail is complete (without follow)
//
// "worker", "generation" filter (absent: all); "lines" is how many of the
// most recent lines come first (absent: 10; 0: none, with follow only the
// new ones). With "follow" the server then sends new lines as they come,
// until the client closes the connection (it must keep its side open) or
// sockd stops. A record's optional fields: "continued":true (a piece of a
// cut line), "message_base64" (the exact bytes of a line that is not valid
// UTF-8; "message" then has U+FFFD for each invalid byte). Records are in
// the order sockd read the lines ("seq"); lines of exited workers are
// there as long as their rings are kept.

// DefaultTail is how many lines `sockd logs` shows without -n.
const DefaultTail = 10

// Query is a logs request; unmarshal the request line into it.
type Query struct {
	Worker     *int `json:"worker,omitempty"`
	Generation *int `json:"generation,omitempty"`
	// PID selects one worker process: of a slot's crashed worker and its
	// replacement (same slot, same generation), the crashed one.
	PID    *int `json:"pid,omitempty"`
	Lines  *int `json:"lines,omitempty"`
	Follow bool `json:"follow,omitempty"`
}

// Check refuses a query that makes no sense.
func (q Query) Check() error {
	switch {
	case q.Worker != nil && *q.Worker < 0:
		return fmt.Errorf("worker %d: want a slot number >= 0", *q.Worker)
	case q.Generation != nil && *q.Generation < 0:
		return fmt.Errorf("generation %d: want a number >= 0", *q.Generation)
	case q.PID != nil && *q.PID <= 0:
		return fmt.Errorf("pid %d: want a process id", *q.PID)
	case q.Lines != nil && *q.Lines < 0:
		return fmt.Errorf("lines %d: want a number >= 0", *q.Lines)
	}
	return nil
}

func (q Query) lines() int {
	if q.Lines == nil {
		return DefaultTail
	}
	return *q.Lines
}

// Record is one record of a logs response.
type Record struct {
	Seq           uint64 `json:"seq,omitempty"`
	Time          string `json:"time,omitempty"`
	Worker        int    `json:"worker"`
	Generation    int    `json:"generation"`
	PID           int    `json:"pid"`
	Stream        string `json:"stream,omitempty"`
	Priority      int    `json:"priority"`
	Message       string `json:"message,omitempty"`
	MessageBase64 []byte `json:"message_base64,omitempty"`
	Continued     bool   `json:"continued,omitempty"`
	// Skipped: lines of this worker a follower missed.
	Skipped uint64 `json:"skipped,omitempty"`
	// End: the last record of a tail.
	End bool `json:"end,omitempty"`
	// Retry: the last record of a follow that the sockd ended because it
	// handed over to the new sockd of an upgrade, and Error why (the line
	// is the control package's Response with Retry).
	Retry bool   `json:"retry,omitempty"`
	Error string `json:"error,omitempty"`
}

// MarshalJSON writes a line's record with its priority and message
// always (an empty line too), and a marker (skipped lines, the end of a
// tail, a retry) without them: a priority 0 there would read as an
// emergency.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	if r.Skipped > 0 || r.End || r.Retry {
		return json.Marshal(struct {
			plain
			Priority *int `json:"priority,omitempty"`
		}{plain: plain(r)})
	}
	return json.Marshal(struct {
		plain
		Message string `json:"message"`
	}{plain(r), r.Message})
}

func newRecord(w Worker, e entry, msg []byte) Record {
	r := Record{Seq: e.seq, Time: nanoTime(e.nano), Worker: w.Slot, Generation: w.Generation, PID: w.PID,
		Stream: e.stream.String(), Priority: int(e.prio), Message: string(msg), Continued: e.flags&Continued != 0}
	if !utf8.Valid(msg) {
		r.MessageBase64 = msg
	}
	return r
}

// Bytes is the line's exact bytes.
func (r Record) Bytes() []byte {
	if r.MessageBase64 != nil {
		return r.MessageBase64
	}
	return []byte(r.Message)
}

// Tail returns the last n lines q selects (DefaultTail when q.Lines is
// nil), oldest first.
func (r *Relay) Tail(q Query) []Record {
	recs, _ := r.ring.tail(q, q.lines())
	return recs
}

// writeTimeout bounds one write to a logs client.
var writeTimeout = 10 * time.Second

// ServeLogs answers a logs request whose line the control server read
// from c: the {"ok":true} line, the tail, then {"end":true} or, with
// follow, new lines until ctx is done, the client closes or a write to it
// fails (a client that does not read for writeTimeout). It returns nil
// when the client or ctx ended it.
func (r *Relay) ServeLogs(ctx context.Context, c net.Conn, q Query) error {
	bw := bufio.NewWriterSize(c, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	flush := func() error {
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		return bw.Flush()
	}
	if err := q.Check(); err != nil {
		enc.Encode(map[string]any{"ok": false, "error": err.Error()})
		return flush()
	}
	enc.Encode(map[string]bool{"ok": true})
	recs, cursors := r.ring.tail(q, q.lines())
	emit := func(recs []Record) error {
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return err
			}
		}
		return flush()
	}
	if err := emit(recs); err != nil {
		return err
	}
	if !q.Follow {
		enc.Encode(Record{End: true})
		return flush()
	}
	done := make(chan struct{})
	go func() { // the client closing its side ends the follow
		io.Copy(io.Discard, c)
		close(done)
	}()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	err := r.ring.follow(done, q, cursors, emit)
	c.SetReadDeadline(time.Now())
	<-done
	if err != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)) {
		err = nil
	}
	return err
}

// ErrRetry: the sockd that answered had handed over to the new sockd of
// an upgrade (the control package's Response.Retry) before it read the
// request, or while it followed; the same request on a new connection
// reaches the new one.
var ErrRetry = errors.New("ask again")

// ReadLogs reads a logs response from r (after the request was sent):
// the {"ok":…} line, whose error it returns, then each record, which it
// passes to fn, until {"end":true}, the end of the stream, or fn's error;
// an error wrapping ErrRetry where sockd says so.
// ErrNoAnswer: the logs request got no first line back.
var ErrNoAnswer = errors.New("no answer from sockd")

func ReadLogs(r io.Reader, fn func(Record) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	var resp struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
		Retry bool   `json:"retry"`
	}
	if err := json.Unmarshal(head, &resp); err != nil {
		return fmt.Errorf("bad answer from sockd: %w", err)
	}
	if resp.Retry {
		return fmt.Errorf("%w: %s", ErrRetry, resp.Error)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	dec := json.NewDecoder(br)
	for {
		var rec Record
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("bad record from sockd: %w", err)
		}
		if rec.End {
			return nil
		}
		if rec.Retry {
			return fmt.Errorf("%w: %s", ErrRetry, rec.Error)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// AppendText appends rec as `sockd logs` prints it: the prefix format
// ("[w1 g3 err] line"), after the time if withTime (in the local time zone,
// as the prefix format's live times are), with the line's exact bytes; a
// gap reads "[w1 g3] -- 120 lines skipped --".
func (r Record) AppendText(dst []byte, withTime bool) []byte {
	if withTime && r.Time != "" {
		if t, err := time.Parse(time.RFC3339Nano, r.Time); err == nil {
			dst = t.Local().AppendFormat(dst, DefaultTimeFormat)
		} else {
			dst = append(dst, r.Time...)
		}
		dst = append(dst, ' ')
	}
	s := Stdout
	if r.Stream == "stderr" {
		s = Stderr
	}
	var f Flags
	if r.Continued {
		f = Continued
	}
	dst = appendPrefix(dst, Worker{Slot: r.Worker, Generation: r.Generation}, s, f)
	if r.Skipped > 0 {
		dst = append(dst, "-- "...)
		dst = strconv.AppendUint(dst, r.Skipped, 10)
		return append(dst, " lines skipped --\n"...)
	}
	dst = append(dst, r.Bytes()...)
	return append(dst, '\n')
}
