package worker

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state (newline-separated VAR=VALUE assignments) to
// NOTIFY_SOCKET, a unix datagram socket path or "@abstract" name. It is a
// no-op returning nil when NOTIFY_SOCKET is unset. NOTIFY_SOCKET is left
// set so later notifications work.
func Notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		first, _, _ := strings.Cut(state, "\n")
		return fmt.Errorf("worker: notify %q: %w", first, err)
	}
	return nil
}

// Ready sends READY=1: the worker accepts connections.
func Ready() error { return Notify(daemon.SdNotifyReady) }

// Stopping sends STOPPING=1. Send it only when exiting on the worker's own
// decision, so that sockd starts a replacement before this worker is gone;
// not when draining because sockd sent SIGTERM.
func Stopping() error { return Notify(daemon.SdNotifyStopping) }

// Status sends STATUS=s, a one-line human-readable status.
func Status(s string) error { return Notify("STATUS=" + s) }

// ReportRequests sends sockd's SOCKD_REQUESTS=n: the cumulative number of
// requests this worker has served.
func ReportRequests(n int64) error {
	return Notify("SOCKD_REQUESTS=" + strconv.FormatInt(n, 10))
}

// Slot returns SOCKD_WORKER, the worker's slot index (0-based), or -1 when
// unset or invalid (not run by sockd).
func Slot() int { return envInt("SOCKD_WORKER", 0) }

// Generation returns SOCKD_GENERATION (1-based), or -1 when unset or
// invalid.
func Generation() int { return envInt("SOCKD_GENERATION", 1) }

// envInt returns the integer in env var k if it is >= min, else -1.
func envInt(k string, min int) int {
	n, err := strconv.Atoi(os.Getenv(k))
	if err != nil || n < min {
		return -1
	}
	return n
}

// WatchdogInterval returns how often to send WATCHDOG=1: half of
// WATCHDOG_USEC, or 0 when the watchdog is off for this process (unset,
// invalid, or WATCHDOG_PID names another process).
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}
