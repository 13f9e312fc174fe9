package activation_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// queues returns the accept-queue depth of every socket of l.
func queues(t *testing.T, l *activation.Listener) []int {
	t.Helper()
	var q []int
	for i := 0; i < l.Slots(); i++ {
		d, _, err := l.Queue(i)
		if err != nil {
			t.Fatal(err)
		}
		q = append(q, d)
	}
	return q
}

// dialN opens n connections (from n different ports) that nobody accepts.
func dialN(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// A steered reuseport group hands new connections only to its first n
// sockets, spread over all of them; Grow's new sockets get nothing until
// they are steered to.
func TestSteerAndGrow(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			network := "tcp4"
			if addr[0] == '[' {
				network = "tcp6"
			}
			set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "x", Network: network, Address: addr}}, activation.BindOptions{ReusePort: true, Slots: 2})
			if err != nil {
				t.Skipf("cannot bind %s: %v", addr, err)
			}
			defer set.Close()
			l := set[0]
			if !l.Growable() {
				t.Fatal("a reuseport listener sockd bound is not growable")
			}
			added, err := l.Grow(4)
			if err != nil || len(added) != 2 || l.Slots() != 4 {
				t.Fatalf("Grow(4): %v %v, %d sockets", added, err, l.Slots())
			}
			for _, fd := range added {
				checkSocket(t, fd, true)
			}
			dialN(t, l.Addr, 100)
			q := queues(t, l)
			if q[2] != 0 || q[3] != 0 || q[0]+q[1] != 100 || q[0] < 20 || q[1] < 20 {
				t.Fatalf("before steering to the new sockets: queues %v, want 100 on the first two, spread", q)
			}
			if err := l.Steer(4); err != nil {
				t.Fatal(err)
			}
			dialN(t, l.Addr, 200)
			q2 := queues(t, l)
			for i := range q2 {
				if got := q2[i] - q[i]; got < 20 {
					t.Fatalf("steered to 4 sockets: new connections per socket %v, want every socket to get its share", q2)
				}
			}
			t.Logf("queues: %v before steering to 4, %v after 200 more", q, q2)
			if err := l.Steer(1); err != nil {
				t.Fatal(err)
			}
			dialN(t, l.Addr, 50)
			q3 := queues(t, l)
			if q3[0]-q2[0] != 50 {
				t.Fatalf("steered to 1 socket: queues %v after %v", q3, q2)
			}
			_, limit, _ := l.Queue(0)
			if limit <= 0 {
				t.Fatalf("queue limit %d", limit)
			}
		})
	}
}

func TestSteerDatagrams(t *testing.T) {
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "u", Network: "udp", Address: "127.0.0.1:0"}}, activation.BindOptions{ReusePort: true, Slots: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	l := set[0]
	if err := l.Steer(1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		c, err := net.Dial("udp", l.Addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "datagram %d", i)
		c.Close()
	}
	q := queues(t, l)
	if q[0] == 0 || q[1] != 0 || q[2] != 0 {
		t.Fatalf("datagrams steered to socket 0 only, queued: %v", q)
	}
}

// Shared and unix listeners are not reuseport groups: Grow and Steer
// leave them alone.
func TestSharedListenerIsNotGrown(t *testing.T) {
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "x", Network: "tcp", Address: "127.0.0.1:0"}, {Name: "u", Network: "unix", Address: t.TempDir() + "/s"}}, activation.BindOptions{Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for _, l := range set {
		if added, err := l.Grow(4); l.Growable() || err != nil || added != nil || l.Slots() != 1 {
			t.Fatalf("%s: growable %v, Grow: %v %v", l, l.Growable(), added, err)
		}
		if err := l.Steer(3); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := set[1].Queue(0); err != activation.ErrNotSupported {
		t.Fatalf("queue of a unix listener: %v", err)
	}
	v, _ := unix.GetsockoptInt(set[0].FD(0), unix.SOL_SOCKET, unix.SO_REUSEPORT)
	if v != 0 {
		t.Fatal("shared listener has SO_REUSEPORT")
	}
}
