package activation

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// A steering program answers an index into the kernel's array of the
// group's sockets. That array is in the order the sockets joined the group
// (listen(2)); closing one moves the last socket into its place. sockd
// binds its sockets in order and never closes one while it runs, so its
// own order is the kernel's, and a binary upgrade passes the descriptors on
// in that order. Sockets that come back from systemd's fd store carry the
// index in their name (sockd.<name>.<index>), but nothing proves the group
// kept that order while sockd was away (a socket the store refused was
// closed with the old sockd, shuffling the rest): Order finds out.

// ErrOrder: probing found the group is not what the listener's sockets
// make it (a member sockd does not hold, or fewer members than sockets).
var ErrOrder = errors.New("the reuseport group's order cannot be established")

// ProbeTimeout is how long Order waits for one probe connection to show up
// in an accept queue (loopback: microseconds, unless a queue is full).
const ProbeTimeout = time.Second

// Order finds the kernel's order of a TCP reuseport group's sockets and
// puts the listener's sockets in that order, so that FD(i) is the socket
// a program's answer i selects. It probes: for each index k it attaches a
// program that sends one new connection of its own (told by its source
// port) to k and every other to index 0, connects to the group over
// loopback and sees which socket's accept queue it lands in (an
// edge-triggered epoll on every socket). Two probes must agree on each
// index, which makes a connection completing meanwhile from before the
// probe harmless. A probe connection is accepted and closed again when
// it is alone in its queue; otherwise a worker gets it, already closed by
// its client. Real connections arriving meanwhile all queue on the socket
// at index 0.
//
// Call it before any worker takes from the sockets, and attach the real
// steering program right after: Order leaves a program that sends every
// new connection to index 0. It returns whether the order changed.
func (l *Listener) Order() (bool, error) {
	if !l.Growable() || len(l.fds) < 2 {
		return false, nil
	}
	if l.Network != "tcp" && l.Network != "tcp6" {
		return false, fmt.Errorf("order %s: %w", l, ErrNotSupported)
	}
	p, err := newProber(l)
	if err != nil {
		return false, err
	}
	defer p.close()
	n := len(l.fds)
	order := make([]int, n) // order[k]: the position in l.fds of the socket at index k
	taken := make([]bool, n)
	for k := 0; k < n; k++ {
		i, err := p.locate(k, order[0], taken)
		if err != nil {
			return false, fmt.Errorf("order %s: index %d: %w", l, k, err)
		}
		order[k], taken[i] = i, true
	}
	p.tidy()
	moved := false
	fds := make([]int, n)
	for k, i := range order {
		fds[k] = l.fds[i]
		moved = moved || i != k
	}
	l.mu.Lock()
	l.fds = fds
	l.mu.Unlock()
	return moved, nil
}

type prober struct {
	l      *Listener
	ep     int
	dst    unix.Sockaddr
	src    unix.Sockaddr
	events []unix.EpollEvent
	// mine counts the probe connections that landed on each socket, by
	// position in l.fds, and ports their source ports.
	mine  map[int]int
	ports map[int]bool
	rand  *rand.Rand
}

func newProber(l *Listener) (*prober, error) {
	ap, err := netip.ParseAddrPort(l.Addr)
	if err != nil {
		return nil, fmt.Errorf("order %s: %w", l, err)
	}
	host := ap.Addr()
	switch {
	case host.IsUnspecified() && host.Is4():
		host = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case host.IsUnspecified():
		host = netip.IPv6Loopback()
	}
	p := &prober{l: l, ep: -1, events: make([]unix.EpollEvent, 64), mine: map[int]int{}, ports: map[int]bool{}, rand: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))}
	if host.Is4() {
		p.dst = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: host.As4()}
		p.src = &unix.SockaddrInet4{Addr: host.As4()}
	} else {
		p.dst = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: host.As16()}
		p.src = &unix.SockaddrInet6{Addr: host.As16()}
	}
	if p.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("order %s: %w", l, err)
	}
	for i, fd := range l.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(i)}
		if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			p.close()
			return nil, fmt.Errorf("order %s: epoll: %w", l, err)
		}
	}
	return p, nil
}

func (p *prober) close() {
	if p.ep >= 0 {
		unix.Close(p.ep)
	}
}

// locate finds the position in l.fds of the socket at index k: two probes
// must agree, and it must be one not taken yet. sink is the position of
// index 0 (for k > 0), where every other new connection goes meanwhile.
func (p *prober) locate(k, sink int, taken []bool) (int, error) {
	var prev []int
	for try := 0; try < 6; try++ {
		got, err := p.probe(k, sink)
		if err != nil {
			return -1, err
		}
		if got == nil {
			continue
		}
		if prev != nil {
			var both []int
			for _, i := range got {
				if slices.Contains(prev, i) {
					both = append(both, i)
				}
			}
			if len(both) == 1 {
				if taken[both[0]] {
					return -1, fmt.Errorf("%w: it answers a socket already at a lower index (the group has fewer members than sockd's sockets)", ErrOrder)
				}
				return both[0], nil
			}
		}
		prev = got
	}
	return -1, fmt.Errorf("%w: the probes disagree", ErrOrder)
}

// probe sends one connection to index k and returns the sockets (their
// positions in l.fds) that saw a new connection meanwhile, the sink
// excepted when k > 0.
func (p *prober) probe(k, sink int) ([]int, error) {
	c, port, err := p.client()
	if err != nil {
		return nil, err
	}
	defer closeReset(c)
	if err := p.l.AttachProgram(probeProgram(port, k)); err != nil {
		return nil, err
	}
	p.drain(nil)
	if err := unix.Connect(c, p.dst); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil, nil // that port and address pair lingers in TIME_WAIT: try another
		}
		return nil, fmt.Errorf("probe connection: %w", err)
	}
	var seen []int
	deadline := time.Now().Add(ProbeTimeout)
	for len(seen) == 0 {
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("%w: no socket of sockd's took the probe connection (a member sockd does not hold, or a full queue)", ErrOrder)
		}
		n, err := unix.EpollWait(p.ep, p.events, int(wait/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, err
		}
		for _, ev := range p.events[:max(n, 0)] {
			if i := int(ev.Fd); (k == 0 || i != sink) && !slices.Contains(seen, i) {
				seen = append(seen, i)
			}
		}
	}
	p.drain(func(i int) {
		if (k == 0 || i != sink) && !slices.Contains(seen, i) {
			seen = append(seen, i)
		}
	})
	if len(seen) == 1 {
		p.mine[seen[0]]++
	}
	p.ports[port] = true
	return seen, nil
}

// client makes the probe's client socket, bound to a port it picks:
// bind(2) to port 0 searches the whole range, slowly once thousands of
// connections linger in TIME_WAIT; SO_REUSEADDR lets it take such a port.
func (p *prober) client() (int, int, error) {
	for try := 0; ; try++ {
		c, err := unix.Socket(familyOf(p.dst), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, 0, err
		}
		if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(c)
			return -1, 0, err
		}
		port := 1024 + p.rand.IntN(65536-1024)
		switch a := p.src.(type) {
		case *unix.SockaddrInet4:
			err = unix.Bind(c, &unix.SockaddrInet4{Addr: a.Addr, Port: port})
		case *unix.SockaddrInet6:
			err = unix.Bind(c, &unix.SockaddrInet6{Addr: a.Addr, Port: port})
		}
		if err == nil {
			return c, port, nil
		}
		unix.Close(c)
		if try == 100 {
			return -1, 0, fmt.Errorf("probe socket: %w", err)
		}
	}
}

// closeReset closes a probe's client with a reset, so that it leaves no
// TIME_WAIT behind.
func closeReset(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// drain collects the events pending without waiting.
func (p *prober) drain(f func(int)) {
	for {
		n, err := unix.EpollWait(p.ep, p.events, 0)
		if err != nil && errors.Is(err, unix.EINTR) {
			continue
		}
		for _, ev := range p.events[:max(n, 0)] {
			if f != nil {
				f(int(ev.Fd))
			}
		}
		if n < len(p.events) {
			return
		}
	}
}

// tidy accepts and closes the probe connections on each socket whose
// queue holds only them (the queue is first in, first out, so what it
// accepts is the probes' as long as the count matches).
func (p *prober) tidy() {
	for i, n := range p.mine {
		depth, _, err := p.l.queueOf(p.l.fds[i])
		if err != nil || depth != n {
			continue
		}
		for j := 0; j < n; j++ {
			fd, peer, err := unix.Accept4(p.l.fds[i], unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			if err != nil {
				break
			}
			unix.Close(fd)
			if !p.ports[sockPort(peer)] {
				break // not ours after all: stop taking from this queue
			}
		}
	}
}

func (l *Listener) queueOf(fd int) (int, int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, err
	}
	return int(info.Unacked), int(info.Sacked), nil
}

// probeProgram sends the connection from source port to index k and
// everything else to index 0.
func probeProgram(port, k int) []unix.SockFilter {
	net := func(off int) uint32 { return uint32(int32(skfNetOff + off)) }
	if k == 0 {
		return []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	}
	return []unix.SockFilter{
		/* 0 */ {Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: net(0)},
		/* 1 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 4},
		/* 2 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 6, Jt: 3},
		/* 3 */ {Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: net(0)},
		/* 4 */ {Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: net(0)}, // IPv4 source port
		/* 5 */ {Code: unix.BPF_JMP | unix.BPF_JA, K: 1},
		/* 6 */ {Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: net(40)}, // IPv6 source port
		/* 7 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(port), Jf: 1},
		/* 8 */ {Code: unix.BPF_RET | unix.BPF_K, K: uint32(k)},
		/* 9 */ {Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
}

func familyOf(sa unix.Sockaddr) int {
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func sockPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}
