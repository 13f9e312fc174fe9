package notify_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
)

// parseGood and parseBad are datagrams Parse accepts and refuses; they
// seed FuzzParse too.
var (
	parseGood = "READY=1\nSTATUS=serving 3 = many\n\nSOCKD_REQUESTS=42\n"
	parseBad  = []string{"", "\n\n", "READY", "=1", "ready=1", "A B=1", "READY=1\nnonsense"}
)

func TestParse(t *testing.T) {
	f, err := notify.Parse([]byte(parseGood))
	if err != nil || f["READY"] != "1" || f["STATUS"] != "serving 3 = many" || f["SOCKD_REQUESTS"] != "42" {
		t.Fatalf("Parse = %v, %v", f, err)
	}
	m := notify.Message{Fields: f}
	if n, ok := m.Requests(); !m.Ready() || m.Stopping() || !ok || n != 42 {
		t.Fatalf("accessors wrong: %+v", m)
	}
	for _, bad := range parseBad {
		if _, err := notify.Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if _, ok := (notify.Message{Fields: map[string]string{"SOCKD_REQUESTS": "-3"}}).Requests(); ok {
		t.Error("negative SOCKD_REQUESTS accepted")
	}
}

func send(t *testing.T, addr string, msg []byte, oob []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	name := addr
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	if err := unix.Sendmsg(fd, msg, oob, &unix.SockaddrUnix{Name: name}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestServerCredentialsDropsAndFDs(t *testing.T) {
	for _, addr := range []string{filepath.Join(t.TempDir(), "n.sock"), "@sockd-test-notify-" + t.Name()} {
		s, err := notify.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		send(t, addr, []byte("READY=1\nSTATUS=hi"), nil)
		m, err := s.Receive()
		if err != nil || m.PID != os.Getpid() || !m.Ready() {
			t.Fatalf("%s: Receive = %+v, %v", addr, m, err)
		}
		send(t, addr, []byte(strings.Repeat("A=1\n", 2000)), nil)
		var drop *notify.DropError
		if _, err := s.Receive(); !errors.As(err, &drop) || !strings.Contains(drop.Reason, "too long") {
			t.Fatalf("oversized message: %v", err)
		}
		send(t, addr, []byte("garbage"), nil)
		if _, err := s.Receive(); !errors.As(err, &drop) {
			t.Fatalf("garbage: %v", err)
		}
		before, _ := procfs.FDs(os.Getpid())
		send(t, addr, []byte("FDSTORE=1"), unix.UnixRights(0, 1, 2))
		if _, err := s.Receive(); !errors.As(err, &drop) || !strings.Contains(drop.Reason, "3 descriptors") {
			t.Fatalf("descriptors: %v", err)
		}
		after, _ := procfs.FDs(os.Getpid())
		if len(after) != len(before) {
			t.Fatalf("passed descriptors leaked: %v → %v", before, after)
		}
		s.Close()
	}
}
