package pool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/internal/notify"
	"golang.org/x/sys/unix"
)

// Node.js's IPC channel, the one process.send() writes to (--ready
// node-ipc). A Node process started with NODE_CHANNEL_FD=n sets up the
// stream socket on fd n as its channel to the parent; with
// NODE_CHANNEL_SERIALIZATION_MODE=json every message is one JSON value on
// a line of its own, so process.send('ready') arrives as the line "ready"
// (with its quotes). That line marks the worker ready, as it marks a
// process ready in PM2's wait_ready mode. {"sockd":{…}} carries the rest of
// what sd_notify does (ready, status, requests, stopping, watchdog: see
// internal/nodeshim's ParseMessage), for a worker that cannot reach the
// notify socket; any other message is the app's and is dropped. A worker that
// listens for no 'message' has its channel unref'd by Node, so it exits
// as it would without one.
//
// Node documents the channel's use by a parent that is not Node as
// unsupported (child_process, "serialization"); the json mode is the one
// it keeps stable for that purpose. Only the worker itself gets the
// channel: Node removes NODE_CHANNEL_FD from its environment once it has
// opened it, so a wrapper like `npm start` keeps it for itself (sockd's
// preload in npm relays it to the app: internal/nodeshim).

// maxNodeMessage bounds one line on the channel; longer ones are skipped.
const maxNodeMessage = 64 << 10

// nodeChannel makes the socketpair: sockd's end (close-on-exec) and the
// worker's.
func nodeChannel() (mine, theirs int, err error) {
	// sockd's end is non-blocking, read and written through Go's poller:
	// a worker that does not read cannot block sockd (writes have a
	// deadline).
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.SetNonblock(fds[0], true)
	}
	if err != nil {
		return -1, -1, fmt.Errorf("node ipc channel: %w", err)
	}
	return fds[0], fds[1], nil
}

// readNodeChannel reads the worker's messages until it closes its end (it
// exited): "ready" posts its readiness to the loop. With listening
// (--ready node-listen) only the preload's word that the app listens on
// sockd's sockets makes it ready, not the app's own process.send('ready'):
// an app that says it is ready before it listens, or listens elsewhere,
// must not retire the workers that serve.
func (e *osEnv) readNodeChannel(pid, fd int, listening bool) {
	p := e.p
	f := os.NewFile(uintptr(fd), "node-ipc")
	e.channels.Store(pid, &nodeChan{f: f})
	defer func() {
		e.channels.Delete(pid)
		f.Close()
	}()
	r := bufio.NewReaderSize(f, 4096)
	var bad rateLog
	for {
		line, err := readLine(r, maxNodeMessage)
		if err != nil {
			return
		}
		if line == nil {
			p.log.Debug("node ipc message too long; skipped", "event", "node_ipc", "worker_pid", pid)
			continue
		}
		m, ours, err := nodeshim.ParseMessage(line)
		switch {
		case err != nil:
			if n, ok := bad.note(time.Now()); ok {
				p.log.Warn("node ipc message for sockd not understood", "event", "node_ipc", "worker_pid", pid, "error", err, "messages", n)
			}
		case !ours:
			p.log.Debug("node ipc message ignored", "event", "node_ipc", "worker_pid", pid, "message", string(line[:min(len(line), 200)]))
		case listening && m.AppReady:
			p.log.Debug("the app's own ready ignored: --ready node-listen waits for it to listen on sockd's sockets", "event", "node_ipc", "worker_pid", pid)
		case len(m.Fields()) > 0:
			// What sd_notify carries, through the same loop event as a
			// notify datagram of this worker.
			if !p.post(notifyEvent{msg: notify.Message{PID: pid, Fields: m.Fields()}}) {
				return
			}
		}
	}
}

// readLine returns the next line without its newline, or nil (and no
// error) for a line longer than limit, which it skips.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		if !tooLong {
			line = append(line, chunk...)
			tooLong = len(line) > limit
		}
		if !isPrefix {
			if tooLong {
				return nil, nil
			}
			return line, nil
		}
	}
}

// sendTimeout bounds a write on a worker's channel: a worker that does
// not read its messages does not hold sockd up.
var sendTimeout = time.Second // a variable for a test

// maxPending bounds the messages waiting to be written on one channel.
const maxPending = 1024

// nodeChan is sockd's end of a worker's channel and the lines waiting to
// be written on it, in the order they were sent: one writer at a time,
// off the loop, so that two messages to one worker never swap places.
type nodeChan struct {
	f       *os.File
	mu      sync.Mutex
	pending [][]byte
	writing bool
}

// errNoChannel and errBacklog say why a message was not queued for a
// worker: it has no Node IPC channel, or maxPending messages wait for it
// already (it reads none).
var (
	errNoChannel = errors.New("no Node IPC channel")
	errBacklog   = fmt.Errorf("%d messages wait unread", maxPending)
)

// send queues msg, one JSON value, as a line on w's channel: errNoChannel
// if w has none, errBacklog if its queue is full.
func (e *osEnv) send(w *worker, msg []byte) error {
	v, ok := e.channels.Load(w.pid)
	if !ok {
		return errNoChannel
	}
	c := v.(*nodeChan)
	line := append(append([]byte(nil), msg...), '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= maxPending {
		return errBacklog
	}
	c.pending = append(c.pending, line)
	if !c.writing {
		c.writing = true
		go e.flush(w.pid, c)
	}
	return nil
}

// flush writes c's pending lines in order until none is left.
func (e *osEnv) flush(pid int, c *nodeChan) {
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		line := c.pending[0]
		c.pending = c.pending[1:]
		c.mu.Unlock()
		c.f.SetWriteDeadline(time.Now().Add(sendTimeout))
		if _, err := c.f.Write(line); err != nil {
			e.p.log.Warn("cannot send a message to the worker", "event", "node_ipc", "worker_pid", pid, "error", err)
		}
	}
}
