package suite

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	e, ok := parseLogLine(`2026-11-28T01:04:55.782932075Z [INFO]  sockd.pool: worker exited: cpu_seconds=0.032344 event=worker_exit generation=1 status="exit status 0" worker=0 worker_pid=29995`)
	if !ok || e.ev != "worker_exit" || e.kv["status"] != "exit status 0" || e.atoi("generation") != 1 || e.kv["worker_pid"] != "29995" {
		t.Fatalf("text line: %v %+v", ok, e)
	}
	if e.t.Nanosecond() != 782932075 {
		t.Errorf("timestamp %v", e.t)
	}
	e, ok = parseLogLine(`{"@level":"info","@message":"reload finished","@module":"sockd.pool","@timestamp":"2026-11-28T01:04:55.782745190Z","event":"reload_done","generation":2,"ready_seconds":0.04,"retired":1}`)
	if v, _ := e.num("ready_seconds"); !ok || e.ev != "reload_done" || e.atoi("generation") != 2 || v != 0.04 {
		t.Fatalf("json line: %v %+v", ok, e)
	}
	for _, l := range []string{"hello[29995]: ready: serving 1 listeners", "", "2026-11-28T01:04:55Z [INFO]  sockd: no event here"} {
		if _, ok := parseLogLine(l); ok {
			t.Errorf("%q parsed as an event", l)
		}
	}
}

func TestAttachSockdLog(t *testing.T) {
	log := `2026-11-28T01:00:01.001000000Z [INFO]  sockd: signal received: event=signal signal=hangup
2026-11-28T01:00:01.002000000Z [INFO]  sockd.pool: reload started: event=reload_start generation=2
hello[2]: ready: serving 1 listeners
2026-11-28T01:00:01.050000000Z [INFO]  sockd.pool: reload finished: event=reload_done generation=2 handover_seconds=0.003 ready_seconds=0.040 retired=1 seconds=0.043
2026-11-28T01:00:01.060000000Z [INFO]  sockd.pool: worker exited: cpu_seconds=0.03 event=worker_exit generation=1 status="exit status 0" worker=0 worker_pid=1
2026-11-28T01:00:01.070000000Z [INFO]  sockd.pool: worker exited: cpu_seconds=0.03 event=worker_exit generation=1 status="exit status 0" worker=1 worker_pid=2
2026-11-28T01:00:02.000500000Z [INFO]  sockd.pool: reload started: event=reload_start generation=3
2026-11-28T01:00:02.030000000Z [INFO]  sockd.pool: reload finished: event=reload_done generation=3 handover_seconds=0.002 old_gone_seconds=0.0015 ready_seconds=0.020 retired=2 seconds=0.022
`
	path := filepath.Join(t.TempDir(), "sockd.log")
	os.WriteFile(path, []byte(log), 0o644)
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
