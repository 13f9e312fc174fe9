package activation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// BindOptions says how Bind creates sockets.
type BindOptions struct {
	// ReusePort binds one SO_REUSEPORT socket per slot for TCP and UDP
	// listeners instead of one shared socket. Unix sockets stay shared.
	ReusePort bool
	// Slots is the number of worker slots (used with ReusePort). Zero means 1.
	Slots int
}

// Bind creates the listeners for specs. On error nothing stays open.
func Bind(ctx context.Context, specs []Spec, opts BindOptions) (Set, error) {
	set := make(Set, 0, len(specs))
	for _, spec := range specs {
		l, err := bind(ctx, spec, opts)
		if err != nil {
			set.Close()
			set.Remove()
			return nil, err
		}
		set = append(set, l)
	}
	return set, nil
}

func bind(ctx context.Context, spec Spec, opts BindOptions) (*Listener, error) {
	if spec.Network == "unix" {
		return bindUnix(ctx, spec)
	}
	n := 1
	if opts.ReusePort && opts.Slots > 1 {
		n = opts.Slots
	}
	l := &Listener{Name: spec.Name}
	addr := spec.Address
	for i := 0; i < n; i++ {
		fd, err := bindIP(ctx, spec.Network, addr, opts.ReusePort)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
		l.fds = append(l.fds, fd)
		if i == 0 {
			// Later sockets of a reuseport group bind the port the first
			// one got (which matters for port 0).
			if l.Network, l.Addr, err = describe(fd); err != nil {
				l.Close()
				return nil, err
			}
			addr = reuseAddr(spec.Address, l.Addr)
		}
	}
	return l, nil
}

// reuseAddr keeps the requested host (which may be empty: all addresses)
// and takes the port the kernel chose.
func reuseAddr(requested, bound string) string {
	host, _, _ := net.SplitHostPort(requested)
	_, port, _ := net.SplitHostPort(bound)
	return net.JoinHostPort(host, port)
}

// IPv4Only makes tcp and udp on an IPv4 host (0.0.0.0 included) tcp4 and
// udp4: Go binds an IPv4 wildcard as a dual-stack [::] socket, which
// would also take IPv6 connections (past an IPv4-only firewall) and give
// the app IPv4 clients as ::ffff:a.b.c.d. systemd's ListenStream=0.0.0.0:P,
// nginx and Node bind IPv4 alone; an empty host stays every address.
func IPv4Only(network, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || (network != "tcp" && network != "udp") {
		return network
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return network + "4"
	}
	return network
}

func bindIP(ctx context.Context, network, addr string, reuse bool) (int, error) {
	network = IPv4Only(network, addr)
	lc := net.ListenConfig{}
	// Plain TCP, as systemd binds: Go (1.24+) would make an MPTCP
	// listener, which takes fewer socket options (no reuseport steering,
	// no TCP_INFO on the listener) and which a worker in another language
	// does not expect.
	lc.SetMultipathTCP(false)
	if reuse {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	switch network {
	case "udp", "udp4", "udp6":
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil {
			return -1, err
		}
		defer pc.Close()
		return DupSocket(pc.(syscall.Conn))
	default:
		ln, err := lc.Listen(ctx, network, addr)
		if err != nil {
			return -1, err
		}
		defer ln.Close()
		return DupSocket(ln.(syscall.Conn))
	}
}

func bindUnix(ctx context.Context, spec Spec) (*Listener, error) {
	if err := RemoveStale(spec.Address); err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", spec.Address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	defer ul.Close()
	l := &Listener{Name: spec.Name, Network: "unix", Addr: spec.Address, path: spec.Address}
	fd, err := DupSocket(ul)
	if err != nil {
		l.Remove()
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	l.fds = []int{fd}
	if spec.Mode != 0 {
		if err := os.Chmod(spec.Address, spec.Mode); err != nil {
			l.Close()
			l.Remove()
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
	}
	return l, nil
}

// RemoveStale deletes a unix socket file that nobody listens on any more,
// before a new socket is bound at its path. A live socket (an error
// wrapping EADDRINUSE) or a file that is not a socket is an error, and is
// left alone.
func RemoveStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	return os.Remove(path)
}

// DupSocket duplicates a socket with F_DUPFD_CLOEXEC through SyscallConn.
// It never calls Fd() (which would make the shared file description
// blocking) and never registers the copy with the network poller.
func DupSocket(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	err = raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	})
	if err = errors.Join(err, derr); err != nil {
		return -1, fmt.Errorf("dup socket: %w", err)
	}
	return nfd, nil
}

func ip(b []byte) string {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap().String()
}
