package worker

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/worker/workertest"
)

// These tests take sockets in-process: a test cannot put anything on fd 3,
// which the Go runtime may use, so they move listenFdsStart to a free
// range and dup2 the sockets there. The reload tests cover fd 3 itself in
// a real worker process.

// passFDs dup2s conns onto a free fd range, points listenFdsStart at it
// and sets LISTEN_* for this process.
func passFDs(t *testing.T, names string, conns ...syscall.Conn) int {
	t.Helper()
	start := freeFDRange(t, len(conns))
	for i, c := range conns {
		fd := start + i
		dupOnto(t, c, fd)
		t.Cleanup(func() { unix.Close(fd) })
	}
	old := listenFdsStart
	listenFdsStart = start
	t.Cleanup(func() { listenFdsStart = old })
	t.Setenv("LISTEN_FDS", strconv.Itoa(len(conns)))
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDNAMES", names)
	return start
}

func freeFDRange(t *testing.T, n int) int {
	for start := 600; start < 1000; start += 16 {
		free := true
		for fd := start; fd < start+n; fd++ {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				free = false
			}
		}
		if free {
			return start
		}
	}
	t.Fatal("no free fd range")
	return 0
}

// dupOnto dup2s c's descriptor onto fd.
func dupOnto(t *testing.T, c syscall.Conn, fd int) {
	t.Helper()
	f, err := workertest.File(c, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Dup2(int(f.Fd()), fd); err != nil {
		t.Fatalf("dup2: %v", err)
	}
}

func TestListenersKeepNonBlocking(t *testing.T) {
	tcp := workertest.Listen(t)
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: t.TempDir() + "/s", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	start := passFDs(t, "web:admin", tcp, ul)

	m, err := ListenersWithNames()
	if err != nil {
		t.Fatalf("ListenersWithNames: %v", err)
	}
	if len(m["web"]) != 1 || len(m["admin"]) != 1 {
		t.Fatalf("listeners by name = %v, want web and admin", m)
	}
	for _, l := range []*net.TCPListener{tcp} {
		if nb, err := workertest.NonBlocking(l); err != nil || !nb {
			t.Errorf("shared socket O_NONBLOCK = %v (%v) after Listeners", nb, err)
		}
	}
	if nb, err := workertest.NonBlocking(ul); err != nil || !nb {
		t.Errorf("shared unix socket O_NONBLOCK = %v (%v) after Listeners", nb, err)
	}
	for fd := start; fd < start+2; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Errorf("passed fd %d still open; want it closed (the listener holds a dup)", fd)
		}
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set", k, v)
		}
	}
	web := m["web"][0]
	defer web.Close()
	defer m["admin"][0].Close()
	checkCloexec(t, web.(*net.TCPListener))
	c, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := web.Accept()
	if err != nil {
		t.Fatalf("accept through taken listener: %v", err)
	}
	s.Close()
}

func checkCloexec(t *testing.T, l *net.TCPListener) {
	t.Helper()
	rc, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("listener fd %d FD_CLOEXEC not set (flags %#x, %v)", fd, flags, err)
		}
	})
}

func TestListenersBadEnv(t *testing.T) {
	tests := []struct {
		name, fds, pid, names, want string
	}{
		{"other pid", "1", strconv.Itoa(os.Getppid()), "x", "not this process"},
		{"pid unset", "1", "-", "x", "LISTEN_PID is not"},
		{"pid garbage", "1", "abc", "x", "invalid LISTEN_PID"},
		{"fds garbage", "two", "self", "x", "invalid LISTEN_FDS"},
		{"fds negative", "-1", "self", "x", "invalid LISTEN_FDS"},
		{"names count", "1", "self", "a:b", "2 names"},
		{"fd not open", "3", "self", "", "fd "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := listenFdsStart
			listenFdsStart = freeFDRange(t, 3)
			t.Cleanup(func() { listenFdsStart = old })
			pid := strings.Replace(tc.pid, "self", strconv.Itoa(os.Getpid()), 1)
			t.Setenv("LISTEN_FDS", tc.fds)
			t.Setenv("LISTEN_FDNAMES", tc.names)
			t.Setenv("LISTEN_PID", pid)
			if pid == "-" {
				os.Unsetenv("LISTEN_PID")
			}
			if tc.names == "" {
				os.Unsetenv("LISTEN_FDNAMES")
			}
			ls, err := Listeners()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Listeners() = %v, %v; want error containing %q", ls, err, tc.want)
			}
			if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
				t.Error("LISTEN_FDS still set after an error")
			}
		})
	}
}

func TestListenersNotActivated(t *testing.T) {
	// LISTEN_FDS unset, or 0 for this very process: nothing passed.
	for _, v := range []string{"", "0"} {
		t.Setenv("LISTEN_FDS", v)
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		if _, err := Listeners(); !errors.Is(err, ErrNotActivated) {
			t.Errorf("LISTEN_FDS=%q: err = %v, want ErrNotActivated", v, err)
		}
	}
	// As sd_listen_fds(3): LISTEN_PID is read first; without it the
	// variables are not this process's, whatever LISTEN_FDS says.
	t.Setenv("LISTEN_FDS", "0")
	os.Unsetenv("LISTEN_PID")
	if _, err := Listeners(); err == nil || errors.Is(err, ErrNotActivated) {
		t.Errorf("LISTEN_FDS=0 without LISTEN_PID: err = %v, want an error", err)
	}
}

// TestListenersRejectNonListeners: a datagram socket, a connected socket
// and a pipe are errors for Listeners; Files takes them.
func TestListenersRejectNonListeners(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp := workertest.Listen(t)
	conn, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, tc := range []struct {
		name string
		c    syscall.Conn
		want string
	}{
		{"udp", udp, "not a stream socket"},
		{"connected", conn.(*net.TCPConn), "not listening"},
		{"pipe", r, "not a socket"},
	} {
		passFDs(t, tc.name, tc.c)
		if _, err := Listeners(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		passFDs(t, tc.name, tc.c)
		files, err := Files()
		if err != nil || len(files) != 1 || files[0].Name() != tc.name {
			t.Fatalf("%s: Files() = %v, %v", tc.name, files, err)
		}
		files[0].Close()
	}
}
