package output

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// DefaultMaxLine is the longest line relayed whole: a longer one is cut
// into pieces of at most this many bytes (see Flags: Cut, Continued).
const DefaultMaxLine = 64 << 10

// Options configure a Relay. Zero values are the defaults.
type Options struct {
	// Sink receives every line (NewJournalSink, NewWriterSink, Sinks);
	// nil: the ring only.
	Sink Sink
	// MaxLine is the longest line relayed whole (DefaultMaxLine).
	MaxLine int
	// Ring bounds the recent lines kept for `sockd logs`.
	Ring RingOptions
	// PipeSize, if > 0, sets each pipe's capacity (F_SETPIPE_SZ, rounded
	// up by the kernel to a power of two pages; at most
	// /proc/sys/fs/pipe-max-size unless sockd is privileged). 0: the
	// kernel's default, 64 KiB. A larger pipe absorbs longer bursts
	// before a worker waits, and holds more of its last words when sockd
	// is killed.
	PipeSize int
	// Logger receives the relay's own problems (a sink that loses lines),
	// at most one line every 10 s. hclog.NewNullLogger() when nil.
	Logger hclog.Logger
}

// Relay reads the stdout and stderr pipes of workers and relays their
// lines, attributed, to a sink and to its ring.
type Relay struct {
	o       Options
	log     hclog.Logger
	ring    *store
	mu      sync.Mutex
	pipes   map[*Pipes]struct{}
	totals  [2]counters // by stream, every worker since New
	lastLog atomic.Int64
	// lostSince: lines lost since the last output_lost record.
	lostSince atomic.Int64
}

// New makes a relay.
func New(o Options) *Relay {
	if o.MaxLine <= 0 {
		o.MaxLine = DefaultMaxLine
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Relay{o: o, log: o.Logger, ring: newStore(o.Ring, o.MaxLine), pipes: map[*Pipes]struct{}{}}
}

type counters struct{ lines, bytes, cut, dropped atomic.Uint64 }

// Pipes are the two pipes of one worker: the write ends for its fds 1
// and 2, the read ends read by the relay.
type Pipes struct {
	r       *Relay
	ring    *ring
	w       Worker
	wfd     [2]int // write ends; -1 once closed
	streams [2]*stream
	mu      sync.Mutex
	started bool
	ended   bool
	left    int // streams still open
	done    chan struct{}
}

// Open makes the pipes for a worker about to be started in slot of
// generation gen. Pass FDs() as the worker's fds 1 and 2, then call
// Start with its pid, or Abort if it could not be started.
func (r *Relay) Open(slot, gen int) (*Pipes, error) {
	p := &Pipes{r: r, w: Worker{Slot: slot, Generation: gen}, wfd: [2]int{-1, -1}, done: make(chan struct{})}
	for i, kind := range []Stream{Stdout, Stderr} {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			p.closeAll()
			return nil, fmt.Errorf("output pipe of worker %d: %w", slot, err)
		}
		p.wfd[i] = fds[1]
		if r.o.PipeSize > 0 {
			// Best effort: past the limit the pipe keeps its size.
			unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, r.o.PipeSize)
		}
		// Only sockd's end is non-blocking (and so read through Go's
		// poller); the worker's stays blocking, as programs expect of
		// their stdout.
		if err := unix.SetNonblock(fds[0], true); err != nil {
			unix.Close(fds[0])
			p.closeAll()
			return nil, fmt.Errorf("output pipe of worker %d: %w", slot, err)
		}
		p.streams[i] = newStream(p, kind, os.NewFile(uintptr(fds[0]), kind.String()))
	}
	p.left = 2
	return p, nil
}

// closeAll closes every descriptor of pipes that never started.
func (p *Pipes) closeAll() {
	p.closeWrite()
	for _, s := range p.streams {
		if s != nil {
			s.f.Close()
		}
	}
}

func (p *Pipes) closeWrite() {
	for i, fd := range p.wfd {
		if fd >= 0 {
			unix.Close(fd)
			p.wfd[i] = -1
		}
	}
}

// FDs are the write ends to give the worker as its fds 1 and 2 (blocking,
// close-on-exec in sockd: dup2 to 1 and 2 in the child clears that).
func (p *Pipes) FDs() (stdout, stderr int) { return p.wfd[0], p.wfd[1] }

// Worker is the worker the pipes belong to.
func (p *Pipes) Worker() Worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w
}

// Start closes sockd's copies of the write ends (so that the pipes reach
// end of file when the worker and whatever inherited them have exited)
// and starts reading, attributing lines to pid.
func (p *Pipes) Start(pid int) {
	p.mu.Lock()
	if p.started || p.ended {
		p.mu.Unlock()
		return
	}
	p.started = true
	p.w.PID = pid
	p.closeWrite()
	p.ring = p.r.ring.open(p.w)
	p.mu.Unlock()
	p.r.mu.Lock()
	p.r.pipes[p] = struct{}{}
	p.r.mu.Unlock()
	for _, s := range p.streams {
		s.begin(p.w)
	}
}

// Abort closes the pipes of a worker that could not be started.
func (p *Pipes) Abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.ended {
		return
	}
	p.ended = true
	p.closeAll()
	close(p.done)
}

// Close ends the pipes once the worker's processes are gone: it keeps
// reading until end of file for at most drain, then reads what the pipes
// still hold (without waiting: a process that inherited the pipes and
// outlives the worker may keep them open forever), delivers it and closes
// them. It does not wait: Done says when it is over. Calling it again, or
// after the end of file, changes nothing.
func (p *Pipes) Close(drain time.Duration) {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if !started {
		p.Abort()
		return
	}
	for _, s := range p.streams {
		if s != nil {
			s.close(drain)
		}
	}
}

// Done is closed once both pipes are closed and every line read was
// delivered.
func (p *Pipes) Done() <-chan struct{} { return p.done }

// Crashed marks the worker as one that crashed: once its pipes are
// closed, its lines are kept longer than those of workers that exited as
// planned (retired by a reload, stopped, recycled), which are dropped
// first when more workers have exited than the store keeps.
func (p *Pipes) Crashed() { p.ring.crashed.Store(true) }

// streamEnded is called by each stream once it is closed.
func (p *Pipes) streamEnded() {
	p.mu.Lock()
	p.left--
	last := p.left == 0
	if last {
		p.ended = true
	}
	p.mu.Unlock()
	if !last {
		return
	}
	p.r.ring.end(p.ring)
	p.r.mu.Lock()
	delete(p.r.pipes, p)
	p.r.mu.Unlock()
	close(p.done)
}

// Close closes every worker's pipes after reading what they hold (the
// shutdown of sockd, whose workers are gone), and waits until that is
// delivered or ctx is done.
func (r *Relay) Close(ctx context.Context) error {
	r.mu.Lock()
	ps := make([]*Pipes, 0, len(r.pipes))
	for p := range r.pipes {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.Close(0)
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("output relay: %w", ctx.Err())
		}
	}
	return nil
}

// logLost logs lines a sink lost, at most once every 10 s, with every
// line lost since the last record (the metric counts each).
func (r *Relay) logLost(w Worker, s Stream, n int, err error) {
	r.lostSince.Add(int64(n))
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if now-last < int64(10*time.Second) || !r.lastLog.CompareAndSwap(last, now) {
		return
	}
	n = int(r.lostSince.Swap(0))
	var le *LostError
	if errors.As(err, &le) {
		err = le.Err
	}
	r.log.Warn("worker output lost", "event", "output_lost", "generation", w.Generation, "worker", w.Slot,
		"worker_pid", w.PID, "stream", s.String(), "lines", n, "error", err, "note", "lines lost by any worker since the last such record; sockd_worker_output_dropped_lines_total counts them all")
}
