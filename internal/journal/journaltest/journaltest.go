// Package journaltest is a fake journald for tests: a unix datagram socket
// under a test's temporary directory that receives native-protocol entries
// (systemd-journald.service(8), https://systemd.io/JOURNAL_NATIVE_PROTOCOL/),
// including the memfd form of large entries, and parses them the way
// journald does.
package journaltest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Field is one field of an entry.
type Field struct {
	Name  string
	Value []byte
}

// Entry is a parsed entry.
type Entry []Field

// Get is the value of the first field named name, and whether there is one.
func (e Entry) Get(name string) (string, bool) {
	for _, f := range e {
		if f.Name == name {
			return string(f.Value), true
		}
	}
	return "", false
}

// Parse decodes one native-protocol datagram, strictly: every field must
// be NAME=value\n or NAME\n<le64 length>value\n.
func Parse(b []byte) (Entry, error) {
	var e Entry
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i <= 0 {
			return e, fmt.Errorf("field %d: no name", len(e))
		}
		name := string(b[:i])
		if b[i] == '=' {
			end := bytes.IndexByte(b[i+1:], '\n')
			if end < 0 {
				return e, fmt.Errorf("field %s: no newline", name)
			}
			e = append(e, Field{name, bytes.Clone(b[i+1 : i+1+end])})
			b = b[i+1+end+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			return e, fmt.Errorf("field %s: short length", name)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return e, fmt.Errorf("field %s: length %d does not match", name, n)
		}
		e = append(e, Field{name, bytes.Clone(b[:n])})
		b = b[n+1:]
	}
	return e, nil
}

// Server is a fake journald socket.
type Server struct {
	Path   string
	c      *net.UnixConn
	mu     sync.Mutex
	got    []Entry
	errs   []error
	memfds int
	done   chan struct{}
}

// Start listens at a path under t.TempDir() and collects entries until the
// test ends. rcvbuf, if > 0, sets the socket's receive buffer.
func Start(t testing.TB, rcvbuf int) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if rcvbuf > 0 {
		c.SetReadBuffer(rcvbuf)
	}
	s := &Server{Path: path, c: c, done: make(chan struct{})}
	go s.read()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *Server) read() {
	defer close(s.done)
	buf := make([]byte, 16<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := s.c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		data := buf[:n]
		var memfd bool
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			err = errors.New("datagram truncated")
		} else if oobn > 0 {
			data, err = fromMemfd(oob[:oobn])
			memfd = true
		}
		var e Entry
		if err == nil {
			e, err = Parse(data)
		}
		s.mu.Lock()
		if err != nil {
			s.errs = append(s.errs, err)
		} else {
			s.got = append(s.got, e)
		}
		if memfd {
			s.memfds++
		}
		s.mu.Unlock()
	}
}

// fromMemfd reads the entry passed as a descriptor; it must be sealed, as
// journald requires of a memfd.
func fromMemfd(oob []byte) ([]byte, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("bad control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("want one descriptor: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "memfd")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) != unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		return nil, errors.New("memfd not sealed")
	}
	// journald maps the file from its start; the offset is the sender's.
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

// Entries is a copy of what arrived so far.
func (s *Server) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Entry(nil), s.got...)
}

// Len is the number of entries so far.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// Errors lists datagrams that did not parse.
func (s *Server) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Memfds counts entries that came as a memfd.
func (s *Server) Memfds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.memfds
}

// Wait waits until at least n entries arrived, failing t after timeout.
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) []Entry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("fake journald: %d entries after %v, want %d (errors: %v)", s.Len(), timeout, n, s.Errors())
		}
		time.Sleep(2 * time.Millisecond)
	}
	return s.Entries()
}
