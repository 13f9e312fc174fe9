package load

import (
	"sort"
	"time"
)

// Result is a finished run: every request, ordered by start.
type Result struct {
	Config    Config
	Started   time.Time
	Duration  time.Duration
	Samples   []Sample
	ErrorText map[Kind][]string // up to 5 messages per failure kind
}

// Stats summarises the requests that started in a window.
type Stats struct {
	From, To   time.Duration
	Requests   int
	OK         int
	Failed     int
	ByKind     [NumKinds]int
	P50, P99   time.Duration // of the requests answered 200
	Max        time.Duration
	PerPID     map[int32]int // answers per process
	PerPIDNew  map[int32]int // answers per process to new-connection requests
	KeepAlive  [2]int        // failed requests of the new-connection [0] and keep-alive [1] clients
	ReusedFail int           // failed requests sent on a reused keep-alive connection
}

// Throughput is answered requests per second.
func (s Stats) Throughput() float64 {
	d := (s.To - s.From).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(s.OK) / d
}

// Window summarises the requests that started in [from, to); to <= 0
// means until the end.
func (r *Result) Window(from, to time.Duration) Stats {
	if to <= 0 {
		to = r.Duration
	}
	st := Stats{From: from, To: to, PerPID: map[int32]int{}, PerPIDNew: map[int32]int{}}
	lo := sort.Search(len(r.Samples), func(i int) bool { return r.Samples[i].Start >= int64(from) })
	hi := sort.Search(len(r.Samples), func(i int) bool { return r.Samples[i].Start >= int64(to) })
	lats := make([]int32, 0, hi-lo)
	for _, s := range r.Samples[lo:hi] {
		st.Requests++
		st.ByKind[s.Kind]++
		if s.Kind != OK {
			st.Failed++
			if s.KeepAlive {
				st.KeepAlive[1]++
			} else {
				st.KeepAlive[0]++
			}
			if s.Reused {
				st.ReusedFail++
			}
			continue
		}
		st.OK++
		lats = append(lats, s.LatUS)
		if s.PID != 0 {
			st.PerPID[s.PID]++
			if !s.KeepAlive {
				st.PerPIDNew[s.PID]++
			}
		}
	}
	st.P50, st.P99, st.Max = quantiles(lats)
	return st
}

func quantiles(lats []int32) (p50, p99, max time.Duration) {
	if len(lats) == 0 {
		return 0, 0, 0
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(f float64) time.Duration {
		i := int(f*float64(len(lats))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(lats) {
			i = len(lats) - 1
		}
		return time.Duration(lats[i]) * time.Microsecond
	}
	return q(0.50), q(0.99), time.Duration(lats[len(lats)-1]) * time.Microsecond
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
	lats := make([][]int32, n)
	for _, s := range r.Samples {
		i := int(time.Duration(s.Start) / width)
		if i >= n {
			i = n - 1
		}
		if s.Kind == OK {
			bs[i].OK++
			lats[i] = append(lats[i], s.LatUS)
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
func (r *Result) Failures() []Sample {
	var f []Sample
	for _, s := range r.Samples {
		if s.Kind != OK {
			f = append(f, s)
		}
	}
	return f
}
