package activation

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/listenfds"
)

// MaxInherited bounds LISTEN_FDS; systemd's own limit on a socket unit's
// descriptors is far below it.
const MaxInherited = 1024

// ErrNotOurs means LISTEN_PID names another process, or is missing: the
// descriptors were meant for someone else and must be left alone.
var ErrNotOurs = listenfds.ErrNotOurs

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
	return inherit(getenv, pid, listenfds.Start)
}

// inherit is Inherit with the sockets from descriptor first on (tests
// pass ones they made, away from those their process holds).
func inherit(getenv func(string) string, pid, first int) (Set, error) {
	names, err := listenfds.Parse(getenv, pid, MaxInherited)
	if errors.Is(err, listenfds.ErrNone) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	set := make(Set, 0, len(names))
	for i := range names {
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
