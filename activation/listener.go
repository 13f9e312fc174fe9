package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Listener is one listening socket as workers see it: one LISTEN_FDS entry.
// In shared mode it is a single socket; in reuseport mode it is a group of
// SO_REUSEPORT sockets, one per worker slot.
//
// sockd holds the sockets as raw, CLOEXEC file descriptors that are never
// registered with Go's network poller, so sockd is not woken by the traffic
// its workers serve.
type Listener struct {
	// Name is the entry in LISTEN_FDNAMES.
	Name string
	// Network is "tcp", "tcp6", "udp", "unix", … as seen from the socket.
	Network string
	// Addr is the bound address (getsockname).
	Addr string
	// Inherited is true for sockets that came from systemd or a previous sockd.
	Inherited bool

	// fds: one per slot in reuseport mode, else one. Only the goroutine
	// that grows the group (Grow, Extend: the pool's) appends to it, under
	// mu; FD, FDs and Slots read it under mu, from any goroutine.
	mu   sync.Mutex
	fds  []int
	path string // unix socket file sockd created (removed by Remove)
}

// NewListener wraps already open socket fds (which it takes ownership of),
// one per slot for a reuseport group. path is the unix socket file to
// remove on a final shutdown, or "". A receiver of a hand-off uses it to
// rebuild the listeners of the previous sockd.
func NewListener(name string, fds []int, inherited bool, path string) (*Listener, error) {
	if len(fds) == 0 {
		return nil, errors.New("listener without sockets")
	}
	network, addr, err := describe(fds[0])
	if err != nil {
		return nil, err
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return &Listener{Name: name, Network: network, Addr: addr, Inherited: inherited, fds: fds, path: path}, nil
}

// FD returns the socket that the worker in slot should get. Shared
// listeners return the same socket for every slot.
func (l *Listener) FD(slot int) int {
	if slot < 0 {
		slot = -slot
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fds[slot%len(l.fds)]
}

// FDs returns every socket of the listener (one per slot in reuseport mode).
func (l *Listener) FDs() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.fds...)
}

// Slots is the number of sockets: 1 for a shared listener.
func (l *Listener) Slots() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.fds)
}

// add appends a socket to the group.
func (l *Listener) add(fd int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fds = append(l.fds, fd)
}

// Path is the unix socket file sockd created for this listener, or "".
func (l *Listener) Path() string { return l.path }

// Close closes sockd's descriptors. Workers that hold duplicates keep the
// socket open; the unix socket file stays (see Remove).
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, fd := range l.fds {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	l.fds = nil
	return errors.Join(errs...)
}

// Remove deletes the unix socket file that sockd created, if any. Call it on
// a final shutdown, never when handing the listener on.
func (l *Listener) Remove() error {
	if l.path == "" {
		return nil
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", l.path, err)
	}
	return nil
}

func (l *Listener) String() string {
	return fmt.Sprintf("%s=%s://%s", l.Name, l.Network, l.Addr)
}

// Set is the ordered list of listeners: LISTEN_FDS order.
type Set []*Listener

// FDs returns the sockets the worker in slot gets, in LISTEN_FDS order.
func (s Set) FDs(slot int) []int {
	fds := make([]int, len(s))
	for i, l := range s {
		fds[i] = l.FD(slot)
	}
	return fds
}

// Names is the value of LISTEN_FDNAMES.
func (s Set) Names() string {
	names := make([]string, len(s))
	for i, l := range s {
		names[i] = l.Name
	}
	return strings.Join(names, ":")
}

// Close closes every listener's descriptors.
func (s Set) Close() error {
	var errs []error
	for _, l := range s {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Remove deletes the unix socket files sockd created.
func (s Set) Remove() error {
	var errs []error
	for _, l := range s {
		errs = append(errs, l.Remove())
	}
	return errors.Join(errs...)
}

// describe reads a socket's network and bound address from the kernel.
func describe(fd int) (network, addr string, err error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", "", fmt.Errorf("fd %d: not a socket: %w", fd, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", "", fmt.Errorf("fd %d: getsockname: %w", fd, err)
	}
	stream := typ == unix.SOCK_STREAM || typ == unix.SOCK_SEQPACKET
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return pick(stream, "tcp", "udp"), fmt.Sprintf("%s:%d", ip(a.Addr[:]), a.Port), nil
	case *unix.SockaddrInet6:
		return pick(stream, "tcp6", "udp6"), fmt.Sprintf("[%s]:%d", ip(a.Addr[:]), a.Port), nil
	case *unix.SockaddrUnix:
		name := a.Name
		if name == "" || name[0] == 0 {
			name = "@" + strings.TrimPrefix(name, "\x00")
		}
		return pick(stream, "unix", "unixgram"), name, nil
	default:
		return "", "", fmt.Errorf("fd %d: unsupported socket family %T", fd, sa)
	}
}

// Matches reports whether l is the socket spec asks for: the same kind
// (IP or unix, stream or datagram) at the same address (a host name is
// looked up; port 0 matches any port). A socket back from systemd's fd
// store is kept across a restart only if it still does.
func (l *Listener) Matches(s Spec) bool {
	if (s.Network == "unix") != strings.HasPrefix(l.Network, "unix") {
		return false
	}
	if s.Network == "unix" {
		return l.Network == "unix" && l.Addr == s.Address
	}
	stream := strings.HasPrefix(s.Network, "tcp")
	if stream != strings.HasPrefix(l.Network, "tcp") {
		return false
	}
	have, err := net.ResolveTCPAddr("tcp", l.Addr) // "1.2.3.4:80", "[::]:80"
	if err != nil || !BoundAt(have, s.Network, s.Address) {
		return false
	}
	if have.IP.IsUnspecified() && have.IP.To4() == nil {
		// [::]: IPv6 only (tcp6, as Go binds it) or both families (tcp).
		v6only, err := unix.GetsockoptInt(l.FD(0), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		return err == nil && (v6only == 1) == strings.HasSuffix(s.Network, "6")
	}
	return true
}

// BoundAt reports whether have, a bound TCP or UDP address, is where
// binding address ("host:port") on network (tcp, tcp4, tcp6, udp, …) binds:
// a host name is looked up, port 0 matches any port, no host binds [::]
// (both families) unless the network says 4, and "0.0.0.0" binds IPv4
// only (IPv4Only).
func BoundAt(have *net.TCPAddr, network, address string) bool {
	host, port, err := net.SplitHostPort(address)
	if err != nil || len(network) < 3 {
		return false
	}
	if port == "0" {
		port = strconv.Itoa(have.Port)
	}
	family := "tcp" + network[3:] // tcp, tcp4, tcp6 (udp resolves the same)
	want, err := net.ResolveTCPAddr(IPv4Only(family, address), net.JoinHostPort(host, port))
	if err != nil || want.Port != have.Port {
		return false
	}
	if want.IP == nil || want.IP.IsUnspecified() {
		v4 := strings.HasSuffix(network, "4") || want.IP != nil && want.IP.To4() != nil
		return have.IP.IsUnspecified() && (have.IP.To4() != nil) == v4
	}
	return want.IP.Equal(have.IP)
}

func pick(stream bool, a, b string) string {
	if stream {
		return a
	}
	return b
}
