package activation_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/procfs"
)

// parseSpecGood maps listen specs to their String(); they, and
// parseSpecBad's, seed FuzzParseSpec too.
var parseSpecGood = map[string]string{
	"tcp://127.0.0.1:8080":             "tcp-127.0.0.1-8080=tcp://127.0.0.1:8080",
	"http=tcp://127.0.0.1:0":           "http=tcp://127.0.0.1:0",
	"tcp://:80":                        "tcp-any-80=tcp://:80",
	"v6=tcp6://[::1]:8080":             "v6=tcp6://[::1]:8080",
	"dns=udp://127.0.0.1:5353":         "dns=udp://127.0.0.1:5353",
	"adm=unix:///run/a.sock?mode=0660": "adm=unix:///run/a.sock?mode=0660",
	"tcp4://localhost:1":               "tcp4-localhost-1=tcp4://localhost:1",
	"unix:///run/a%3Fb%23c%25d%20e":    "unix-a?b#c%d.e=unix:///run/a%3Fb%23c%25d%20e",
	"u=unix:///run/a b":                "u=unix:///run/a%20b",
}

// parseSpecBad maps listen specs to what their error mentions.
var parseSpecBad = map[string]string{
	"":                     "want [NAME=]SCHEME://ADDRESS",
	"127.0.0.1:8080":       "want [NAME=]SCHEME://ADDRESS",
	"sctp://1.2.3.4:5":     "unsupported scheme",
	"tcp://1.2.3.4":        "want HOST:PORT",
	"tcp://1.2.3.4:99999":  "port",
	"tcp://1.2.3.4:http":   "port",
	"tcp://a b:80":         "invalid character",
	"a:b=tcp://1.2.3.4:5":  "without ':'",
	"=tcp://1.2.3.4:5":     "1 to 255",
	"unix://relative":      "absolute",
	"unix:///x?mode=999":   "octal",
	"unix:///x?owner=me":   "unknown option",
	"tcp://1.2.3.4:5/path": "unexpected path",
	"unix:///run/a%00b":    "NUL byte",
}

func TestParseSpec(t *testing.T) {
	for in, want := range parseSpecGood {
		s, err := activation.ParseSpec(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseSpec(%q) = %q, %v; want %q", in, s, err, want)
		}
	}
	for in, want := range parseSpecBad {
		if _, err := activation.ParseSpec(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSpec(%q) error %v, want one mentioning %q", in, err, want)
		}
	}
}

func mustSpec(t *testing.T, s string) activation.Spec {
	t.Helper()
	spec, err := activation.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// checkSocket verifies the fd-level facts of a socket sockd holds.
func checkSocket(t *testing.T, fd int, listening bool) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("fd %d: flags %#x %v, want O_NONBLOCK", fd, fl, err)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d: not close-on-exec", fd)
	}
	if listening {
		acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil || acc != 1 {
			t.Errorf("fd %d: SO_ACCEPTCONN=%d %v", fd, acc, err)
		}
	}
}

func TestBindSharedAndReuseport(t *testing.T) {
	specs := []activation.Spec{mustSpec(t, "a=tcp://127.0.0.1:0"), mustSpec(t, "b=udp://127.0.0.1:0")}
	set, err := activation.Bind(context.Background(), specs, activation.BindOptions{ReusePort: true, Slots: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.Names() != "a:b" || set[0].Network != "tcp" || set[1].Network != "udp" {
		t.Fatalf("set %v names %q", set, set.Names())
	}
	for _, l := range set {
		if l.Slots() != 3 {
			t.Fatalf("%s: %d sockets, want 3", l, l.Slots())
		}
		var port int
		for i, fd := range l.FDs() {
			checkSocket(t, fd, l.Network == "tcp")
			if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); v != 1 {
				t.Errorf("%s socket %d: SO_REUSEPORT not set", l, i)
			}
			sa, _ := unix.Getsockname(fd)
			p := sa.(*unix.SockaddrInet4).Port
			if i > 0 && p != port {
				t.Errorf("%s slot %d bound port %d, slot 0 %d", l, i, p, port)
			}
			port = p
		}
		if l.FD(4) != l.FDs()[1] {
			t.Errorf("slot 4 should wrap to socket 1")
		}
	}
	shared, err := activation.Bind(context.Background(), specs[:1], activation.BindOptions{Slots: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	if shared[0].Slots() != 1 || shared[0].FD(2) != shared[0].FD(0) {
		t.Fatalf("shared listener has %d sockets", shared[0].Slots())
	}
	c, err := net.Dial("tcp", shared[0].Addr)
	if err != nil {
		t.Fatalf("dial %s: %v", shared[0].Addr, err)
	}
	c.Close()
}

func TestBindUnixStaleLiveAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	// A stale socket file (nobody listening) is replaced.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	set, err := activation.Bind(context.Background(), []activation.Spec{mustSpec(t, "u=unix://"+path+"?mode=0640")}, activation.BindOptions{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	checkSocket(t, set[0].FD(0), true)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	// A live one is refused.
	_, err = activation.Bind(context.Background(), []activation.Spec{mustSpec(t, "unix://"+path)}, activation.BindOptions{})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("binding over a live socket: %v", err)
	}
	set.Close()
	if err := set.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file not removed: %v", err)
	}
	// A regular file is never removed.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	if _, err := activation.Bind(context.Background(), []activation.Spec{mustSpec(t, "unix://"+plain)}, activation.BindOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("binding over a regular file: %v", err)
	}
}

func TestBindFailureLeavesNothingOpen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sock := filepath.Join(t.TempDir(), "first.sock")
	before, _ := procfs.FDs(os.Getpid())
	_, err = activation.Bind(context.Background(), []activation.Spec{
		mustSpec(t, "unix://"+sock), mustSpec(t, "tcp://127.0.0.1:0"), mustSpec(t, "tcp://"+busy.Addr().String()),
	}, activation.BindOptions{})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("want EADDRINUSE, got %v", err)
	}
	after, _ := procfs.FDs(os.Getpid())
	if len(after) != len(before) {
		t.Fatalf("fds %v before, %v after a failed Bind", before, after)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("unix socket of a failed Bind left behind")
	}
}

// inheritEnvErrors are LISTEN_* environments Inherit refuses (for pid
// 4242), with what the error mentions; they seed FuzzInherit too.
var inheritEnvErrors = []struct {
	env  map[string]string
	want string
}{
	{map[string]string{"LISTEN_FDS": "x", "LISTEN_PID": "4242"}, "not a count"},
	{map[string]string{"LISTEN_FDS": "-1", "LISTEN_PID": "4242"}, "not a count"},
	{map[string]string{"LISTEN_FDS": "5000", "LISTEN_PID": "4242"}, "more than"},
	{map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "abc"}, "not a process id"},
	{map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}, "LISTEN_PID=1: the sockets are for that process, not this process (pid 4242"},
	{map[string]string{"LISTEN_FDS": "1"}, "LISTEN_PID is not"},
	{map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "a"}, "1 names for LISTEN_FDS=2"},
}

func TestInheritEnvErrors(t *testing.T) {
	for _, c := range inheritEnvErrors {
		_, err := activation.Inherit(func(k string) string { return c.env[k] }, 4242)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Inherit(%v) = %v, want %q", c.env, err, c.want)
		}
	}
	_, err := activation.Inherit(func(k string) string { return map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}[k] }, 4242)
	if !errors.Is(err, activation.ErrNotOurs) {
		t.Fatalf("LISTEN_PID of another process: %v, want ErrNotOurs", err)
	}
	_, err = activation.Inherit(func(k string) string { return map[string]string{"LISTEN_FDS": "1"}[k] }, 4242)
	if !errors.Is(err, activation.ErrNotOurs) {
		t.Fatalf("LISTEN_FDS without LISTEN_PID: %v, want ErrNotOurs", err)
	}
	set, err := activation.Inherit(func(string) string { return "" }, 4242)
	if set != nil || err != nil {
		t.Fatalf("no LISTEN_FDS: %v %v", set, err)
	}
}

// tcp://0.0.0.0:P and udp://0.0.0.0:P bind IPv4 alone, as systemd's
// ListenStream=0.0.0.0:P does: Go's dual-stack [::] would take IPv6
// connections too, past an IPv4-only firewall, and show IPv4 clients as
// ::ffff:a.b.c.d. An empty host stays every address.
func TestIPv4WildcardIsIPv4Only(t *testing.T) {
	specs := []activation.Spec{mustSpec(t, "a=tcp://0.0.0.0:0"), mustSpec(t, "b=udp://0.0.0.0:0"), mustSpec(t, "c=tcp://:0")}
	set, err := activation.Bind(context.Background(), specs, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for i, want := range []int{unix.AF_INET, unix.AF_INET, unix.AF_INET6} {
		sa, err := unix.Getsockname(set[i].FD(0))
		if err != nil {
			t.Fatal(err)
		}
		family := unix.AF_INET6
		if _, ok := sa.(*unix.SockaddrInet4); ok {
			family = unix.AF_INET
		}
		if family != want {
			t.Errorf("%s (%s): bound as family %d, want %d", specs[i].Name, set[i].Addr, family, want)
		}
	}
}

// Matches tells whether a bound socket is the one a spec asks for, on real
// sockets of every kind.
func TestListenerMatches(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "m.sock")
	specs := []activation.Spec{mustSpec(t, "loop=tcp://127.0.0.1:0"), mustSpec(t, "any4=tcp://0.0.0.0:0"),
		mustSpec(t, "both=tcp://:0"), mustSpec(t, "dgram=udp://127.0.0.1:0"), mustSpec(t, "u=unix://"+sock), mustSpec(t, "six=tcp6://:0")}
	set, err := activation.Bind(context.Background(), specs, activation.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	port := func(l *activation.Listener) string { _, p, _ := net.SplitHostPort(l.Addr); return p }
	loop, any4, both, dgram, u, six := set[0], set[1], set[2], set[3], set[4], set[5]
	for _, c := range []struct {
		l    *activation.Listener
		spec string
		want bool
	}{
		{loop, "x=tcp://127.0.0.1:" + port(loop), true},
		{loop, "x=tcp://localhost:" + port(loop), true},
		{loop, "x=tcp4://127.0.0.1:" + port(loop), true},
		{loop, "x=tcp://127.0.0.1:0", true},
		{loop, "x=tcp://127.0.0.2:" + port(loop), false},
		{loop, "x=tcp://0.0.0.0:" + port(loop), false},
		{loop, "x=udp://127.0.0.1:" + port(loop), false},
		{loop, "x=unix://" + sock, false},
		{any4, "x=tcp://0.0.0.0:" + port(any4), true},
		{any4, "x=tcp://:" + port(any4), false},
		{any4, "x=tcp4://:" + port(any4), true},
		{both, "x=tcp://:" + port(both), true},
		{both, "x=tcp://[::]:" + port(both), true},
		{both, "x=tcp://0.0.0.0:" + port(both), false},
		{dgram, "x=udp://127.0.0.1:" + port(dgram), true},
		{dgram, "x=tcp://127.0.0.1:" + port(dgram), false},
		{both, "x=tcp6://:" + port(both), false},
		{six, "x=tcp6://:" + port(six), true},
		{six, "x=tcp6://[::]:" + port(six), true},
		{six, "x=tcp://:" + port(six), false},
		{u, "x=unix://" + sock, true},
		{u, "x=unix://" + sock + ".2", false},
		{u, "x=tcp://127.0.0.1:" + port(loop), false},
	} {
		if got := c.l.Matches(mustSpec(t, c.spec)); got != c.want {
			t.Errorf("%s (%s %s) matches %s: %v, want %v", c.l.Name, c.l.Network, c.l.Addr, c.spec, got, c.want)
		}
	}
}
