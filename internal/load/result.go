package load

import (
	"slices"
	"sort"
	"time"
)

// Record is one request. Times count from the start of the run.
type Record struct {
	// Start is when the request started: when it was due on a paced
	// run, else when the client began to send it (connect included).
	Start time.Duration `json:"start"`
	// Latency is from Start to the end of the response or the failure.
	Latency time.Duration `json:"latency"`
	// Conn is when the connection the request went out on began to
	// connect; for a failed connect, when that connect began.
	Conn time.Duration `json:"conn"`
	// Reused counts the requests sent on that connection before this one.
	Reused int32  `json:"reused"`
	Client int32  `json:"client"`
	PID    int32  `json:"pid,omitempty"` // the process that answered, 0 if unknown
	Gen    int32  `json:"gen,omitempty"` // the generation that answered, 0 if unknown
	Status int16  `json:"status,omitempty"`
	Kind   Kind   `json:"kind"`
	Mode   Mode   `json:"mode"`
	Err    string `json:"err,omitempty"` // why it failed
}

// End is when the request ended.
func (r Record) End() time.Duration { return r.Start + r.Latency }

// Result is a finished run: every request, ordered by start.
type Result struct {
	Config   Config
	Started  time.Time // wall clock at the start of the run
	Duration time.Duration
	Records  []Record
	// Conns is the number of connections opened; IdleClosed the kept-alive
	// connections a Careful client found closed by the server before
	// reusing them (and replaced, without a failure); ServerClosed the
	// answers that said "Connection: close" to a client that keeps its
	// connection (a draining server asking it to go away).
	Conns, IdleClosed, ServerClosed int64
}

func (r *Run) collect() *Result {
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	all := make([]Record, 0, n)
	for _, p := range r.parts {
		all = append(all, p...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Start < all[j].Start })
	return &Result{Config: r.cfg, Started: r.t0, Duration: r.Since(), Records: all,
		Conns: r.conns.Load(), IdleClosed: r.idleClosed.Load(), ServerClosed: r.serverClosed.Load()}
}

// Summary is what the requests that started in a window came to.
type Summary struct {
	From, To time.Duration
	Requests int
	OK       int
	Failed   int
	ByKind   [NumKinds]int
	P50, P99 time.Duration // of the requests answered OK
	Max      time.Duration
	PerPID   map[int32]int // OK answers per process
	// PerPIDFresh is PerPID for the requests of Fresh clients alone (each
	// on a connection of its own).
	PerPIDFresh map[int32]int
	Gens        map[int32]Gen // OK answers per generation, when the answers say it
}

// Gen sums up the OK answers of one generation.
type Gen struct {
	Requests int
	// LastConn is the latest Record.Conn of a connection on which this
	// generation answered.
	LastConn time.Duration
}

// Throughput is requests answered OK per second.
func (s Summary) Throughput() float64 {
	d := (s.To - s.From).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(s.OK) / d
}

// Kinds counts the failed requests by kind name.
func (s Summary) Kinds() map[string]int {
	m := map[string]int{}
	for k := Kind(1); k < NumKinds; k++ {
		if s.ByKind[k] > 0 {
			m[k.String()] = s.ByKind[k]
		}
	}
	return m
}

// Window summarises the requests that started in [from, to); to <= 0
// means until the end.
func (r *Result) Window(from, to time.Duration) Summary {
	if to <= 0 {
		to = r.Duration
	}
	st := Summary{From: from, To: to, PerPID: map[int32]int{}, PerPIDFresh: map[int32]int{}, Gens: map[int32]Gen{}}
	lo := sort.Search(len(r.Records), func(i int) bool { return r.Records[i].Start >= from })
	hi := sort.Search(len(r.Records), func(i int) bool { return r.Records[i].Start >= to })
	lats := make([]time.Duration, 0, hi-lo)
	for _, q := range r.Records[lo:hi] {
		st.Requests++
		st.ByKind[q.Kind]++
		if q.Kind != OK {
			st.Failed++
			continue
		}
		st.OK++
		lats = append(lats, q.Latency)
		if q.PID != 0 {
			st.PerPID[q.PID]++
			if q.Mode == Fresh {
				st.PerPIDFresh[q.PID]++
			}
		}
		if q.Gen != 0 {
			g := st.Gens[q.Gen]
			g.Requests++
			g.LastConn = max(g.LastConn, q.Conn)
			st.Gens[q.Gen] = g
		}
	}
	st.P50, st.P99, st.Max = quantiles(lats)
	return st
}

func quantiles(lats []time.Duration) (p50, p99, top time.Duration) {
	if len(lats) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lats)
	q := func(f float64) time.Duration {
		i := int(f*float64(len(lats))+0.5) - 1
		return lats[min(max(i, 0), len(lats)-1)]
	}
	return q(0.50), q(0.99), lats[len(lats)-1]
}

// Bucket is one slice of time of a run.
type Bucket struct {
	Start    time.Duration
	OK       int
	Failed   int
	P50, P99 time.Duration
}

// Buckets cuts the run in slices of width (by request start) and gives
// each one's answered and failed requests and latency quantiles.
func (r *Result) Buckets(width time.Duration) []Bucket {
	n := int(r.Duration/width) + 1
	bs := make([]Bucket, n)
	lats := make([][]time.Duration, n)
	for _, q := range r.Records {
		i := min(int(q.Start/width), n-1)
		if q.Kind == OK {
			bs[i].OK++
			lats[i] = append(lats[i], q.Latency)
		} else {
			bs[i].Failed++
		}
	}
	for i := range bs {
		bs[i].Start = time.Duration(i) * width
		bs[i].P50, bs[i].P99, _ = quantiles(lats[i])
	}
	return bs
}

// Failures lists the failed requests.
func (r *Result) Failures() []Record {
	var f []Record
	for _, q := range r.Records {
		if q.Kind != OK {
			f = append(f, q)
		}
	}
	return f
}

// Errors returns up to n error messages of each kind of failure, the
// earliest first.
func (r *Result) Errors(n int) map[Kind][]string {
	m := map[Kind][]string{}
	for _, q := range r.Records {
		if q.Kind != OK && len(m[q.Kind]) < n {
			m[q.Kind] = append(m[q.Kind], q.Err)
		}
	}
	return m
}

// Report is a finished run in a form that travels as JSON (the end-to-end
// load client prints one).
type Report struct {
	Started                         time.Time
	Duration                        time.Duration
	Summary                         Summary // of the whole run
	Conns, IdleClosed, ServerClosed int64
	Failures                        []Record // the first failed requests
	// Slow lists the requests answered OK that took longer than the
	// report's threshold from the start of their connection.
	Slow []Record `json:",omitempty"`
	// Records is every request, when the report was asked for them.
	Records []Record `json:",omitempty"`
}

// Report sums the run up, listing at most limit failed requests and limit
// slow ones (slower than slow from the start of their connection; slow
// 0: none).
func (r *Result) Report(slow time.Duration, limit int) *Report {
	rep := &Report{Started: r.Started, Duration: r.Duration, Summary: r.Window(0, 0),
		Conns: r.Conns, IdleClosed: r.IdleClosed, ServerClosed: r.ServerClosed}
	for _, q := range r.Records {
		switch {
		case q.Kind != OK && len(rep.Failures) < limit:
			rep.Failures = append(rep.Failures, q)
		case q.Kind == OK && slow > 0 && q.End()-q.Conn > slow && len(rep.Slow) < limit:
			rep.Slow = append(rep.Slow, q)
		}
	}
	return rep
}

// At is the wall-clock time of a moment of the run (a Record's Start,
// Conn or End).
func (r *Report) At(d time.Duration) time.Time { return r.Started.Add(d) }
