package nodeshim

import (
	"maps"
	"strings"
	"testing"
)

func TestParseMessage(t *testing.T) {
	for _, c := range []struct {
		line   string
		ours   bool
		fields map[string]string
		err    string
	}{
		{line: `"ready"`, ours: true, fields: map[string]string{"READY": "1"}},
		{line: ` "ready" `, ours: true, fields: map[string]string{"READY": "1"}},
		{line: `{"sockd":{"ready":true}}`, ours: true, fields: map[string]string{"READY": "1"}},
		{line: `{"sockd":{"ready":true,"status":"serving","requests":12}}`, ours: true,
			fields: map[string]string{"READY": "1", "STATUS": "serving", "SOCKD_REQUESTS": "12"}},
		{line: `{"sockd":{"stopping":true}}`, ours: true, fields: map[string]string{"STOPPING": "1"}},
		{line: `{"sockd":{"watchdog":true}}`, ours: true, fields: map[string]string{"WATCHDOG": "1"}},
		{line: `{"sockd":{"ready":false}}`, ours: true, fields: map[string]string{}},
		{line: `{"sockd":{"requests":0}}`, ours: true, fields: map[string]string{"SOCKD_REQUESTS": "0"}},
		{line: `{"sockd":{"requests":1e3}}`, ours: true, fields: map[string]string{"SOCKD_REQUESTS": "1000"}},
		{line: `{"sockd":{"status":""}}`, ours: true, fields: map[string]string{"STATUS": ""}},
		{line: `{"sockd":{"ready":true},"other":1}`, ours: true, fields: map[string]string{"READY": "1"}},

		// The app's own messages.
		{line: `"not ready"`},
		{line: `{"hello":"world"}`},
		{line: `{"type":"process:msg","data":{"sockd":1}}`},
		{line: `42`},
		{line: `[1,2]`},
		{line: `null`},
		{line: ``},
		{line: `{"sockd"`},
		{line: `"ready`},

		// Meant for sockd, but wrong.
		{line: `{"sockd":true}`, ours: true, err: `"sockd" must be an object`},
		{line: `{"sockd":null}`, ours: true, err: `"sockd" must be an object`},
		{line: `{"sockd":{}}`, ours: true, err: "without a field"},
		{line: `{"sockd":{"reday":true}}`, ours: true, err: `unknown field "reday"`},
		{line: `{"sockd":{"ready":1}}`, ours: true, err: "ready: want true or false"},
		{line: `{"sockd":{"ready":null}}`, ours: true, err: "ready: want true or false"},
		{line: `{"sockd":{"status":3}}`, ours: true, err: "status: want a string"},
		{line: `{"sockd":{"status":"a\nb"}}`, ours: true, err: "status: a status is one line"},
		{line: `{"sockd":{"requests":-1}}`, ours: true, err: "requests: want a whole number"},
		{line: `{"sockd":{"requests":1.5}}`, ours: true, err: "requests: want a whole number"},
		{line: `{"sockd":{"requests":"12"}}`, ours: true, err: "requests: want a whole number"},
		{line: `{"sockd":{"requests":1e300}}`, ours: true, err: "requests: want a whole number"},
	} {
		m, ours, err := ParseMessage([]byte(c.line))
		if ours != c.ours {
			t.Errorf("%s: ours=%v, want %v", c.line, ours, c.ours)
			continue
		}
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: error %v, want one line with %q", c.line, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.line, err)
			continue
		}
		if c.fields == nil {
			c.fields = map[string]string{}
		}
		if got := m.Fields(); ours && !maps.Equal(got, c.fields) {
			t.Errorf("%s: fields %v, want %v", c.line, got, c.fields)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{`"ready"`, `{"sockd":{"ready":true,"status":"x","requests":3}}`, `{"sockd":{"x":1}}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ours, err := ParseMessage(b)
		if err != nil && (!ours || strings.Contains(err.Error(), "\n")) {
			t.Fatalf("%q: error %v with ours=%v", b, err, ours)
		}
		if !ours && (m != Message{}) {
			t.Fatalf("%q: not ours, but %+v", b, m)
		}
		for k, v := range m.Fields() {
			if strings.ContainsAny(v, "\n") || k == "" {
				t.Fatalf("%q: field %s=%q is no sd_notify assignment", b, k, v)
			}
		}
	})
}
