package control

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
)

// echoHandler carries out every request at once, successfully.
type echoHandler struct{}

func (echoHandler) Status(context.Context) (any, error)                            { return map[string]int{"generation": 1}, nil }
func (echoHandler) Reload(context.Context, bool, []string) error                   { return nil }
func (echoHandler) Signal(context.Context, string, *int, *int) (int, error)        { return 1, nil }
func (echoHandler) Send(context.Context, json.RawMessage, *int, *int) (int, error) { return 1, nil }
func (echoHandler) Upgrade(context.Context, bool) error                            { return nil }
func (echoHandler) Scale(_ context.Context, n int, relative, _ bool) (int, error) {
	if relative {
		return 2 + n, nil
	}
	return n, nil
}

// FuzzReadRequest feeds readRequest what a client might send. A request
// is accepted exactly when its first line (newline included) fits in
// MaxRequest bytes and is a JSON object of the right types with a known
// command (and, for scale, a valid number of workers); an accepted
// request, sent again as Call sends it, reads back the same; and the
// answer to it is one line of JSON that reads back the same, OK exactly
// for every accepted request.
//
// The seeds leave out requests near MaxRequest (TestServeBadRequests
// covers the bound): the fuzzer would spend its time minimizing them.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		`{"command":"status"}` + "\n",
		`{"command":"reload","wait":true}` + "\n",
		`{"command":"upgrade","wait":false}` + "\n",
		`{"command":"reload"}` + "\ngarbage",
		`{"command":"STATUS"}` + "\n",
		`{"Command":"status","WAIT":true}` + "\n",
		"status\n",
		`{"command":"status"}{"command":"reload"}` + "\n",
		`{"command":"reload","wait":"yes"}` + "\n",
		`"status"` + "\n",
		"null\n",
		"\n",
		`{"command":"sta`,
		`{"command":"scale","workers":"+2"}` + "\n",
		`{"command":"scale","workers":"0"}` + "\n",
		`{"command":"explode"}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, _, err := readRequest(bytes.NewReader(data))
		var want Request
		nl := bytes.IndexByte(data, '\n')
		wantErr := nl < 0 || nl+1 > MaxRequest || json.Unmarshal(data[:nl+1], &want) != nil || !known(want)
		if (err != nil) != wantErr {
			t.Fatalf("readRequest(%q) = %+v, %v; want an error: %v", data, req, err, wantErr)
		}
		if err != nil {
			return
		}
		if !sameRequest(req, want) {
			t.Fatalf("readRequest(%q) = %+v, the first line is %+v", data, req, want)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if again, _, err := readRequest(bytes.NewReader(append(b, '\n'))); err != nil || !sameRequest(again, req) {
			t.Fatalf("%+v sent again as %s reads back as %+v, %v", req, b, again, err)
		}
		if req.Command == "logs" {
			return // answered by a LogServer (internal/output's tests)
		}
		resp := handle(context.Background(), echoHandler{}, req)
		b, err = json.Marshal(resp)
		if err != nil || bytes.IndexByte(b, '\n') >= 0 {
			t.Fatalf("answer %q, %v: not one line of JSON", b, err)
		}
		var back Response
		if err := json.Unmarshal(b, &back); err != nil || back.OK != resp.OK || back.Error != resp.Error || !bytes.Equal(back.Status, resp.Status) {
			t.Fatalf("answer %s reads back as %+v, %v", b, back, err)
		}
		if !resp.OK {
			t.Fatalf("command %q answered %+v", req.Command, resp)
		}
	})
}

// known says whether req is a command sockd carries out.
func known(req Request) bool {
	switch req.Command {
	case "status", "reload", "upgrade", "logs":
		return true
	case "signal":
		return req.Signal != ""
	case "send":
		return len(req.Message) > 0 && json.Valid(req.Message)
	case "scale":
		n, rel, err := ParseScale(req.Workers)
		return err == nil && (rel && n != 0 || !rel && n >= 1)
	}
	return false
}

// A request line that parses is a known command, and marshals back to
// one that parses the same.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"command":"status"}`, `{"command":"reload","wait":true}`, `{"command":"scale","workers":"+2"}`,
		`{"command":"scale","workers":"0"}`, `{"command":"explode"}`, `garbage`, `{"command":"status","extra":[1,2,{}]}`, `null`, `[]`,
		`{"command":"signal","signal":"HUP","slot":1}`, `{"command":"signal","signal":"KILL","slot":-5}`, `{"command":"send","message":"x","generation":0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			return
		}
		if !known(req) {
			t.Fatalf("%q parsed to a request sockd cannot carry out: %+v", line, req)
		}
		// A negative selector would pick every worker.
		if req.Slot != nil && *req.Slot < 0 || req.Generation != nil && *req.Generation < 1 {
			t.Fatalf("%q parsed with slot %v, generation %v", line, req.Slot, req.Generation)
		}
		b, _ := json.Marshal(req)
		again, err := ParseRequest(b)
		if err != nil || !sameRequest(again, req) {
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

// sameRequest: equal, an empty Env the same as none.
func sameRequest(a, b Request) bool {
	if len(a.Env) == 0 && len(b.Env) == 0 {
		a.Env, b.Env = nil, nil
	}
	return reflect.DeepEqual(a, b)
}
