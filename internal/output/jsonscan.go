package output

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// A JSON object on one line (RFC 8259), checked without allocating: is it
// one valid object, in valid UTF-8, and what are its top-level level and
// message fields. Loggers name them differently:
//
//	pino, bunyan, Fastify   "level":30            "msg":"…"
//	winston                 "level":"info"        "message":"…"
//	Go's log/slog           "level":"INFO"        "msg":"…"
//	hclog                   "@level":"info"       "@message":"…"
//	zap, zerolog, logrus    "level":"info"        "msg"/"message":"…"
//	log15                   "lvl":"info"          "msg":"…"
//	GCP structured logging  "severity":"INFO"     "message":"…"
//	ECS (Elastic)           "log.level":"info"    "message":"…"

// maxDepth bounds the nesting scanObject follows; deeper is not taken as
// JSON (it is still carried, as text).
const maxDepth = 512

// jsonInfo is what scanObject found: the raw bytes of the level value (a
// string's contents, still escaped, or a number) and of the message
// string's contents (still escaped: valid inside JSON quotes as they are).
type jsonInfo struct {
	level       []byte
	levelString bool
	msg         []byte
}

var (
	levelKeys = []string{"level", "@level", "lvl", "severity", "log.level"}
	msgKeys   = []string{"msg", "message", "@message"}
)

// scanObject reports whether b is exactly one JSON object (surrounding
// whitespace allowed) in valid UTF-8, and what it found.
func scanObject(b []byte) (jsonInfo, bool) {
	var info jsonInfo
	if !utf8.Valid(b) {
		return info, false
	}
	s := scanner{b: b}
	s.ws()
	if !s.object(0, &info) {
		return info, false
	}
	s.ws()
	return info, s.i == len(s.b)
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// object scans an object at s.i; top (info != nil) records the fields.
func (s *scanner) object(depth int, info *jsonInfo) bool {
	if depth > maxDepth || s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	for {
		s.ws()
		ks, ke, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		vs := s.i
		if !s.value(depth + 1) {
			return false
		}
		if info != nil {
			key := s.b[ks:ke]
			val := s.b[vs:s.i]
			if info.level == nil && isOneOf(key, levelKeys) && len(val) > 0 {
				if val[0] == '"' {
					info.level, info.levelString = val[1:len(val)-1], true
				} else if val[0] == '-' || val[0] >= '0' && val[0] <= '9' {
					info.level = val
				}
			}
			if info.msg == nil && isOneOf(key, msgKeys) && len(val) > 0 && val[0] == '"' {
				info.msg = val[1 : len(val)-1]
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

func isOneOf(key []byte, names []string) bool {
	for _, n := range names {
		if string(key) == n {
			return true
		}
	}
	return false
}

func (s *scanner) value(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		return s.array(depth)
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return false
}

func (s *scanner) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return true
	}
	for {
		s.ws()
		if !s.value(depth + 1) {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) lit(w string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(w)) {
		return false
	}
	s.i += len(w)
	return true
}

// str scans a string at s.i and returns the bounds of its contents.
func (s *scanner) str() (start, end int, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return 0, 0, false
	}
	s.i++
	start = s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			end = s.i
			s.i++
			return start, end, true
		case c < 0x20:
			return 0, 0, false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return 0, 0, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return 0, 0, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return 0, 0, false
					}
				}
				s.i += 6
			default:
				return 0, 0, false
			}
		default:
			s.i++
		}
	}
	return 0, 0, false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) number() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if s.digits() == 0 {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

var slogBase = map[string]int{"debug": -4, "info": 0, "warn": 4, "error": 8}

// levelPriority maps a logger's level to a syslog priority:
//
//	numbers 0-7                 syslog priorities as they are
//	pino/bunyan numbers         ≥60 fatal→2, ≥50 error→3, ≥40 warn→4, ≥30 info→6, else debug/trace→7
//	emerg(ency)                 0
//	alert                       1
//	crit(ical), fatal, panic, dpanic   2
//	err(or)                     3
//	warn(ing)                   4
//	notice                      5
//	info(rmation(al)), http     6
//	debug, trace, verbose, silly, all  7
//	slog "LEVEL±n"              DEBUG -4, INFO 0, WARN 4, ERROR 8, plus n: ≥8→3, ≥4→4, ≥0→6, else 7
//
// Case does not matter. Anything else is no level.
func levelPriority(v []byte, isString bool) (int8, bool) {
	if !isString {
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return 0, false
		}
		switch {
		case f >= 0 && f <= 7 && f == float64(int(f)):
			return int8(f), true
		case f >= 60:
			return 2, true
		case f >= 50:
			return 3, true
		case f >= 40:
			return 4, true
		case f >= 30:
			return 6, true
		}
		return 7, true
	}
	if len(v) > 16 {
		return 0, false
	}
	var low [16]byte
	for i, c := range v {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	lv := low[:len(v)]
	switch string(lv) {
	case "emerg", "emergency":
		return 0, true
	case "alert":
		return 1, true
	case "crit", "critical", "fatal", "panic", "dpanic":
		return 2, true
	case "err", "error", "eror": // log15 and geth write eror, dbug, trce
		return 3, true
	case "warn", "warning":
		return 4, true
	case "notice":
		return 5, true
	case "info", "information", "informational", "http":
		return 6, true
	case "debug", "trace", "verbose", "silly", "all", "dbug", "trce":
		return 7, true
	}
	// slog: "INFO+2", "ERROR-4".
	i := bytes.IndexAny(lv, "+-")
	if i <= 0 {
		return 0, false
	}
	b, ok := slogBase[string(lv[:i])]
	n, err := strconv.Atoi(string(lv[i:]))
	if !ok || err != nil {
		return 0, false
	}
	switch l := b + n; {
	case l >= 8:
		return 3, true
	case l >= 4:
		return 4, true
	case l >= 0:
		return 6, true
	}
	return 7, true
}
