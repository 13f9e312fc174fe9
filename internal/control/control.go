// Package control is sockd's control socket: a unix stream socket (mode
// 0600) on which `sockd status`, `sockd reload`, `sockd upgrade` and
// `sockd scale` talk to a running sockd. Each connection carries one request and one response,
// both a single line of JSON:
//
//	→ {"command":"reload","wait":true}
//	← {"ok":false,"error":"reload to generation 3 failed: …"}
//
// Only processes of root or of sockd's own user may talk to it; the kernel
// tells who the peer is (SO_PEERCRED, see unix(7)).
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/accept"
)

// MaxWorkers is the most workers a pool has (pool.MaxWorkers; this
// package imports nothing of the pool).
const MaxWorkers = 1024

// MaxRequest bounds a request line (an environment handed over with a
// reload included: execve(2) bounds one at about 2 MB).
const MaxRequest = 4 << 20

// requestTimeout bounds how long a client may take to send its request
// (a variable so that tests can shorten it).
var requestTimeout = 5 * time.Second

// Request is what a client sends.
type Request struct {
	Command string `json:"command"` // "status", "reload", "upgrade", "scale", "signal", "send" or "logs"
	Wait    bool   `json:"wait,omitempty"`
	// Workers is scale's argument: "N", "+K" or "-K".
	Workers string `json:"workers,omitempty"`
	// Signal is signal's: a signal's name (USR1, SIGHUP) or number.
	Signal string `json:"signal,omitempty"`
	// Message is send's: one JSON value.
	Message json.RawMessage `json:"message,omitempty"`
	// Slot and Generation pick the workers of signal and send (nil: all).
	Slot       *int `json:"slot,omitempty"`
	Generation *int `json:"generation,omitempty"`
	// Env is reload's environment, KEY=VALUE (reload --update-env): the
	// new configuration is read from it instead of sockd's own. Nil
	// otherwise.
	Env []string `json:"env,omitempty"`
}

// Response is what the server answers.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Retry: this sockd handed the control socket over to the new sockd
	// of an upgrade, which shares it, before it carried the request out;
	// the same request on a new connection reaches the sockd in charge
	// (Call does that).
	Retry bool `json:"retry,omitempty"`
	// Busy: refused for something under way that ends by itself (a
	// reload, an upgrade); the same request later may go through. Call
	// asks again, until its context ends, for a request that waits.
	Busy   bool            `json:"busy,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
	// Workers is the size scale set, or how many workers signal and
	// send reached.
	Workers int `json:"workers,omitempty"`
}

// ErrHandedOver is the cause (context.Cause) with which the sockd that
// an upgrade replaced ends its Serve, after it closed its listener (the
// new sockd, which shares it, accepts every connection after that). A
// request read after that, a status cut off by it, and a refusal that
// wraps ErrHandedOver get Response.Retry.
var ErrHandedOver = errors.New("this sockd handed over to a new one")

// Busy marks err as a refusal for something under way that ends by
// itself (Response.Busy).
func Busy(err error) error { return busyError{err} }

type busyError struct{ error }

func (e busyError) Unwrap() error { return e.error }

func isBusy(err error) bool {
	var b busyError
	return errors.As(err, &b)
}

// Handler carries out requests; cmd/sockd hands one to Serve, so this
// package knows nothing of pools and generations.
type Handler interface {
	Status(ctx context.Context) (any, error)
	// Reload reloads; env, if not nil, is the environment to read the
	// configuration from (Request.Env).
	Reload(ctx context.Context, wait bool, env []string) error
	Upgrade(ctx context.Context, wait bool) error
	// Scale sets the number of workers to n, or changes it by n if
	// relative, and returns the new number.
	Scale(ctx context.Context, n int, relative, wait bool) (int, error)
	// Signal sends sig (a name or number) to the workers in slot and
	// generation (nil: any) and returns how many got it; Send writes msg
	// (one JSON value) on their Node IPC channels.
	Signal(ctx context.Context, sig string, slot, generation *int) (int, error)
	Send(ctx context.Context, msg json.RawMessage, slot, generation *int) (int, error)
}

// LogServer is a Handler that also answers logs requests: it writes the
// answer and the stream of records to c itself (internal/output's logs
// exchange); line is the request line.
type LogServer interface {
	Logs(ctx context.Context, c net.Conn, line []byte) error
}

// ParseScale reads scale's argument: "N" (set), "+K" or "-K" (change).
func ParseScale(s string) (n int, relative bool, err error) {
	relative = strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-")
	n, err = strconv.Atoi(s)
	if err != nil || !relative && (n < 1 || n > MaxWorkers) || relative && (n == 0 || n > MaxWorkers || n < -MaxWorkers) {
		return 0, false, fmt.Errorf("workers %q: want N from 1 to %d, or +K or -K", s, MaxWorkers)
	}
	return n, relative, nil
}

// Listen creates the control socket at path with mode 0600. A stale
// socket file is replaced; a live one (another sockd) is an error.
func Listen(path string) (*net.UnixListener, error) {
	// The socket's own directory is made (/run/sockd), not a tree of
	// them: a mistyped path or RUNTIME_DIRECTORY must not leave
	// directories at the root of the file system.
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("control socket: %w (pass --control PATH or SOCKD_CONTROL, in a writable directory that exists)", err)
	}
	// A stale socket (nobody answers) is replaced; anything else at the
	// path is someone's file, and a mistyped --control must not delete it.
	if err := activation.RemoveStale(path); errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("control socket %s is in use by another sockd (pass --control)", path)
	} else if err != nil {
		return nil, fmt.Errorf("control socket: %w (pass another --control)", err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Serve answers requests until ctx is done, then closes ln and waits for
// the requests in progress.
func Serve(ctx context.Context, ln *net.UnixListener, h Handler, log hclog.Logger) {
	var wg sync.WaitGroup
	closed := make(chan struct{})
	go func() {
		<-ctx.Done()
		ln.Close()
		close(closed)
	}()
	// Accept fails as soon as Close has begun, before the socket is
	// closed: once ctx is done, Serve returns only after Close.
	defer func() {
		if ctx.Err() != nil {
			<-closed
		}
	}()
	backoff := accept.Backoff{Log: log, What: "control"}
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if backoff.Retry(err) {
				continue
			}
			if !errors.Is(err, net.ErrClosed) {
				log.Error("control socket accept failed", "error", err)
			}
			break
		}
		backoff.OK()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, c, h, log)
		}()
	}
	wg.Wait()
}

func serveConn(ctx context.Context, c *net.UnixConn, h Handler, log hclog.Logger) {
	defer c.Close()
	resp := func(r Response) {
		c.SetWriteDeadline(time.Now().Add(requestTimeout))
		b, _ := json.Marshal(r)
		c.Write(append(b, '\n'))
	}
	if uid, err := peerUID(c); err != nil || (uid != 0 && uid != os.Geteuid()) {
		log.Warn("control request refused", "event", "control_refused", "peer_uid", uid, "error", err)
		resp(Response{Error: "permission denied"})
		return
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	req, line, err := readRequest(c)
	if err != nil {
		log.Debug("bad control request", "event", "control_bad_request", "error", err)
		resp(Response{Error: fmt.Sprintf("bad request (%v): want one line of JSON like {\"command\":\"status\"}", err)})
		return
	}
	c.SetReadDeadline(time.Time{})
	if handedOver(ctx) {
		resp(Response{Error: ErrHandedOver.Error(), Retry: true})
		return
	}
	log.Debug("control request", "event", "control_request", "command", req.Command, "wait", req.Wait)
	if req.Command == "logs" {
		ls, ok := h.(LogServer)
		if !ok {
			resp(Response{Error: "this sockd keeps no worker output"})
			return
		}
		if err := ls.Logs(ctx, c, line); err != nil {
			log.Debug("logs request ended", "event", "control_logs", "error", err)
		}
		if handedOver(ctx) {
			// A follow the hand-over ended: its client goes on with
			// the new sockd.
			resp(Response{Error: ErrHandedOver.Error(), Retry: true})
		}
		return
	}
	if req.Command == "scale" && req.Wait {
		// The wait is only the client's: once it hung up, nobody reads
		// the answer (the new size stays in force).
		var stop func()
		ctx, stop = whileConnected(ctx, c)
		defer stop()
	}
	resp(handle(ctx, h, req))
}

// ErrClientGone ends a wait whose client hung up.
var ErrClientGone = errors.New("the client hung up")

// whileConnected returns a context that ends with ErrClientGone once the
// client has closed its end of c (POLLHUP, which on a unix socket means
// both directions are shut: a client that only shut down writing is still
// there), looked at 4 times a second until stop.
func whileConnected(ctx context.Context, c *net.UnixConn) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	rc, err := c.SyscallConn()
	if err != nil {
		return ctx, func() { cancel(nil) }
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd)}}
			for {
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				default:
				}
				n, err := unix.Poll(pfd, 250)
				if err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
					cancel(ErrClientGone)
					return
				}
			}
		})
	}()
	return ctx, func() {
		close(done)
		wg.Wait()
		cancel(nil)
	}
}

func handedOver(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrHandedOver) }

// readRequest reads one request: a line of JSON of at most MaxRequest
// bytes, newline included, with a command sockd knows (ParseRequest).
// What follows the newline is ignored.
func readRequest(r io.Reader) (Request, []byte, error) {
	line, err := bufio.NewReader(io.LimitReader(r, MaxRequest)).ReadBytes('\n')
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("no line of at most %d bytes", MaxRequest)
	}
	if err != nil {
		return Request{}, nil, err
	}
	req, err := ParseRequest(line)
	return req, line, err
}

// ParseRequest reads one request line: a JSON object with a command sockd
// knows.
func ParseRequest(line []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return req, err
	}
	switch req.Command {
	case "status", "reload", "upgrade", "logs":
	case "signal":
		if req.Signal == "" {
			return req, errors.New("signal: which signal?")
		}
	case "send":
		if !json.Valid(req.Message) || len(req.Message) == 0 {
			return req, errors.New("send: the message must be one JSON value")
		}
	case "scale":
		if _, _, err := ParseScale(req.Workers); err != nil {
			return req, err
		}
	default:
		return req, fmt.Errorf("unknown command %q (want status, reload, upgrade, scale, signal, send or logs)", req.Command)
	}
	// A negative selector would match every worker (pool.Selector).
	if req.Slot != nil && *req.Slot < 0 {
		return req, fmt.Errorf("slot %d: want 0 or more", *req.Slot)
	}
	if req.Generation != nil && *req.Generation < 1 {
		return req, fmt.Errorf("generation %d: want 1 or more", *req.Generation)
	}
	return req, nil
}

func handle(ctx context.Context, h Handler, req Request) Response {
	var err error
	switch req.Command {
	case "status":
		var s any
		if s, err = h.Status(ctx); err == nil {
			b, _ := json.Marshal(s)
			return Response{OK: true, Status: b}
		}
	case "reload":
		err = h.Reload(ctx, req.Wait, req.Env)
	case "upgrade":
		err = h.Upgrade(ctx, req.Wait)
	case "scale":
		n, relative, perr := ParseScale(req.Workers)
		if perr != nil {
			return Response{Error: perr.Error()}
		}
		if n, err = h.Scale(ctx, n, relative, req.Wait); err == nil {
			return Response{OK: true, Workers: n}
		}
	case "signal", "send":
		var n int
		if req.Command == "signal" {
			n, err = h.Signal(ctx, req.Signal, req.Slot, req.Generation)
		} else {
			n, err = h.Send(ctx, req.Message, req.Slot, req.Generation)
		}
		if err == nil {
			return Response{OK: true, Workers: n}
		}
	default:
		err = fmt.Errorf("unknown command %q (want status, reload, upgrade, scale, signal, send or logs)", req.Command)
	}
	if err != nil {
		// Retry only what was not carried out: a refusal because this
		// sockd handed over, or a status (it changes nothing) cut off by
		// the hand-over. A scale, signal or send cut off while it waited
		// may have taken effect here already, and the new sockd took
		// over what this one had.
		retry := errors.Is(err, ErrHandedOver) || req.Command == "status" && handedOver(ctx)
		msg := err.Error()
		if !retry && handedOver(ctx) {
			msg += " (this sockd handed over to a new one while the request ran; see sockd status)"
		}
		return Response{Error: msg, Retry: retry, Busy: isBusy(err)}
	}
	return Response{OK: true}
}

func peerUID(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err = errors.Join(err, cerr); err != nil {
		return -1, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return int(cred.Uid), nil
}

// ErrUnreachable wraps failures to reach sockd at all (as opposed to a
// request sockd refused).
var ErrUnreachable = errors.New("cannot reach sockd")

// maxRetries bounds how often Call sends a request again on an answer
// with Retry (one hand-over each: upgrades back to back).
const maxRetries = 4

// Call sends one request to the sockd listening at path. A refused request
// is an error with sockd's reason; a sockd that cannot be reached is an
// error wrapping ErrUnreachable. A request that reached the sockd an
// upgrade was replacing as it handed over is sent again: it reaches the
// new one.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	return CallChecked(ctx, path, req, nil)
}

// CallChecked is Call with check run on each connection before the
// request goes out (PeerUID: that the sockd found is the one answering).
func CallChecked(ctx context.Context, path string, req Request, check func(*net.UnixConn) error) (Response, error) {
	for i := 0; ; {
		resp, err := call(ctx, path, req, check)
		switch {
		case resp.Busy && req.Wait:
			// A reload or upgrade under way: the caller waits anyway.
			select {
			case <-ctx.Done():
				return resp, err
			case <-time.After(busyPoll):
			}
		case resp.Retry && i < maxRetries:
			i++
		default:
			return resp, err
		}
	}
}

// PeerUID returns a check for CallChecked: the process listening on the
// socket belongs to uid (SO_PEERCRED, as the kernel recorded it at
// listen(2)), so that a socket swapped for another between finding and
// calling is not written to.
func PeerUID(uid int) func(*net.UnixConn) error {
	return func(c *net.UnixConn) error {
		got, err := peerUID(c)
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		if got != uid {
			return fmt.Errorf("control socket %s: its listener is uid %d's, not the sockd's (uid %d)", c.RemoteAddr(), got, uid)
		}
		return nil
	}
}

// MaxResponse bounds an answer a client reads: a status of 1,024 workers
// with its events is well under 1 MiB.
const MaxResponse = 16 << 20

// busyPoll is how often Call asks again while sockd is busy.
const busyPoll = 250 * time.Millisecond

func call(ctx context.Context, path string, req Request, check func(*net.UnixConn) error) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("%w at %s: %w", ErrUnreachable, path, err)
	}
	defer c.Close()
	if check != nil {
		if err := check(c.(*net.UnixConn)); err != nil {
			return Response{}, err
		}
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	// A refused client may find the connection closed before it writes;
	// the answer saying why is still there to read.
	_, werr := c.Write(append(b, '\n'))
	// Bounded: whatever answers on a socket that is not a sockd's must not
	// fill this process's memory.
	line, err := bufio.NewReader(io.LimitReader(c, MaxResponse)).ReadBytes('\n')
	if err == io.EOF && len(line) == MaxResponse {
		return Response{}, fmt.Errorf("%w at %s: an answer longer than %d bytes (not a sockd?)", ErrUnreachable, path, MaxResponse)
	}
	if err != nil && werr == nil && ctx.Err() != nil {
		// Sent, and given up on: sockd may still carry it out.
		return Response{}, fmt.Errorf("%w at %s: the %s request was sent but no answer came in time (sockd may still carry it out: see sockd status): %w", ErrUnreachable, path, req.Command, err)
	}
	if err != nil {
		return Response{}, fmt.Errorf("%w at %s: no answer: %w", ErrUnreachable, path, errors.Join(werr, err))
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("bad answer from sockd: %w", err)
	}
	if !resp.OK {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
