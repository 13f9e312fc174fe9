package output

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// scanObject agrees with encoding/json on what is one JSON object in
// valid UTF-8, and finds the same level and message.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"level":30,"msg":"x"}`, `{"a":[1,2,{"b":null}],"level":"warn"}`, ` {"x":"\u00e9\n"} `,
		`{"a":1,}`, `{"a":01}`, `{"a":"\x01"}`, `[1]`, `{"a":1}{}`, `{"a":-0.5e+3,"b":true,"c":false}`, "{\"a\":\"\xff\"}",
		`{"msg":"a\"b","message":"c"}`, `{"level":{"x":1}}`, `{"a":"\ud800"}`, `{"a":1e}`, `{"a":.5}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, ok := scanObject(b)
		var m map[string]json.RawMessage
		want := utf8.Valid(b) && json.Valid(b) && json.Unmarshal(b, &m) == nil && m != nil && bytes.TrimSpace(b)[0] == '{'
		if ok != want {
			t.Fatalf("scanObject(%q) = %v, encoding/json says %v", b, ok, want)
		}
		if !ok {
			return
		}
		// Keys repeat in JSON; the scanner takes the first of each, in
		// order of appearance, so only check one that appears once.
		if raw, found := m["msg"]; found && bytes.Count(b, []byte(`"msg"`)) == 1 && raw[0] == '"' && bytes.Count(b, []byte(`"message"`)) == 0 && bytes.Count(b, []byte(`"@message"`)) == 0 {
			if string(raw[1:len(raw)-1]) != string(info.msg) {
				t.Fatalf("msg %q, want %q", info.msg, raw)
			}
		}
	})
}

func TestLevelPriority(t *testing.T) {
	for v, want := range map[string]int8{`10`: 7, `20`: 7, `30`: 6, `40`: 4, `50`: 3, `60`: 2, `3`: 3, `0`: 0, `35.5`: 6,
		`"INFO"`: 6, `"Warning"`: 4, `"fatal"`: 2, `"DEBUG-2"`: 7, `"INFO+4"`: 4, `"ERROR+10"`: 3, `"notice"`: 5, `"emerg"`: 0,
		`"alert"`: 1, `"silly"`: 7, `"http"`: 6, `"err"`: 3, `"crit"`: 2, `"eror"`: 3, `"dbug"`: 7, `"trce"`: 7} {
		isString := v[0] == '"'
		raw := []byte(v)
		if isString {
			raw = raw[1 : len(raw)-1]
		}
		p, ok := levelPriority(raw, isString)
		if !ok || p != want {
			t.Errorf("level %s: %d %v, want %d", v, p, ok, want)
		}
	}
	for _, v := range []string{"chatty", "INFO+x", "loud+1", "averyveryverylonglevelname"} {
		if _, ok := levelPriority([]byte(v), true); ok {
			t.Errorf("level %q mapped", v)
		}
	}
}

// A JSON line embedded by the json format stays valid JSON whatever it
// holds; a text line becomes a valid JSON string of its bytes.
func FuzzJSONRecord(f *testing.F) {
	for _, s := range []string{"plain", `{"level":50,"msg":"x"}`, "bad \xff", "\x00\x1f\"\\", `{"msg":"\u2028"}`, "<3>{\"a\":1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if bytes.IndexByte(b, '\n') >= 0 {
			return
		}
		l := Line{Data: b}
		classify(&l, 6)
		h := newJSONHead("app", &Batch{Stream: Stdout}, DefaultTimeFormat)
		rec := h.appendJSON(nil, &l)
		var m map[string]any
		if err := json.Unmarshal(rec, &m); err != nil {
			t.Fatalf("record of %q is not JSON: %v\n%s", b, err, rec)
		}
		if bytes.Count(rec, []byte("\n")) != 1 {
			t.Fatalf("record of %q is not one line", b)
		}
		if l.Flags&JSONObject == 0 {
			raw := l.Message()
			if m64, ok := m["message_base64"]; ok {
				if utf8.Valid(raw) {
					t.Fatalf("base64 for valid UTF-8 %q", raw)
				}
				_ = m64
			} else if m["@message"] != string(raw) {
				t.Fatalf("@message %q, want %q", m["@message"], raw)
			}
		}
	})
}

// sockd logs --json: a line's record always has its priority and message
// (an empty line too); a marker of skipped lines has neither (priority 0
// would read as an emergency).
func TestRecordJSON(t *testing.T) {
	for _, c := range []struct {
		r         Record
		want, not []string
	}{
		{Record{Worker: 1, Generation: 2, PID: 3, Stream: "stdout", Priority: 6}, []string{`"message":""`, `"priority":6`}, nil},
		{Record{Worker: 1, Generation: 2, PID: 3, Priority: 0, Message: "x"}, []string{`"message":"x"`, `"priority":0`}, nil},
		{Record{Worker: 1, Generation: 2, PID: 3, Skipped: 7}, []string{`"skipped":7`}, []string{`"priority"`, `"message"`}},
		{Record{End: true}, []string{`"end":true`}, []string{`"priority"`, `"message"`}},
	} {
		b, err := json.Marshal(c.r)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !bytes.Contains(b, []byte(w)) {
				t.Errorf("%s lacks %s", b, w)
			}
		}
		for _, n := range c.not {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s has %s", b, n)
			}
		}
		var back Record
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, c.r) {
			t.Errorf("%s reads back as %+v, %v", b, back, err)
		}
	}
}
