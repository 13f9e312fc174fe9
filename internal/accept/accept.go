// Package accept keeps a server's accept(2) loop alive while the system
// or the process runs short of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM, ECONNABORTED): the loop waits, 5 ms doubling up to 1 s
// as net/http's Server does, and tries again, logging the failures at
// most once every 10 s. Without it one accept failing with EMFILE ends the
// loop, and sockd would no longer answer its control socket or its
// metrics scrapes once the shortage has passed.
package accept

import (
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Backoff is one accept loop's state. Its zero value is ready; Log may be
// nil.
type Backoff struct {
	Log   hclog.Logger
	What  string // names the socket in the log, e.g. "control socket"
	delay time.Duration
	n     int
	last  time.Time
	sleep func(time.Duration) // time.Sleep; tests replace it
}

const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
	logEvery = 10 * time.Second
)

// Transient reports whether an accept error is a shortage that may pass.
func Transient(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Retry reports whether the loop should accept again after err: for a
// transient error it waits first and returns true; for any other it
// returns false.
func (b *Backoff) Retry(err error) bool {
	if !Transient(err) {
		return false
	}
	b.delay = min(max(2*b.delay, minDelay), maxDelay)
	b.n++
	if now := time.Now(); b.last.IsZero() || now.Sub(b.last) >= logEvery {
		if b.Log != nil {
			b.Log.Error("accept failed; trying again", "socket", b.What, "error", err, "failures", b.n, "retry_in", b.delay)
		}
		b.n, b.last = 0, now
	}
	sleep := b.sleep
	if sleep == nil {
		sleep = time.Sleep // a backoff, not a synchronisation
	}
	sleep(b.delay)
	return true
}

// OK says an accept succeeded: the next failure waits the shortest time.
func (b *Backoff) OK() { b.delay = 0 }
