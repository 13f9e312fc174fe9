//go:build linux

// Command notifyhelper is a tiny socket-activated Type=notify service used by
// the e2e sandbox tests. It serves every listening socket it is passed
// (LISTEN_FDS) by writing one line, "pid=PID fds=NAME:NAME...", to each
// connection; it hands the first socket to systemd's file descriptor store
// (FDSTORE=1, FDNAME=stored) unless it got a "stored" one back, and then sends
// READY=1 with a STATUS= text. It only uses the standard library.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	n := 0
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		n, _ = strconv.Atoi(os.Getenv("LISTEN_FDS"))
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	have := map[string]bool{}
	for _, name := range names {
		have[name] = true
	}
	for i := 0; i < n; i++ {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) {
			name = names[i]
		}
		ln, err := net.FileListener(os.NewFile(uintptr(fd), name))
		if err != nil {
			fail("fd %d (%s): %v", fd, name, err)
		}
		go serve(ln, strings.Join(names[:min(n, len(names))], ":"))
		if i == 0 && !have["stored"] {
			if err := notify("FDSTORE=1\nFDNAME=stored", fd); err != nil {
				fail("FDSTORE: %v", err)
			}
		}
	}
	if err := notify(fmt.Sprintf("READY=1\nSTATUS=serving %d fds: %s", n, os.Getenv("LISTEN_FDNAMES"))); err != nil {
		fail("READY: %v", err)
	}
	fmt.Printf("notifyhelper: pid %d ready with %d fds (%s)\n", os.Getpid(), n, os.Getenv("LISTEN_FDNAMES"))
	select {}
}

func serve(ln net.Listener, names string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fail("accept: %v", err)
		}
		fmt.Fprintf(c, "pid=%d fds=%s\n", os.Getpid(), names)
		c.Close()
	}
}

// notify sends one sd_notify(3) datagram, optionally with file descriptors.
func notify(msg string, fds ...int) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return fmt.Errorf("NOTIFY_SOCKET not set")
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	return syscall.Sendmsg(fd, []byte(msg), oob, &syscall.SockaddrUnix{Name: addr}, 0)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "notifyhelper: "+format+"\n", args...)
	os.Exit(1)
}
