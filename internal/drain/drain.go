// Package drain is the careful end of an HTTP/1.1 server's connections,
// shared by package worker (net/http servers) and sockd's built-in demo
// worker (its own small HTTP server).
//
// HTTP/1.1 has no GOAWAY: a server that closes an idle keep-alive
// connection races a client that is sending its next request on it, and
// that request is lost (a reset, or a 502 from a proxy that will not retry
// a POST). So a drain (RFC 9112, section 9.6) goes:
//
//  1. The server stops accepting (it closes only its own copy of the
//     listening socket: sockd keeps it open for the other workers).
//  2. Every answer from now on says "Connection: close" (Draining), so a
//     busy connection ends after its next request, the client knowing it.
//  3. A connection idle for IdleGrace (counted from when it became idle,
//     and at least from the drain's start) is closed only if nothing
//     arrived meanwhile: the kernel's count of bytes received on it
//     (TCP_INFO tcpi_bytes_received, tcp(7)) is the one noted when it went
//     idle, and nothing waits unread (SIOCINQ). If something arrived, a
//     request is on its way: the server reads and answers it (with
//     "Connection: close"), and the grace starts over.
//  4. Done when no connection is open, or when the context ends (then the
//     rest are closed).
//
// The race is not gone, only narrowed to a client that sends exactly
// while the server closes (between the check and close(2), microseconds),
// after the connection had been idle for the whole grace.
package drain

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleGrace is how long a connection must stay idle during a drain
// before it is closed.
const DefaultIdleGrace = time.Second

// Tracker follows a server's connections and drains them. The server
// tells it when a connection becomes idle (new, or between requests),
// active (a request began) and gone; its zero value is not usable: use
// New.
type Tracker struct {
	grace    time.Duration
	draining atomic.Bool
	changed  chan struct{} // a connection changed state during the drain

	mu         sync.Mutex
	conns      map[net.Conn]*conn
	start      time.Time // of the drain
	closedIdle int
}

// conn is what the drain knows of one connection.
type conn struct {
	idle    bool      // between requests
	since   time.Time // when it became idle
	rcvd    uint64    // bytes received by then (TCP_INFO)
	known   bool      // rcvd is known
	closing bool      // closed by the drain, waiting for Gone
}

// New makes a Tracker that closes a connection idle for grace during the
// drain (DefaultIdleGrace if 0).
func New(grace time.Duration) *Tracker {
	if grace <= 0 {
		grace = DefaultIdleGrace
	}
	return &Tracker{grace: grace, changed: make(chan struct{}, 1), conns: map[net.Conn]*conn{}}
}

// Idle: c is new, or finished a request and waits for the next one.
func (t *Tracker) Idle(c net.Conn) {
	ci := &conn{idle: true, since: time.Now()}
	ci.rcvd, ci.known = ReceivedBytes(c)
	t.set(c, ci)
}

// Active: a request began on c.
func (t *Tracker) Active(c net.Conn) { t.set(c, &conn{}) }

// Gone: c is closed (or hijacked: no longer the server's).
func (t *Tracker) Gone(c net.Conn) { t.set(c, nil) }

func (t *Tracker) set(c net.Conn, ci *conn) {
	t.mu.Lock()
	if old := t.conns[c]; old != nil && old.closing && ci != nil {
		ci.closing = true // closed by the drain: it stays closing
	}
	if ci == nil {
		delete(t.conns, c)
	} else {
		t.conns[c] = ci
	}
	t.mu.Unlock()
	if t.draining.Load() {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// Draining reports whether the drain has begun: answers say
// "Connection: close".
func (t *Tracker) Draining() bool { return t.draining.Load() }

// Begin starts the drain and returns how many connections are open. Call
// it before closing the listeners, so that no answer after it keeps a
// connection alive.
func (t *Tracker) Begin() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = time.Now()
	t.draining.Store(true)
	return len(t.conns)
}

// Wait drains what is open once the server accepts no more (every
// connection it accepted was told to the Tracker): it closes idle ones as
// the package documentation says and returns when none is open, with how
// many idle ones it closed. When ctx ends first it closes the rest and
// returns ctx's error and how many were still open.
func (t *Tracker) Wait(ctx context.Context) (closedIdle, left int, err error) {
	for {
		open, next := t.sweep(time.Now())
		if open == 0 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.closedIdle, 0, nil
		}
		var timeout <-chan time.Time
		if next > 0 {
			tm := time.NewTimer(next)
			timeout = tm.C
			defer tm.Stop()
		}
		select {
		case <-t.changed:
		case <-timeout:
		case <-ctx.Done():
			t.mu.Lock()
			for c := range t.conns {
				c.Close()
			}
			closed := t.closedIdle
			t.mu.Unlock()
			return closed, open, ctx.Err()
		}
	}
}

// sweep closes the connections idle for the grace period and returns how
// many are open and when the next one's grace ends (0: none pending).
func (t *Tracker) sweep(now time.Time) (open int, next time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, ci := range t.conns {
		if !ci.idle || ci.closing {
			continue
		}
		wait := max(ci.since.Add(t.grace).Sub(now), t.start.Add(t.grace).Sub(now))
		if wait <= 0 && Quiet(c, ci.rcvd, ci.known) {
			ci.closing = true
			t.closedIdle++
			c.Close()
			continue
		}
		if wait <= 0 { // data arrived: the server is about to read it
			ci.since = now
			ci.rcvd, ci.known = ReceivedBytes(c)
			wait = t.grace
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	return len(t.conns), next
}

// Open is how many connections the server has open.
func (t *Tracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}
