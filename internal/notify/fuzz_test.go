package notify_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/notify"
)

// validName is the rule for a variable's name: A-Z, 0-9 and '_'.
func validName(k string) bool {
	return k != "" && strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == ""
}

// format writes fields as one datagram, sorted.
func format(fields map[string]string) []byte {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		fmt.Fprintf(&b, "%s=%s\n", k, fields[k])
	}
	return []byte(b.String())
}

// FuzzParse: a datagram parses exactly when it has a non-empty line and
// every non-empty line is NAME=VALUE with a valid name; then the fields
// are the last value of each name, and written out again they parse to
// the same fields.
func FuzzParse(f *testing.F) {
	f.Add([]byte(parseGood))
	for _, s := range parseBad {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := notify.Parse(b)
		want := map[string]string{}
		ok := true
		for _, line := range strings.Split(string(b), "\n") {
			if line == "" {
				continue
			}
			k, v, found := strings.Cut(line, "=")
			ok = ok && found && validName(k)
			want[k] = v
		}
		ok = ok && len(want) > 0
		if (err == nil) != ok {
			t.Fatalf("Parse(%q) = %v, %v; want it accepted: %v", b, fields, err, ok)
		}
		if err != nil {
			return
		}
		if !maps.Equal(fields, want) {
			t.Fatalf("Parse(%q) = %v, want %v", b, fields, want)
		}
		again, err := notify.Parse(format(fields))
		if err != nil || !maps.Equal(again, fields) {
			t.Fatalf("Parse(%q) = %v, written out as %q parses to %v, %v", b, fields, format(fields), again, err)
		}
	})
}

// FuzzReceive sends the server a datagram with descriptors picked by
// fdspec (see fdtest.Palette), and Receive must: drop it if it carried
// descriptors (and close every one it got), drop it if it is longer than
// MaxMessage or does not parse, else return its fields with this
// process's credentials. It never leaves a descriptor open.
func FuzzReceive(f *testing.F) {
	for _, s := range []struct{ payload, fdspec string }{
		{"READY=1\nSTATUS=hi", ""},
		{strings.Repeat("A=1\n", 2000), ""},
		{"garbage", ""},
		{"FDSTORE=1", "012"},
		{"FDSTORE=1\nFDNAME=x", strings.Repeat("4", 253)},
		{"", ""},
		{"", "1"},
		{parseGood, ""},
	} {
		f.Add([]byte(s.payload), s.fdspec)
	}
	p := fdtest.NewPalette(f)
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	addr := filepath.Join(dir, "n.sock")
	s, err := notify.Listen(addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	sender, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { unix.Close(sender) })
	f.Fuzz(func(t *testing.T, payload []byte, fdspec string) {
		checkFDs := fdtest.Track(t, "Receive")
		fds, _ := p.Pick(fdspec[:min(len(fdspec), 253)])
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(sender, payload, oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
			return // too big for a datagram
		}
		m, err := s.Receive()
		checkFDs()
		var drop *notify.DropError
		fields, perr := notify.Parse(payload)
		switch {
		case len(fds) > 0:
			if !errors.As(err, &drop) || !strings.Contains(drop.Reason, "descriptors sent; closed them") {
				t.Fatalf("datagram with %d descriptors: %+v, %v", len(fds), m, err)
			}
		case len(payload) > notify.MaxMessage:
			if !errors.As(err, &drop) || drop.Reason != "message too long" || drop.PID != os.Getpid() {
				t.Fatalf("datagram of %d bytes: %+v, %v", len(payload), m, err)
			}
		case perr != nil:
			if !errors.As(err, &drop) || drop.Reason != perr.Error() || drop.PID != os.Getpid() {
				t.Fatalf("datagram %q: %+v, %v; want dropped: %v", payload, m, err, perr)
			}
		default:
			if err != nil || m.PID != os.Getpid() || m.UID != os.Getuid() || m.GID != os.Getgid() || !maps.Equal(m.Fields, fields) {
				t.Fatalf("datagram %q: %+v, %v; want fields %v from this process", payload, m, err, fields)
			}
		}
	})
}
