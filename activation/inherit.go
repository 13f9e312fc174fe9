package activation

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFdsStart is SD_LISTEN_FDS_START: the first passed descriptor.
const listenFdsStart = 3

// MaxInherited bounds LISTEN_FDS; systemd's own limit on a socket unit's
// descriptors is far below it.
const MaxInherited = 1024

// ErrNotOurs means LISTEN_PID names another process, or is missing: the
// descriptors were meant for someone else and must be left alone.
var ErrNotOurs = errors.New("the sockets are not ours")

// Inherit takes the sockets passed by systemd (or any sd_listen_fds(3)
// parent) as described by LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, read
// through getenv. It returns (nil, nil) when LISTEN_FDS is unset, and
// (nil, ErrNotOurs) when LISTEN_PID names another process. Any malformed
// variable or any descriptor that is not a listening socket is an error,
// and then nothing is taken.
//
// Taken descriptors are marked CLOEXEC so they reach workers only through
// the Listener. Datagram sockets (ListenDatagram=) are accepted as they are;
// stream sockets must be listening (Accept=no): a connected socket from an
// Accept=yes unit is an error.
func Inherit(getenv func(string) string, pid int) (Set, error) {
	return inherit(getenv, pid, listenFdsStart)
}

// inherit is Inherit with the sockets from descriptor first on (tests
// pass ones they made, away from those their process holds).
func inherit(getenv func(string) string, pid, first int) (Set, error) {
	nfds, names, err := parseEnv(getenv, pid)
	if err != nil || nfds == 0 {
		return nil, err
	}
	set := make(Set, 0, nfds)
	for i := 0; i < nfds; i++ {
		fd := first + i
		l, err := inheritFD(fd, names[i])
		if err != nil {
			return nil, err
		}
		set = append(set, l)
	}
	for _, l := range set {
		unix.CloseOnExec(l.fds[0])
	}
	return set, nil
}

func parseEnv(getenv func(string) string, pid int) (int, []string, error) {
	fdsVar := getenv("LISTEN_FDS")
	if fdsVar == "" {
		return 0, nil, nil
	}
	pidVar := getenv("LISTEN_PID")
	if pidVar == "" {
		// sd_listen_fds(3) takes nothing without LISTEN_PID either: the
		// variables may have leaked from a parent's environment.
		return 0, nil, fmt.Errorf("LISTEN_FDS=%s without LISTEN_PID: %w", fdsVar, ErrNotOurs)
	}
	p, err := strconv.Atoi(pidVar)
	if err != nil || p <= 0 {
		return 0, nil, fmt.Errorf("LISTEN_PID=%q is not a process id", pidVar)
	}
	if p != pid {
		return 0, nil, fmt.Errorf("LISTEN_PID=%d, this is %d: %w", p, pid, ErrNotOurs)
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 {
		return 0, nil, fmt.Errorf("LISTEN_FDS=%q is not a count of descriptors", fdsVar)
	}
	if n > MaxInherited {
		return 0, nil, fmt.Errorf("LISTEN_FDS=%d is more than the %d sockd accepts", n, MaxInherited)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = DefaultName
	}
	if v := getenv("LISTEN_FDNAMES"); v != "" {
		got := strings.Split(v, ":")
		if len(got) != n {
			return 0, nil, fmt.Errorf("LISTEN_FDNAMES has %d names for LISTEN_FDS=%d", len(got), n)
		}
		copy(names, got)
	}
	return n, names, nil
}

func inheritFD(fd int, name string) (*Listener, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("inherited fd %d (%s) is not a socket", fd, name)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, name, err)
	}
	if typ == unix.SOCK_STREAM || typ == unix.SOCK_SEQPACKET {
		acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, name, err)
		}
		if acc == 0 {
			return nil, fmt.Errorf("inherited fd %d (%s) is a connected socket, not a listening one (use Accept=no in the .socket unit)", fd, name)
		}
	}
	network, addr, err := describe(fd)
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, name, err)
	}
	return &Listener{Name: name, Network: network, Addr: addr, Inherited: true, fds: []int{fd}}, nil
}
