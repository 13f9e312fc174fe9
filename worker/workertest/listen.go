// Package workertest runs workers the way sockd does, for tests: a shared
// listening socket handed as fd 3 with LISTEN_* set, a NOTIFY_SOCKET served
// by the test, a load (sockd's load generator, internal/load) and a reload
// scenario (start the next generation, SIGTERM the old one under load).
package workertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Listen returns a TCP listener on 127.0.0.1, closed at cleanup.
func Listen(t testing.TB) *net.TCPListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

// File duplicates c's descriptor (close-on-exec) into a file for
// exec.Cmd.ExtraFiles. Unlike (*net.TCPListener).File, whose Fd method
// clears O_NONBLOCK on the shared open file description, the file made
// here by os.NewFile leaves the flags alone when os/exec calls Fd.
func File(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("syscall conn: %w", err)
	}
	dup := -1
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// NonBlocking reports whether O_NONBLOCK is set on c's descriptor.
func NonBlocking(c syscall.Conn) (bool, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("syscall conn: %w", err)
	}
	var flags int
	var flagsErr error
	if err := rc.Control(func(fd uintptr) {
		flags, flagsErr = unix.FcntlInt(fd, unix.F_GETFL, 0)
	}); err != nil {
		return false, err
	}
	if flagsErr != nil {
		return false, fmt.Errorf("fcntl F_GETFL: %w", flagsErr)
	}
	return flags&unix.O_NONBLOCK != 0, nil
}

// CheckAlive fails t unless l is still non-blocking and accepts a new
// connection itself: the socket and its queue outlived the workers.
func CheckAlive(t testing.TB, l *net.TCPListener) {
	t.Helper()
	nb, err := NonBlocking(l)
	if err != nil || !nb {
		t.Fatalf("shared listener O_NONBLOCK = %v (err %v), want set", nb, err)
	}
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial shared listener: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	l.SetDeadline(time.Now().Add(5 * time.Second))
	defer l.SetDeadline(time.Time{})
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on shared listener after the workers exited: %v", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(s).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("read from accepted connection: %q, %v", line, err)
	}
}

// Eventually polls cond every few milliseconds until it holds, failing t
// with msg after timeout.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Backlog returns the accept queue limit of listening TCP socket l (the
// kernel reports it in TCP_INFO's tcpi_sacked for a listening socket). A
// worker calling listen(2) again on a shared socket changes it for all.
func Backlog(l *net.TCPListener) (uint32, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("syscall conn: %w", err)
	}
	var n uint32
	var infoErr error
	if err := rc.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); infoErr == nil {
			n = info.Sacked
		}
	}); err != nil {
		return 0, err
	}
	if infoErr != nil {
		return 0, fmt.Errorf("TCP_INFO: %w", infoErr)
	}
	return n, nil
}
