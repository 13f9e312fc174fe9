// Package notify is the receiving end of the sd_notify(3) protocol
// (https://www.freedesktop.org/software/systemd/man/sd_notify.html): a unix
// datagram socket that sockd serves as the workers' NOTIFY_SOCKET, so that
// servers which already tell systemd READY=1 tell sockd instead, unchanged.
//
// Every datagram is newline-separated VAR=VALUE assignments. The sender is
// identified by the kernel (SCM_CREDENTIALS, enabled by SO_PASSCRED), never
// by the message itself; deciding whose messages count is the caller's job.
// Descriptors sent along (FDSTORE=1) are closed at once: workers have no
// fd store here.
package notify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxMessage is the largest datagram accepted; longer ones are dropped.
// systemd itself reads at most a pipe buffer's worth.
const MaxMessage = 4096

// Message is one datagram with its sender's credentials.
type Message struct {
	PID, UID, GID int
	// Fields holds every VAR=VALUE assignment, last one winning.
	Fields map[string]string
	// Ancestors are the sender's parent, grandparent, …, as the receiver
	// looked them up when the datagram arrived: a short-lived sender
	// (systemd-notify(1) started by a worker) may be gone by the time the
	// message is judged.
	Ancestors []int
}

// Ready reports READY=1.
func (m Message) Ready() bool { return m.Fields["READY"] == "1" }

// Stopping reports STOPPING=1.
func (m Message) Stopping() bool { return m.Fields["STOPPING"] == "1" }

// Watchdog reports WATCHDOG=1.
func (m Message) Watchdog() bool { return m.Fields["WATCHDOG"] == "1" }

// Status returns STATUS= and whether it was present.
func (m Message) Status() (string, bool) {
	s, ok := m.Fields["STATUS"]
	return s, ok
}

// Requests returns sockd's SOCKD_REQUESTS= extension: the cumulative
// number of requests the worker has served, if it reports it.
func (m Message) Requests() (int64, bool) {
	v, ok := m.Fields["SOCKD_REQUESTS"]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

// Parse reads the assignments of one datagram. A line without '=' or with
// an empty or non-printable name makes the whole message invalid.
func Parse(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, errors.New("empty message")
	}
	fields := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validName(k) {
			return nil, fmt.Errorf("malformed assignment %.40q", line)
		}
		fields[k] = v
	}
	if len(fields) == 0 {
		return nil, errors.New("no assignments")
	}
	return fields, nil
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Server is a NOTIFY_SOCKET.
type Server struct {
	conn     *net.UnixConn
	addr     string
	buf, oob []byte // reused: Receive is called from one goroutine

	// Trusted, if set, is asked about every datagram's sender before its
	// content is read: an untrusted one is dropped at the cost of one
	// recvmsg(2).
	Trusted func(pid, uid int) bool

	markMu sync.Mutex
	marker *net.UnixConn // sockd's own sending end, for Mark
}

// MarkField is the variable of the datagrams Mark sends. Receive returns
// them like any other message; only those whose sender is this very
// process (Message.PID == os.Getpid()) are genuine.
const MarkField = "SOCKD_MARK"

// Mark queues a datagram from this process carrying MarkField=tag behind
// every datagram already queued on the socket. The socket is one FIFO
// queue, so once Receive returns the mark, it has returned everything
// that was sent before Mark was called: a worker's STOPPING=1 sent just
// before it exited, say. Mark gives up after timeout (a full queue that
// nobody drains).
func (s *Server) Mark(tag string, timeout time.Duration) error {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	s.marker.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := s.marker.Write([]byte(MarkField + "=" + tag)); err != nil {
		return fmt.Errorf("notify socket mark: %w", err)
	}
	return nil
}

// Listen creates the socket. An address starting with '@' is in the
// abstract namespace (no file to clean up); anything else is a path.
func Listen(addr string) (*Server, error) {
	if addr == "" {
		return nil, errors.New("notify socket: empty address")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	if addr[0] != '@' {
		// Who may send is decided by the directory it is in (see
		// Listen's callers); the socket itself takes anyone who gets there.
		if err := os.Chmod(addr, 0o666); err != nil {
			os.Remove(addr)
			conn.Close()
			return nil, fmt.Errorf("notify socket: %w", err)
		}
	}
	if err := setPassCred(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// The sending end for Mark, made now so that sockd's descriptor count
	// does not change at the first worker exit.
	marker, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return &Server{conn: conn, addr: addr, buf: make([]byte, MaxMessage+1), oob: make([]byte, 512), marker: marker}, nil
}

// Addr is the value for NOTIFY_SOCKET.
func (s *Server) Addr() string { return s.addr }

// Close stops the server; a blocked Receive returns net.ErrClosed. A
// socket file is removed.
func (s *Server) Close() error {
	s.markMu.Lock()
	s.marker.Close()
	s.markMu.Unlock()
	if s.addr[0] != '@' {
		os.Remove(s.addr)
	}
	return s.conn.Close()
}

// Receive waits for the next datagram. Call it from one goroutine. Malformed datagrams, ones without
// credentials and oversized ones come back as *DropError so the caller can
// log them and go on; any other error is final.
func (s *Server) Receive() (Message, error) {
	buf, oob := s.buf, s.oob
	n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, err
	}
	creds, nfds := parseControl(oob[:oobn])
	if nfds > 0 {
		return Message{}, &DropError{Reason: fmt.Sprintf("%d descriptors sent; closed them", nfds)}
	}
	if creds == nil {
		return Message{}, &DropError{Reason: "no sender credentials"}
	}
	m := Message{PID: int(creds.Pid), UID: int(creds.Uid), GID: int(creds.Gid)}
	if s.Trusted != nil && !s.Trusted(m.PID, m.UID) {
		return m, &DropError{PID: m.PID, Reason: fmt.Sprintf("sender uid %d is not the workers'", m.UID)}
	}
	if n > MaxMessage || flags&unix.MSG_TRUNC != 0 || oobn == len(oob) {
		return m, &DropError{PID: m.PID, Reason: "message too long"}
	}
	if m.Fields, err = Parse(buf[:n]); err != nil {
		return m, &DropError{PID: m.PID, Reason: err.Error()}
	}
	return m, nil
}

// DropError describes a datagram that was not accepted.
type DropError struct {
	PID    int
	Reason string
}

func (e *DropError) Error() string {
	return fmt.Sprintf("notify message from pid %d dropped: %s", e.PID, e.Reason)
}

// parseControl extracts the credentials and closes every passed fd.
func parseControl(oob []byte) (*unix.Ucred, int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, 0
	}
	var creds *unix.Ucred
	nfds := 0
	for i := range msgs {
		switch {
		case msgs[i].Header.Type == unix.SCM_CREDENTIALS:
			creds, _ = unix.ParseUnixCredentials(&msgs[i])
		case msgs[i].Header.Type == unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(&msgs[i])
			for _, fd := range fds {
				unix.Close(fd)
			}
			nfds += len(fds)
		}
	}
	return creds, nfds
}

func setPassCred(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	})
	return errors.Join(err, serr)
}
