package handoff

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// An old sockd's packets, whatever they say and carry: the new sockd
// either takes a consistent set of listeners (as many sockets as the
// state announces, each listener with its slots) or refuses, and in both
// cases no descriptor it received is left open but the ones it took.
func FuzzChildReceive(f *testing.F) {
	f.Add([]byte(`{"version":1,"generation":3,"listeners":[{"name":"http","slots":2}],"fds":2}`), []byte(`{"fds":2}`), uint8(2))
	f.Add([]byte(`{"version":1,"listeners":[{"name":"a","slots":1},{"name":"b","slots":1}],"control":true,"fds":3}`), []byte(`{"fds":3}`), uint8(3))
	f.Add([]byte(`{"version":1,"listeners":[{"name":"x","slots":0}],"fds":0}`), []byte(`{}`), uint8(0))
	f.Add([]byte(`{"version":2}`), []byte(`{"fds":1}`), uint8(1))
	f.Add([]byte(`not json`), []byte(``), uint8(4))
	f.Add([]byte(`{"version":1,"listeners":[{"name":"http","slots":1}],"fds":1}`), []byte(`{"fds":2}`), uint8(2))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, state, fdPacket []byte, nfds uint8) {
		before, _ := procfs.FDs(os.Getpid())
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ours := os.NewFile(uintptr(pair[0]), "old")
		theirs := os.NewFile(uintptr(pair[1]), "new")
		nc, err := net.FileConn(theirs)
		theirs.Close()
		if err != nil {
			t.Fatal(err)
		}
		ch := &Child{c: conn{nc.(*net.UnixConn)}}
		var sent []int
		raw, _ := ln.(*net.TCPListener).SyscallConn()
		for i := 0; i < int(nfds%6); i++ {
			raw.Control(func(fd uintptr) {
				d, _ := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
				sent = append(sent, d)
			})
		}
		unix.Sendmsg(int(ours.Fd()), state, nil, nil, 0)
		var oob []byte
		if len(sent) > 0 {
			oob = unix.UnixRights(sent...)
		}
		unix.Sendmsg(int(ours.Fd()), fdPacket, oob, nil, 0)
		for _, fd := range sent {
			unix.Close(fd)
		}
		ours.Close() // the old sockd is gone: no packet beyond these
		err = ch.receive(time.Now().Add(time.Second))
		nc.Close()
		if err == nil {
			want := 0
			for i, l := range ch.State.Listeners {
				if ch.Listeners[i].Slots() != l.Slots || l.Slots < 1 {
					t.Fatalf("listener %d: %d sockets, state says %d", i, ch.Listeners[i].Slots(), l.Slots)
				}
				want += l.Slots
			}
			if ch.State.Control {
				want++
				if ch.Control == nil {
					t.Fatal("no control socket")
				}
				ch.Control.Close()
			}
			if want != ch.State.FDs || len(ch.Listeners) != len(ch.State.Listeners) {
				t.Fatalf("took %d listeners for state %+v", len(ch.Listeners), ch.State)
			}
			ch.Listeners.Close()
		}
		if after, _ := procfs.FDs(os.Getpid()); len(after) > len(before) {
			t.Fatalf("err %v: descriptors %v before, %v after", err, before, after)
		}
	})
}
