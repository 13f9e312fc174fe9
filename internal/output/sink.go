package output

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Sink is where a relay delivers lines (besides its ring).
//
// Write is called by the reader of one stream of one worker with the lines
// it read, in order; the readers of different streams call it
// concurrently. It may block: while it does, that stream is not read, its
// pipe fills and the worker's writes wait (back-pressure). The batch and
// its bytes are valid only during the call.
//
// An error means lines were lost: a *LostError says how many, any other
// error all of the batch's.
type Sink interface {
	Write(b *Batch) error
}

// LostError reports lines a sink could not deliver.
type LostError struct {
	Lines int
	Err   error
}

func (e *LostError) Error() string { return fmt.Sprintf("%d lines lost: %v", e.Lines, e.Err) }
func (e *LostError) Unwrap() error { return e.Err }

// lost counts the lines err says were lost of a batch of n.
func lost(err error, n int) int {
	var le *LostError
	if errors.As(err, &le) {
		return le.Lines
	}
	return n
}

// Mode is a format of the writer sink.
type Mode string

// The writer sink's formats (format.go has them byte for byte).
const (
	Raw    Mode = "raw"
	Prefix Mode = "prefix"
	JSON   Mode = "json"
)

// ParseMode reads a --worker-output value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Raw, Prefix, JSON:
		return m, nil
	}
	return "", fmt.Errorf("worker output %q: want raw, prefix or json", s)
}

// WriterOptions configure NewWriterSink.
type WriterOptions struct {
	// Mode is the format; "" is Prefix.
	Mode Mode
	// Stdout and Stderr receive the lines of the workers' stdout and
	// stderr (os.Stdout and os.Stderr when nil; they may be the same
	// writer). Each Write is a whole number of lines.
	Stdout, Stderr io.Writer
	// Name is json's "@module": the app's name.
	Name string
	// Time puts the time sockd read a line before each prefix line.
	Time bool
	// TimeFormat formats those times and json's "@timestamp";
	// DefaultTimeFormat when "".
	TimeFormat string
}

type writerSink struct {
	o            WriterOptions
	outMu, errMu *sync.Mutex
	bufs         sync.Pool
}

// NewWriterSink writes lines in one of the formats to sockd's stdout and
// stderr (or other writers), a batch at a time: the lines of one write
// never mix with another worker's, nor with sockd's own log records when
// the writer is the same *os.File (an *os.File writes each Write whole).
func NewWriterSink(o WriterOptions) (Sink, error) {
	if o.Mode == "" {
		o.Mode = Prefix
	}
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return nil, err
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.TimeFormat == "" {
		o.TimeFormat = DefaultTimeFormat
	}
	s := &writerSink{o: o, outMu: new(sync.Mutex)}
	s.errMu = s.outMu
	if o.Stdout != o.Stderr {
		s.errMu = new(sync.Mutex)
	}
	s.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	return s, nil
}

func (s *writerSink) Write(b *Batch) error {
	bp := s.bufs.Get().(*[]byte)
	buf := s.format((*bp)[:0], b)
	w, mu := s.o.Stdout, s.outMu
	if b.Stream == Stderr {
		w, mu = s.o.Stderr, s.errMu
	}
	mu.Lock()
	_, err := w.Write(buf)
	mu.Unlock()
	if cap(buf) <= 1<<20 {
		*bp = buf
		s.bufs.Put(bp)
	}
	return err
}

func (s *writerSink) format(buf []byte, b *Batch) []byte {
	switch s.o.Mode {
	case Raw:
		for i := range b.Lines {
			buf = append(buf, b.Lines[i].Data...)
			buf = append(buf, '\n')
		}
	case Prefix:
		var stamp []byte
		if s.o.Time {
			stamp = append(b.Time.AppendFormat(nil, s.o.TimeFormat), ' ')
		}
		for i := range b.Lines {
			l := &b.Lines[i]
			buf = append(buf, stamp...)
			buf = appendPrefix(buf, b.Worker, b.Stream, l.Flags)
			buf = append(buf, l.Data...)
			buf = append(buf, '\n')
		}
	case JSON:
		h := newJSONHead(s.o.Name, b, s.o.TimeFormat)
		for i := range b.Lines {
			buf = h.appendJSON(buf, &b.Lines[i])
		}
	}
	return buf
}

// Sinks delivers every batch to each sink in turn; the lines lost are the
// most any of them lost.
type Sinks []Sink

func (ss Sinks) Write(b *Batch) error {
	var worst error
	most := 0
	for _, s := range ss {
		if err := s.Write(b); err != nil {
			if n := lost(err, len(b.Lines)); n >= most {
				most, worst = n, err
			}
		}
	}
	return worst
}

// SameStream says whether a and b are one pipe, socket or terminal (fds 1
// and 2 of `sockd run 2>&1 | …`): then writes to both must go through one
// of them, whose lock keeps each write whole. A write of more than
// PIPE_BUF bytes to a pipe is not atomic, and two descriptors writing at
// once interleave their pieces. (Writes to one regular file through one
// open file description are whole anyway.)
func SameStream(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if fstat(a, &sa) != nil || fstat(b, &sb) != nil {
		return false
	}
	switch sa.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR:
		return sa.Dev == sb.Dev && sa.Ino == sb.Ino && sa.Rdev == sb.Rdev
	}
	return false
}

// fstat is fstat(2) of f without f.Fd(), which would make it blocking.
func fstat(f *os.File, st *unix.Stat_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), st) }); err != nil {
		return err
	}
	return serr
}
