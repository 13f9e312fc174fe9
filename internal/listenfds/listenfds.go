// Package listenfds reads the variables of socket activation,
// sd_listen_fds(3) (https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html):
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. It is the one reading that
// both sockd (activation.Inherit) and its Go workers (package worker)
// use; it looks at no descriptor.
package listenfds

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Start is SD_LISTEN_FDS_START: the first passed descriptor.
const Start = 3

// DefaultName is what sd_listen_fds_with_names(3) reports for a socket
// without a name.
const DefaultName = "unknown"

var (
	// ErrNone: no sockets were passed (LISTEN_FDS unset or empty, or 0
	// with this process's LISTEN_PID).
	ErrNone = errors.New("no sockets passed (LISTEN_FDS is not set)")
	// ErrNotOurs: LISTEN_PID names another process, or is missing; the
	// descriptors were meant for someone else and must be left alone.
	ErrNotOurs = errors.New("the sockets are not ours")
)

// Parse reads the variables through getenv for the process pid and
// returns the names of the passed descriptors, Start, Start+1, …, in
// order (DefaultName where LISTEN_FDNAMES gives none). More than max
// descriptors is an error. Every error is one line naming the variable.
func Parse(getenv func(string) string, pid, max int) ([]string, error) {
	fdsVar := getenv("LISTEN_FDS")
	if fdsVar == "" {
		return nil, ErrNone
	}
	// LISTEN_PID first, as sd_listen_fds(3) reads it: variables meant for
	// another process are not this one's to judge, whatever they say.
	pidVar := getenv("LISTEN_PID")
	if pidVar == "" {
		// sd_listen_fds(3) takes nothing without LISTEN_PID either: the
		// variables may have leaked from a parent's environment.
		return nil, fmt.Errorf("LISTEN_FDS=%s is set but LISTEN_PID is not: %w", fdsVar, ErrNotOurs)
	}
	p, err := strconv.Atoi(pidVar)
	if err != nil || p <= 0 {
		return nil, fmt.Errorf("invalid LISTEN_PID=%q: not a process id", pidVar)
	}
	if p != pid {
		return nil, fmt.Errorf("LISTEN_PID=%d: the sockets are for that process, not this process (pid %d; started through a wrapper that forked instead of exec?): %w", p, pid, ErrNotOurs)
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("invalid LISTEN_FDS=%q: not a count of descriptors", fdsVar)
	}
	if n == 0 {
		if v := getenv("LISTEN_FDNAMES"); v != "" {
			return nil, fmt.Errorf("LISTEN_FDNAMES has %d names for LISTEN_FDS=0", strings.Count(v, ":")+1)
		}
		return nil, ErrNone // zero, for this very process: nothing passed
	}
	if n > max {
		return nil, fmt.Errorf("LISTEN_FDS=%d is more than the %d accepted", n, max)
	}
	names := make([]string, n)
	if v := getenv("LISTEN_FDNAMES"); v != "" {
		got := strings.Split(v, ":")
		if len(got) != n {
			return nil, fmt.Errorf("LISTEN_FDNAMES has %d names for LISTEN_FDS=%d", len(got), n)
		}
		copy(names, got)
	}
	for i, name := range names {
		if name == "" {
			names[i] = DefaultName
		}
	}
	return names, nil
}
