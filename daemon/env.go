package daemon

import (
	"context"
	"time"

	"github.com/sockd/sockd/pool"
)

// env is the machine's window on the world: running a task off the loop,
// the new sockd of an upgrade and the old one of a takeover (package
// handoff), systemd (sd_notify), the control socket and the metrics.
// Daemon is the real one; machine_test.go has a fake.
type env interface {
	// async runs f off the loop; post hands the loop a request.
	async(f func())
	post(r request) bool
	// startSuccessor starts the sockd binary at sockd's own path on the
	// sockets, told s's generation and size (handoff.Start).
	startSuccessor(s pool.Status) (successor, error)
	// predecessor is the old sockd this one takes over from.
	predecessor() predecessor
	// notify tells systemd state while this sockd talks to it; lastWord
	// tells it one last thing and stops talking (the new sockd will);
	// resumeTalking talks again, starting with state.
	notify(state string)
	lastWord(state string)
	resumeTalking(state string)
	// takeCharge: a new sockd that took over talks to systemd (READY=1),
	// serves the control socket and becomes systemd's child again.
	takeCharge()
	// serveControl and stopControl start and end answering the control
	// socket (requests under way are answered).
	serveControl()
	stopControl()
	// handedOver: the new sockd of the upgrade committed; it is in charge.
	handedOver()
	// stopSuccessor passes a stop on to the new sockd that committed
	// while this one was told to stop (SIGTERM).
	stopSuccessor()
	// counted counts a reload or upgrade's result in the metrics.
	counted(what, result string)
}

// successor is a new sockd starting on this one's sockets
// (*handoff.Upgrade).
type successor interface {
	PID() int
	WaitReady(ctx context.Context) error
	Commit() error
	Abort(grace time.Duration)
}

// predecessor is the old sockd this one takes over from
// (*handoff.Child).
type predecessor interface {
	Ready() error
	WaitCommit(ctx context.Context) error
	Close()
}
