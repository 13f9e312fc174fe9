package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// A chunked body made from data, with chunks of the sizes sizes gives
// (cycling), extensions and trailers: CopyChunked gives back data. Any
// bytes at all: no panic, never more than the limit written, an error
// for what is not a whole chunked body.
func FuzzCopyChunked(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{3, 5}, false, []byte(""))
	f.Add([]byte(""), []byte{1}, true, []byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("x"), []byte{0}, true, []byte("ffffffffffffffff\r\n"))
	f.Add([]byte("x"), []byte{0}, true, []byte("7fffffffffffffff\r\nab\r\n7fffffffffffffff\r\n"))
	f.Add([]byte("x"), []byte{0}, true, []byte("-1\r\n"))
	// total+size overflowed past the limit check (found here).
	f.Add([]byte("x"), []byte{0}, true, []byte("1\r\na\r\n7fffffffffffffff\r\n"+strings.Repeat("z", 5000)))
	f.Fuzz(func(t *testing.T, data, sizes []byte, raw bool, rawBody []byte) {
		const limit = 1 << 12
		if !raw {
			var b bytes.Buffer
			rest := data
			for i := 0; len(rest) > 0; i++ {
				n := 1
				if len(sizes) > 0 {
					n = max(1, int(sizes[i%len(sizes)]))
				}
				n = min(n, len(rest))
				fmt.Fprintf(&b, "%x;ext=%d\r\n%s\r\n", n, i, rest[:n])
				rest = rest[n:]
			}
			b.WriteString("0\r\nTrailer: yes\r\n\r\n")
			rawBody = b.Bytes()
		}
		var out bytes.Buffer
		err := CopyChunked(&out, bufio.NewReaderSize(bytes.NewReader(rawBody), 16), limit)
		if out.Len() > limit {
			t.Fatalf("wrote %d bytes, limit %d", out.Len(), limit)
		}
		if !raw {
			switch {
			case len(data) > limit && !errors.Is(err, ErrBad):
				t.Fatalf("%d bytes over the limit: %v", len(data), err)
			case len(data) <= limit && (err != nil || !bytes.Equal(out.Bytes(), data)):
				t.Fatalf("round trip of %q: got %q, %v", data, out.Bytes(), err)
			}
		}
	})
}

// Whatever a server answers, Get returns a status and a body within the
// limit, or an error; it never panics or reads past the limit.
func FuzzGet(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 404 Not Found\r\n\r\nbody until close"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"))
	f.Add([]byte("garbage\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 abc\r\n"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		const limit = 1 << 12
		c := &fakeConn{r: bytes.NewReader(resp)}
		code, body, err := Get(c, "h", "/metrics", map[string]string{"Accept": "text/plain"}, limit)
		if len(body) > limit {
			t.Fatalf("body of %d bytes, limit %d", len(body), limit)
		}
		if err == nil && (code < 100 || code > 599 || !strings.HasPrefix(string(resp), "HTTP/1.")) {
			t.Fatalf("accepted %q as status %d", resp, code)
		}
		if !strings.HasPrefix(c.w.String(), "GET /metrics HTTP/1.1\r\nHost: h\r\n") {
			t.Fatalf("request %q", c.w.String())
		}
	})
}

type fakeConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *fakeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *fakeConn) Write(b []byte) (int, error) { return c.w.Write(b) }

var _ io.ReadWriter = (*fakeConn)(nil)
