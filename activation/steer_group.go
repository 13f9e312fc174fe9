package activation

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// What internal/steering needs of a reuseport group: attaching a program
// it compiled, adding sockets without touching the program, and the
// sockets' identities (inodes, as sock_diag reports them).

// AttachProgram replaces the reuseport group's steering program
// (SO_ATTACH_REUSEPORT_CBPF, socket(7)): the kernel runs it for each new
// connection or datagram and takes the socket at the index it returns.
// The caller guarantees every index it returns is below Slots().
func (l *Listener) AttachProgram(prog []unix.SockFilter) error {
	if !l.Growable() {
		return fmt.Errorf("steer %s: %w", l, ErrNotSupported)
	}
	if len(prog) == 0 || len(prog) > 0xffff {
		return fmt.Errorf("steer %s: program of %d instructions", l, len(prog))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(l.fds[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("steer %s: %w", l, err)
	}
	return nil
}

// Extend binds sockets into a growable listener's reuseport group until it
// has n and returns the new ones. It first attaches prog, which must
// answer only indexes below the group's present size: the new sockets come
// last in the group, and without a program the kernel would hash new
// connections onto them before anyone takes from them. A nil prog says
// such a program is attached already (by this process or the sockd that
// handed the group over), and leaves it.
func (l *Listener) Extend(n int, prog []unix.SockFilter) ([]int, error) {
	if !l.Growable() {
		return nil, fmt.Errorf("extend %s: %w", l, ErrNotSupported)
	}
	if len(l.fds) >= n {
		return nil, nil
	}
	if prog != nil {
		if err := l.AttachProgram(prog); err != nil {
			return nil, err
		}
	}
	var added []int
	for len(l.fds) < n {
		fd, err := bindIP(context.Background(), l.Network, l.Addr, true)
		if err != nil {
			return added, fmt.Errorf("listen %s (socket %d): %w", l, len(l.fds), err)
		}
		l.add(fd)
		added = append(added, fd)
	}
	return added, nil
}

// Inode returns the inode number of socket i, which sock_diag(7) reports
// for it (idiag_inode).
func (l *Listener) Inode(i int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(l.fds[i], &st); err != nil {
		return 0, fmt.Errorf("%s socket %d: %w", l, i, err)
	}
	return st.Ino, nil
}
