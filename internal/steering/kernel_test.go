package steering

import (
	"context"
	"errors"
	"math/rand"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// bindGroup binds a reuseport group of n sockets on addr ("127.0.0.1:0",
// "[::1]:0"), closed at cleanup.
func bindGroup(t testing.TB, addr string, n int) *activation.Listener {
	t.Helper()
	network := "tcp4"
	if addr[0] == '[' {
		network = "tcp6"
	}
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "g", Network: network, Address: addr}}, activation.BindOptions{ReusePort: true, Slots: n})
	if err != nil {
		t.Skipf("cannot bind %s: %v", addr, err)
	}
	t.Cleanup(func() { set.Close() })
	return set[0]
}

// dialed is one connection a test opened: its client socket and the
// packet the kernel's program saw for its SYN.
type dialed struct {
	fd   int
	port int
	pkt  pkt
}

// dialFrom opens m connections to l's address, each from a new port of
// the loopback address, and returns them; closeAll closes them.
func dialFrom(t testing.TB, l *activation.Listener, m int) []dialed {
	t.Helper()
	ap, err := netip.ParseAddrPort(l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]dialed, 0, m)
	ok := false
	defer func() {
		if !ok {
			closeAll(out)
		}
	}()
	for i := 0; i < m; i++ {
		var fd int
		var sa unix.Sockaddr
		if ap.Addr().Is4() {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		} else {
			fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			t.Fatalf("connection %d: %v", i, err)
		}
		local, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		d := dialed{fd: fd}
		switch a := local.(type) {
		case *unix.SockaddrInet4:
			d.port = a.Port
			d.pkt = v4(a.Addr, ap.Addr().As4(), uint16(a.Port), ap.Port(), 5)
		case *unix.SockaddrInet6:
			d.port = a.Port
			d.pkt = v6(a.Addr, ap.Addr().As16(), uint16(a.Port), ap.Port())
		}
		out = append(out, d)
	}
	ok = true
	return out
}

// closeAll closes the clients with a reset: thousands of connections
// in TIME_WAIT would slow down every test on the machine that binds a port.
func closeAll(ds []dialed) {
	for _, d := range ds {
		unix.SetsockoptLinger(d.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(d.fd)
	}
}

// waitQueued waits until l's accept queues hold n connections in all.
func waitQueued(t testing.TB, l *activation.Listener, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, sum := make([]int, l.Slots()), 0
		for i := range q {
			d, _, err := l.Queue(i)
			if err != nil {
				t.Fatal(err)
			}
			q[i] = d
			sum += d
		}
		if sum == n {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued, want %d", sum, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// acceptAll accepts every connection queued on l's sockets and returns
// the socket index each client port landed on.
func acceptAll(t testing.TB, l *activation.Listener) map[int]int {
	t.Helper()
	landed := map[int]int{}
	for i, fd := range l.FDs() {
		for {
			nfd, peer, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				t.Fatalf("accept on socket %d: %v", i, err)
			}
			unix.Close(nfd)
			switch a := peer.(type) {
			case *unix.SockaddrInet4:
				landed[a.Port] = i
			case *unix.SockaddrInet6:
				landed[a.Port] = i
			}
		}
	}
	return landed
}

// steerAndCount attaches the program for w to l, opens m connections and
// checks that the kernel put every one where the interpreter says the
// program sends it, and none on a socket of weight 0. It returns the
// connections per socket.
func steerAndCount(t testing.TB, l *activation.Listener, w []int, m int) []int {
	t.Helper()
	p, err := Compile(w, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AttachProgram(p.Insns); err != nil {
		t.Fatal(err)
	}
	conns := dialFrom(t, l, m)
	defer closeAll(conns)
	waitQueued(t, l, m)
	landed := acceptAll(t, l)
	counts := make([]int, l.Slots())
	for _, c := range conns {
		got, ok := landed[c.port]
		if !ok {
			t.Fatalf("connection from port %d was not accepted", c.port)
		}
		want, err := run(p.Insns, c.pkt)
		if err != nil {
			t.Fatal(err)
		}
		if got != int(want) {
			t.Fatalf("connection from port %d landed on socket %d, the program says %d", c.port, got, want)
		}
		if w[got] == 0 {
			t.Fatalf("connection from port %d landed on socket %d of weight 0", c.port, got)
		}
		counts[got]++
	}
	return counts
}

// The kernel runs the programs as the interpreter does: every connection
// lands on the socket the interpreter computes, for groups of 1 to 2048
// sockets, over IPv4 and IPv6.
func TestKernelAgreesWithInterpreter(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	r := rand.New(rand.NewSource(4))
	for _, c := range []struct {
		addr string
		n, m int
	}{
		{"127.0.0.1:0", 1, 50}, {"127.0.0.1:0", 2, 200}, {"127.0.0.1:0", 3, 300}, {"127.0.0.1:0", 8, 800},
		{"[::1]:0", 8, 800}, {"127.0.0.1:0", 64, 1000}, {"127.0.0.1:0", 1024, 3000}, {"127.0.0.1:0", 2048, 4000},
	} {
		l := bindGroup(t, c.addr, c.n)
		for name, w := range patterns(c.n, r) {
			counts := steerAndCount(t, l, w, c.m)
			if c.n <= 8 {
				t.Logf("%s %d sockets, %s %v: connections %v", c.addr, c.n, name, w, counts)
			}
		}
	}
}

// A group grows under a program: the new sockets get nothing until the
// weights give them some.
func TestKernelGrowUnderProgram(t *testing.T) {
	l := bindGroup(t, "127.0.0.1:0", 4)
	w := []int{1000, 1000, 0, 1000}
	p, err := Compile(w, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Extend(8, p.Insns); err != nil {
		t.Fatal(err)
	}
	counts := steerAndCount(t, l, append(w, 0, 0, 0, 0), 400)
	for i := 2; i < 8; i++ {
		if i != 3 && counts[i] != 0 {
			t.Fatalf("connections %v: socket %d has weight 0", counts, i)
		}
	}
	counts = steerAndCount(t, l, []int{0, 0, 0, 0, 1000, 1000, 1000, 1000}, 400)
	t.Logf("after steering to the new sockets: %v", counts)
	// Extend under the program attached: the ninth socket gets nothing.
	if _, err := l.Extend(9, nil); err != nil {
		t.Fatal(err)
	}
	counts = steerAndCount(t, l, []int{0, 0, 0, 0, 1000, 1000, 1000, 1000, 0}, 100)
	if counts[8] != 0 {
		t.Fatalf("connections %v: the new socket got some", counts)
	}
}
