package output

import (
	"fmt"
	"time"
)

// Stream is which of a worker's streams a line came from.
type Stream uint8

// The streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return fmt.Sprintf("stream%d", uint8(s))
}

// ParseStream reads "stdout" or "stderr".
func ParseStream(s string) (Stream, error) {
	switch s {
	case "stdout":
		return Stdout, nil
	case "stderr":
		return Stderr, nil
	}
	return 0, fmt.Errorf("stream %q: want stdout or stderr", s)
}

// Syslog priorities (syslog(3), sd-daemon(3)) that sockd assigns itself.
const (
	PriorityStdout = 6 // info: a stdout line without a level of its own
	PriorityStderr = 3 // err: a stderr line without a level of its own
)

// Flags describe how a line was delimited.
type Flags uint8

const (
	// Continued: this piece continues a line that was cut before it
	// (the line was longer than MaxLine).
	Continued Flags = 1 << iota
	// Cut: the line was cut after this piece; the stream's next line
	// continues it.
	Cut
	// NoNewline: the stream ended (end of file, or Close) after this line
	// without a newline.
	NoNewline
	// JSONObject: the message is one valid JSON object (and valid UTF-8).
	JSONObject
)

// Line is one line of a worker's output, as the relay hands it to a sink.
// Its bytes belong to the relay and are valid only during Sink.Write.
type Line struct {
	// Data is the line as the worker wrote it, without the newline.
	Data []byte
	// Msg is where the message starts in Data: past an sd-daemon "<N>"
	// prefix, else 0.
	Msg int
	// Priority is the syslog priority, 0 (emerg) to 7 (debug): the "<N>"
	// prefix's, else the level of a JSON line, else by stream.
	Priority int8
	Flags    Flags
}

// Message is the line without its "<N>" prefix.
func (l *Line) Message() []byte { return l.Data[l.Msg:] }

// Worker identifies the process a pipe belongs to.
type Worker struct {
	Slot       int `json:"slot"`
	Generation int `json:"generation"`
	PID        int `json:"pid"`
}

// Batch is consecutive lines of one stream of one worker, read at one time.
type Batch struct {
	Worker Worker
	Stream Stream
	// Time is when sockd read the lines.
	Time  time.Time
	Lines []Line
}

// classify finds a line's priority and message: an sd-daemon "<N>"
// prefix (N from 0 to 7) sets the priority and is not part of the
// message; a message that is a JSON object with a level field (pino,
// bunyan, winston, Go's slog, hclog, zap, GCP's severity) sets it
// otherwise; else the stream's default holds.
func classify(l *Line, def int8) {
	d := l.Data
	l.Priority = def
	if len(d) >= 3 && d[0] == '<' && d[1] >= '0' && d[1] <= '7' && d[2] == '>' {
		l.Msg = 3
		l.Priority = int8(d[1] - '0')
	}
	m := d[l.Msg:]
	if len(m) < 2 || m[0] != '{' {
		return
	}
	info, ok := scanObject(m)
	if !ok {
		return
	}
	l.Flags |= JSONObject
	if l.Msg == 0 && info.level != nil {
		if p, ok := levelPriority(info.level, info.levelString); ok {
			l.Priority = p
		}
	}
}

// levelName is how the json format and hclog name a priority.
func levelName(p int8) string {
	switch {
	case p <= 3:
		return "error"
	case p == 4:
		return "warn"
	case p == 7:
		return "debug"
	}
	return "info"
}
