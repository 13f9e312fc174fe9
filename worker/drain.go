package worker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Drainer serves an http.Server on listeners and drains it carefully (see
// the package documentation). ServeHTTP is built on it; use it directly to
// control when the drain starts.
type Drainer struct {
	srv      *http.Server
	opts     Options
	requests atomic.Int64
	draining atomic.Bool
	changed  chan struct{} // a connection changed state during the drain

	mu         sync.Mutex
	conns      map[net.Conn]*connInfo
	drainStart time.Time
	closedIdle int

	lns     []*trackedListener
	serving sync.WaitGroup
	ready   chan struct{}
	errs    chan error
}

// connInfo is what the drain knows of one connection.
type connInfo struct {
	idle    bool      // StateNew or StateIdle: between requests
	since   time.Time // when it became idle
	rcvd    uint64    // bytes received by then (TCP_INFO)
	known   bool      // rcvd is known
	closing bool      // closed by the drain, waiting for StateClosed
}

// NewDrainer prepares srv for a careful drain: it wraps srv.Handler (nil
// means http.DefaultServeMux) to count requests and answer with
// "Connection: close" once draining, and chains srv.ConnState to track
// connections. Call it before serving.
func NewDrainer(srv *http.Server, opts Options) *Drainer {
	d := &Drainer{
		srv:     srv,
		opts:    opts.withDefaults(),
		changed: make(chan struct{}, 1),
		conns:   make(map[net.Conn]*connInfo),
		ready:   make(chan struct{}),
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = d.wrap(h)
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		d.track(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	return d
}

func (d *Drainer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
		d.requests.Add(1)
	})
}

func (d *Drainer) track(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	switch s {
	case http.StateNew, http.StateIdle:
		ci := &connInfo{idle: true, since: time.Now()}
		ci.rcvd, ci.known = receivedBytes(c)
		d.conns[c] = ci
	case http.StateActive:
		d.conns[c] = &connInfo{}
	case http.StateHijacked, http.StateClosed:
		delete(d.conns, c)
	}
	d.mu.Unlock()
	if d.draining.Load() {
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
}

// Requests returns the number of requests served so far.
func (d *Drainer) Requests() int64 { return d.requests.Load() }

// Start serves srv on every listener, one goroutine each.
func (d *Drainer) Start(ls []net.Listener) {
	d.errs = make(chan error, len(ls))
	var accepting sync.WaitGroup
	accepting.Add(len(ls))
	for _, l := range ls {
		tl := &trackedListener{Listener: l, accepting: accepting.Done}
		d.lns = append(d.lns, tl)
		d.serving.Add(1)
		go d.serve(tl)
	}
	go func() {
		accepting.Wait()
		close(d.ready)
	}()
}

func (d *Drainer) serve(l *trackedListener) {
	defer d.serving.Done()
	err := d.srv.Serve(l)
	if !d.draining.Load() {
		d.errs <- fmt.Errorf("worker: serve %s: %w", l.Addr(), err)
	}
}

// Ready is closed once every Serve loop waits in Accept.
func (d *Drainer) Ready() <-chan struct{} { return d.ready }

// Err receives the error of a Serve loop that stopped before the drain.
func (d *Drainer) Err() <-chan error { return d.errs }

// Drain stops accepting and returns once every connection is closed, after
// the policy of the package documentation. When ctx is done first, it
// closes the remaining connections and returns an error. Call it once.
func (d *Drainer) Drain(ctx context.Context) error {
	d.mu.Lock()
	d.drainStart = time.Now()
	d.draining.Store(true)
	atStart := len(d.conns)
	d.mu.Unlock()
	d.opts.Logger.Printf("draining: %d connections open", atStart)
	if d.opts.OnDrain != nil {
		d.opts.OnDrain()
	}
	for _, l := range d.lns {
		l.close()
	}
	d.serving.Wait() // every accepted connection is tracked from here on
	for {
		open, next := d.sweep(time.Now())
		if open == 0 {
			break
		}
		if err := d.waitChange(ctx, next); err != nil {
			d.srv.Close()
			return fmt.Errorf("worker: drain deadline passed with %d connections open: %w", open, err)
		}
	}
	d.srv.Close()
	d.mu.Lock()
	closed := d.closedIdle
	d.mu.Unlock()
	d.opts.Logger.Printf("drained in %v: %d requests served, %d idle connections closed",
		time.Since(d.drainStart).Round(time.Millisecond), d.Requests(), closed)
	return nil
}

// waitChange waits for a state change, for next (if > 0) or for ctx.
func (d *Drainer) waitChange(ctx context.Context, next time.Duration) error {
	var timeout <-chan time.Time
	if next > 0 {
		t := time.NewTimer(next)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-d.changed:
	case <-timeout:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// sweep closes the connections idle for the grace period and returns how
// many are open and when the next one's grace ends (0: none pending).
func (d *Drainer) sweep(now time.Time) (open int, next time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c, ci := range d.conns {
		if !ci.idle || ci.closing {
			continue
		}
		wait := ci.since.Add(d.opts.IdleGrace).Sub(now)
		if start := d.drainStart.Add(d.opts.IdleGrace).Sub(now); start > wait {
			wait = start
		}
		if wait <= 0 && quiet(c, ci.rcvd, ci.known) {
			ci.closing = true
			d.closedIdle++
			c.Close()
			continue
		}
		if wait <= 0 { // data arrived: the server is about to read it
			ci.since = now
			ci.rcvd, ci.known = receivedBytes(c)
			wait = d.opts.IdleGrace
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	return len(d.conns), next
}

// trackedListener reports its first Accept and closes once.
type trackedListener struct {
	net.Listener
	accepting func()
	once      sync.Once
	closeOnce sync.Once
}

func (l *trackedListener) Accept() (net.Conn, error) {
	l.once.Do(l.accepting)
	return l.Listener.Accept()
}

func (l *trackedListener) Close() error {
	l.close()
	return nil
}

// close closes the worker's own duplicate of the socket; the socket itself
// stays open in sockd and keeps queueing connections for other workers.
func (l *trackedListener) close() {
	l.closeOnce.Do(func() { l.Listener.Close() })
}
