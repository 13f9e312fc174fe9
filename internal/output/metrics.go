package output

import (
	"fmt"
	"io"
	"sort"
)

// Counts is what a relay counted for one stream.
type Counts struct {
	// Lines relayed (each piece of a cut line counts), and bytes read
	// (newlines included).
	Lines, Bytes uint64
	// Cut counts lines longer than MaxLine (cut into pieces).
	Cut uint64
	// Dropped counts lines the sink lost (journald gone and no fallback,
	// a failing writer). The ring never drops: it forgets its oldest.
	Dropped uint64
}

// WorkerCounts are the counts of one worker's streams.
type WorkerCounts struct {
	Worker         Worker
	Stdout, Stderr Counts
}

func (c *counters) counts() Counts {
	return Counts{Lines: c.lines.Load(), Bytes: c.bytes.Load(), Cut: c.cut.Load(), Dropped: c.dropped.Load()}
}

// Counts returns the counts of every worker whose pipes are open, by slot
// and generation.
func (r *Relay) Counts() []WorkerCounts {
	r.mu.Lock()
	var ws []WorkerCounts
	for p := range r.pipes {
		wc := WorkerCounts{Worker: p.w}
		for _, s := range p.streams {
			if s == nil {
				continue
			}
			if s.kind == Stdout {
				wc.Stdout = s.c.counts()
			} else {
				wc.Stderr = s.c.counts()
			}
		}
		ws = append(ws, wc)
	}
	r.mu.Unlock()
	sort.Slice(ws, func(i, j int) bool {
		a, b := ws[i].Worker, ws[j].Worker
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		if a.Generation != b.Generation {
			return a.Generation < b.Generation
		}
		return a.PID < b.PID
	})
	return ws
}

// Totals are the counts of every worker since the relay was made.
func (r *Relay) Totals() (stdout, stderr Counts) {
	return r.totals[0].counts(), r.totals[1].counts()
}

// FollowSkipped counts the lines `sockd logs -f` followers missed
// because they fell behind by more than a ring.
func (r *Relay) FollowSkipped() uint64 { return r.ring.skipped.Load() }

// RingBytes is the memory the rings hold.
func (r *Relay) RingBytes() int { return r.ring.memory() }

// WriteMetrics writes the relay's metrics in the Prometheus text format
// (0.0.4), for the metrics package to merge into its scrape. Per-worker
// series exist for workers whose pipes are open, labelled like sockd's
// other per-worker series (slot, generation, pid) plus stream; the
// sockd_output_* totals count every worker since sockd started.
func (r *Relay) WriteMetrics(w io.Writer) error {
	ws := r.Counts()
	out, errc := r.Totals()
	perWorker := []struct {
		name, help string
		get        func(Counts) uint64
	}{
		{"sockd_worker_output_lines_total", "Lines the worker wrote, relayed (a piece of a cut line counts as one).", func(c Counts) uint64 { return c.Lines }},
		{"sockd_worker_output_bytes_total", "Bytes the worker wrote.", func(c Counts) uint64 { return c.Bytes }},
		{"sockd_worker_output_cut_lines_total", "Lines of the worker longer than the maximum, cut into pieces.", func(c Counts) uint64 { return c.Cut }},
		{"sockd_worker_output_dropped_lines_total", "Lines of the worker the sink lost.", func(c Counts) uint64 { return c.Dropped }},
	}
	var err error
	p := func(format string, a ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, a...)
		}
	}
	for i, m := range perWorker {
		p("# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for _, wc := range ws {
			for _, sc := range []struct {
				s Stream
				c Counts
			}{{Stdout, wc.Stdout}, {Stderr, wc.Stderr}} {
				p("%s{slot=\"%d\",generation=\"%d\",pid=\"%d\",stream=\"%s\"} %d\n", m.name, wc.Worker.Slot, wc.Worker.Generation, wc.Worker.PID, sc.s, m.get(sc.c))
			}
		}
		total := "sockd_output_" + m.name[len("sockd_worker_output_"):]
		p("# HELP %s %s\n# TYPE %s counter\n", total, "All workers: "+perWorker[i].help[:len(perWorker[i].help)-1]+", since sockd started.", total)
		p("%s{stream=\"stdout\"} %d\n%s{stream=\"stderr\"} %d\n", total, m.get(out), total, m.get(errc))
	}
	p("# HELP sockd_output_follow_skipped_lines_total Lines `sockd logs -f` followers missed for falling behind.\n# TYPE sockd_output_follow_skipped_lines_total counter\nsockd_output_follow_skipped_lines_total %d\n", r.FollowSkipped())
	p("# HELP sockd_output_ring_bytes Memory of the rings of recent worker output.\n# TYPE sockd_output_ring_bytes gauge\nsockd_output_ring_bytes %d\n", r.RingBytes())
	return err
}
