package activation_test

import (
	"net"
	"strings"
	"testing"

	"github.com/sockd/sockd/activation"
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
