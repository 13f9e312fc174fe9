// Package fdtest checks, for tests, the descriptors of the test process
// itself: which are open (from /proc/self/fd), which ones a piece of code
// left open that it should have closed, and the flags and identity of one.
//
// A count taken before and after the code under test is only meaningful
// when nothing else in the process opens or closes descriptors meanwhile:
// tests that use it do not run in parallel, and Open warms up what the Go
// runtime opens lazily (the network poller) before it first counts.
package fdtest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

var warm sync.Once

// Open lists the process's open descriptors, sorted.
func Open(t testing.TB) []int {
	t.Helper()
	warm.Do(func() {
		// The first pollable file starts the runtime's poller, whose own
		// descriptors then stay open for good.
		if r, w, err := os.Pipe(); err == nil {
			r.Close()
			w.Close()
		}
	})
	all, err := procfs.FDs(os.Getpid())
	if err != nil {
		t.Fatalf("list own descriptors: %v", err)
	}
	// The listing includes the descriptor of the directory it read,
	// closed by now.
	fds := all[:0]
	for _, fd := range all {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

// Leaked lists the descriptors open now that were not in before, each with
// what it points at.
func Leaked(t testing.TB, before []int) []string {
	t.Helper()
	var extra []string
	for _, fd := range Open(t) {
		if !slices.Contains(before, fd) {
			target, _ := procfs.FDTarget(os.Getpid(), fd)
			extra = append(extra, fmt.Sprintf("%d → %s", fd, target))
		}
	}
	return extra
}

// Check fails t if a descriptor is open now that was not in before, or if
// one of before was closed (by code that closed what it did not own).
func Check(t testing.TB, before []int, what string) {
	t.Helper()
	now := Open(t)
	var closed []int
	for _, fd := range before {
		if !slices.Contains(now, fd) {
			closed = append(closed, fd)
		}
	}
	if extra := Leaked(t, before); len(extra) > 0 || len(closed) > 0 {
		t.Errorf("%s: descriptors leaked [%s], closed %v", what, strings.Join(extra, ", "), closed)
	}
}

// Track lists the open descriptors now and returns a function that
// checks, when called, that exactly those are open.
func Track(t testing.TB, what string) func() {
	t.Helper()
	before := Open(t)
	return func() {
		t.Helper()
		Check(t, before, what)
	}
}

// Cloexec reports whether fd is close-on-exec.
func Cloexec(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && fl&unix.FD_CLOEXEC != 0
}

// Inode is the inode of what fd refers to (for a socket, the one in
// "socket:[N]"), or 0 if fd is not open.
func Inode(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}

// Listening reports whether fd is a socket with SO_ACCEPTCONN set.
func Listening(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}
