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
	"path/filepath"
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
	check(t, before, nil, what)
}

func check(t testing.TB, before []int, targets map[int]string, what string) {
	t.Helper()
	now := Open(t)
	var closed []string
	for _, fd := range before {
		if !slices.Contains(now, fd) {
			closed = append(closed, fmt.Sprintf("%d (was %s)", fd, targets[fd]))
		}
	}
	if extra := Leaked(t, before); len(extra) > 0 || len(closed) > 0 {
		t.Errorf("%s: descriptors leaked [%s], closed [%s]", what, strings.Join(extra, ", "), strings.Join(closed, ", "))
	}
}

// Track lists the open descriptors now and returns a function that
// checks, when called, that exactly those are open.
func Track(t testing.TB, what string) func() {
	t.Helper()
	before := Open(t)
	targets := make(map[int]string, len(before))
	for _, fd := range before {
		targets[fd], _ = procfs.FDTarget(os.Getpid(), fd)
	}
	return func() {
		t.Helper()
		check(t, before, targets, what)
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

// Palette holds one descriptor of each kind a peer might pass to a
// process, all close-on-exec, closed at the end of the test (or fuzz run):
//
//	0 a listening TCP socket (127.0.0.1)
//	1 a listening unix stream socket
//	2 a bound UDP socket
//	3 a bound unix datagram socket
//	4 the read end of a pipe
//	5 /dev/null
//	6 a connected unix stream socket
//	7 a listening unix SOCK_SEQPACKET socket
//
// Byte b of a spec (see Pick) picks FDs[b%8]: '0' (48) the TCP listener,
// '1' the unix one, and so on.
type Palette struct {
	FDs    []int
	Kinds  []string
	Inodes []uint64
}

// NewPalette makes the descriptors.
func NewPalette(t testing.TB) *Palette {
	t.Helper()
	dir, err := os.MkdirTemp("", "fdtest")
	if err != nil {
		t.Fatal(err)
	}
	p := &Palette{}
	t.Cleanup(func() {
		for _, fd := range p.FDs {
			unix.Close(fd)
		}
		os.RemoveAll(dir)
	})
	add := func(kind string, fd int, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("palette %s: %v", kind, err)
		}
		p.FDs, p.Kinds, p.Inodes = append(p.FDs, fd), append(p.Kinds, kind), append(p.Inodes, Inode(fd))
	}
	fd, err := listen(unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	add("tcp listener", fd, err)
	fd, err = listen(unix.AF_UNIX, unix.SOCK_STREAM, &unix.SockaddrUnix{Name: filepath.Join(dir, "s")})
	add("unix listener", fd, err)
	fd, err = bind(unix.AF_INET, unix.SOCK_DGRAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	add("udp socket", fd, err)
	fd, err = bind(unix.AF_UNIX, unix.SOCK_DGRAM, &unix.SockaddrUnix{Name: filepath.Join(dir, "d")})
	add("unixgram socket", fd, err)
	var pp [2]int
	err = unix.Pipe2(pp[:], unix.O_CLOEXEC)
	add("pipe", pp[0], err)
	unix.Close(pp[1])
	fd, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	add("/dev/null", fd, err)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	add("connected unix socket", sp[0], err)
	unix.Close(sp[1])
	fd, err = listen(unix.AF_UNIX, unix.SOCK_SEQPACKET, &unix.SockaddrUnix{Name: filepath.Join(dir, "p")})
	add("seqpacket listener", fd, err)
	return p
}

func bind(family, typ int, sa unix.Sockaddr) (int, error) {
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func listen(family, typ int, sa unix.Sockaddr) (int, error) {
	fd, err := bind(family, typ, sa)
	if err == nil {
		if err = unix.Listen(fd, 16); err != nil {
			unix.Close(fd)
		}
	}
	return fd, err
}

// Pick returns the descriptors spec names, one a byte, and their inodes.
func (p *Palette) Pick(spec string) (fds []int, inodes []uint64) {
	for _, b := range []byte(spec) {
		i := int(b) % len(p.FDs)
		fds, inodes = append(fds, p.FDs[i]), append(inodes, p.Inodes[i])
	}
	return fds, inodes
}
