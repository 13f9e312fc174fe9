// Package resources tells an error that says the system or one of
// sockd's limits ran short of something (descriptors, processes, memory,
// disk space) from any other error, and names the limit that is the
// likely cause, as getrlimit(2) reports it.
package resources

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Shortage is an error that says what ran short. It wraps the error it
// describes.
type Shortage struct {
	// What names it: "RLIMIT_NOFILE 64", "memory", "open files (the
	// system's file table is full)".
	What string
	Err  error
}

func (s *Shortage) Error() string { return s.Err.Error() }
func (s *Shortage) Unwrap() error { return s.Err }

// Check returns err as a *Shortage when it says something ran short,
// reading the limit that applies now, and err itself otherwise.
func Check(err error) error {
	if err == nil {
		return nil
	}
	var s *Shortage
	if errors.As(err, &s) {
		return err
	}
	if what := ShortOf(err); what != "" {
		return &Shortage{What: what, Err: err}
	}
	return err
}

// Of returns what err says ran short, from a *Shortage in its chain, or
// "".
func Of(err error) string {
	var s *Shortage
	if errors.As(err, &s) {
		return s.What
	}
	return ""
}

// ShortOf says which resource err says the system or a limit ran short
// of, naming the limit that may be the cause ("RLIMIT_NOFILE 64"), or ""
// for any other error. It reads the process's current limits.
func ShortOf(err error) string {
	var lim int
	var name string
	switch {
	case errors.Is(err, unix.EMFILE):
		lim, name = unix.RLIMIT_NOFILE, "RLIMIT_NOFILE"
	case errors.Is(err, unix.EAGAIN):
		lim, name = unix.RLIMIT_NPROC, "RLIMIT_NPROC"
	case errors.Is(err, unix.ENFILE):
		return "open files (the system's file table is full)"
	case errors.Is(err, unix.ENOMEM):
		return "memory"
	case errors.Is(err, unix.ENOSPC):
		return "space (a file system is full)"
	default:
		return ""
	}
	var rl unix.Rlimit
	if unix.Getrlimit(lim, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
		return fmt.Sprintf("%s %d", name, rl.Cur)
	}
	return name
}
