package workertest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// NotifySocket is a NOTIFY_SOCKET served by the test: a unix datagram
// socket recording every assignment it receives.
type NotifySocket struct {
	path string
	conn *net.UnixConn

	mu      sync.Mutex
	lines   []string
	flushes int
}

// flushMark is the assignment Flush sends itself.
const flushMark = "WORKERTEST_FLUSH="

// NewNotifySocket listens on a fresh path (short enough for sun_path),
// removed at cleanup.
func NewNotifySocket(t testing.TB) *NotifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "wt")
	if err != nil {
		t.Fatalf("mkdtemp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	n := &NotifySocket{path: path, conn: conn}
	done := make(chan struct{})
	go n.read(done)
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

func (n *NotifySocket) read(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	for {
		k, err := n.conn.Read(buf)
		if err != nil {
			return
		}
		n.mu.Lock()
		for _, line := range strings.Split(string(buf[:k]), "\n") {
			switch {
			case strings.HasPrefix(line, flushMark):
				n.flushes++
			case line != "":
				n.lines = append(n.lines, line)
			}
		}
		n.mu.Unlock()
	}
}

// Path is the value for NOTIFY_SOCKET.
func (n *NotifySocket) Path() string { return n.path }

// Lines returns every assignment received so far, in order.
func (n *NotifySocket) Lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.lines...)
}

// Last returns the value of the last assignment to name.
func (n *NotifySocket) Last(name string) (string, bool) {
	lines := n.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(lines[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Has reports whether the exact assignment line was received.
func (n *NotifySocket) Has(line string) bool {
	for _, l := range n.Lines() {
		if l == line {
			return true
		}
	}
	return false
}

// Flush returns once every datagram sent before it was read: it sends
// itself a mark, and datagrams on a unix socket arrive in order.
func (n *NotifySocket) Flush(t testing.TB) {
	t.Helper()
	c, err := net.Dial("unixgram", n.path)
	if err != nil {
		t.Fatalf("dial notify socket: %v", err)
	}
	defer c.Close()
	n.mu.Lock()
	want := n.flushes + 1
	n.mu.Unlock()
	if _, err := c.Write([]byte(flushMark + "1")); err != nil {
		t.Fatalf("write notify socket: %v", err)
	}
	Eventually(t, 5*time.Second, "notify socket flush", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.flushes >= want
	})
}

// WaitFor waits until line was received, failing t after timeout.
func (n *NotifySocket) WaitFor(t testing.TB, line string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "notification "+line, func() bool { return n.Has(line) })
}
