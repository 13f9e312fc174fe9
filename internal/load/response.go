package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
)

var (
	errTruncated = errors.New("connection closed in the middle of a response")
	errMalformed = errors.New("malformed response")
)

// maxBody bounds a body read without a Content-Length.
const maxBody = 1 << 20

// response is one HTTP/1.x response, read without allocating unless its
// header is wanted (for Config.Check) or its body is larger than any
// before.
type response struct {
	status     int
	minor      int  // HTTP/1.minor
	closeAfter bool // the server closes the connection after it
	pid, gen   int
	length     int // Content-Length, -1 if none
	chunked    bool
	header     http.Header // only when wanted
	body       []byte      // valid until the next read
	buf        []byte
}

// read reads one response from br. An EOF after the first byte of the
// response is errTruncated; a response it cannot parse is errMalformed.
func (p *response) read(br *bufio.Reader, wantHeader bool) error {
	*p = response{buf: p.buf, length: -1}
	if wantHeader {
		p.header = http.Header{}
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			return errTruncated
		}
		return err
	}
	if err := p.statusLine(line); err != nil {
		return err
	}
	if err := p.headers(br); err != nil {
		return err
	}
	if err := p.readBody(br); err != nil {
		return err
	}
	if p.pid == 0 {
		p.pid = bodyPID(p.body)
	}
	return nil
}

func (p *response) statusLine(line []byte) error {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	status, ok := atoi(line[9:12])
	if !ok {
		return fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	p.status, p.minor = status, int(line[7]-'0')
	p.closeAfter = p.minor == 0 // HTTP/1.0 closes unless told otherwise
	return nil
}

func (p *response) headers(br *bufio.Reader) error {
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errTruncated
			}
			return err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			return nil
		}
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		if err := p.header1(name, val); err != nil {
			return err
		}
		if p.header != nil {
			p.header.Add(string(name), string(val))
		}
	}
}

func (p *response) header1(name, val []byte) error {
	is := func(s string) bool { return bytes.EqualFold(name, []byte(s)) }
	switch {
	case is("Content-Length"):
		n, ok := atoi(val)
		if !ok {
			return fmt.Errorf("%w: Content-Length %q", errMalformed, val)
		}
		p.length = n
	case is("Connection"):
		if bytes.EqualFold(val, []byte("close")) {
			p.closeAfter = true
		} else if bytes.EqualFold(val, []byte("keep-alive")) {
			p.closeAfter = false
		}
	case is("Transfer-Encoding"):
		if !bytes.EqualFold(val, []byte("chunked")) {
			return fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, val)
		}
		p.chunked = true
	case is("X-Pid"), is("X-Sockd-Pid"):
		p.pid, _ = atoi(val)
	case is("X-Sockd-Generation"), is("X-Generation"):
		p.gen, _ = atoi(val)
	}
	return nil
}

func (p *response) readBody(br *bufio.Reader) error {
	switch {
	case p.status < 200 || p.status == 204 || p.status == 304:
		p.body = p.buf[:0]
		return nil
	case p.chunked:
		return p.readChunked(br)
	case p.length >= 0:
		if cap(p.buf) < p.length {
			p.buf = make([]byte, p.length)
		}
		p.body = p.buf[:p.length]
		if _, err := io.ReadFull(br, p.body); err != nil {
			return truncated(err)
		}
		return nil
	}
	// No length: the body ends when the server closes the connection.
	p.closeAfter = true
	b, err := io.ReadAll(io.LimitReader(br, maxBody))
	p.body = b
	return err
}

func (p *response) readChunked(br *bufio.Reader) error {
	b, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), maxBody))
	if err != nil {
		return truncated(err)
	}
	p.body = b
	for { // the trailer, up to its empty line
		line, err := br.ReadSlice('\n')
		if err != nil {
			return truncated(err)
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// truncated is errTruncated for an EOF in the middle of a response.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return err
}

// bodyPID is N of the first "pid=N" in body, 0 if none.
func bodyPID(body []byte) int {
	i := bytes.Index(body, []byte("pid="))
	if i < 0 {
		return 0
	}
	j := i + 4
	for j < len(body) && body[j] >= '0' && body[j] <= '9' {
		j++
	}
	n, _ := atoi(body[i+4 : j])
	return n
}

// atoi parses a non-negative decimal number.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
