package demo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// The demo's request reader on the network's input: any bytes give a
// request or an error, never a panic, and never read more than the
// header budget plus the body limit. Two well-formed requests sent back
// to back (pipelined) are both read, whatever their body's framing.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "POST", "/a", "body", false, true)
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "GET", "/", "", true, false)
	f.Add([]byte("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "PUT", "/x?y=1", "0123456789", true, true)
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), "GET", "/", "", false, false)
	f.Add([]byte("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"), "GET", "/", "", false, false)
	f.Add([]byte("GET  HTTP/1.1\r\n\r\n"), "GET", "/", "", false, false)
	f.Add([]byte("GET / HTTP/2\r\n\r\n"), "GET", "/", "", false, false)
	f.Fuzz(func(t *testing.T, raw []byte, method, path, body string, chunked, expect bool) {
		src := &counter{r: bytes.NewReader(raw)}
		br := bufio.NewReaderSize(src, 4096)
		var out bytes.Buffer
		req, err := readRequest(br, bufio.NewWriter(&out))
		consumed := src.n - br.Buffered()
		if consumed > maxHeaderBytes+maxBodyBytes+(1<<16)+4096 {
			t.Fatalf("read %d bytes for one request", consumed)
		}
		if err == nil && (req.method == "" || req.proto != "HTTP/1.1" && req.proto != "HTTP/1.0") {
			t.Fatalf("accepted %+v from %q", req, raw)
		}
		if err != nil && !errors.Is(err, errBadRequest) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error of no kind: %v", err)
		}

		// Well-formed, pipelined.
		if method == "" || strings.ContainsAny(method, " \r\n:") || path == "" || strings.ContainsAny(path, " \r\n") ||
			len(body) > maxBodyBytes {
			return
		}
		var b bytes.Buffer
		for i := 0; i < 2; i++ {
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: x\r\nX-Try: %d\r\n", method, path, i)
			if expect {
				b.WriteString("Expect: 100-continue\r\n")
			}
			if chunked {
				fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n")
				if body != "" {
					fmt.Fprintf(&b, "%x\r\n%s\r\n", len(body), body)
				}
				b.WriteString("0\r\n\r\n")
			} else {
				fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
			}
		}
		br = bufio.NewReaderSize(&b, 4096)
		for i := 0; i < 2; i++ {
			req, err := readRequest(br, bufio.NewWriter(io.Discard))
			if err != nil || req.method != method || req.close {
				t.Fatalf("request %d of %q: %+v, %v", i, b.String(), req, err)
			}
		}
		if _, err := br.Peek(1); err != io.EOF {
			t.Fatalf("bytes left after two requests: %v", err)
		}
	})
}

// counter counts what was read from r.
type counter struct {
	r io.Reader
	n int
}

func (c *counter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}
