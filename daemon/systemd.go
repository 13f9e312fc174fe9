package daemon

import (
	"context"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// notifier sends sd_notify(3) messages to systemd while on: a new sockd
// only once the old one made it the main pid, an old one no longer once
// it handed over.
type notifier struct {
	mu sync.Mutex
	on bool
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
	defer n.mu.Unlock()
	if n.on {
		sddaemon.SdNotify(false, state)
	}
	n.on = false
}

// Notify sends state if the notifier is on.
func (n *notifier) Notify(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.on {
		sddaemon.SdNotify(false, state)
	}
}

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
