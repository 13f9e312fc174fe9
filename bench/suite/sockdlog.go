package suite

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"time"
)

// sockd's stderr (the run directory's sockd.log) says what sockd did and
// when: hclog text lines such as
//
//	2026-11-28T01:04:55.782745Z [INFO]  sockd.pool: reload finished: event=reload_done generation=2 handover_seconds=0.0025 ready_seconds=0.0399 retired=1 seconds=0.0424
//
// or, with --log-format json, one JSON object per line with "@timestamp".
// The workers' own output is mixed in; lines without an event are skipped.

// logEntry is one line of sockd's log that has an event field.
type logEntry struct {
	t  time.Time
	ev string
	kv map[string]string
}

func (e logEntry) num(k string) (float64, bool) {
	v, ok := e.kv[k]
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

func (e logEntry) atoi(k string) int {
	n, _ := strconv.Atoi(e.kv[k])
	return n
}

// readSockdLog reads the lines of sockd's log that carry an event.
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
		if e, ok := parseLogLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out
}

func parseLogLine(line string) (logEntry, bool) {
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			return logEntry{}, false
		}
		ts, _ := m["@timestamp"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		ev, _ := m["event"].(string)
		if err != nil || ev == "" {
			return logEntry{}, false
		}
		e := logEntry{t: t, ev: ev, kv: map[string]string{}}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				e.kv[k] = v
			case float64:
				e.kv[k] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		return e, true
	}
	ts, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.Contains(rest, "event=") {
		return logEntry{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return logEntry{}, false
	}
	e := logEntry{t: t, kv: parseKV(rest)}
	e.ev = e.kv["event"]
	return e, e.ev != ""
}

// parseKV picks the key=value pairs out of an hclog text line (values may
// be double-quoted with backslash escapes).
func parseKV(s string) map[string]string {
	kv := map[string]string{}
	for i := 0; i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			break
		}
		eq += i
		ks := strings.LastIndexByte(s[:eq], ' ') + 1
		if ks < i {
			ks = i
		}
		key := s[ks:eq]
		j := eq + 1
		var val string
		if j < len(s) && s[j] == '"' {
			k := j + 1
			for k < len(s) && s[k] != '"' {
				if s[k] == '\\' {
					k++
				}
				k++
			}
			if uq, err := strconv.Unquote(s[j:min(k+1, len(s))]); err == nil {
				val = uq
			} else {
				val = s[j+1 : min(k, len(s))]
			}
			j = k + 1
		} else {
			k := strings.IndexByte(s[j:], ' ')
			if k < 0 {
				k = len(s) - j
			}
			val = s[j : j+k]
			j += k
		}
		if key != "" && !strings.ContainsAny(key, ":[]") {
			kv[key] = val
		}
		i = j
	}
	return kv
}

// attachSockdLog fills evs[i].Sockd from sockd's log: the reload_start
// logged first after each trigger (and before the next one), that
// generation's reload_done, and the exits of the generation it retired.
// runStart is the load run's start, the origin of the events' times.
func attachSockdLog(path string, runStart time.Time, evs []ReloadEvent) {
	entries := readSockdLog(path)
	var starts []logEntry
	done := map[int]logEntry{}
	lastExit := map[int]time.Time{}
	for _, e := range entries {
		switch e.ev {
		case "reload_start":
			starts = append(starts, e)
		case "reload_done":
			done[e.atoi("generation")] = e
		case "worker_exit":
			g := e.atoi("generation")
			if e.t.After(lastExit[g]) {
				lastExit[g] = e.t
			}
		}
	}
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
		for next < len(starts) && starts[next].t.Before(trig.Add(-5*time.Millisecond)) {
			next++
		}
		if next >= len(starts) || (!until.IsZero() && !starts[next].t.Before(until)) {
			continue
		}
		st := starts[next]
		next++
		gen := st.atoi("generation")
		sr := &SockdReload{Generation: gen, StartMS: ms(st.t.Sub(trig))}
		evs[i].Sockd = sr
		d, ok := done[gen]
		if !ok {
			continue
		}
		ready, _ := d.num("ready_seconds")
		handover, _ := d.num("handover_seconds")
		total, _ := d.num("seconds")
		sr.ReadyMS, sr.HandoverMS, sr.TotalMS = ready*1000, handover*1000, total*1000
		commit := st.t.Add(time.Duration(ready * float64(time.Second)))
		if og, ok := d.num("old_gone_seconds"); ok {
			sr.OldGoneMS = og * 1000
		} else if t, ok := lastExit[d.atoi("retired")]; ok && t.After(commit) {
			sr.OldGoneMS = ms(t.Sub(commit))
		}
	}
}

// poolReadySeconds is the seconds field of the first pool_ready line of
// sockd's log (pool start → every worker of the first generation ready).
func poolReadySeconds(path string) float64 {
	for _, e := range readSockdLog(path) {
		if e.ev == "pool_ready" {
			s, _ := e.num("seconds")
			return s
		}
	}
	return 0
}
