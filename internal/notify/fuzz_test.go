package notify

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// What Parse accepts, written back as lines, parses to the same fields.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"READY=1", "READY=1\nSTATUS=ok\n", "STOPPING=1\nSOCKD_REQUESTS=12", "=1", "garbage\x00\xff", "", "\n\n", "A=\nA=2", "WATCHDOG=1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := Parse(b)
		if err != nil {
			return
		}
		if len(fields) == 0 {
			t.Fatal("no fields and no error")
		}
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var lines []string
		for _, k := range keys {
			if !validName(k) || strings.Contains(fields[k], "\n") {
				t.Fatalf("field %q=%q from %q", k, fields[k], b)
			}
			lines = append(lines, k+"="+fields[k])
		}
		again, err := Parse([]byte(strings.Join(lines, "\n")))
		if err != nil || len(again) != len(fields) {
			t.Fatalf("%q: %v, reparsed %v %v", b, fields, again, err)
		}
		for k, v := range fields {
			if again[k] != v {
				t.Fatalf("%q: %s=%q came back as %q", b, k, v, again[k])
			}
		}
	})
}

// Whatever a sender puts in a datagram (any bytes, any number of
// descriptors), Receive returns a message or a DropError, and no
// descriptor stays open in this process.
func FuzzReceive(f *testing.F) {
	f.Add([]byte("READY=1"), uint8(0))
	f.Add([]byte(strings.Repeat("X=1\n", 2000)), uint8(0))
	f.Add([]byte("STATUS=x"), uint8(3))
	f.Add([]byte{}, uint8(1))
	dir := f.TempDir()
	srv, err := Listen(filepath.Join(dir, "n.sock"))
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	client, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	defer unix.Close(client)
	addr := &unix.SockaddrUnix{Name: srv.Addr()}
	f.Fuzz(func(t *testing.T, payload []byte, nfds uint8) {
		before, _ := procfs.FDs(os.Getpid())
		var oob []byte
		if n := int(nfds % 8); n > 0 {
			fds := make([]int, n)
			for i := range fds {
				fds[i] = 0 // stdin, n times: the receiver gets n new descriptors
			}
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(client, payload, oob, addr, 0); err != nil {
			return // too big for a datagram, say
		}
		m, err := srv.Receive()
		var drop *DropError
		switch {
		case err == nil:
			if m.PID != os.Getpid() || len(m.Fields) == 0 || nfds%8 != 0 {
				t.Fatalf("accepted %+v from %q with %d fds", m, payload, nfds%8)
			}
		case !asDrop(err, &drop):
			t.Fatalf("Receive: %v", err)
		}
		if after, _ := procfs.FDs(os.Getpid()); len(after) > len(before) {
			t.Fatalf("descriptors %v before, %v after", before, after)
		}
	})
}

func asDrop(err error, d **DropError) bool {
	e, ok := err.(*DropError)
	*d = e
	return ok
}
