package activation_test

import (
	"context"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func dup(t *testing.T, fd int) int {
	t.Helper()
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// groupOf binds a reuseport group of n sockets; sockd's order is the
// kernel's. It returns the listener and its sockets' inodes in order.
func groupOf(t *testing.T, addr string, n int) (*activation.Listener, []uint64) {
	t.Helper()
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "x", Network: "tcp", Address: addr}}, activation.BindOptions{ReusePort: true, Slots: n})
	if err != nil {
		t.Skipf("cannot bind %s: %v", addr, err)
	}
	t.Cleanup(func() { set.Close() })
	var ino []uint64
	for _, fd := range set[0].FDs() {
		ino = append(ino, inode(t, fd))
	}
	return set[0], ino
}

// shuffled is a second listener over the same sockets (duplicates) in a
// random order, as sockets back from systemd's fd store may come.
func shuffled(t *testing.T, l *activation.Listener, r *rand.Rand) *activation.Listener {
	t.Helper()
	fds := l.FDs()
	r.Shuffle(len(fds), func(i, j int) { fds[i], fds[j] = fds[j], fds[i] })
	if fds[0] == l.FD(0) {
		fds[0], fds[1] = fds[1], fds[0] // never the order it was
	}
	for i := range fds {
		fds[i] = dup(t, fds[i])
	}
	s, err := activation.NewListener("x", fds, false, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func checkOrder(t *testing.T, l *activation.Listener, want []uint64) {
	t.Helper()
	for i, fd := range l.FDs() {
		if got := inode(t, fd); got != want[i] {
			t.Fatalf("socket %d after Order: inode %d, the group has %d there", i, got, want[i])
		}
	}
}

// Order puts shuffled sockets back in the group's order, also while
// connections keep arriving, and leaves no probe connection queued.
func TestOrderFindsTheGroupsOrder(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for _, c := range []struct {
		addr string
		n    int
	}{{"127.0.0.1:0", 2}, {"127.0.0.1:0", 7}, {"[::1]:0", 16}, {"0.0.0.0:0", 64}} {
		l, ino := groupOf(t, c.addr, c.n)
		s := shuffled(t, l, r)
		moved, err := s.Order()
		if err != nil {
			t.Fatal(err)
		}
		checkOrder(t, s, ino)
		if !moved {
			t.Errorf("%d sockets: Order says nothing moved", c.n)
		}
		for i := range c.n {
			if d, _, _ := l.Queue(i); d != 0 {
				t.Fatalf("%s: %d probe connections left on socket %d", c.addr, d, i)
			}
		}
		if moved, err := s.Order(); err != nil || moved {
			t.Fatalf("second Order: moved %v, %v", moved, err)
		}
	}
}

func TestOrderUnderTraffic(t *testing.T) {
	l, ino := groupOf(t, "127.0.0.1:0", 256)
	s := shuffled(t, l, rand.New(rand.NewSource(6)))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	dialed := 0
	started := make(chan struct{})
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.Dial("tcp", l.Addr)
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT left behind
			c.Close()
			if dialed++; dialed == 10 {
				close(started)
			}
		}
	}()
	<-started
	_, err := s.Order()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, s, ino)
	t.Logf("%d connections arrived while probing", dialed)
}

// Closing a socket of a group moves the group's last socket into its
// place: a listener over the rest in bind order is then wrong, and Order
// finds the order the kernel made.
func TestOrderAfterAClose(t *testing.T) {
	l, ino := groupOf(t, "127.0.0.1:0", 4)
	fds := l.FDs()
	rest := []int{dup(t, fds[0]), dup(t, fds[2]), dup(t, fds[3])}
	s, err := activation.NewListener("x", rest, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l.Close() // socket 1 is closed now; 0, 2 and 3 live on in s
	moved, err := s.Order()
	if err != nil || !moved {
		t.Fatalf("Order: moved %v, %v", moved, err)
	}
	checkOrder(t, s, []uint64{ino[0], ino[3], ino[2]})
}

// Probing a large group: how long it takes (see BENCHMARKS.md).
func TestOrderLargeGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("binds 2048 sockets")
	}
	l, ino := groupOf(t, "127.0.0.1:0", 2048)
	s := shuffled(t, l, rand.New(rand.NewSource(7)))
	start := time.Now()
	if _, err := s.Order(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ordered 2048 sockets in %v", time.Since(start))
	checkOrder(t, s, ino)
}
