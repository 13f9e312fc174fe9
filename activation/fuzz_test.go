package activation_test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/fdtest"
)

// FuzzParseSpec: a listen spec that parses is a well-formed Spec, and
// prints (String) as one that parses back to the very same Spec, and
// prints the same again.
func FuzzParseSpec(f *testing.F) {
	for in := range parseSpecGood {
		f.Add(in)
	}
	for in := range parseSpecBad {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := activation.ParseSpec(in)
		if err != nil {
			return
		}
		checkWellFormed(t, in, s)
		out := s.String()
		again, err := activation.ParseSpec(out)
		if err != nil || again != s {
			t.Fatalf("ParseSpec(%q) = %#v, prints as %q, which parses to %#v, %v", in, s, out, again, err)
		}
		if again.String() != out {
			t.Fatalf("%q prints as %q, then as %q", in, out, again.String())
		}
	})
}

func checkWellFormed(t *testing.T, in string, s activation.Spec) {
	t.Helper()
	bad := func(why string) { t.Fatalf("ParseSpec(%q) = %#v: %s", in, s, why) }
	if s.Name == "" || len(s.Name) > 255 || strings.ContainsAny(s.Name, ": =") {
		bad("name")
	}
	for _, r := range s.Name {
		if r < 0x21 || r > 0x7e {
			bad("name")
		}
	}
	if s.Mode > 0o777 || s.Mode != 0 && s.Network != "unix" {
		bad("mode")
	}
	switch s.Network {
	case "unix":
		if !strings.HasPrefix(s.Address, "/") {
			bad("unix address not absolute")
		}
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			bad("address not HOST:PORT")
		}
	default:
		bad("network")
	}
}

// inheritFirst is where FuzzInherit puts the sockets it pretends were
// passed: far above the descriptors the test process holds, so that
// Inherit, looking at LISTEN_FDS of them, never reaches one of those.
const inheritFirst = 2000

// FuzzInherit runs Inherit on a fuzzed LISTEN_FDS, LISTEN_PID and
// LISTEN_FDNAMES for process pid, with descriptors of the kinds kinds
// names (see fdtest.Palette, at most 16) passed from inheritFirst on.
// What it must make of them is sd_listen_fds(3)'s rule: nothing without
// LISTEN_FDS; ErrNotOurs when LISTEN_PID is missing or another process;
// an error for malformed variables or any descriptor that is not a
// listening or datagram socket (LISTEN_FDS beyond the ones passed reach
// closed descriptors), and then nothing taken (no descriptor made
// close-on-exec); else one listener a descriptor, in order, named by
// LISTEN_FDNAMES, each now close-on-exec. Inherit never opens or closes a
// descriptor.
func FuzzInherit(f *testing.F) {
	for _, c := range inheritEnvErrors {
		f.Add(c.env["LISTEN_FDS"], c.env["LISTEN_PID"], c.env["LISTEN_FDNAMES"], 4242, "0")
	}
	for _, s := range []struct{ fds, pid, names, kinds string }{
		{"", "", "", ""},
		{"0", "4242", "", ""},
		{"2", "4242", "http:dns", "02"},
		{"5", "4242", "", "01237"},
		{"1", "4242", "pipe", "4"},
		{"1", "4242", "null", "5"},
		{"1", "4242", "connected", "6"},
		{"2", "4242", "a:b", "0"},
		{"3", "4242", "::", "111"},
		{"1", "4243", "", "0"},
	} {
		f.Add(s.fds, s.pid, s.names, 4242, s.kinds)
	}
	pal := fdtest.NewPalette(f)
	if open := fdtest.Open(f); open[len(open)-1] >= inheritFirst {
		f.Fatalf("descriptors %v reach %d", open, inheritFirst)
	}
	valid := map[string]bool{"tcp listener": true, "unix listener": true, "udp socket": true, "unixgram socket": true, "seqpacket listener": true}
	f.Fuzz(func(t *testing.T, fdsVar, pidVar, names string, pid int, kinds string) {
		kinds = kinds[:min(len(kinds), 16)]
		fds, _ := pal.Pick(kinds)
		passed := make([]int, len(fds))
		for i, fd := range fds {
			// As systemd passes them: not close-on-exec.
			if err := unix.Dup3(fd, inheritFirst+i, 0); err != nil {
				t.Fatal(err)
			}
			passed[i] = inheritFirst + i
			defer unix.Close(passed[i])
		}
		env := map[string]string{"LISTEN_FDS": fdsVar, "LISTEN_PID": pidVar, "LISTEN_FDNAMES": names}
		checkFDs := fdtest.Track(t, "Inherit")
		set, err := activation.InheritFrom(func(k string) string { return env[k] }, pid, inheritFirst)
		checkFDs()

		n, nerr := strconv.Atoi(fdsVar)
		p, perr := strconv.Atoi(pidVar)
		notOurs := fdsVar != "" && (pidVar == "" || perr == nil && p > 0 && p != pid)
		envOK := fdsVar != "" && pidVar != "" && perr == nil && p == pid && nerr == nil && n >= 0 && n <= activation.MaxInherited &&
			(names == "" || strings.Count(names, ":")+1 == n)
		fdsOK := n <= len(passed)
		for i := 0; fdsOK && i < n; i++ {
			fdsOK = valid[pal.Kinds[int(kinds[i])%len(pal.Kinds)]]
		}
		if errors.Is(err, activation.ErrNotOurs) != notOurs {
			t.Fatalf("Inherit = %v; the sockets are another process's: %v", err, notOurs)
		}
		if wantOK := fdsVar == "" || envOK && (n == 0 || fdsOK); (err == nil) != wantOK {
			t.Fatalf("Inherit(LISTEN_FDS=%q LISTEN_PID=%q LISTEN_FDNAMES=%q, pid %d, kinds %q) = %v; want success: %v", fdsVar, pidVar, names, pid, kinds, err, wantOK)
		}
		if err != nil || set == nil {
			for _, fd := range passed {
				if fdtest.Cloexec(fd) {
					t.Fatalf("Inherit = %v, %v and took fd %d (close-on-exec)", set, err, fd)
				}
			}
			if set != nil {
				t.Fatalf("Inherit = %v with error %v", set, err)
			}
			return
		}
		if len(set) != n {
			t.Fatalf("LISTEN_FDS=%d gave %d listeners", n, len(set))
		}
		wantNames := strings.TrimSuffix(strings.Repeat(activation.DefaultName+":", n), ":")
		if names != "" { // an empty name is unnamed too
			parts := strings.Split(names, ":")
			for i, p := range parts {
				if p == "" {
					parts[i] = activation.DefaultName
				}
			}
			wantNames = strings.Join(parts, ":")
		}
		if set.Names() != wantNames {
			t.Fatalf("names %q, want %q", set.Names(), wantNames)
		}
		for i, l := range set {
			if l.Slots() != 1 || l.FD(0) != passed[i] || !l.Inherited || !fdtest.Cloexec(passed[i]) {
				t.Fatalf("listener %d: %s with fds %v, inherited %v, close-on-exec %v", i, l, l.FDs(), l.Inherited, fdtest.Cloexec(passed[i]))
			}
		}
	})
}
