package demo

import (
	"bufio"
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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/accept"
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
// Its drain on SIGTERM is package worker's: stop accepting (closing only
// its own copies of the sockets), answer requests that still arrive with
// "Connection: close", close a connection idle for the grace period only if
// nothing waits unread on it, exit when no connection is open.

const (
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 1 << 20
	headerTimeout  = 10 * time.Second // to read a request once its first byte came
	idleTimeout    = 2 * time.Minute  // keep-alive connections idle longer are closed
	idleGrace      = time.Second      // during the drain
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

	requests   atomic.Int64
	draining   atomic.Bool
	drainStart time.Time // set before draining turns true

	mu         sync.Mutex
	conns      map[net.Conn]*connState
	closedIdle int
	changed    chan struct{} // a connection went away
	lns        []net.Listener
	serving    sync.WaitGroup // accept loops
	errs       chan error     // an accept loop failed
}

type connState struct {
	idle      bool
	idleSince time.Time
}

func newServer(delay time.Duration, slot, gen int, logger *log.Logger) *server {
	s := &server{delay: delay, pid: strconv.Itoa(os.Getpid()), slot: strconv.Itoa(slot), gen: strconv.Itoa(gen),
		log: logger, conns: map[net.Conn]*connState{}, changed: make(chan struct{}, 1), errs: make(chan error, 1)}
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
		if err != nil && !s.draining.Load() && backoff.Retry(err) {
			continue
		}
		backoff.OK()
		if err != nil {
			if !s.draining.Load() {
				select {
				case s.errs <- fmt.Errorf("accept: %w", err):
				default:
				}
			}
			return
		}
		s.mu.Lock()
		s.conns[c] = &connState{}
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *server) forget(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *server) serveConn(c net.Conn) {
	defer s.forget(c)
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	for {
		if !s.waitRequest(c, br) {
			return
		}
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
		closing := req.close || s.draining.Load()
		s.respond(bw, req, closing)
		if err := bw.Flush(); err != nil {
			return
		}
		s.requests.Add(1)
		if closing {
			return
		}
	}
}

// waitRequest waits until the next request starts to arrive on an idle
// connection. It reports false when the connection is to be closed: the
// client closed it, it stayed idle too long, or the drain's grace passed
// with nothing pending.
func (s *server) waitRequest(c net.Conn, br *bufio.Reader) bool {
	s.mu.Lock()
	st := s.conns[c]
	st.idle, st.idleSince = true, time.Now()
	s.mu.Unlock()
	for {
		// Under the lock, so that the drain's wake-up cannot be overwritten.
		s.mu.Lock()
		deadline := st.idleSince.Add(idleTimeout)
		if s.draining.Load() {
			deadline = laterOf(st.idleSince, s.drainStart).Add(idleGrace)
		}
		c.SetReadDeadline(deadline)
		s.mu.Unlock()
		_, err := br.Peek(1)
		s.mu.Lock()
		if err == nil {
			st.idle = false
			c.SetReadDeadline(time.Time{}) // undo a wake-up by the drain
			s.mu.Unlock()
			return true
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			s.mu.Unlock()
			return false // closed by the client, or broken
		}
		if !s.draining.Load() {
			s.mu.Unlock()
			if time.Now().Before(deadline) {
				continue
			}
			return false // idle too long
		}
		if time.Now().Before(deadline) {
			s.mu.Unlock()
			continue // woken when the drain began
		}
		if pending(c) {
			st.idleSince = time.Now() // a request is arriving: read it
			s.mu.Unlock()
			continue
		}
		s.closedIdle++
		s.mu.Unlock()
		return false
	}
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pending reports whether bytes wait unread in c's receive buffer.
func pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
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
	s.mu.Lock()
	s.drainStart = time.Now()
	s.draining.Store(true)
	open := len(s.conns)
	for c, st := range s.conns {
		if st.idle {
			c.SetReadDeadline(time.Now()) // wake it up to start its grace
		}
	}
	s.mu.Unlock()
	for _, l := range s.lns {
		l.Close() // our copy: the socket stays open in sockd
	}
	s.serving.Wait()
	s.log.Printf("draining: %d connections open", open)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-s.changed:
		case <-timer.C:
			s.mu.Lock()
			for c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
			return fmt.Errorf("drain deadline passed with %d connections open", n)
		}
	}
	s.mu.Lock()
	closed := s.closedIdle
	s.mu.Unlock()
	s.log.Printf("drained in %v: %d requests served, %d idle connections closed",
		time.Since(s.drainStart).Round(time.Millisecond), s.requests.Load(), closed)
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
