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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialPause is how long a closed-loop client waits after a failed connect,
// so that it does not spin on a port that refuses.
const dialPause = 10 * time.Millisecond

// client is one client goroutine.
type client struct {
	r    *Run
	id   int
	mode Mode
	req  []byte
	rnd  *rand.Rand // Sporadic pauses

	interval time.Duration // paced: time between two requests of this client
	next     time.Time     // paced: when the next request is due

	conn       *net.TCPConn
	br         *bufio.Reader
	connStart  time.Duration // when conn began to connect, since the run started
	uses       int32         // requests sent on conn so far
	dialFailed bool          // the last request's connect failed
	resp       response
	records    []Record
}

// request is the bytes of one request.
func request(cfg Config, close bool) []byte {
	b := []byte(cfg.Method + " " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: sockd-load\r\n")
	if cfg.Body != nil {
		b = append(b, "Content-Type: text/plain\r\nContent-Length: "+strconv.Itoa(len(cfg.Body))+"\r\n"...)
	}
	if close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, cfg.Body...)
}

func (c *client) loop(ctx context.Context) {
	defer c.r.wg.Done()
	defer c.closeConn()
	c.records = make([]Record, 0, 4096)
	defer func() { c.r.parts[c.id] = c.records }()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		start, ok := c.wait(ctx, timer)
		if !ok {
			return
		}
		rec := c.do(start)
		c.records = append(c.records, rec)
		c.r.count(rec)
		if c.interval == 0 && c.dialFailed {
			sleep(ctx, timer, dialPause)
		}
	}
}

// wait waits until the next request is due and returns when it was due;
// false when ctx ended first.
func (c *client) wait(ctx context.Context, timer *time.Timer) (time.Time, bool) {
	if c.interval > 0 {
		due := c.next
		c.next = c.next.Add(c.interval)
		if d := time.Until(due); d > 0 && !sleep(ctx, timer, d) {
			return time.Time{}, false
		}
		return due, true
	}
	pause := c.r.cfg.Pause
	if c.mode == Sporadic {
		pause = time.Duration(c.rnd.Int64N(int64(c.r.cfg.IdleMax)))
	}
	if pause > 0 && !sleep(ctx, timer, pause) {
		return time.Time{}, false
	}
	return time.Now(), true
}

// sleep waits d (pacing a load, not synchronising anything) or until ctx
// is done; false when ctx ended first.
func sleep(ctx context.Context, timer *time.Timer, d time.Duration) bool {
	timer.Reset(d)
	select {
	case <-ctx.Done():
		timer.Stop()
		return false
	case <-timer.C:
		return true
	}
}

func (c *client) closeConn() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br, c.uses = nil, nil, 0
	}
}

// do sends one request; start is when it was due.
func (c *client) do(start time.Time) Record {
	r := c.r
	rec := Record{Start: start.Sub(r.t0), Client: int32(c.id), Mode: c.mode}
	deadline := time.Now().Add(r.cfg.Timeout)
	if c.conn != nil && r.cfg.Careful && !c.idle() {
		c.closeConn()
		r.idleClosed.Add(1)
	}
	if c.conn == nil {
		err := c.dial(deadline)
		if c.dialFailed = err != nil; err != nil {
			rec.Conn = c.connStart
			return c.finish(rec, start, classify(err), err)
		}
	}
	rec.Conn, rec.Reused = c.connStart, c.uses
	c.uses++
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write(c.req); err != nil {
		return c.finish(rec, start, classify(err), err)
	}
	resp := &c.resp
	if err := resp.read(c.br, r.cfg.Check != nil); err != nil {
		return c.finish(rec, start, classify(err), err)
	}
	rec.Status, rec.PID, rec.Gen = int16(resp.status), int32(resp.pid), int32(resp.gen)
	keep := c.mode != Fresh && !resp.closeAfter
	if !keep {
		c.closeConn()
	}
	if resp.status < 200 || resp.status > 299 {
		return c.finish(rec, start, BadStatus, fmt.Errorf("status %d", resp.status))
	}
	if r.cfg.Check != nil {
		if err := r.cfg.Check(resp.httpResponse(), resp.body); err != nil {
			return c.finish(rec, start, Invalid, err)
		}
	}
	if c.mode != Fresh && resp.closeAfter {
		r.serverClosed.Add(1)
	}
	return c.finish(rec, start, OK, nil)
}

// finish completes rec; a failed request's connection is not reused.
func (c *client) finish(rec Record, start time.Time, k Kind, err error) Record {
	rec.Kind = k
	rec.Latency = time.Since(start)
	if k != OK {
		rec.Err = err.Error()
		c.closeConn()
	}
	return rec
}

func (c *client) dial(deadline time.Time) error {
	c.connStart = time.Since(c.r.t0)
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial("tcp", c.r.cfg.Addr)
	if err != nil {
		return err
	}
	c.r.conns.Add(1)
	c.conn, c.br, c.uses = nc.(*net.TCPConn), bufio.NewReaderSize(nc, 4096), 0
	return nil
}

// idle reports whether the kept-alive connection is still open and quiet:
// the server has neither closed it nor sent anything unasked on it. It
// never blocks.
func (c *client) idle() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	raw, err := c.conn.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Nothing to read: still open. EOF (0 bytes), data or an error
		// (ECONNRESET): not reusable.
		quiet = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true
	})
	return err == nil && quiet
}

// classify maps an error of a request to its Kind.
func classify(err error) Kind {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Timeout
	case errors.Is(err, errTruncated):
		return Truncated
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Closed
	case errors.Is(err, errMalformed):
		return Invalid
	}
	return Other
}

// httpResponse is the response as net/http would give it, for Check.
func (p *response) httpResponse() *http.Response {
	return &http.Response{Status: strconv.Itoa(p.status) + " " + http.StatusText(p.status), StatusCode: p.status,
		Proto: "HTTP/1." + strconv.Itoa(p.minor), ProtoMajor: 1, ProtoMinor: p.minor, Header: p.header,
		Body: http.NoBody, ContentLength: int64(len(p.body)), Close: p.closeAfter}
}
