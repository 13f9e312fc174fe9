package suite

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	e, ok := parseLogLine([]byte(`{"@level":"info","@message":"worker exited","@module":"sockd.pool","@timestamp":"2026-11-28T01:04:55.782932075Z","cpu_seconds":0.032344,"event":"worker_exit","generation":1,"status":"exit status 0","worker":0,"worker_pid":29995}`))
	if !ok || e.ev != evWorkerExit || e.fields["status"] != "exit status 0" || e.atoi("generation") != 1 || e.atoi("worker_pid") != 29995 {
		t.Fatalf("worker_exit: %v %+v", ok, e)
	}
	if e.t.Nanosecond() != 782932075 {
		t.Errorf("timestamp %v", e.t)
	}
	e, ok = parseLogLine([]byte(`{"@level":"info","@message":"reload finished","@module":"sockd.pool","@timestamp":"2026-11-28T01:04:55.782745190Z","event":"reload_done","generation":2,"ready_seconds":0.04,"retired_generation":1}`))
	if v, _ := e.num("ready_seconds"); !ok || e.ev != evReloadDone || e.atoi("generation") != 2 || v != 0.04 {
		t.Fatalf("reload_done: %v %+v", ok, e)
	}
	for _, l := range []string{
		"hello[29995]: ready: serving 1 listeners", "",
		`{"@level":"info","@message":"no event here","@timestamp":"2026-11-28T01:04:55Z"}`,
		`{"event":"reload_done"}`, // no timestamp
		`2026-11-28T01:04:55.782932075Z [INFO]  sockd.pool: worker exited: event=worker_exit generation=1`, // text format
		`{"event":"worker_exit", truncated`,
	} {
		if _, ok := parseLogLine([]byte(l)); ok {
			t.Errorf("%q parsed as an event", l)
		}
	}
}

const testLog = `{"@level":"info","@message":"signal received","@module":"sockd","@timestamp":"2026-11-28T01:00:01.001000000Z","event":"signal","signal":"hangup"}
{"@level":"info","@message":"reload started","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:01.002000000Z","event":"reload_start","generation":2}
hello[2]: ready: serving 1 listeners
{"@level":"info","@message":"reload finished","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:01.050000000Z","event":"reload_done","generation":2,"handover_seconds":0.003,"ready_seconds":0.040,"retired_generation":1,"seconds":0.043}
{"@level":"info","@message":"worker exited","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:01.060000000Z","event":"worker_exit","generation":1,"status":"exit status 0","worker":0,"worker_pid":1}
{"@level":"info","@message":"worker exited","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:01.070000000Z","event":"worker_exit","generation":1,"status":"exit status 0","worker":1,"worker_pid":2}
{"@level":"info","@message":"reload started","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:02.000500000Z","event":"reload_start","generation":3}
{"@level":"info","@message":"reload finished","@module":"sockd.pool","@timestamp":"2026-11-28T01:00:02.030000000Z","event":"reload_done","generation":3,"handover_seconds":0.002,"old_gone_seconds":0.0015,"ready_seconds":0.020,"retired_generation":2,"seconds":0.022}
`

func TestAttachSockdLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sockd.log")
	if err := os.WriteFile(path, []byte(testLog), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	evs := []ReloadEvent{{T0: 1.0}, {T0: 2.0}, {T0: 3.0}}
	attachSockdLog(path, start, evs)
	near := func(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }
	if s := evs[0].Sockd; s == nil || s.Generation != 2 || !near(s.StartMS, 2) || !near(s.ReadyMS, 40) || !near(s.HandoverMS, 3) || !near(s.OldGoneMS, 28) || !near(s.TotalMS, 43) {
		t.Errorf("reload 1: %+v", s)
	}
	if s := evs[1].Sockd; s == nil || s.Generation != 3 || !near(s.StartMS, 0.5) || !near(s.OldGoneMS, 1.5) {
		t.Errorf("reload 2: %+v", s)
	}
	if evs[2].Sockd != nil {
		t.Errorf("reload 3 has no line in the log, got %+v", evs[2].Sockd)
	}
}

// sockdLog reads a log as it grows, a line at a time, even a line written
// in two pieces.
func TestSockdLogFollows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sockd.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := &sockdLog{path: path}
	if l.has(evPoolReady) {
		t.Fatal("pool_ready in an empty log")
	}
	line := `{"@level":"info","@message":"all workers ready","@timestamp":"2026-11-28T01:00:00.5Z","event":"pool_ready","generation":1,"seconds":0.031}` + "\n"
	f.WriteString("worker output\n" + line[:40])
	if l.has(evPoolReady) {
		t.Fatal("pool_ready from half a line")
	}
	f.WriteString(line[40:])
	if !l.has(evPoolReady) || len(l.entries) != 1 {
		t.Fatalf("pool_ready not found: %+v", l.entries)
	}
	if s := poolReadySeconds(path); s != 0.031 {
		t.Fatalf("pool_ready seconds %v", s)
	}
}
