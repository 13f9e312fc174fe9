package activation

import (
	"strconv"
	"strings"
	"testing"
)

// A listen URL that parses prints back (Spec.String) to one that parses to
// the same Spec.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"tcp://127.0.0.1:8080", "http=tcp://127.0.0.1:0", "tcp://:80", "v6=tcp6://[::1]:8080",
		"dns=udp://127.0.0.1:5353", "adm=unix:///run/a.sock?mode=0660", "tcp4://localhost:1", "", "127.0.0.1:8080",
		"sctp://1.2.3.4:5", "tcp://1.2.3.4:99999", "a:b=tcp://1.2.3.4:5", "unix://relative", "unix:///x?mode=999", "tcp://1.2.3.4:5/path"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSpec(in)
		if err != nil {
			return
		}
		again, err := ParseSpec(s.String())
		if err != nil || again != s {
			t.Fatalf("ParseSpec(%q) = %+v, printed %q, parsed back %+v, %v", in, s, s.String(), again, err)
		}
		if s.Name == "" || s.Address == "" {
			t.Fatalf("ParseSpec(%q) = %+v: empty name or address", in, s)
		}
	})
}

// LISTEN_* as sd_listen_fds(3) reads them: a count, for this very pid,
// with one name per descriptor.
func FuzzListenEnv(f *testing.F) {
	f.Add("2", "4242", "a:b")
	f.Add("x", "4242", "")
	f.Add("1", "", "")
	f.Add("5000", "4242", "")
	f.Add("1", "1", "a")
	f.Add("0", "4242", "")
	f.Add("+1", "4242", "a")
	f.Fuzz(func(t *testing.T, fds, pid, names string) {
		env := map[string]string{"LISTEN_FDS": fds, "LISTEN_PID": pid, "LISTEN_FDNAMES": names}
		n, got, err := parseEnv(func(k string) string { return env[k] }, 4242)
		if err != nil || fds == "" {
			return
		}
		if pid != "4242" && strings.TrimLeft(pid, "+0") != "4242" {
			t.Fatalf("LISTEN_PID=%q taken for pid 4242", pid)
		}
		if m, err := strconv.Atoi(fds); err != nil || m != n || n < 0 || n > MaxInherited || len(got) != n {
			t.Fatalf("LISTEN_FDS=%q gave %d descriptors, %d names", fds, n, len(got))
		}
		if names != "" && strings.Join(got, ":") != names {
			t.Fatalf("LISTEN_FDNAMES=%q gave names %q", names, got)
		}
	})
}
