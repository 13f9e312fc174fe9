// Package load is the benchmarks' HTTP load generator. A fixed number of
// client goroutines send GET requests to one address on loopback: half of
// them keep one connection alive across requests (HTTP/1.1 keep-alive,
// reconnecting after an error or a "Connection: close"), half open a new
// connection for every request ("Connection: close"). Every request is
// recorded: when it started, how long it took, which process answered
// (X-Pid or X-Sockd-Pid header, else "pid=N" in the body) and how it ended
// (answered 200, refused, reset, timed out, closed before any answer,
// cut short, or another status). The run stops by itself after
// Config.Duration.
//
// With Config.Rate the clients send on a fixed schedule (the rate split
// evenly between them) and latency counts from the scheduled start, so a
// stall is charged to every request it delayed (no coordinated omission);
// without it each client sends its next request as soon as the previous
// one ended (closed loop), which measures throughput.
package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kind is how a request ended.
type Kind uint8

// Outcomes of a request. Everything but OK is a failed request.
const (
	OK        Kind = iota // a complete 200 response
	Refused               // connect(2) refused: nothing listening
	Reset                 // ECONNRESET or EPIPE
	Timeout               // no complete response within Config.Timeout
	Closed                // the connection was closed before any byte of a response
	Truncated             // the connection was closed in the middle of a response
	BadStatus             // a complete response with another status than 200
	Other                 // anything else (the message is kept in Result.ErrorText)
	NumKinds
)

var kindNames = [NumKinds]string{"ok", "refused", "reset", "timeout", "closed", "truncated", "status", "other"}

func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return "kind" + strconv.Itoa(int(k))
}

// Sample is one request.
type Sample struct {
	Start     int64 // ns since the run started (the scheduled start when paced)
	LatUS     int32 // µs from Start to the end of the response (or the failure)
	PID       int32 // the process that answered, 0 if unknown or failed
	Kind      Kind
	KeepAlive bool // sent by a keep-alive client
	Reused    bool // sent on a connection that had already carried a response
}

// End is when the request ended, in ns since the run started.
func (s Sample) End() int64 { return s.Start + int64(s.LatUS)*1000 }

// Config describes a run.
type Config struct {
	Addr     string        // host:port, on loopback
	Clients  int           // client goroutines (rounded up to even): half keep-alive, half new connection per request
	Rate     float64       // total requests per second; 0: closed loop, as fast as the server answers
	Duration time.Duration // stop sending after this long (0: until the context is done)
	Timeout  time.Duration // per request, connect included (default 2s)
	Path     string        // default "/"
}

// Run is a load run in progress.
type Run struct {
	cfg   Config
	t0    time.Time
	ok    atomic.Int64
	fail  atomic.Int64
	seen  sync.Map // int32 pid -> int64 ns of its first answer
	mu    sync.Mutex
	gone  map[int32]int64 // retired pids -> ns when retired
	errs  map[Kind][]string
	done  chan struct{}
	res   *Result
	wg    sync.WaitGroup
	parts [][]Sample
}

// Start begins a run; it stops after cfg.Duration or when ctx is done.
func Start(ctx context.Context, cfg Config) *Run {
	if cfg.Clients < 2 {
		cfg.Clients = 2
	}
	cfg.Clients += cfg.Clients % 2
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	r := &Run{cfg: cfg, gone: map[int32]int64{}, errs: map[Kind][]string{}, done: make(chan struct{}),
		parts: make([][]Sample, cfg.Clients)}
	r.t0 = time.Now()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, r.t0.Add(cfg.Duration))
		go func() { <-r.done; cancel() }()
	}
	for i := 0; i < cfg.Clients; i++ {
		c := &client{r: r, id: i, keepAlive: i%2 == 0}
		c.reqKA = []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: sockd-bench\r\n\r\n")
		c.reqClose = []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: sockd-bench\r\nConnection: close\r\n\r\n")
		r.wg.Add(1)
		go c.loop(ctx)
	}
	go func() {
		r.wg.Wait()
		r.res = r.collect()
		close(r.done)
	}()
	return r
}

// Since is the time elapsed since the run started, on the samples' clock.
func (r *Run) Since() time.Duration { return time.Since(r.t0) }

// StartTime is the wall-clock start of the run.
func (r *Run) StartTime() time.Time { return r.t0 }

// Counts returns the requests answered 200 and failed so far.
func (r *Run) Counts() (ok, failed int64) { return r.ok.Load(), r.fail.Load() }

// Seen returns every process that has answered and is not retired, with
// the time of its first answer (ns since the start).
func (r *Run) Seen() map[int32]int64 {
	m := map[int32]int64{}
	r.seen.Range(func(k, v any) bool {
		m[k.(int32)] = v.(int64)
		return true
	})
	return m
}

// Retire forgets pids (processes that exited): answers still arriving from
// them are not counted as first answers of a new process for 10 s, after
// which the pid may be reused by the kernel.
func (r *Run) Retire(pids ...int) {
	now := int64(r.Since())
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pids {
		r.gone[int32(p)] = now
		r.seen.Delete(int32(p))
	}
}

func (r *Run) firstAnswer(pid int32, at int64) {
	if _, ok := r.seen.Load(pid); ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.gone[pid]; ok {
		if at-t < int64(10*time.Second) {
			return
		}
		delete(r.gone, pid)
	}
	r.seen.LoadOrStore(pid, at)
}

// Done is closed when the run is over.
func (r *Run) Done() <-chan struct{} { return r.done }

// Wait waits for the end of the run and returns its result.
func (r *Run) Wait() *Result {
	<-r.done
	return r.res
}

func (r *Run) noteErr(k Kind, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs[k]) < 5 && err != nil {
		r.errs[k] = append(r.errs[k], err.Error())
	}
}

func (r *Run) collect() *Result {
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	all := make([]Sample, 0, n)
	for _, p := range r.parts {
		all = append(all, p...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Start < all[j].Start })
	return &Result{Samples: all, Duration: r.Since(), Config: r.cfg, ErrorText: r.errs, Started: r.t0}
}

type client struct {
	r         *Run
	id        int
	keepAlive bool
	reqKA     []byte
	reqClose  []byte
	c         net.Conn
	br        *bufio.Reader
	served    int
	buf       []byte
}

func (c *client) loop(ctx context.Context) {
	defer c.r.wg.Done()
	defer c.closeConn()
	r := c.r
	var interval time.Duration
	next := r.t0
	if r.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(r.cfg.Clients) / r.cfg.Rate)
		next = r.t0.Add(interval * time.Duration(c.id) / time.Duration(r.cfg.Clients))
	}
	samples := make([]Sample, 0, 4096)
	defer func() { r.parts[c.id] = samples }()
	timer := time.NewTimer(0)
	<-timer.C
	for ctx.Err() == nil {
		start := time.Now()
		if interval > 0 {
			if d := next.Sub(start); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
			}
			start = next
			next = next.Add(interval)
		}
		s := c.do(start)
		samples = append(samples, s)
		if s.Kind == OK {
			r.ok.Add(1)
		} else {
			r.fail.Add(1)
		}
	}
}

func (c *client) closeConn() {
	if c.c != nil {
		c.c.Close()
		c.c, c.br, c.served = nil, nil, 0
	}
}

// do sends one request; start is when it was due.
func (c *client) do(start time.Time) Sample {
	r := c.r
	s := Sample{Start: int64(start.Sub(r.t0)), KeepAlive: c.keepAlive}
	deadline := time.Now().Add(r.cfg.Timeout)
	finish := func(k Kind, err error) Sample {
		s.Kind = k
		lat := time.Since(start).Microseconds()
		if lat > math.MaxInt32 {
			lat = math.MaxInt32
		}
		s.LatUS = int32(lat)
		if k != OK {
			r.noteErr(k, err)
			c.closeConn()
		}
		return s
	}
	if c.c == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.Dial("tcp", r.cfg.Addr)
		if err != nil {
			return finish(classify(err, false), err)
		}
		c.c, c.br, c.served = conn, bufio.NewReaderSize(conn, 4096), 0
	}
	s.Reused = c.served > 0
	c.c.SetDeadline(deadline)
	req := c.reqClose
	if c.keepAlive {
		req = c.reqKA
	}
	if _, err := c.c.Write(req); err != nil {
		return finish(classify(err, false), err)
	}
	status, pid, closeAfter, err := c.readResponse()
	if err != nil {
		return finish(classify(err, status != 0 || errors.Is(err, errPartial)), err)
	}
	c.served++
	s.PID = int32(pid)
	if !c.keepAlive || closeAfter {
		c.closeConn()
	}
	if status != 200 {
		return finish(BadStatus, fmt.Errorf("status %d", status))
	}
	if pid > 0 {
		r.firstAnswer(int32(pid), s.Start+int64(time.Since(start)))
	}
	return finish(OK, nil)
}

var errPartial = errors.New("connection closed in the middle of a response")

// readResponse reads one HTTP/1.1 response. status is 0 when not even the
// status line arrived.
func (c *client) readResponse() (status, pid int, closeAfter bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = errPartial
		}
		return 0, 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	closeAfter = line[7] == '0' // HTTP/1.0 closes unless told otherwise
	length := -1
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errPartial
			}
			return status, 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.Atoi(string(val))
			if err != nil {
				return status, 0, false, fmt.Errorf("bad Content-Length %q", val)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(val, []byte("close")) {
				closeAfter = true
			} else if bytes.EqualFold(val, []byte("keep-alive")) {
				closeAfter = false
			}
		case bytes.EqualFold(name, []byte("X-Pid")), bytes.EqualFold(name, []byte("X-Sockd-Pid")):
			pid, _ = strconv.Atoi(string(val))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return status, 0, false, fmt.Errorf("Transfer-Encoding %q not supported: answer with a Content-Length", val)
		}
	}
	var body []byte
	if length >= 0 {
		if cap(c.buf) < length {
			c.buf = make([]byte, length)
		}
		body = c.buf[:length]
		if _, err := io.ReadFull(c.br, body); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errPartial
			}
			return status, 0, false, err
		}
	} else {
		closeAfter = true
		if body, err = io.ReadAll(io.LimitReader(c.br, 1<<20)); err != nil {
			return status, 0, false, err
		}
	}
	if pid == 0 {
		if i := bytes.Index(body, []byte("pid=")); i >= 0 {
			j := i + 4
			for j < len(body) && body[j] >= '0' && body[j] <= '9' {
				j++
			}
			pid, _ = strconv.Atoi(string(body[i+4 : j]))
		}
	}
	return status, pid, closeAfter, nil
}

func classify(err error, partial bool) Kind {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Timeout
	case errors.Is(err, errPartial), partial && errors.Is(err, io.EOF):
		return Truncated
	case errors.Is(err, io.EOF):
		return Closed
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Other
}
