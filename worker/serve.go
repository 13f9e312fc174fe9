package worker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"time"
)

// ServeHTTP serves srv on every listener until SIGTERM or SIGINT
// (Options.Signals), ctx cancellation or a failing Serve loop, then drains
// carefully (see the package documentation).
//
// It sends READY=1 once every Serve loop accepts, WATCHDOG=1 every half
// WATCHDOG_USEC when the watchdog is on, SOCKD_REQUESTS=n at most once per
// Options.ReportInterval when the count changed (and once after the
// drain), and STATUS=draining when the drain begins. When the drain is the
// worker's own decision (ctx cancelled or a Serve loop failed) it sends
// STOPPING=1 first, so sockd starts a replacement; not when a signal
// ordered it. Notification failures are logged, not returned. Signals
// received during the drain are ignored: sockd ends an overlong drain with
// SIGKILL after its stop timeout.
//
// It returns nil after a clean drain started by a signal or ctx, and an
// error when a Serve loop failed or the drain deadline passed (the
// connections still open are then closed). srv's Handler and ConnState
// are wrapped, see NewDrainer.
func ServeHTTP(ctx context.Context, srv *http.Server, ls []net.Listener, opts Options) error {
	if len(ls) == 0 {
		return errors.New("worker: no listeners to serve")
	}
	opts = opts.withDefaults()
	sigCtx, stop := ctx, context.CancelFunc(func() {})
	if len(opts.Signals) > 0 { // NotifyContext without signals would take them all
		sigCtx, stop = signal.NotifyContext(ctx, opts.Signals...)
	}
	defer stop()

	d := NewDrainer(srv, opts)
	d.Start(ls)
	rep := &reporter{d: d, log: opts}
	loops, stopLoops := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); rep.run(loops) }()
	go func() { defer wg.Done(); watchdog(loops, opts) }()

	serveErr := wait(sigCtx, d, opts)
	if serveErr != nil || ctx.Err() != nil {
		logErr(opts, Stopping())
	}
	logErr(opts, Status("draining"))
	dctx, cancel := context.WithTimeout(context.Background(), opts.DrainTimeout)
	defer cancel()
	drainErr := d.Drain(dctx)

	stopLoops()
	wg.Wait()
	rep.flush()
	return errors.Join(serveErr, drainErr)
}

// wait sends READY=1 when the Serve loops run and returns when the drain
// must start: nil on ctx, the error of a Serve loop that failed.
func wait(ctx context.Context, d *Drainer, opts Options) error {
	select {
	case <-d.Ready():
		opts.Logger.Printf("ready: serving %d listeners", len(d.lns))
		logErr(opts, Ready())
	case err := <-d.Err():
		return err
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-d.Err():
		return err
	case <-ctx.Done():
		opts.Logger.Printf("stopping: %v", context.Cause(ctx))
		return nil
	}
}

// reporter sends SOCKD_REQUESTS when the count changed.
type reporter struct {
	d    *Drainer
	log  Options
	last int64
}

func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(r.log.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.flush()
		}
	}
}

func (r *reporter) flush() {
	if n := r.d.Requests(); n != r.last {
		r.last = n
		logErr(r.log, ReportRequests(n))
	}
}

// watchdog sends WATCHDOG=1 every half WATCHDOG_USEC until ctx is done.
func watchdog(ctx context.Context, opts Options) {
	every := WatchdogInterval()
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			logErr(opts, Notify("WATCHDOG=1"))
		}
	}
}

func logErr(opts Options, err error) {
	if err != nil {
		opts.Logger.Print(err)
	}
}
