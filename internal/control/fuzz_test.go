package control

import (
	"encoding/json"
	"strconv"
	"testing"
)

// A request line that parses is a known command, and marshals back to
// one that parses the same.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"command":"status"}`, `{"command":"reload","wait":true}`, `{"command":"scale","workers":"+2"}`,
		`{"command":"scale","workers":"0"}`, `{"command":"explode"}`, `garbage`, `{"command":"status","extra":[1,2,{}]}`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			return
		}
		switch req.Command {
		case "status", "reload", "upgrade", "scale":
		default:
			t.Fatalf("%q parsed to unknown command %q", line, req.Command)
		}
		b, _ := json.Marshal(req)
		again, err := ParseRequest(b)
		if err != nil || again != req {
			t.Fatalf("%q → %+v → %s → %+v %v", line, req, b, again, err)
		}
	})
}

// scale's argument: N ≥ 1, or a non-zero +K/-K; printed back it parses the
// same.
func FuzzParseScale(f *testing.F) {
	for _, s := range []string{"4", "+1", "-3", "0", "+0", "-0", "x", "", "1024", "99999999999999999999", "+-1", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, rel, err := ParseScale(s)
		if err != nil {
			return
		}
		if !rel && n < 1 || rel && n == 0 {
			t.Fatalf("%q → %d relative=%v", s, n, rel)
		}
		out := strconv.Itoa(n)
		if rel && n > 0 {
			out = "+" + out
		}
		if n2, rel2, err := ParseScale(out); err != nil || n2 != n || rel2 != rel {
			t.Fatalf("%q → %d %v → %q → %d %v %v", s, n, rel, out, n2, rel2, err)
		}
	})
}
