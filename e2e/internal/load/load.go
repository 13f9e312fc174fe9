//go:build linux

// Package load is the HTTP/1.1 load generator of the end-to-end tests. It
// runs inside the sandbox (command e2e/internal/loadclient) against sockd's
// demo worker and accounts for every request: unlike net/http's client it
// never retries a request on its own, so a refused, reset or timed-out
// request or a non-200 answer is always counted.
//
// It behaves like a careful real client: it honours "Connection: close",
// and before reusing a keep-alive connection it checks that the server has
// not closed it meanwhile (a non-blocking MSG_PEEK), as browsers and
// net/http do.
package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mode is how one client goroutine uses connections.
type Mode string

const (
	// KeepAlive sends requests back to back on one connection.
	KeepAlive Mode = "keepalive"
	// Fresh opens a new connection for every request (Connection: close).
	Fresh Mode = "fresh"
	// Sporadic keeps its connection but pauses up to Config.IdleMax between
	// requests.
	Sporadic Mode = "sporadic"
)

// Config says what load to generate.
type Config struct {
	Addr                       string        // host:port
	KeepAlive, Fresh, Sporadic int           // client goroutines of each mode
	Timeout                    time.Duration // per request, from connecting (or reusing) to the last byte
	IdleMax                    time.Duration // longest pause of a Sporadic client
	Pause                      time.Duration // pause of KeepAlive and Fresh clients between requests
	Slow                       time.Duration // requests slower than this (from DialStart) are listed
	MaxFailures, MaxSlowListed int           // list lengths (0: 500 and 5000)
}

// Request is one request and its outcome. Times are Unix nanoseconds (the
// sandbox shares the host's clock).
type Request struct {
	Client int  `json:"client"`
	Mode   Mode `json:"mode"`
	// DialStart is when the connection the request went out on began to
	// connect; for a failed connect, when that connect began.
	DialStart int64 `json:"dial_start"`
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	// Reused counts the requests sent on the connection before this one.
	Reused int  `json:"reused"`
	OK     bool `json:"ok"`
	// Kind classifies a failure: refused, reset, eof, timeout, status,
	// bad_response or other.
	Kind       string `json:"kind,omitempty"`
	Stage      string `json:"stage,omitempty"` // dial, write or read
	Err        string `json:"err,omitempty"`
	Status     int    `json:"status,omitempty"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Worker     int    `json:"worker,omitempty"`
}

// GenStats sums up the answers of one worker generation.
type GenStats struct {
	Requests   int         `json:"requests"`
	PIDs       map[int]int `json:"pids"`
	FirstStart int64       `json:"first_start"`
	LastStart  int64       `json:"last_start"`
	// LastDialStart is the latest DialStart of a connection on which this
	// generation answered: a connection begun after the generation let go
	// of the listening sockets must never be answered by it.
	LastDialStart int64 `json:"last_dial_start"`
}

// Report is the outcome of a run.
type Report struct {
	Config   Config `json:"config"`
	Started  int64  `json:"started"`
	Stopped  int64  `json:"stopped"`
	Requests int    `json:"requests"`
	OK       int    `json:"ok"`
	Failed   int    `json:"failed"`
	// Kinds counts failures by kind.
	Kinds map[string]int `json:"kinds"`
	// Conns is the number of connections opened.
	Conns int `json:"conns"`
	// ServerClosed counts responses with "Connection: close" on keep-alive
	// connections (a draining worker asks the client to go away).
	ServerClosed int `json:"server_closed"`
	// IdleClosed counts keep-alive connections found closed by the server
	// before reuse (and replaced, without a failure).
	IdleClosed  int               `json:"idle_closed"`
	Failures    []Request         `json:"failures"`
	Slow        []Request         `json:"slow"`
	Generations map[int]*GenStats `json:"generations"`
	PIDs        map[int]int       `json:"pids"`
}

// Run generates load until ctx is done, then lets the requests in flight
// finish and returns the report. running is called once, after the first
// successful answer.
func Run(ctx context.Context, cfg Config, running func()) *Report {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.IdleMax <= 0 {
		cfg.IdleMax = 300 * time.Millisecond
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 500
	}
	if cfg.MaxSlowListed <= 0 {
		cfg.MaxSlowListed = 5000
	}
	r := &Report{Config: cfg, Started: time.Now().UnixNano(), Kinds: map[string]int{},
		Generations: map[int]*GenStats{}, PIDs: map[int]int{}}
	a := &acc{r: r, running: running}
	var wg sync.WaitGroup
	id := 0
	for _, m := range []struct {
		mode Mode
		n    int
	}{{KeepAlive, cfg.KeepAlive}, {Fresh, cfg.Fresh}, {Sporadic, cfg.Sporadic}} {
		for i := 0; i < m.n; i++ {
			c := &client{id: id, mode: m.mode, cfg: cfg, acc: a}
			id++
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.run(ctx)
			}()
		}
	}
	wg.Wait()
	r.Stopped = time.Now().UnixNano()
	return r
}

// Once sends one request on a new connection and returns its outcome.
func Once(addr string, timeout time.Duration) Request {
	c := &client{mode: Fresh, cfg: Config{Addr: addr, Timeout: timeout}, acc: &acc{r: &Report{}}}
	cn, req := c.dial()
	if cn == nil {
		return req
	}
	defer cn.c.Close()
	req, _ = c.do(cn)
	return req
}

// acc accumulates the report.
type acc struct {
	mu      sync.Mutex
	r       *Report
	running func()
	ran     bool
}

func (a *acc) add(q Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.r
	r.Requests++
	if latency := time.Duration(q.End - q.DialStart); r.Config.Slow > 0 && latency > r.Config.Slow && len(r.Slow) < r.Config.MaxSlowListed {
		r.Slow = append(r.Slow, q)
	}
	if !q.OK {
		r.Failed++
		r.Kinds[q.Kind]++
		if len(r.Failures) < r.Config.MaxFailures {
			r.Failures = append(r.Failures, q)
		}
		return
	}
	r.OK++
	r.PIDs[q.PID]++
	g := r.Generations[q.Generation]
	if g == nil {
		g = &GenStats{PIDs: map[int]int{}, FirstStart: q.Start}
		r.Generations[q.Generation] = g
	}
	g.Requests++
	g.PIDs[q.PID]++
	g.LastStart = max(g.LastStart, q.Start)
	g.FirstStart = min(g.FirstStart, q.Start)
	g.LastDialStart = max(g.LastDialStart, q.DialStart)
	if !a.ran && a.running != nil {
		a.ran = true
		a.running()
	}
}

func (a *acc) count(f func(r *Report)) {
	a.mu.Lock()
	f(a.r)
	a.mu.Unlock()
}

type client struct {
	id   int
	mode Mode
	cfg  Config
	acc  *acc
	rnd  *rand.Rand
}

type conn struct {
	c         *net.TCPConn
	br        *bufio.Reader
	dialStart int64
	used      int
}

func (c *client) run(ctx context.Context) {
	c.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(c.id)))
	var cn *conn
	defer func() {
		if cn != nil {
			cn.c.Close()
		}
	}()
	for ctx.Err() == nil {
		pause := c.cfg.Pause
		if c.mode == Sporadic {
			pause = time.Duration(c.rnd.Int64N(int64(c.cfg.IdleMax)))
		}
		if pause > 0 && (cn != nil || c.mode == Fresh) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
		if cn != nil && !alive(cn) {
			cn.c.Close()
			cn = nil
			c.acc.count(func(r *Report) { r.IdleClosed++ })
		}
		if cn == nil {
			var failed Request
			if cn, failed = c.dial(); cn == nil {
				c.acc.add(failed)
				select { // do not spin on a refusing port
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
		q, keep := c.do(cn)
		c.acc.add(q)
		if !keep {
			cn.c.Close()
			cn = nil
		}
	}
}

func (c *client) dial() (*conn, Request) {
	start := time.Now()
	d := net.Dialer{Timeout: c.cfg.Timeout}
	nc, err := d.Dial("tcp", c.cfg.Addr)
	if err != nil {
		end := time.Now().UnixNano()
		return nil, Request{Client: c.id, Mode: c.mode, DialStart: start.UnixNano(), Start: start.UnixNano(), End: end,
			Kind: classify(err), Stage: "dial", Err: err.Error()}
	}
	c.acc.count(func(r *Report) { r.Conns++ })
	tc := nc.(*net.TCPConn)
	return &conn{c: tc, br: bufio.NewReader(tc), dialStart: start.UnixNano()}, Request{}
}

// do sends one request on cn; keep says whether cn may be reused.
func (c *client) do(cn *conn) (Request, bool) {
	start := time.Now()
	q := Request{Client: c.id, Mode: c.mode, DialStart: cn.dialStart, Start: start.UnixNano(), Reused: cn.used}
	cn.used++
	fail := func(stage string, err error) (Request, bool) {
		q.End = time.Now().UnixNano()
		q.Stage, q.Kind, q.Err = stage, classify(err), err.Error()
		return q, false
	}
	cn.c.SetDeadline(start.Add(c.cfg.Timeout))
	body := "ping " + strconv.Itoa(c.id)
	hdr := ""
	if c.mode == Fresh {
		hdr = "Connection: close\r\n"
	}
	msg := fmt.Sprintf("POST / HTTP/1.1\r\nHost: %s\r\nUser-Agent: sockd-e2e-load\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s",
		c.cfg.Addr, len(body), hdr, body)
	if _, err := io.WriteString(cn.c, msg); err != nil {
		return fail("write", err)
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		return fail("read", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fail("read", err)
	}
	q.End = time.Now().UnixNano()
	q.Status = resp.StatusCode
	q.Generation, _ = strconv.Atoi(resp.Header.Get("X-Sockd-Generation"))
	q.PID, _ = strconv.Atoi(resp.Header.Get("X-Sockd-Pid"))
	q.Worker, _ = strconv.Atoi(resp.Header.Get("X-Sockd-Worker"))
	switch {
	case resp.StatusCode != http.StatusOK:
		q.Kind, q.Err = "status", fmt.Sprintf("status %d: %.80q", resp.StatusCode, b)
		return q, false
	case q.Generation <= 0 || q.PID <= 0 || !strings.HasPrefix(string(b), "hello from pid="+strconv.Itoa(q.PID)+" "):
		q.Kind, q.Err = "bad_response", fmt.Sprintf("headers %v body %.80q", resp.Header, b)
		return q, false
	}
	q.OK = true
	if resp.Close && c.mode != Fresh {
		c.acc.count(func(r *Report) { r.ServerClosed++ })
	}
	return q, !resp.Close && c.mode != Fresh
}

// alive reports whether the server has neither closed cn nor sent anything
// unasked on it, without blocking.
func alive(cn *conn) bool {
	if cn.br.Buffered() > 0 {
		return false
	}
	raw, err := cn.c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Nothing to read: still open. 0 bytes (EOF), data or an error
		// (ECONNRESET): not reusable.
		ok = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	default:
		return "other"
	}
}
