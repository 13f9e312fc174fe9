package control

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// echoHandler carries out every request at once, successfully.
type echoHandler struct{}

func (echoHandler) Status(context.Context) (any, error) { return map[string]int{"generation": 1}, nil }
func (echoHandler) Reload(context.Context, bool) error  { return nil }
func (echoHandler) Upgrade(context.Context, bool) error { return nil }

// FuzzReadRequest feeds readRequest what a client might send. A request
// is accepted exactly when its first line (newline included) fits in
// MaxRequest bytes and is a JSON object of the right types; an accepted
// request, sent again as Call sends it, reads back the same; and the
// answer to it is one line of JSON that reads back the same, OK exactly
// for the three known commands.
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readRequest(bytes.NewReader(data))
		var want Request
		nl := bytes.IndexByte(data, '\n')
		wantErr := nl < 0 || nl+1 > MaxRequest || json.Unmarshal(data[:nl+1], &want) != nil
		if (err != nil) != wantErr {
			t.Fatalf("readRequest(%q) = %+v, %v; want an error: %v", data, req, err, wantErr)
		}
		if err != nil {
			return
		}
		if req != want {
			t.Fatalf("readRequest(%q) = %+v, the first line is %+v", data, req, want)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := readRequest(bytes.NewReader(append(b, '\n'))); err != nil || again != req {
			t.Fatalf("%+v sent again as %s reads back as %+v, %v", req, b, again, err)
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
		known := req.Command == "status" || req.Command == "reload" || req.Command == "upgrade"
		if resp.OK != known {
			t.Fatalf("command %q answered %+v", req.Command, resp)
		}
	})
}
