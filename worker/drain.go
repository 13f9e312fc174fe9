package worker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockd/sockd/internal/drain"
)

// Drainer serves an http.Server on listeners and drains it carefully (see
// the package documentation). ServeHTTP is built on it; use it directly to
// control when the drain starts.
type Drainer struct {
	srv      *http.Server
	opts     Options
	requests atomic.Int64
	conns    *drain.Tracker

	lns     []*trackedListener
	serving sync.WaitGroup
	ready   chan struct{}
	errs    chan error
}

// NewDrainer prepares srv for a careful drain: it wraps srv.Handler (nil
// means http.DefaultServeMux) to count requests and answer with
// "Connection: close" once draining, and chains srv.ConnState to track
// connections. Call it before serving.
func NewDrainer(srv *http.Server, opts Options) *Drainer {
	d := &Drainer{srv: srv, opts: opts.withDefaults(), ready: make(chan struct{})}
	d.conns = drain.New(d.opts.IdleGrace)
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
		if d.conns.Draining() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
		d.requests.Add(1)
	})
}

func (d *Drainer) track(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew, http.StateIdle:
		d.conns.Idle(c)
	case http.StateActive:
		d.conns.Active(c)
	case http.StateHijacked, http.StateClosed:
		d.conns.Gone(c)
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
	if !d.conns.Draining() {
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
	start := time.Now()
	atStart := d.conns.Begin()
	d.opts.Logger.Printf("draining: %d connections open", atStart)
	if d.opts.OnDrain != nil {
		d.opts.OnDrain()
	}
	for _, l := range d.lns {
		l.close()
	}
	d.serving.Wait() // every accepted connection is tracked from here on
	closed, left, err := d.conns.Wait(ctx)
	d.srv.Close()
	if err != nil {
		return fmt.Errorf("worker: drain deadline passed with %d connections open: %w", left, err)
	}
	d.opts.Logger.Printf("drained in %v: %d requests served, %d idle connections closed",
		time.Since(start).Round(time.Millisecond), d.Requests(), closed)
	return nil
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
