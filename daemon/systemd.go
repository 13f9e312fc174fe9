package daemon

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// notifier sends sd_notify(3) messages to systemd while on: a new sockd
// only once the old one made it the main pid, an old one no longer once
// it handed over.
//
// While systemd waits for READY=1 (from the start until the first
// generation is ready, and from RELOADING=1 until the reload's outcome)
// it also sends EXTEND_TIMEOUT_USEC= every extendEvery: how long that takes
// is sockd's to bound (its ready timeout, the unready and crash limits, a
// rolling reload's batches and soak), and systemd's TimeoutStartSec=
// (which bounds a reload too) would otherwise report a timeout, and kill
// `sockd reload --wait`, while sockd finishes the work anyway.
type notifier struct {
	mu      sync.Mutex
	on      bool
	waiting chan struct{} // closed when systemd stops waiting; nil: not waiting
	every   time.Duration // extendEvery, unless a test sets it
}

// Extension: every extendEvery, systemd's timer is set to extendBy from
// then.
const (
	extendEvery = 10 * time.Second
	extendBy    = 30 * time.Second
)

// wait starts the extensions (idempotent; nothing without systemd).
func (n *notifier) wait() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.waiting != nil || os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	done := make(chan struct{})
	n.waiting = done
	if n.on { // at once: systemd's own timeout may be shorter than extendEvery
		send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extendBy.Microseconds()))
	}
	every := cmp.Or(n.every, extendEvery)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// Under the lock: none goes out after the READY=1 that
				// ended the wait.
				n.mu.Lock()
				if n.waiting == done && n.on {
					send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extendBy.Microseconds()))
				}
				n.mu.Unlock()
			}
		}
	}()
}

// track follows what systemd is told: RELOADING=1 makes it wait, READY=1
// and STOPPING=1 end the wait.
func (n *notifier) track(state string) {
	lines := strings.Split(state, "\n")
	switch {
	case slices.Contains(lines, "READY=1") || slices.Contains(lines, "STOPPING=1"):
		n.mu.Lock()
		if n.waiting != nil {
			close(n.waiting)
			n.waiting = nil
		}
		n.mu.Unlock()
	case slices.Contains(lines, "RELOADING=1"):
		n.wait()
	}
}

func (n *notifier) set(on bool) {
	n.mu.Lock()
	n.on = on
	n.mu.Unlock()
}

func (n *notifier) isOn() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.on
}

// lastWord sends state and turns the notifier off, with nothing sent in
// between.
func (n *notifier) lastWord(state string) {
	n.mu.Lock()
	if n.on {
		send(state)
	}
	n.on = false
	n.mu.Unlock()
	n.track(state)
}

// Notify sends state if the notifier is on. What it means for systemd's
// wait is followed after it was sent: an extension counts only once
// systemd is in the state it extends (RELOADING=1 first).
func (n *notifier) Notify(state string) {
	n.mu.Lock()
	if n.on {
		send(state)
	}
	n.mu.Unlock()
	n.track(state)
}

// send is sd_notify(3) (a variable for the tests).
var send = func(state string) { sddaemon.SdNotify(false, state) }

// watchdog pings systemd's watchdog (WatchdogSec=) only while the pool's
// loop answers and some worker is ready, so a wedged or workerless sockd
// gets restarted.
func (d *Daemon) watchdog(ctx context.Context) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, interval/3)
			if d.pool.Healthy(hctx) {
				d.sd.Notify(sddaemon.SdNotifyWatchdog)
			}
			cancel()
		}
	}
}
