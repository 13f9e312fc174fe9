// Package http1 is the little of HTTP/1.1 (RFC 9112) that sockd speaks
// itself: reading a request line and headers, a chunked body, a response
// to a GET. sockd's demo worker and its metrics endpoint use it instead
// of net/http, which would add crypto/tls and several megabytes to a
// binary that every worker's trampoline starts.
package http1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrBad wraps every malformed message.
var ErrBad = errors.New("malformed HTTP message")

// ReadLine reads a CRLF- (or LF-) terminated line, charging it to budget.
func ReadLine(br *bufio.Reader, budget *int) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return "", fmt.Errorf("%w: header too large", ErrBad)
		}
		b = append(b, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return "", err
		}
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Header is one "Name: value" line, the name lower-cased.
func Header(line string) (name, value string, err error) {
	n, v, ok := strings.Cut(line, ":")
	if !ok || n == "" || strings.ContainsAny(n, " \t") {
		return "", "", fmt.Errorf("%w: header %.60q", ErrBad, line)
	}
	return strings.ToLower(n), strings.TrimSpace(v), nil
}

// CopyChunked copies a chunked body (RFC 9112, 7.1) to w, at most limit
// bytes, and reads its trailers.
func CopyChunked(w io.Writer, br *bufio.Reader, limit int64) error {
	budget, total := 64<<10, int64(0)
	for {
		line, err := ReadLine(br, &budget)
		if err != nil {
			return err
		}
		sizeText, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeText), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: chunk size %.20q", ErrBad, line)
		}
		if size > limit-total { // not total+size > limit: that overflows
			return fmt.Errorf("%w: body over %d bytes", ErrBad, limit)
		}
		total += size
		if size == 0 {
			break
		}
		if _, err := io.CopyN(w, br, size); err != nil {
			return err
		}
		if crlf, err := ReadLine(br, &budget); err != nil || crlf != "" {
			return fmt.Errorf("%w: chunk not followed by CRLF", ErrBad)
		}
	}
	for { // trailers
		line, err := ReadLine(br, &budget)
		if err != nil || line == "" {
			return err
		}
	}
}

// Get sends "GET path" on conn (Connection: close) with the headers
// given, and returns the response's status code and body, at most limit
// bytes, read by Content-Length, chunks or until the peer closes.
func Get(conn io.ReadWriter, host, path string, headers map[string]string, limit int64) (int, []byte, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", path, host)
	for k, v := range headers {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return 0, nil, err
	}
	br := bufio.NewReader(conn)
	budget := 64 << 10
	status, err := ReadLine(br, &budget)
	if err != nil {
		return 0, nil, err
	}
	// HTTP/1.x SP 3DIGIT SP reason (RFC 9112, 4)
	f := strings.SplitN(status, " ", 3)
	code := 0
	if len(f) >= 2 && (f[0] == "HTTP/1.0" || f[0] == "HTTP/1.1") && len(f[1]) == 3 {
		code, err = strconv.Atoi(f[1])
	}
	if err != nil || code < 100 || code > 599 {
		return 0, nil, fmt.Errorf("%w: status line %.60q", ErrBad, status)
	}
	length, chunked := int64(-1), false
	for {
		line, err := ReadLine(br, &budget)
		if err != nil {
			return 0, nil, err
		}
		if line == "" {
			break
		}
		name, value, err := Header(line)
		if err != nil {
			return 0, nil, err
		}
		switch name {
		case "content-length":
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return 0, nil, fmt.Errorf("%w: Content-Length %.20q", ErrBad, value)
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	var body strings.Builder
	switch {
	case chunked:
		err = CopyChunked(&body, br, limit)
	case length >= 0:
		if length > limit {
			return code, nil, fmt.Errorf("%w: body of %d bytes", ErrBad, length)
		}
		_, err = io.CopyN(&body, br, length)
	default:
		var n int64
		n, err = io.Copy(&body, io.LimitReader(br, limit+1))
		if err == nil && n > limit {
			err = fmt.Errorf("%w: body over %d bytes", ErrBad, limit)
		}
	}
	return code, []byte(body.String()), err
}
