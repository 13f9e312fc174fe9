package output

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// The three formats of the writer sink. For a line of slot 1, generation
// 3, pid 4242:
//
//	raw     the line as written, then "\n"
//	prefix  [TIME ]"[w1 g3] " line "\n"             from stdout
//	        [TIME ]"[w1 g3 err] " line "\n"         from stderr
//	        a piece that continues a cut line gets " +" before "]":
//	        "[w1 g3 +] ", "[w1 g3 err +] "
//	json    {"@level":"info","@message":"…","@module":"NAME","@timestamp":"…",
//	         "generation":3,"stream":"stdout","worker":1,"worker_pid":4242}
//
// The json record has the shape of sockd's own `--log-format json` lines
// (hclog's: "@level", "@message", "@module", "@timestamp", then the
// fields in alphabetical order), so one parser reads both. Optional fields:
// "continued":true on a piece that continues a cut line; "json":{…} the
// line itself when it is a JSON object (embedded as it is, not re-encoded;
// "@message" is then its msg/message field and "@level" its level);
// "message_base64":"…" the exact bytes of a line that is not valid UTF-8
// ("@message" then has U+FFFD for each invalid byte).
//
// In every format the "<N>" sd-daemon prefix stays in the text as the
// worker wrote it, except json's "@message" (the level says it).

// appendJSONString appends s as a JSON string: quotes, backslash and
// control characters escaped, each invalid UTF-8 byte as U+FFFD.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigit = "0123456789abcdef"

// appendPrefix appends the prefix format's attribution.
func appendPrefix(dst []byte, w Worker, s Stream, f Flags) []byte {
	dst = append(dst, "[w"...)
	dst = strconv.AppendInt(dst, int64(w.Slot), 10)
	dst = append(dst, " g"...)
	dst = strconv.AppendInt(dst, int64(w.Generation), 10)
	if s == Stderr {
		dst = append(dst, " err"...)
	}
	if f&Continued != 0 {
		dst = append(dst, " +"...)
	}
	return append(dst, "] "...)
}

// jsonHead is the part of a json record that is the same for a whole
// batch: everything from "@module" to "@timestamp"'s value and the
// worker's fields, prepared once.
type jsonHead struct {
	module, stamp, gen, tail []byte
}

func newJSONHead(name string, b *Batch, timeFormat string) jsonHead {
	var h jsonHead
	h.module = appendJSONString(append([]byte(nil), `,"@module":`...), []byte(name))
	h.stamp = appendJSONString(append([]byte(nil), `,"@timestamp":`...), b.Time.AppendFormat(nil, timeFormat))
	h.gen = strconv.AppendInt(append([]byte(nil), `,"generation":`...), int64(b.Worker.Generation), 10)
	t := append([]byte(nil), `,"stream":"`...)
	t = append(t, b.Stream.String()...)
	t = append(t, `","worker":`...)
	t = strconv.AppendInt(t, int64(b.Worker.Slot), 10)
	t = append(t, `,"worker_pid":`...)
	t = strconv.AppendInt(t, int64(b.Worker.PID), 10)
	h.tail = append(t, "}\n"...)
	return h
}

// appendJSON appends one line as a json record.
func (h *jsonHead) appendJSON(dst []byte, l *Line) []byte {
	msg := l.Message()
	obj := l.Flags&JSONObject != 0
	dst = append(dst, `{"@level":"`...)
	dst = append(dst, levelName(l.Priority)...)
	dst = append(dst, `","@message":`...)
	var info jsonInfo
	if obj {
		info, _ = scanObject(msg)
		dst = append(dst, '"')
		dst = append(dst, info.msg...)
		dst = append(dst, '"')
	} else {
		dst = appendJSONString(dst, msg)
	}
	dst = append(dst, h.module...)
	dst = append(dst, h.stamp...)
	if l.Flags&Continued != 0 {
		dst = append(dst, `,"continued":true`...)
	}
	dst = append(dst, h.gen...)
	if obj {
		dst = append(dst, `,"json":`...)
		dst = append(dst, trimSpace(msg)...)
	} else if !utf8.Valid(msg) {
		dst = append(dst, `,"message_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, msg)
		dst = append(dst, '"')
	}
	return append(dst, h.tail...)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// DefaultTimeFormat is the time format of the prefix format's optional
// time and of json's "@timestamp": sockd's own (cmd/sockd sets hclog's
// TimeFormat to it).
const DefaultTimeFormat = time.RFC3339Nano
