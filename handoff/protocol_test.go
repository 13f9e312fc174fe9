package handoff

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
)

// socketpair returns the two raw ends of a SOCK_SEQPACKET socketpair, as
// Start makes it.
func socketpair(t testing.TB) [2]int {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wrap turns a raw end into a conn (taking the descriptor over).
func wrap(t testing.TB, fd int) conn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "handoff")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return conn{nc.(*net.UnixConn)}
}

// exchange runs Child.receive over a real socketpair against a peer that
// sends the packets state and then every line of more, and closes its
// end. fdspec, split at '|', lists each packet's descriptors (see
// fdtest.Palette); a packet with more than the kernel's 253 gets 253. A
// packet the socket refuses (too big, or the queue full) ends the
// sending. It returns the child (to close), the inodes of the descriptors
// sent after the state packet, in order, and receive's error.
func exchange(t testing.TB, p *fdtest.Palette, state, more, fdspec string) (*Child, []uint64, error) {
	t.Helper()
	pair := socketpair(t)
	ch := &Child{c: wrap(t, pair[0])}
	if err := unix.SetNonblock(pair[1], true); err != nil {
		unix.Close(pair[1])
		t.Fatal(err)
	}
	packets := []string{state}
	if more != "" {
		packets = append(packets, strings.Split(more, "\n")...)
	}
	specs := strings.Split(fdspec, "|")
	var sent []uint64
	for i, pk := range packets {
		var oob []byte
		var fds []int
		var inodes []uint64
		if i < len(specs) {
			fds, inodes = p.Pick(specs[i][:min(len(specs[i]), 253)])
		}
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if err := sendPacket(pair[1], []byte(pk), oob); err != nil {
			break
		}
		if i > 0 {
			sent = append(sent, inodes...)
		}
	}
	unix.Close(pair[1])
	return ch, sent, ch.receive(time.Now().Add(10 * time.Second))
}

// sendPacket is sendmsg(2) as it is: unix.Sendmsg would add a byte to an
// empty packet that carries descriptors.
func sendPacket(fd int, p, oob []byte) error {
	var msg unix.Msghdr
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov, msg.Iovlen = &iov, 1
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
	runtime.KeepAlive(p)
	runtime.KeepAlive(oob)
	if e != 0 {
		return e
	}
	return nil
}

// closeChild closes everything a Child holds.
func closeChild(ch *Child) {
	ch.Listeners.Close()
	if ch.Control != nil {
		ch.Control.Close()
	}
	ch.Close()
}

// checkAdopted checks what a successful receive holds against its state:
// as many listeners, with the announced names, flags and socket counts,
// as many descriptors as announced, and those are the first ones sent
// (sent lists the inodes of the descriptors sent after the state), in
// order, now close-on-exec.
func checkAdopted(t testing.TB, ch *Child, sent []uint64) {
	t.Helper()
	st := ch.State
	if len(ch.Listeners) != len(st.Listeners) || (ch.Control != nil) != st.Control {
		t.Fatalf("state %+v gave %d listeners, control %v", st, len(ch.Listeners), ch.Control != nil)
	}
	var got []uint64
	for i, l := range ch.Listeners {
		ls := st.Listeners[i]
		if l.Name != ls.Name || l.Slots() != ls.Slots || l.Inherited != ls.Inherited || l.Path() != ls.Path {
			t.Fatalf("listener %d: %s with %d sockets, inherited %v, path %q; state says %+v", i, l, l.Slots(), l.Inherited, l.Path(), ls)
		}
		for _, fd := range l.FDs() {
			if !fdtest.Cloexec(fd) {
				t.Fatalf("listener %s: fd %d not close-on-exec", l.Name, fd)
			}
			got = append(got, fdtest.Inode(fd))
		}
	}
	if ch.Control != nil {
		rc, err := ch.Control.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			if !fdtest.Cloexec(int(fd)) {
				t.Errorf("control socket fd %d not close-on-exec", fd)
			}
			got = append(got, fdtest.Inode(int(fd)))
		})
	}
	if (ch.Metrics != nil) != st.Metrics {
		t.Fatalf("state %+v gave metrics listener %v", st, ch.Metrics)
	}
	if ch.Metrics != nil {
		rc, err := ch.Metrics.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			if !fdtest.Cloexec(int(fd)) {
				t.Errorf("metrics socket fd %d not close-on-exec", fd)
			}
			got = append(got, fdtest.Inode(int(fd)))
		})
	}
	// Packets after the announced count are left unread.
	if len(got) != st.FDs || len(got) > len(sent) || !slices.Equal(got, sent[:len(got)]) {
		t.Fatalf("state announces %d descriptors; adopted %v, sent %v", st.FDs, got, sent)
	}
}

// receiveCases are exchanges with what receive must make of them ("" for
// success); they seed FuzzChildReceive too.
var receiveCases = []struct {
	name, state, more, fdspec, wantErr string
}{
	{"listeners and control", `{"version":1,"generation":2,"listeners":[{"name":"http","slots":3},{"name":"adm","slots":1,"path":"/run/adm.sock"},{"name":"dns","slots":1,"inherited":true}],"control":true,"fds":6}`,
		`{"fds":6}`, "|000121", ""},
	{"three packets", `{"version":1,"listeners":[{"name":"http","slots":449}],"control":true,"fds":450}`,
		`{"fds":200}` + "\n" + `{"fds":200}` + "\n" + `{"fds":50}`, "|" + strings.Repeat("0", 200) + "|" + strings.Repeat("0", 200) + "|" + strings.Repeat("0", 49) + "1", ""},
	{"nothing to pass", `{"version":1,"generation":1,"listeners":null,"control":false,"fds":0}`, "", "", ""},
	{"descriptors on the state packet are dropped", `{"version":1,"listeners":[{"name":"a","slots":1}],"fds":1}`, `{"fds":1}`, "45|0", ""},
	{"other version", `{"version":2,"fds":0}`, "", "", "hand-off protocol version 2, this sockd speaks 1"},
	{"no version", `{"fds":0}`, "", "", "hand-off protocol version 0"},
	{"listener without sockets", `{"version":1,"listeners":[{"name":"http","slots":0}],"fds":0}`, "", "", `listener "http" with 0 sockets`},
	{"count off", `{"version":1,"listeners":[{"name":"http","slots":2}],"fds":3}`, `{"fds":3}`, "|000", "hand-off announces 3 descriptors for 2 sockets"},
	{"control not counted", `{"version":1,"listeners":[{"name":"http","slots":1}],"control":true,"fds":1}`, `{"fds":1}`, "|0", "hand-off announces 1 descriptors for 2 sockets"},
	{"packet carries fewer", `{"version":1,"listeners":[{"name":"http","slots":2}],"fds":2}`, `{"fds":2}`, "|0", "packet announced 2 descriptors and carried 1"},
	{"packet carries none", `{"version":1,"listeners":[{"name":"http","slots":2}],"fds":2}`, `{"fds":0}`, "|", "packet announced 0 descriptors and carried 0"},
	{"more than announced", `{"version":1,"listeners":[{"name":"http","slots":1}],"fds":1}`, `{"fds":2}`, "|00", "got 2 descriptors, expected 1"},
	{"peer gone early", `{"version":1,"listeners":[{"name":"http","slots":2}],"fds":2}`, `{"fds":1}`, "|0", "peer closed the hand-off socket"},
	{"more than a packet holds", `{"version":1,"listeners":[{"name":"http","slots":201}],"fds":201}`, `{"fds":201}`, "|" + strings.Repeat("0", 201), "hand-off packet truncated"},
	{"state not JSON", "hello", "", "", "bad hand-off packet"},
	{"empty state packet", "", "", "", "peer closed the hand-off socket"},
	{"empty state packet with a descriptor", "", "", "0", "peer closed the hand-off socket"},
	{"empty fd packet with descriptors", `{"version":1,"listeners":[{"name":"a","slots":2}],"fds":2}`, "\n", "|00|0", "peer closed the hand-off socket"},
	{"fd packet not JSON", `{"version":1,"listeners":[{"name":"http","slots":1}],"fds":1}`, "fds", "|0", "bad hand-off packet"},
	{"listener not a socket", `{"version":1,"listeners":[{"name":"http","slots":1},{"name":"x","slots":1}],"fds":2}`, `{"fds":2}`, "|04", `listener "x": fd`},
	{"control not a socket", `{"version":1,"listeners":[{"name":"http","slots":1}],"control":true,"fds":2}`, `{"fds":2}`, "|05", "control socket"},
	{"control a datagram socket", `{"version":1,"control":true,"fds":1}`, `{"fds":1}`, "|3", "control socket: not a listening socket"},
	{"control a connected socket", `{"version":1,"control":true,"fds":1}`, `{"fds":1}`, "|6", "control socket: not a listening socket"},
	{"control a TCP listener", `{"version":1,"listeners":[{"name":"http","slots":1}],"control":true,"fds":2}`, `{"fds":2}`, "|00", "control socket: a tcp socket, not a unix one"},
	{"socket counts that overflow to 0", `{"version":1,"listeners":[{"name":"a","slots":4611686018427387904},{"name":"b","slots":4611686018427387904},{"name":"c","slots":4611686018427387904},{"name":"d","slots":4611686018427387904}],"fds":0}`, "", "", "with 4611686018427387904 sockets"},
	{"socket counts that overflow to 1", `{"version":1,"listeners":[{"name":"a","slots":9223372036854775807},{"name":"b","slots":9223372036854775807},{"name":"c","slots":3}],"fds":1}`, `{"fds":1}`, "|0", "with 9223372036854775807 sockets"},
}

func TestReceive(t *testing.T) {
	p := fdtest.NewPalette(t)
	for _, c := range receiveCases {
		t.Run(c.name, func(t *testing.T) {
			checkFDs := fdtest.Track(t, c.name)
			ch, sent, err := exchange(t, p, c.state, c.more, c.fdspec)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				checkAdopted(t, ch, sent)
			} else if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("receive: %v, want an error mentioning %q", err, c.wantErr)
			}
			closeChild(ch)
			checkFDs()
		})
	}
}

func TestSendFDsSplitsPackets(t *testing.T) {
	p := fdtest.NewPalette(t)
	checkFDs := fdtest.Track(t, "descriptors sent and received")
	pair := socketpair(t)
	a, b := wrap(t, pair[0]), wrap(t, pair[1])
	defer a.c.Close()
	defer b.c.Close()
	fds, _ := p.Pick(strings.Repeat("01234567", 57)[:450])
	done := make(chan error, 1)
	go func() { done <- a.sendFDs(fds) }()
	var sizes []int
	var got []int
	for len(got) < len(fds) {
		var m message
		in, err := b.recv(&m, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if m.FDs != len(in) {
			t.Fatalf("packet announces %d descriptors, carries %d", m.FDs, len(in))
		}
		sizes, got = append(sizes, len(in)), append(got, in...)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sizes, []int{200, 200, 50}) {
		t.Errorf("packets of %v descriptors, want 200, 200, 50", sizes)
	}
	for i, fd := range got {
		if fdtest.Inode(fd) != fdtest.Inode(fds[i]) || !fdtest.Cloexec(fd) {
			t.Fatalf("descriptor %d: inode %d (sent %d), close-on-exec %v", i, fdtest.Inode(fd), fdtest.Inode(fds[i]), fdtest.Cloexec(fd))
		}
	}
	closeAll(got)
	a.c.Close()
	b.c.Close()
	checkFDs()
}

func env(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func TestAcceptFromFakeParent(t *testing.T) {
	set, ctl := testSet(t, 2), testControl(t)
	checkFDs := fdtest.Track(t, "hand-off taken and closed")
	pair := socketpair(t)
	parent := wrap(t, pair[1])
	defer parent.c.Close()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mln.Close()
	state, fds, err := collect(Options{Generation: 7, Listeners: set, Control: ctl, Metrics: mln})
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.send(state, nil); err != nil {
		t.Fatal(err)
	}
	if err := parent.sendFDs(fds); err != nil {
		t.Fatal(err)
	}
	closeAll(fds)
	ch, err := Accept(env(EnvFD, strconv.Itoa(pair[0])), 10*time.Second)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if unix.FcntlInt(uintptr(pair[0]), unix.F_GETFD, 0); fdtest.Inode(pair[0]) == fdtest.Inode(pair[1]) {
		t.Fatal("unreachable")
	}
	var sent []uint64
	for _, l := range set {
		for _, fd := range l.FDs() {
			sent = append(sent, fdtest.Inode(fd))
		}
	}
	rc, _ := ctl.SyscallConn()
	rc.Control(func(fd uintptr) { sent = append(sent, fdtest.Inode(int(fd))) })
	rc, _ = mln.(syscall.Conn).SyscallConn()
	rc.Control(func(fd uintptr) { sent = append(sent, fdtest.Inode(int(fd))) })
	checkAdopted(t, ch, sent)
	// The metrics socket it got is the same working listener.
	if ch.Metrics.Addr().String() != mln.Addr().String() {
		t.Fatalf("metrics listener at %s, want %s", ch.Metrics.Addr(), mln.Addr())
	}
	if ch.State.Generation != 7 {
		t.Errorf("generation %d, want 7", ch.State.Generation)
	}
	// The control socket it got is a working listener.
	c, err := net.Dial("unix", ctl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := ch.Control.Accept()
	if err != nil {
		t.Fatalf("accept on the control socket received: %v", err)
	}
	ac.Close()
	c.Close()
	if err := ch.Ready(); err != nil {
		t.Fatal(err)
	}
	var m message
	if in, err := parent.recv(&m, time.Now().Add(10*time.Second)); err != nil || len(in) != 0 || m != (message{Event: "ready", PID: os.Getpid()}) {
		t.Fatalf("ready message %+v, %d descriptors, %v", m, len(in), err)
	}
	if err := parent.send(message{Event: "commit"}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.WaitCommit(ctx); err != nil {
		t.Fatalf("WaitCommit: %v", err)
	}
	ch.Listeners.Close()
	ch.Control.Close()
	ch.Metrics.Close()
	mln.Close()
	parent.c.Close()
	checkFDs()
}

func TestWaitCommitFailures(t *testing.T) {
	p := fdtest.NewPalette(t)
	for _, c := range []struct {
		name, packet, fdspec, want string
	}{
		{"another message", `{"event":"ready"}`, "", "unexpected message"},
		{"with descriptors", `{"event":"bogus"}`, "012", "unexpected message"},
		{"garbage", "commit", "", "bad hand-off packet"},
		{"closed", "", "", "peer closed the hand-off socket"},
		{"empty with descriptors", "", "01", "peer closed the hand-off socket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkFDs := fdtest.Track(t, c.name)
			pair := socketpair(t)
			ch := &Child{c: wrap(t, pair[0])}
			if c.packet != "" || c.fdspec != "" {
				fds, _ := p.Pick(c.fdspec)
				var oob []byte
				if len(fds) > 0 {
					oob = unix.UnixRights(fds...)
				}
				if err := sendPacket(pair[1], []byte(c.packet), oob); err != nil {
					t.Fatal(err)
				}
			}
			unix.Close(pair[1])
			err := ch.WaitCommit(context.Background())
			if err == nil || !strings.Contains(err.Error(), "old sockd did not hand over") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("WaitCommit: %v, want one mentioning %q", err, c.want)
			}
			// WaitCommit closed the hand-off socket.
			checkFDs()
		})
	}
	t.Run("deadline", func(t *testing.T) {
		pair := socketpair(t)
		defer unix.Close(pair[1])
		ch := &Child{c: wrap(t, pair[0])}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := ch.WaitCommit(ctx); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WaitCommit from a silent parent: %v", err)
		}
	})
}

func TestAcceptErrors(t *testing.T) {
	if ch, err := Accept(env(), time.Second); ch != nil || err != nil {
		t.Fatalf("Accept without %s: %v, %v", EnvFD, ch, err)
	}
	for _, v := range []string{"x", "2", "0", "-3", "3.0", " 3"} {
		if _, err := Accept(env(EnvFD, v), time.Second); err == nil || !strings.Contains(err.Error(), "is not a descriptor") {
			t.Errorf("%s=%q: %v", EnvFD, v, err)
		}
	}
	checkFDs := fdtest.Track(t, "failed Accepts")
	// Never open (and above whatever the test opens).
	if _, err := Accept(env(EnvFD, "10001"), time.Second); !errors.Is(err, unix.EBADF) {
		t.Errorf("%s naming a closed descriptor: %v", EnvFD, err)
	}
	// Descriptors that are not a unix socket are closed: Accept owns the
	// descriptor it is given.
	devnull, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Accept(env(EnvFD, strconv.Itoa(devnull)), time.Second); err == nil || !strings.Contains(err.Error(), "hand-off socket") {
		t.Errorf("%s naming /dev/null: %v", EnvFD, err)
	}
	tcp, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Accept(env(EnvFD, strconv.Itoa(tcp)), time.Second); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Errorf("%s naming a TCP socket: %v", EnvFD, err)
	}
	// A parent that says nothing: the timeout.
	pair := socketpair(t)
	start := time.Now()
	if _, err := Accept(env(EnvFD, strconv.Itoa(pair[0])), 100*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) < 100*time.Millisecond {
		t.Errorf("Accept from a silent parent: %v after %v", err, time.Since(start))
	}
	unix.Close(pair[1])
	// A parent that breaks the protocol.
	pair = socketpair(t)
	unix.Sendmsg(pair[1], []byte(`{"version":1,"listeners":[{"name":"a","slots":1}],"fds":1}`), nil, nil, 0)
	unix.Close(pair[1])
	if _, err := Accept(env(EnvFD, strconv.Itoa(pair[0])), time.Second); err == nil || !strings.Contains(err.Error(), "receive sockets") {
		t.Errorf("Accept from a parent that left: %v", err)
	}
	checkFDs()
}
