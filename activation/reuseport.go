package activation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotSupported: the operation does not apply to this kind of socket.
var ErrNotSupported = errors.New("not supported for this socket")

// Growable reports whether l is a group of SO_REUSEPORT sockets sockd
// bound itself (TCP or UDP), which Grow can add sockets to and Steer can
// steer between. Shared and inherited listeners are not.
func (l *Listener) Growable() bool {
	if l.Inherited || len(l.fds) == 0 || !strings.HasPrefix(l.Network, "tcp") && !strings.HasPrefix(l.Network, "udp") {
		return false
	}
	v, err := unix.GetsockoptInt(l.fds[0], unix.SOL_SOCKET, unix.SO_REUSEPORT)
	return err == nil && v == 1
}

// Grow binds sockets into a growable listener's reuseport group until it
// has n, one per slot, and returns the new ones. The group's steering
// program (see Steer) keeps them out of the kernel's choice until the
// caller steers to them, so no connection waits on a socket no worker
// takes from yet. A listener that is not growable is left alone.
func (l *Listener) Grow(n int) ([]int, error) {
	if !l.Growable() || len(l.fds) >= n {
		return nil, nil
	}
	if err := l.Steer(len(l.fds)); err != nil {
		return nil, err
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

// Steer makes the kernel pick among the group's first n sockets only, by
// a hash of the client's address and port (SO_ATTACH_REUSEPORT_CBPF, see
// socket(7)): connections and datagrams of one flow keep going to one
// socket, and sockets from n on get nothing new. The group's sockets are
// in the order they were bound, which is slot order, since sockd never
// closes one while it runs. internal/steering supersedes it (a socket per
// worker, weights, stalls, slow start); it stays until the pool uses that.
func (l *Listener) Steer(n int) error {
	if !l.Growable() {
		return nil
	}
	if n < 1 || n > len(l.fds) {
		return fmt.Errorf("steer %s to %d of its %d sockets", l, n, len(l.fds))
	}
	prog := steerProgram(n)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(l.fds[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("steer %s: %w", l, err)
	}
	return nil
}

// skfNetOff is SKF_NET_OFF: classic BPF loads at it and above read from
// the packet's network header (the program otherwise sees the payload).
const skfNetOff = -0x100000

// steerProgram returns hash(source address, ports) % n for IPv4 and IPv6
// (without extension headers) packets.
func steerProgram(n int) []unix.SockFilter {
	net := func(off int) uint32 { return uint32(int32(skfNetOff + off)) }
	return []unix.SockFilter{
		/* 0 */ {Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: net(0)}, // A = version<<4 | IHL
		/* 1 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 4},
		/* 2 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 6, Jt: 5, Jf: 0},
		/* 3 */ {Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: net(0)}, // X = IPv4 header length
		/* 4 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_IND, K: net(0)}, // A = source port<<16 | destination port
		/* 5 */ {Code: unix.BPF_ST, K: 0},
		/* 6 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: net(12)}, // A = IPv4 source address
		/* 7 */ {Code: unix.BPF_JMP | unix.BPF_JA, K: 3},
		/* 8 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: net(40)}, // IPv6: the ports
		/* 9 */ {Code: unix.BPF_ST, K: 0},
		/* 10 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: net(20)}, // the source address's last word
		/* 11 */ {Code: unix.BPF_LDX | unix.BPF_MEM, K: 0},
		/* 12 */ {Code: unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X}, // A = address ^ ports
		/* 13 */ {Code: unix.BPF_MISC | unix.BPF_TAX}, // fold the ports' high half in: A ^= A >> 16
		/* 14 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 16},
		/* 15 */ {Code: unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X},
		/* 16 */ {Code: unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K, K: 0x9E3779B1}, // Fibonacci hashing
		/* 17 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 16},
		/* 18 */ {Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(n)},
		/* 19 */ {Code: unix.BPF_RET | unix.BPF_A},
	}
}

// Queue reports how many connections wait in the accept queue of the
// listener's socket for slot (not yet accepted by any worker), and the
// queue's limit (the backlog), from TCP_INFO on the listening socket
// (tcpi_unacked, tcpi_sacked). For a datagram socket depth is the size of
// the next datagram waiting (SIOCINQ) and limit 0. Unix stream sockets:
// ErrNotSupported.
func (l *Listener) Queue(slot int) (depth, limit int, err error) {
	if l.Slots() == 0 {
		return 0, 0, ErrNotSupported
	}
	fd := l.FD(slot)
	switch {
	case strings.HasPrefix(l.Network, "tcp"):
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: TCP_INFO: %w", l, err)
		}
		return int(info.Unacked), int(info.Sacked), nil
	case strings.HasPrefix(l.Network, "udp"):
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: SIOCINQ: %w", l, err)
		}
		return n, 0, nil
	}
	return 0, 0, ErrNotSupported
}
