package output

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readChunk is the least free space a read gets, and the buffer's size
// when no line is long: a pipe of the default size empties in one read.
const readChunk = 64 << 10

// unixEpoch is a deadline long past: it interrupts a read at once.
var unixEpoch = time.Unix(1, 0)

func newFile(fd int, kind Stream) *os.File { return os.NewFile(uintptr(fd), kind.String()) }

// A stream's states.
const (
	running  = iota
	closing  // Close: drain, then close
	stopping // Export.Stop: stop reading, keep the partial line
)

// stream reads one pipe in its own goroutine, through Go's poller: the
// read end is non-blocking, so a quiet pipe costs no thread, and a
// deadline interrupts a read without losing a byte.
type stream struct {
	p    *Pipes
	kind Stream
	def  int8
	f    *os.File
	w    Worker

	// buf[start:end] are bytes read and not delivered: a partial line,
	// at most MaxLine bytes between reads.
	buf        []byte
	start, end int
	cont       bool // buf[start:] continues a cut line ...
	contPrio   int8 // ... of this priority
	lines      []Line

	mu      sync.Mutex
	state   int
	exited  chan struct{} // closed when the goroutine returns
	stopped bool          // it returned for Export.Stop: the pipe stays open
	c       counters
}

func newStream(p *Pipes, kind Stream, f *os.File) *stream {
	def := int8(PriorityStdout)
	if kind == Stderr {
		def = PriorityStderr
	}
	return &stream{p: p, kind: kind, def: def, f: f, exited: make(chan struct{})}
}

func (s *stream) begin(w Worker) {
	s.w = w
	go s.run()
}

func (s *stream) run() {
	defer close(s.exited)
	maxLine := s.p.r.o.MaxLine
	for {
		s.room(maxLine)
		n, err := s.f.Read(s.buf[s.end:])
		if n > 0 {
			s.read(n, false)
			// Let the supervisor and the other streams run between
			// batches: sockd has one P (GOMAXPROCS=1), and a pipe that
			// is never empty would otherwise keep it until preempted.
			runtime.Gosched()
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.mu.Lock()
			state := s.state
			s.mu.Unlock()
			switch state {
			case stopping:
				s.stopped = true
				return
			case closing:
				s.drain()
			default:
				continue
			}
		}
		// End of file, a drained Close, or a read error.
		s.read(0, true)
		s.f.Close()
		s.p.streamEnded()
		return
	}
}

// room makes sure a read has at least readChunk bytes of space.
func (s *stream) room(maxLine int) {
	if len(s.buf)-s.end >= readChunk {
		return
	}
	if s.start > 0 {
		copy(s.buf, s.buf[s.start:s.end])
		s.end -= s.start
		s.start = 0
	}
	if len(s.buf)-s.end < readChunk {
		// Only a line longer than readChunk gets here; the buffer stays
		// below MaxLine + 2 × readChunk.
		nb := make([]byte, min(max(2*len(s.buf), readChunk), maxLine+2*readChunk))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
}

// read takes n more bytes into account and delivers the complete lines;
// at the end of the stream (eof), the partial line too.
func (s *stream) read(n int, eof bool) {
	s.end += n
	if n > 0 {
		s.c.bytes.Add(uint64(n))
		s.p.r.totals[s.kind-1].bytes.Add(uint64(n))
	}
	maxLine := s.p.r.o.MaxLine
	lines := s.lines[:0]
	for {
		seg := s.buf[s.start:s.end]
		i := bytes.IndexByte(seg, '\n')
		if i > maxLine || i < 0 && len(seg) > maxLine {
			k := cutPoint(seg, maxLine)
			lines = s.line(lines, seg[:k], Cut)
			s.start += k
			continue
		}
		if i < 0 {
			break
		}
		lines = s.line(lines, seg[:i], 0)
		s.start += i + 1
	}
	if eof && s.end > s.start {
		lines = s.line(lines, s.buf[s.start:s.end], NoNewline)
		s.start = s.end
	}
	if s.start == s.end {
		s.start, s.end = 0, 0 // the lines' bytes stay until the next read
	}
	if len(lines) > 0 {
		s.deliver(lines)
	}
	clear(lines) // no reference to the buffer outlives the batch
	s.lines = lines[:0]
}

// cutPoint is where to cut a line longer than max: at max, or up to 3
// bytes before so as not to split a UTF-8 character.
func cutPoint(b []byte, maxLine int) int {
	for k := maxLine; k > maxLine-utf8Max && k > 0; k-- {
		if b[k]&0xc0 != 0x80 {
			return k
		}
	}
	return maxLine
}

const utf8Max = 4

func (s *stream) line(lines []Line, data []byte, f Flags) []Line {
	l := Line{Data: data, Flags: f}
	if s.cont {
		l.Flags |= Continued
		l.Priority = s.contPrio
	} else {
		classify(&l, s.def)
		if f&Cut != 0 {
			s.c.cut.Add(1)
			s.p.r.totals[s.kind-1].cut.Add(1)
		}
	}
	s.cont, s.contPrio = f&Cut != 0, l.Priority
	return append(lines, l)
}

func (s *stream) deliver(lines []Line) {
	r := s.p.r
	b := Batch{Worker: s.w, Stream: s.kind, Time: time.Now(), Lines: lines}
	s.p.ring.add(&b)
	n := uint64(len(lines))
	s.c.lines.Add(n)
	r.totals[s.kind-1].lines.Add(n)
	if r.o.Sink == nil {
		return
	}
	if err := r.o.Sink.Write(&b); err != nil {
		lost := lost(err, len(lines))
		s.c.dropped.Add(uint64(lost))
		r.totals[s.kind-1].dropped.Add(uint64(lost))
		r.logLost(s.w, s.kind, lost, err)
	}
}

// drain reads, without waiting, what the pipe holds now, and no more: a
// process that keeps writing cannot hold the stream open.
func (s *stream) drain() {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return
	}
	avail := 0 // TIOCINQ is FIONREAD: the bytes the pipe holds
	rc.Control(func(fd uintptr) { avail, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	maxLine := s.p.r.o.MaxLine
	for avail > 0 {
		s.room(maxLine)
		var n int
		var rerr error
		rc.Control(func(fd uintptr) {
			for {
				n, rerr = unix.Read(int(fd), s.buf[s.end:min(len(s.buf), s.end+avail)])
				if rerr != syscall.EINTR {
					return
				}
			}
		})
		if n <= 0 || rerr != nil {
			return
		}
		avail -= n
		s.read(n, false)
	}
}

// close asks the stream to end: read until end of file for at most drain,
// then what is buffered.
func (s *stream) close(drain time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return
	}
	s.state = closing
	s.f.SetReadDeadline(time.Now().Add(drain))
}

// stop ends reading for an export, at a line boundary or with the partial
// line kept in buf; it reports false if the stream had already ended.
func (s *stream) stop() bool {
	s.mu.Lock()
	if s.state == running || s.state == closing {
		s.state = stopping
		s.f.SetReadDeadline(unixEpoch)
	}
	s.mu.Unlock()
	<-s.exited
	return s.stopped
}
