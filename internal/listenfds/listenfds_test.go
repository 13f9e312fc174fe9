package listenfds

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	vars := func(kv ...string) func(string) string {
		m := map[string]string{}
		for _, s := range kv {
			k, v, _ := strings.Cut(s, "=")
			m[k] = v
		}
		return func(k string) string { return m[k] }
	}
	names, err := Parse(vars("LISTEN_FDS=3", "LISTEN_PID=42", "LISTEN_FDNAMES=http::admin"), 42, 10)
	if err != nil || strings.Join(names, ",") != "http,unknown,admin" {
		t.Fatalf("names %q, %v", names, err)
	}
	if names, err := Parse(vars("LISTEN_FDS=2", "LISTEN_PID=42"), 42, 10); err != nil || strings.Join(names, ",") != "unknown,unknown" {
		t.Fatalf("without names: %q, %v", names, err)
	}
	for _, c := range []struct {
		vars []string
		is   error
		msg  string
	}{
		{nil, ErrNone, ""},
		{[]string{"LISTEN_FDS=0", "LISTEN_PID=42"}, ErrNone, ""},
		{[]string{"LISTEN_FDS=0", "LISTEN_PID=7"}, ErrNotOurs, "not this process"}, // LISTEN_PID first, as sd_listen_fds(3)
		{[]string{"LISTEN_FDS=0", "LISTEN_PID=0"}, nil, "invalid LISTEN_PID"},
		{[]string{"LISTEN_FDS=1"}, ErrNotOurs, "LISTEN_PID is not"},
		{[]string{"LISTEN_FDS=1", "LISTEN_PID=7"}, ErrNotOurs, "not this process"},
		{[]string{"LISTEN_FDS=x", "LISTEN_PID=42"}, nil, "invalid LISTEN_FDS"},
		{[]string{"LISTEN_FDS=-1", "LISTEN_PID=42"}, nil, "invalid LISTEN_FDS"},
		{[]string{"LISTEN_FDS=1", "LISTEN_PID=-4"}, nil, "invalid LISTEN_PID"},
		{[]string{"LISTEN_FDS=11", "LISTEN_PID=42"}, nil, "more than the 10"},
		{[]string{"LISTEN_FDS=2", "LISTEN_PID=42", "LISTEN_FDNAMES=a"}, nil, "LISTEN_FDNAMES has 1 names"},
	} {
		_, err := Parse(vars(c.vars...), 42, 10)
		if err == nil || c.is != nil && !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v, want %v %q", c.vars, err, c.is, c.msg)
		}
	}
}
