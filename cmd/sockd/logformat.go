package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
)

// logFormat writes sockd's log records, which hclog makes as JSON, in the
// format in force: as they are (--log-format json), or as hclog's text
// lines (text), so that a reload can switch between them.
type logFormat struct {
	w    io.Writer
	json atomic.Bool
}

func (l *logFormat) Write(b []byte) (int, error) {
	if l.json.Load() {
		return l.w.Write(b)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		return l.w.Write(b)
	}
	if _, err := io.WriteString(l.w, textLine(rec)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// textLine is a record as hclog writes text: time, [LEVEL], module:
// message: key=value … (values with spaces quoted).
func textLine(rec map[string]any) string {
	var b strings.Builder
	ts, _ := rec["@timestamp"].(string)
	level, _ := rec["@level"].(string)
	module, _ := rec["@module"].(string)
	msg, _ := rec["@message"].(string)
	fmt.Fprintf(&b, "%s %-7s ", ts, "["+strings.ToUpper(level)+"]")
	if module != "" {
		b.WriteString(module + ": ")
	}
	b.WriteString(msg)
	keys := make([]string, 0, len(rec))
	for k := range rec {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		b.WriteString(":")
	}
	for _, k := range keys {
		var v string
		switch x := rec[k].(type) {
		case string:
			v = x
		default:
			j, _ := json.Marshal(x)
			v = string(j)
		}
		if v == "" || strings.ContainsAny(v, " \t\n\"=") {
			v = fmt.Sprintf("%q", v)
		}
		b.WriteString(" " + k + "=" + v)
	}
	b.WriteString("\n")
	return b.String()
}
