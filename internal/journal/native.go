package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The native protocol (systemd-journald.service(8), "Native Protocol";
// https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram per entry on
// the unix datagram socket /run/systemd/journal/socket. An entry is a list
// of fields, each either
//
//	NAME=value\n                          (value without a newline)
//	NAME\n<64-bit little-endian length>value\n   (any bytes)
//
// An entry too large for one datagram goes as a sealed memfd passed with
// SCM_RIGHTS in an empty datagram. Field names are upper-case letters,
// digits and '_', not starting with '_' (journald sets those itself).
//
// Conn speaks it to a socket at any path (go-systemd's journal package
// dials the fixed path), so that sockd relays its workers' lines with
// fields of its own and tests talk to a fake journald.

// DefaultSocket is journald's native socket.
const DefaultSocket = "/run/systemd/journal/socket"

// Entry builds one native-protocol entry. The zero value is empty; Reset
// reuses its buffer.
type Entry struct{ b []byte }

// Reset empties the entry, keeping its buffer.
func (e *Entry) Reset() { e.b = e.b[:0] }

// Bytes is the encoded entry.
func (e *Entry) Bytes() []byte { return e.b }

// Add appends a field. name must be a valid field name (ValidName); value
// may hold any bytes: with a newline it takes the length-prefixed form.
func (e *Entry) Add(name string, value []byte) {
	for _, c := range value {
		if c == '\n' {
			e.b = append(e.b, name...)
			e.b = append(e.b, '\n')
			e.b = binary.LittleEndian.AppendUint64(e.b, uint64(len(value)))
			e.b = append(e.b, value...)
			e.b = append(e.b, '\n')
			return
		}
	}
	e.b = append(e.b, name...)
	e.b = append(e.b, '=')
	e.b = append(e.b, value...)
	e.b = append(e.b, '\n')
}

// AddString is Add for a string value.
func (e *Entry) AddString(name, value string) {
	for i := 0; i < len(value); i++ {
		if value[i] == '\n' {
			e.Add(name, []byte(value))
			return
		}
	}
	e.b = append(e.b, name...)
	e.b = append(e.b, '=')
	e.b = append(e.b, value...)
	e.b = append(e.b, '\n')
}

// AddEntry appends the fields of o.
func (e *Entry) AddEntry(o *Entry) { e.b = append(e.b, o.b...) }

// ValidName reports whether journald accepts name as a field a client sets.
func ValidName(name string) bool {
	if name == "" || name[0] == '_' || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Conn is a connection to a journald native socket, safe for concurrent
// use: each Send is one datagram, so entries never mix. When journald's
// queue is full, Send waits (through Go's poller) until it has room: the
// caller feels journald's back-pressure instead of losing entries.
type Conn struct {
	path string
	mu   sync.RWMutex
	c    *net.UnixConn
}

// Dial connects to the native socket at path (DefaultSocket if empty).
func Dial(path string) (*Conn, error) {
	if path == "" {
		path = DefaultSocket
	}
	c := &Conn{path: path}
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.c = conn
	return c, nil
}

func (c *Conn) dial() (*net.UnixConn, error) {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: c.path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal socket %s: %w", c.path, err)
	}
	// journald itself takes 8 MiB of receive buffer; a larger send buffer
	// lets more entries be in flight before Send waits. Best effort.
	_ = conn.SetWriteBuffer(8 << 20)
	return conn, nil
}

// Path is the socket's path.
func (c *Conn) Path() string { return c.path }

// Send sends one entry. An entry too large for a datagram goes as a sealed
// memfd. If journald was restarted (the socket refuses), Send connects
// again once.
func (c *Conn) Send(e *Entry) error { return c.SendBytes(e.Bytes()) }

// SendBytes sends an encoded entry.
func (c *Conn) SendBytes(b []byte) error {
	c.mu.RLock()
	conn := c.c
	c.mu.RUnlock()
	if conn == nil {
		return fmt.Errorf("journal socket %s: %w", c.path, net.ErrClosed)
	}
	err := c.send(conn, b)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ENOENT) {
		if conn, err = c.redial(conn); err == nil {
			err = c.send(conn, b)
		}
	}
	if err != nil {
		return fmt.Errorf("journal socket %s: %w", c.path, err)
	}
	return nil
}

func (c *Conn) send(conn *net.UnixConn, b []byte) error {
	_, err := conn.Write(b)
	if errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS) {
		return sendMemfd(conn, b)
	}
	return err
}

// redial replaces old by a new connection, unless another Send did so.
func (c *Conn) redial(old *net.UnixConn) (*net.UnixConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil, net.ErrClosed
	}
	if c.c != old {
		return c.c, nil
	}
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	old.Close()
	c.c = conn
	return conn, nil
}

// sendMemfd passes b as a sealed memfd, as sd_journal_sendv does.
func sendMemfd(conn *net.UnixConn, b []byte) error {
	fd, err := unix.MemfdCreate("journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("memfd for a large entry: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("memfd for a large entry: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("seal memfd: %w", err)
	}
	// Go refuses WriteMsgUnix on a connected datagram socket: sendmsg
	// through the poller by hand.
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(s uintptr) bool {
		serr = unix.Sendmsg(int(s), nil, unix.UnixRights(fd), nil, 0)
		return serr != unix.EAGAIN
	})
	return errors.Join(err, serr)
}

// Close closes the connection; Send fails afterwards.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil
	}
	err := c.c.Close()
	c.c = nil
	return err
}
