package worker

import (
	"io"
	"log"
	"os"
	"syscall"
	"time"
)

const (
	// DefaultDrainTimeout bounds a drain. Keep it below sockd's stop
	// timeout, after which sockd sends SIGKILL.
	DefaultDrainTimeout = 25 * time.Second
	// DefaultIdleGrace is how long a connection must stay idle during a
	// drain before it is closed; see the package documentation.
	DefaultIdleGrace = time.Second
	// DefaultReportInterval is the shortest interval between two
	// SOCKD_REQUESTS notifications.
	DefaultReportInterval = time.Second
)

// Options tune ServeHTTP and Drainer. The zero value is ready to use.
type Options struct {
	// DrainTimeout bounds the drain; 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// IdleGrace is how long an idle connection may stay open during the
	// drain; 0 means DefaultIdleGrace.
	IdleGrace time.Duration
	// ReportInterval is the shortest interval between SOCKD_REQUESTS
	// notifications; 0 means DefaultReportInterval.
	ReportInterval time.Duration
	// Logger receives one line per event (ready, drain start and end);
	// nil discards.
	Logger *log.Logger
	// Signals start the drain; nil means SIGTERM and SIGINT, an empty
	// non-nil slice none (only ctx starts it).
	Signals []os.Signal
	// OnDrain, if set, is called when the drain starts, for what the
	// drain does not track (hijacked connections, background jobs).
	OnDrain func()
}

func (o Options) withDefaults() Options {
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.IdleGrace <= 0 {
		o.IdleGrace = DefaultIdleGrace
	}
	if o.ReportInterval <= 0 {
		o.ReportInterval = DefaultReportInterval
	}
	if o.Logger == nil {
		o.Logger = log.New(io.Discard, "", 0)
	}
	if o.Signals == nil {
		o.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	return o
}
