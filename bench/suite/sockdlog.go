package suite

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"time"
)

// sockd runs with --log-format json: its stderr (the run directory's
// sockd.log) is one hclog JSON object per line, e.g.
//
//	{"@level":"info","@message":"reload finished","@module":"sockd.pool","@timestamp":"2026-11-28T01:04:55.782745190Z","event":"reload_done","generation":2,"handover_seconds":0.0025,"ready_seconds":0.0399,"retired_generation":1,"seconds":0.0424}
//
// The "event" field names what happened; these are the events the runner
// reads (sockd's pool logs them). The workers' own output is mixed in;
// lines that are not JSON objects with an event are skipped.
const (
	evPoolReady   = "pool_ready"   // seconds: pool start → every worker of the first generation ready
	evReloadStart = "reload_start" // generation: the one starting
	evReloadDone  = "reload_done"  // generation, retired, seconds, ready_seconds, handover_seconds, old_gone_seconds
	evWorkerExit  = "worker_exit"  // generation, worker, worker_pid
)

// logEntry is one line of sockd's log that has an event.
type logEntry struct {
	t      time.Time
	ev     string
	fields map[string]any
}

// num is a numeric field of the entry.
func (e logEntry) num(k string) (float64, bool) {
	f, ok := e.fields[k].(float64)
	return f, ok
}

func (e logEntry) atoi(k string) int {
	f, _ := e.num(k)
	return int(f)
}

// parseLogLine reads one line of sockd's JSON log.
func parseLogLine(line []byte) (logEntry, bool) {
	if !bytes.HasPrefix(line, []byte("{")) || !bytes.Contains(line, []byte(`"event"`)) {
		return logEntry{}, false
	}
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return logEntry{}, false
	}
	ts, _ := m["@timestamp"].(string)
	t, err := time.Parse(time.RFC3339Nano, ts)
	ev, _ := m["event"].(string)
	if err != nil || ev == "" {
		return logEntry{}, false
	}
	return logEntry{t: t, ev: ev, fields: m}, true
}

// sockdLog follows sockd's log as it grows.
type sockdLog struct {
	path    string
	off     int64
	partial []byte // an unfinished last line
	entries []logEntry
}

// update reads the lines added since the last call and returns every entry
// so far.
func (l *sockdLog) update() []logEntry {
	f, err := os.Open(l.path)
	if err != nil {
		return l.entries
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, l.off, 1<<40))
	l.off += int64(len(b))
	b = append(l.partial, b...)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		if e, ok := parseLogLine(b[:i]); ok {
			l.entries = append(l.entries, e)
		}
		b = b[i+1:]
	}
	l.partial = append([]byte(nil), b...)
	return l.entries
}

// has reports whether sockd has logged ev so far.
func (l *sockdLog) has(ev string) bool {
	for _, e := range l.update() {
		if e.ev == ev {
			return true
		}
	}
	return false
}

// readSockdLog reads the entries of a whole log.
func readSockdLog(path string) []logEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseLogLine(sc.Bytes()); ok {
			out = append(out, e)
		}
	}
	return out
}

// reloadLog is sockd's reloads as its log tells them.
type reloadLog struct {
	starts   []logEntry        // reload_start, in order
	done     map[int]logEntry  // reload_done by generation
	lastExit map[int]time.Time // the last worker_exit of each generation
}

func newReloadLog(entries []logEntry) reloadLog {
	rl := reloadLog{done: map[int]logEntry{}, lastExit: map[int]time.Time{}}
	for _, e := range entries {
		switch e.ev {
		case evReloadStart:
			rl.starts = append(rl.starts, e)
		case evReloadDone:
			rl.done[e.atoi("generation")] = e
		case evWorkerExit:
			if g := e.atoi("generation"); e.t.After(rl.lastExit[g]) {
				rl.lastExit[g] = e.t
			}
		}
	}
	return rl
}

// attachSockdLog fills evs[i].Sockd from sockd's log: the reload_start
// logged first after each trigger (and before the next one), that
// generation's reload_done, and the exits of the generation it retired.
// runStart is the load run's start, the origin of the events' times.
func attachSockdLog(path string, runStart time.Time, evs []ReloadEvent) {
	rl := newReloadLog(readSockdLog(path))
	at := func(sec float64) time.Time { return runStart.Add(time.Duration(sec * float64(time.Second))) }
	next := 0
	for i := range evs {
		trig := at(evs[i].T0)
		var until time.Time
		if i+1 < len(evs) {
			until = at(evs[i+1].T0)
		}
		// Clocks: the trigger time is the run's wall-clock start plus a
		// monotonic offset, sockd's is its wall clock; allow a little skew.
		for next < len(rl.starts) && rl.starts[next].t.Before(trig.Add(-5*time.Millisecond)) {
			next++
		}
		if next >= len(rl.starts) || (!until.IsZero() && !rl.starts[next].t.Before(until)) {
			continue
		}
		evs[i].Sockd = rl.reload(rl.starts[next], trig)
		next++
	}
}

// reload is the reload that st started, triggered at trig.
func (rl reloadLog) reload(st logEntry, trig time.Time) *SockdReload {
	gen := st.atoi("generation")
	sr := &SockdReload{Generation: gen, StartMS: ms(st.t.Sub(trig))}
	d, ok := rl.done[gen]
	if !ok {
		return sr
	}
	ready, _ := d.num("ready_seconds")
	handover, _ := d.num("handover_seconds")
	total, _ := d.num("seconds")
	sr.ReadyMS, sr.HandoverMS, sr.TotalMS = ready*1000, handover*1000, total*1000
	commit := st.t.Add(time.Duration(ready * float64(time.Second)))
	if og, ok := d.num("old_gone_seconds"); ok {
		sr.OldGoneMS = og * 1000
	} else if t, ok := rl.lastExit[d.atoi("retired_generation")]; ok && t.After(commit) {
		sr.OldGoneMS = ms(t.Sub(commit))
	}
	return sr
}

// poolReadySeconds is the seconds field of the first pool_ready line of
// sockd's log (pool start → every worker of the first generation ready).
func poolReadySeconds(path string) float64 {
	for _, e := range readSockdLog(path) {
		if e.ev == evPoolReady {
			s, _ := e.num("seconds")
			return s
		}
	}
	return 0
}
