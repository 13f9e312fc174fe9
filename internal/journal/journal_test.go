package journal_test

import (
	"bytes"
	"errors"
	"testing"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/internal/journal"
)

type entry struct {
	msg  string
	prio sdjournal.Priority
	vars map[string]string
}

func TestWriterMapsRecordsToJournalFields(t *testing.T) {
	var got []entry
	var fallback bytes.Buffer
	w := &journal.Writer{Identifier: "sockd", Fallback: &fallback, Send: func(m string, p sdjournal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	}}
	log := hclog.New(&hclog.LoggerOptions{Name: "sockd", Output: w, JSONFormat: true, Level: hclog.Debug})
	log.Named("pool").Warn("worker crashed", "event", "worker_exit", "generation", 2, "worker", 1, "worker_pid", 4242, "status", "exit status 3")
	log.Error("giving up", "error", errors.New("restart limit reached"))
	log.Debug("detail")
	if len(got) != 3 {
		t.Fatalf("%d entries, fallback %q", len(got), fallback.String())
	}
	e := got[0]
	want := map[string]string{"SYSLOG_IDENTIFIER": "sockd", "SOCKD_EVENT": "worker_exit", "SOCKD_GENERATION": "2",
		"SOCKD_WORKER": "1", "SOCKD_WORKER_PID": "4242", "SOCKD_STATUS": "exit status 3", "SOCKD_MODULE": "sockd.pool"}
	for k, v := range want {
		if e.vars[k] != v {
			t.Errorf("%s=%q, want %q (all: %v)", k, e.vars[k], v, e.vars)
		}
	}
	if e.msg != `worker crashed (generation=2 worker=1 worker_pid=4242 status="exit status 3")` || e.prio != sdjournal.PriWarning {
		t.Errorf("entry %q priority %d", e.msg, e.prio)
	}
	if got[1].prio != sdjournal.PriErr || got[1].vars["SOCKD_ERROR"] != "restart limit reached" || got[2].prio != sdjournal.PriDebug {
		t.Errorf("priorities/errors: %+v %+v", got[1], got[2])
	}
	// When the journal refuses, the line goes to stderr instead of vanishing.
	w.Send = func(string, sdjournal.Priority, map[string]string) error { return errors.New("no journal") }
	log.Info("still here")
	if !bytes.Contains(fallback.Bytes(), []byte("still here")) {
		t.Fatalf("fallback got %q", fallback.String())
	}
}
