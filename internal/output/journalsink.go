package output

import (
	"errors"
	"runtime"
	"strconv"
	"sync"

	"github.com/sockd/sockd/internal/journal"
)

// JournalOptions configure NewJournalSink.
type JournalOptions struct {
	// Conn is the connection to journald's native socket (journal.Dial).
	Conn *journal.Conn
	// Name becomes SYSLOG_IDENTIFIER: the app's name.
	Name string
	// Fallback receives the lines journald does not take (it is gone, or
	// refuses an entry); nil: they are lost and counted.
	Fallback Sink
}

// NewJournalSink sends every line as one native journal entry with the
// fields
//
//	MESSAGE            the line (without an sd-daemon "<N>" prefix), any bytes
//	PRIORITY           see classify: "<N>", a JSON level, else 6 (stdout) or 3 (stderr)
//	SYSLOG_IDENTIFIER  the app's name
//	SYSLOG_PID         the worker's pid (journald sets _PID to sockd's)
//	SOCKD_WORKER       the slot
//	SOCKD_GENERATION   the generation
//	SOCKD_WORKER_PID   the worker's pid
//	SOCKD_STREAM       stdout or stderr
//	SOCKD_CONTINUED=1  only on a piece that continues a cut line
//
// so that `journalctl -u UNIT SOCKD_WORKER=1` shows slot 1's lines.
// journald's stream protocol (what a worker's inherited stdout would be
// under systemd) cannot carry such fields: that is why sockd reads the
// pipes and relays.
func NewJournalSink(o JournalOptions) Sink {
	s := &journalSink{o: o}
	s.entries.New = func() any { return new(journal.Entry) }
	return s
}

type journalSink struct {
	o       JournalOptions
	entries sync.Pool
}

// yieldEvery is how many entries the sink sends before it lets other
// goroutines run: each send is a syscall that does not block, so a flood
// would otherwise hold sockd's only P (GOMAXPROCS=1) for a whole batch.
const yieldEvery = 128

func (s *journalSink) Write(b *Batch) error {
	e := s.entries.Get().(*journal.Entry)
	defer s.entries.Put(e)
	var fields journal.Entry
	fields.AddString("SYSLOG_IDENTIFIER", s.o.Name)
	pid := strconv.Itoa(b.Worker.PID)
	fields.AddString("SYSLOG_PID", pid)
	fields.AddString("SOCKD_WORKER", strconv.Itoa(b.Worker.Slot))
	fields.AddString("SOCKD_GENERATION", strconv.Itoa(b.Worker.Generation))
	fields.AddString("SOCKD_WORKER_PID", pid)
	fields.AddString("SOCKD_STREAM", b.Stream.String())
	for i := range b.Lines {
		l := &b.Lines[i]
		e.Reset()
		e.Add("MESSAGE", l.Message())
		e.AddString("PRIORITY", priorityText[l.Priority&7])
		if l.Flags&Continued != 0 {
			e.AddString("SOCKD_CONTINUED", "1")
		}
		e.AddEntry(&fields)
		if err := s.o.Conn.Send(e); err != nil {
			return s.fallback(b, i, err)
		}
		if i%yieldEvery == yieldEvery-1 {
			runtime.Gosched()
		}
	}
	return nil
}

var priorityText = [8]string{"0", "1", "2", "3", "4", "5", "6", "7"}

// fallback hands the lines from i on to the fallback sink.
func (s *journalSink) fallback(b *Batch, i int, err error) error {
	n := len(b.Lines) - i
	if s.o.Fallback == nil {
		return &LostError{Lines: n, Err: err}
	}
	rest := *b
	rest.Lines = b.Lines[i:]
	if ferr := s.o.Fallback.Write(&rest); ferr != nil {
		return &LostError{Lines: lost(ferr, n), Err: errors.Join(err, ferr)}
	}
	return nil
}
