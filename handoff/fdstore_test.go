package handoff

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/fdtest"
)

// fakeSystemd is a NOTIFY_SOCKET served by the test.
type fakeSystemd struct {
	addr string
	conn *net.UnixConn
}

// newFakeSystemd listens on a path under the test's directory, or in the
// abstract namespace with abstract.
func newFakeSystemd(t *testing.T, abstract bool) *fakeSystemd {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = fmt.Sprintf("@sockd-handoff-test-%d-%s", os.Getpid(), t.Name())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeSystemd{addr: addr, conn: c}
}

// recv returns the next datagram and the descriptors it carried.
func (s *fakeSystemd) recv(t *testing.T) (string, []int) {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 4096), make([]byte, 4096)
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("fake systemd: %v", err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), fds
}

// mark sends the fake a datagram of its own: once recv returns it, every
// datagram sent before has been read.
func (s *fakeSystemd) mark(t *testing.T) {
	t.Helper()
	if err := notify(s.addr, "TEST_MARK=1", -1); err != nil {
		t.Fatal(err)
	}
}

func TestStore(t *testing.T) {
	set := testSet(t, 2) // http: 2 sockets, adm: 1 (unix), dns: 2, inherited
	if n, err := Store("", set); n != 0 || err != nil {
		t.Fatalf("Store without NOTIFY_SOCKET: %d, %v", n, err)
	}
	for _, abstract := range []bool{false, true} {
		sd := newFakeSystemd(t, abstract)
		checkFDs := fdtest.Track(t, "stored")
		n, err := Store(sd.addr, set)
		if n != 3 || err != nil {
			t.Fatalf("Store(%s): %d, %v; want the 3 sockets sockd bound", sd.addr, n, err)
		}
		for _, want := range []struct {
			name string
			fd   int
		}{{"sockd.http.0", set[0].FD(0)}, {"sockd.http.1", set[0].FD(1)}, {"sockd.adm.0", set[1].FD(0)}} {
			msg, fds := sd.recv(t)
			if msg != "FDSTORE=1\nFDNAME="+want.name || len(fds) != 1 || fdtest.Inode(fds[0]) != fdtest.Inode(want.fd) {
				t.Errorf("stored %q with %d descriptors; want %s with fd %d", msg, len(fds), want.name, want.fd)
			}
			closeAll(fds)
		}
		// Nothing more (the inherited listener was not stored).
		sd.mark(t)
		if msg, fds := sd.recv(t); msg != "TEST_MARK=1" {
			closeAll(fds)
			t.Errorf("stored more: %q", msg)
		}
		checkFDs()
	}
	checkFDs := fdtest.Track(t, "failed Store")
	if n, err := Store(filepath.Join(t.TempDir(), "none"), set); n != 0 || err == nil || !strings.Contains(err.Error(), "fd store http") {
		t.Fatalf("Store to a missing socket: %d, %v", n, err)
	}
	checkFDs()
}

// stored wraps a duplicate of fd as systemd hands back a stored socket:
// one inherited listener named name, closed at the end of the test.
func stored(t *testing.T, name string, fd int) *activation.Listener {
	t.Helper()
	l, err := activation.NewListener(name, []int{mustDup(t, fd)}, true, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestRegroup(t *testing.T) {
	set := testSet(t, 3)
	gone, err := activation.Bind(context.Background(), []activation.Spec{{Name: "gone", Network: "unix", Address: filepath.Join(t.TempDir(), "gone.sock")}}, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	gone.Remove() // its file is gone: no path to remove later
	http, adm, dns := set[0].FDs(), set[1].FD(0), set[2].FD(0)
	in := activation.Set{
		stored(t, "sockd.http.2", http[2]),
		stored(t, "web", dns), // a .socket unit's
		stored(t, "sockd.adm.0", adm),
		stored(t, "sockd.http.0", http[0]),
		stored(t, "sockd.bad", dns),
		stored(t, "sockd.x.-1", dns),
		stored(t, "sockd.gone.0", gone[0].FD(0)),
		stored(t, "sockd.http.1", http[1]),
	}
	group, err := activation.NewListener("sockd.group.0", []int{mustDup(t, http[0]), mustDup(t, http[1])}, true, "")
	if err != nil {
		t.Fatal(err)
	}
	defer group.Close()
	in = append(in, group) // not a single stored socket: left alone
	checkFDs := fdtest.Track(t, "Regroup")
	out, err := Regroup(in)
	if err != nil {
		t.Fatal(err)
	}
	checkFDs() // Regroup opens nothing
	type want struct {
		name      string
		inherited bool
		path      string
		fds       []int
	}
	wants := []want{
		{"web", true, "", []int{dns}},
		{"sockd.bad", true, "", []int{dns}},
		{"sockd.x.-1", true, "", []int{dns}},
		{"sockd.group.0", true, "", http[:2]},
		{"http", false, "", http}, // in slot order
		{"adm", false, set[1].Path(), []int{adm}},
		{"gone", false, "", []int{gone[0].FD(0)}},
	}
	if len(out) != len(wants) {
		t.Fatalf("Regroup gave %v", out)
	}
	for i, w := range wants {
		l := out[i]
		var inodes, wantInodes []uint64
		for _, fd := range l.FDs() {
			inodes = append(inodes, fdtest.Inode(fd))
		}
		for _, fd := range w.fds {
			wantInodes = append(wantInodes, fdtest.Inode(fd))
		}
		if l.Name != w.name || l.Inherited != w.inherited || l.Path() != w.path || !slices.Equal(inodes, wantInodes) {
			t.Errorf("listener %d: %s inherited %v path %q sockets %v; want %+v (sockets %v)", i, l, l.Inherited, l.Path(), inodes, w, wantInodes)
		}
	}
}

func mustDup(t *testing.T, fd int) int {
	t.Helper()
	d, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// storeNames are fd store names and what parseStoreName makes of them
// (slot -1: not one of sockd's); they seed FuzzParseStoreName too.
var storeNames = []struct {
	in   string
	name string
	slot int
}{
	{"sockd.http.0", "http", 0},
	{"sockd.http.12", "http", 12},
	{"sockd.a.b.3", "a.b", 3},
	{"sockd.unknown.1023", "unknown", 1023},
	{"sockd.http", "", -1},
	{"sockd.http.", "", -1},
	{"sockd..0", "", -1},
	{"sockd.0", "", -1},
	{"sockd.http.-1", "", -1},
	{"sockd.http.x", "", -1},
	{"sockd.http.99999999999999999999", "", -1},
	{"sockd.http.01", "", -1},
	{"sockd.http.+1", "", -1},
	{"sockd.http.-0", "", -1},
	{"http.0", "", -1},
	{"Sockd.http.0", "", -1},
	{"", "", -1},
}

func TestParseStoreName(t *testing.T) {
	for _, c := range storeNames {
		name, slot, ok := parseStoreName(c.in)
		if ok != (c.slot >= 0) || ok && (name != c.name || slot != c.slot) {
			t.Errorf("parseStoreName(%q) = %q, %d, %v; want %q, %d", c.in, name, slot, ok, c.name, c.slot)
		}
	}
}

// FuzzParseStoreName: a name parses exactly when it is the one Store
// gives some listener name and slot, and those are what it parses to.
func FuzzParseStoreName(f *testing.F) {
	for _, c := range storeNames {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, slot, ok := parseStoreName(s)
		if !ok {
			return
		}
		if name == "" || slot < 0 || storePrefix+name+"."+strconv.Itoa(slot) != s {
			t.Fatalf("parseStoreName(%q) = %q, %d: not the name Store gives them", s, name, slot)
		}
	})
}
