package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockd/sockd/internal/accept"
	"github.com/sockd/sockd/internal/drain"
	"github.com/sockd/sockd/internal/http1"
)

// The demo worker speaks just enough HTTP/1.1 itself (request line,
// headers, Content-Length and chunked bodies, Expect: 100-continue,
// keep-alive) instead of using net/http. It lives in the sockd binary, and
// linking net/http (with crypto/tls) into it makes every sockd process,
// the supervisor included, about 2.5 MB bigger in resident memory: the
// kernel maps a binary's code 64 KB at a time, and the package inits alone
// touch most of it. Go workers of your own should use net/http with
// package worker; examples/hello shows how.
//
// Its drain on SIGTERM is package worker's, internal/drain: stop accepting
// (closing only its own copies of the sockets), answer requests that
// still arrive with "Connection: close", close a connection idle for the
// grace period only if nothing arrived on it, exit when no connection is
// open.

const (
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 1 << 20
	headerTimeout  = 10 * time.Second // to read a request once its first byte came
	idleTimeout    = 2 * time.Minute  // keep-alive connections idle longer are closed
)

// errBadRequest wraps every malformed request (http1.ErrBad).
var errBadRequest = http1.ErrBad

// server serves the demo's answer on every listener.
type server struct {
	delay time.Duration
	pid   string
	slot  string
	gen   string
	body  string
	log   *log.Logger

	requests atomic.Int64
	conns    *drain.Tracker
	lns      []net.Listener
	serving  sync.WaitGroup // accept loops
	errs     chan error     // an accept loop failed
}

func newServer(delay time.Duration, slot, gen int, logger *log.Logger) *server {
	s := &server{delay: delay, pid: strconv.Itoa(os.Getpid()), slot: strconv.Itoa(slot), gen: strconv.Itoa(gen),
		log: logger, conns: drain.New(drain.DefaultIdleGrace), errs: make(chan error, 1)}
	s.body = fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n", s.pid, s.slot, s.gen)
	return s
}

// start runs an accept loop on every listener.
func (s *server) start(lns []net.Listener) {
	s.lns = lns
	for _, l := range lns {
		s.serving.Add(1)
		go s.accept(l)
	}
}

func (s *server) accept(l net.Listener) {
	defer s.serving.Done()
	var backoff accept.Backoff // out of descriptors: wait, the connections stay queued
	for {
		c, err := l.Accept()
		if err != nil && !s.conns.Draining() && backoff.Retry(err) {
			continue
		}
		backoff.OK()
		if err != nil {
			if !s.conns.Draining() {
				select {
				case s.errs <- fmt.Errorf("accept: %w", err):
				default:
				}
			}
			return
		}
		s.conns.Idle(c)
		go s.serveConn(c)
	}
}

func (s *server) forget(c net.Conn) {
	c.Close()
	s.conns.Gone(c)
}

func (s *server) serveConn(c net.Conn) {
	defer s.forget(c)
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	for {
		// Idle: the next request's first byte, or the end (the client
		// closed it, it stayed idle too long, or the drain closed it).
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		if _, err := br.Peek(1); err != nil {
			return
		}
		s.conns.Active(c)
		c.SetReadDeadline(time.Now().Add(headerTimeout))
		req, err := readRequest(br, bw)
		c.SetReadDeadline(time.Time{})
		if err != nil {
			if errors.Is(err, errBadRequest) {
				fmt.Fprintf(bw, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
					len(err.Error())+1, err)
				bw.Flush()
			}
			return
		}
		if s.delay > 0 {
			t := time.NewTimer(s.delay) // the demo's artificial latency
			<-t.C
		}
		closing := req.close || s.conns.Draining()
		s.respond(bw, req, closing)
		if err := bw.Flush(); err != nil {
			return
		}
		s.requests.Add(1)
		if closing {
			return
		}
		s.conns.Idle(c)
	}
}

func (s *server) respond(bw *bufio.Writer, req *request, closing bool) {
	bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n")
	bw.WriteString("X-Sockd-Pid: " + s.pid + "\r\nX-Sockd-Worker: " + s.slot + "\r\nX-Sockd-Generation: " + s.gen + "\r\n")
	bw.WriteString("Content-Length: " + strconv.Itoa(len(s.body)) + "\r\n")
	switch {
	case closing:
		bw.WriteString("Connection: close\r\n")
	case req.proto == "HTTP/1.0":
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if req.method != "HEAD" {
		bw.WriteString(s.body)
	}
}

// drain stops accepting and waits until no connection is open, or until
// deadline (then it closes what is left and says how many).
func (s *server) drain(deadline time.Time) error {
	start := time.Now()
	open := s.conns.Begin()
	for _, l := range s.lns {
		l.Close() // our copy: the socket stays open in sockd
	}
	s.serving.Wait()
	s.log.Printf("draining: %d connections open", open)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	closed, left, err := s.conns.Wait(ctx)
	if err != nil {
		return fmt.Errorf("drain deadline passed with %d connections open", left)
	}
	s.log.Printf("drained in %v: %d requests served, %d idle connections closed",
		time.Since(start).Round(time.Millisecond), s.requests.Load(), closed)
	return nil
}

// request is what the demo needs to know of an HTTP request.
type request struct {
	method, proto string
	close         bool // the connection ends after the answer
}

// readRequest reads one request and discards its body. Malformed requests
// give an error wrapping errBadRequest.
func readRequest(br *bufio.Reader, bw *bufio.Writer) (*request, error) {
	budget := maxHeaderBytes
	line, err := http1.ReadLine(br, &budget)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return nil, fmt.Errorf("%w: request line %.60q", errBadRequest, line)
	}
	req := &request{method: parts[0], proto: parts[2]}
	switch req.proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		req.close = true
	default:
		return nil, fmt.Errorf("%w: protocol %.20q", errBadRequest, req.proto)
	}
	var length int64
	chunked, expect := false, false
	for {
		h, err := http1.ReadLine(br, &budget)
		if err != nil {
			return nil, err
		}
		if h == "" {
			break
		}
		name, value, err := http1.Header(h)
		if err != nil {
			return nil, err
		}
		switch name {
		case "connection":
			for _, tok := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(tok)) {
				case "close":
					req.close = true
				case "keep-alive":
					req.close = req.close && req.proto != "HTTP/1.0"
				}
			}
		case "content-length":
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return nil, fmt.Errorf("%w: Content-Length %.20q", errBadRequest, value)
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
			if !chunked {
				return nil, fmt.Errorf("%w: Transfer-Encoding %.20q", errBadRequest, value)
			}
		case "expect":
			expect = strings.EqualFold(value, "100-continue")
		}
	}
	if expect && (chunked || length > 0) {
		bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := bw.Flush(); err != nil {
			return nil, err
		}
	}
	if chunked {
		return req, http1.CopyChunked(io.Discard, br, maxBodyBytes)
	}
	if length > maxBodyBytes {
		return nil, fmt.Errorf("%w: body of %d bytes", errBadRequest, length)
	}
	_, err = io.CopyN(io.Discard, br, length)
	return req, err
}
