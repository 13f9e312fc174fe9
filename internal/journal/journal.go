// Package journal sends sockd's hclog records to the systemd journal as
// native entries (systemd-journald.service(8), the native protocol behind
// sd_journal_send(3)), with a priority and one field per log attribute, so
// `journalctl -o json` shows SOCKD_GENERATION, SOCKD_WORKER,
// SOCKD_WORKER_PID, SOCKD_EVENT and the rest.
//
// Writer is an io.Writer for hclog's JSON output: hclog formats, this
// package maps each JSON record to a journal entry.
package journal

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/hashicorp/go-hclog"
)

// Enabled reports whether sockd's stderr is connected to the journal
// (JOURNAL_STREAM matches it) and the journal socket is there.
func Enabled() bool {
	ok, err := sdjournal.StderrIsJournalStream()
	return err == nil && ok && sdjournal.Enabled()
}

// Writer turns hclog JSON lines into journal entries. Lines that are not
// JSON go to Fallback (stderr) unchanged.
type Writer struct {
	// Identifier becomes SYSLOG_IDENTIFIER.
	Identifier string
	// Fallback receives what cannot be sent to the journal.
	Fallback io.Writer
	// Send is sdjournal.Send when nil (tests replace it).
	Send func(msg string, prio sdjournal.Priority, vars map[string]string) error
}

var nonField = regexp.MustCompile(`[^A-Z0-9_]+`)

// Write takes one record per call, as hclog writes them.
func (w *Writer) Write(b []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		return w.Fallback.Write(b)
	}
	msg, _ := rec["@message"].(string)
	level, _ := rec["@level"].(string)
	vars := map[string]string{}
	if w.Identifier != "" {
		vars["SYSLOG_IDENTIFIER"] = w.Identifier
	}
	for k, v := range rec {
		switch k {
		case "@message", "@level", "@timestamp":
			continue
		case "@module":
			vars["SOCKD_MODULE"] = fmt.Sprint(v)
			continue
		case "@caller":
			vars["CODE_LINE"] = fmt.Sprint(v)
			continue
		}
		name := "SOCKD_" + strings.Trim(nonField.ReplaceAllString(strings.ToUpper(k), "_"), "_")
		if s, ok := v.(string); ok {
			vars[name] = s
		} else {
			j, _ := json.Marshal(v)
			vars[name] = string(j)
		}
	}
	msg += context(vars)
	send := w.Send
	if send == nil {
		send = sdjournal.Send
	}
	if err := send(msg, priority(level), vars); err != nil {
		return w.Fallback.Write(b)
	}
	return len(b), nil
}

func priority(level string) sdjournal.Priority {
	switch hclog.LevelFromString(level) {
	case hclog.Trace, hclog.Debug:
		return sdjournal.PriDebug
	case hclog.Info:
		return sdjournal.PriInfo
	case hclog.Warn:
		return sdjournal.PriWarning
	case hclog.Error:
		return sdjournal.PriErr
	default:
		return sdjournal.PriNotice
	}
}

// context appends the worker's identity to the message, and why (a
// worker's exit status, a signal, an error), so that plain `journalctl`
// and `systemctl status` tell workers apart and say what happened too.
func context(vars map[string]string) string {
	var parts []string
	for _, k := range []string{"GENERATION", "WORKER", "WORKER_PID", "STATUS", "SIGNAL", "ERROR"} {
		if v, ok := vars["SOCKD_"+k]; ok {
			if strings.ContainsAny(v, " \"=") {
				v = strconv.Quote(v)
			}
			parts = append(parts, strings.ToLower(k)+"="+v)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " ") + ")"
}
