package output

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// RingOptions bound the in-memory ring of each worker's recent lines,
// which `sockd logs` reads. Zero values are the defaults.
type RingOptions struct {
	// Lines a worker's ring keeps (DefaultRingLines).
	Lines int
	// Bytes of messages a worker's ring keeps (DefaultRingBytes; at least
	// the relay's MaxLine, so that one line always fits).
	Bytes int
	// Exited is how many rings of workers whose pipes are closed are kept,
	// the most recent (0: as many as there are live workers, at least
	// DefaultRingExited, so that a whole generation's last lines outlive
	// a reload; negative: none).
	Exited int
}

// Defaults of RingOptions. With them sockd's rings hold at most
// (live workers + max(live workers, 16)) × 256 KiB of messages, plus 40
// bytes a line.
const (
	DefaultRingLines  = 1000
	DefaultRingBytes  = 256 << 10
	DefaultRingExited = 16
)

// The ring never blocks a worker: when it is full the oldest lines make
// room (that is what a ring is, not a loss). A follower (`sockd logs -f`)
// that falls behind by more than a ring skips the lines it missed and is
// told how many ({"skipped":N}); they are counted in
// sockd_output_follow_skipped_lines_total.

type entry struct {
	seq       uint64
	nano      int64
	off, size int32
	stream    Stream
	prio      int8
	flags     Flags
}

// ring is one worker's recent lines: their bytes in a circular buffer,
// their entries in another.
type ring struct {
	st *store
	mu sync.Mutex
	w  Worker
	// data[head:head+used] (wrapping) holds the messages, oldest first.
	data       []byte
	head, used int
	// ents[first:first+n] (wrapping) are the entries, oldest first.
	ents     []entry
	first, n int
	total    uint64 // lines ever added: the oldest kept is number total-n
	ended    bool
	crashed  atomic.Bool // the worker crashed (Pipes.Crashed)
}

func (r *ring) add(b *Batch) {
	nano := b.Time.UnixNano()
	r.mu.Lock()
	for i := range b.Lines {
		l := &b.Lines[i]
		msg := l.Message()
		if len(msg) > r.st.bytes {
			msg = msg[:r.st.bytes]
		}
		r.put(msg, entry{seq: r.st.seq.Add(1), nano: nano, stream: b.Stream, prio: l.Priority, flags: l.Flags})
	}
	r.mu.Unlock()
	r.st.wake()
}

func (r *ring) put(msg []byte, e entry) {
	if r.n == r.st.lines {
		r.evict()
	}
	for r.used+len(msg) > len(r.data) {
		if len(r.data) < r.st.bytes {
			r.grow(len(msg))
		} else {
			r.evict()
		}
	}
	if r.n == len(r.ents) {
		r.growEntries()
	}
	pos := (r.head + r.used) % max(len(r.data), 1)
	c := copy(r.data[pos:], msg)
	copy(r.data, msg[c:])
	r.used += len(msg)
	e.off, e.size = int32(pos), int32(len(msg))
	r.ents[(r.first+r.n)%len(r.ents)] = e
	r.n++
	r.total++
}

func (r *ring) evict() {
	e := r.ents[r.first]
	if len(r.data) > 0 {
		r.head = (r.head + int(e.size)) % len(r.data)
	}
	r.used -= int(e.size)
	r.first = (r.first + 1) % len(r.ents)
	r.n--
}

// grow makes room for need more bytes, doubling, up to the limit.
func (r *ring) grow(need int) {
	size := min(max(2*len(r.data), r.used+need, 4096), r.st.bytes)
	data := make([]byte, size)
	r.copyOut(data, r.head, r.used)
	for i := 0; i < r.n; i++ {
		e := &r.ents[(r.first+i)%len(r.ents)]
		e.off = int32((int(e.off) - r.head + len(r.data)) % max(len(r.data), 1))
	}
	r.data, r.head = data, 0
}

func (r *ring) growEntries() {
	size := min(max(2*len(r.ents), 64), r.st.lines)
	ents := make([]entry, size)
	for i := 0; i < r.n; i++ {
		ents[i] = r.ents[(r.first+i)%len(r.ents)]
	}
	r.ents, r.first = ents, 0
}

// copyOut copies n bytes from offset off of the circular data.
func (r *ring) copyOut(dst []byte, off, n int) {
	if n == 0 {
		return
	}
	c := copy(dst[:n], r.data[off:min(off+n, len(r.data))])
	copy(dst[c:n], r.data)
}

// record makes the i-th kept entry (0 the oldest) a Record.
func (r *ring) record(i int) Record {
	e := r.ents[(r.first+i)%len(r.ents)]
	msg := make([]byte, e.size)
	r.copyOut(msg, int(e.off), int(e.size))
	return newRecord(r.w, e, msg)
}

// store holds the rings of live workers and of the last exited ones.
type store struct {
	lines, bytes, keep int
	auto               bool // keep grows with the live workers
	mu                 sync.Mutex
	live, exited       []*ring // in order of creation / of exit
	seq                atomic.Uint64
	waiters            atomic.Int32
	waitMu             sync.Mutex
	notify             chan struct{}
	skipped            atomic.Uint64
}

func newStore(o RingOptions, maxLine int) *store {
	st := &store{lines: o.Lines, bytes: o.Bytes, keep: o.Exited, notify: make(chan struct{})}
	if st.lines <= 0 {
		st.lines = DefaultRingLines
	}
	if st.bytes <= 0 {
		st.bytes = DefaultRingBytes
	}
	st.bytes = max(st.bytes, maxLine)
	if st.keep == 0 {
		st.keep, st.auto = DefaultRingExited, true
	}
	st.keep = max(st.keep, 0)
	return st
}

func (st *store) open(w Worker) *ring {
	r := &ring{st: st, w: w}
	st.mu.Lock()
	st.live = append(st.live, r)
	st.mu.Unlock()
	return r
}

func (r *ring) setPID(pid int) {
	r.mu.Lock()
	r.w.PID = pid
	r.mu.Unlock()
}

// end moves r to the exited rings, dropping the oldest beyond the limit.
func (st *store) end(r *ring) {
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
	st.mu.Lock()
	for i, l := range st.live {
		if l == r {
			st.live = append(st.live[:i], st.live[i+1:]...)
			st.exited = append(st.exited, r)
			break
		}
	}
	keep := st.keep
	if st.auto {
		keep = max(keep, len(st.live))
	}
	for len(st.exited) > max(keep, 0) {
		// The oldest that ended as planned goes first; a crashed
		// worker's last words only when none is left.
		i := slices.IndexFunc(st.exited, func(r *ring) bool { return !r.crashed.Load() })
		if i < 0 {
			i = 0
		}
		st.exited = slices.Delete(st.exited, i, i+1)
	}
	st.mu.Unlock()
	st.wake()
}

// wake tells followers there is something new.
func (st *store) wake() {
	if st.waiters.Load() == 0 {
		return
	}
	st.waitMu.Lock()
	close(st.notify)
	st.notify = make(chan struct{})
	st.waitMu.Unlock()
}

func (st *store) waitChan() <-chan struct{} {
	st.waitMu.Lock()
	defer st.waitMu.Unlock()
	return st.notify
}

// matching lists the rings q selects, exited ones first.
func (st *store) matching(q Query) []*ring {
	st.mu.Lock()
	defer st.mu.Unlock()
	var rs []*ring
	for _, set := range [][]*ring{st.exited, st.live} {
		for _, r := range set {
			if (q.Worker == nil || *q.Worker == r.w.Slot) && (q.Generation == nil || *q.Generation == r.w.Generation) && (q.PID == nil || *q.PID == r.w.PID) {
				rs = append(rs, r)
			}
		}
	}
	return rs
}

// memory is the bytes the rings hold allocated.
func (st *store) memory() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, set := range [][]*ring{st.exited, st.live} {
		for _, r := range set {
			r.mu.Lock()
			n += len(r.data) + len(r.ents)*40
			r.mu.Unlock()
		}
	}
	return n
}

// tail returns the last n lines q selects, oldest first, and where each
// ring stood.
func (st *store) tail(q Query, n int) ([]Record, map[*ring]uint64) {
	cursors := map[*ring]uint64{}
	var recs []Record
	for _, r := range st.matching(q) {
		r.mu.Lock()
		for i := r.n - min(n, r.n); i < r.n; i++ {
			recs = append(recs, r.record(i))
		}
		cursors[r] = r.total
		r.mu.Unlock()
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	return recs[len(recs)-min(n, len(recs)):], cursors
}

// follow calls emit with the lines q selects that arrive after cursors,
// until ctx is done or emit fails.
func (st *store) follow(done <-chan struct{}, q Query, cursors map[*ring]uint64, emit func([]Record) error) error {
	st.waiters.Add(1)
	defer st.waiters.Add(-1)
	for {
		ch := st.waitChan()
		var recs, gaps []Record
		next := map[*ring]uint64{}
		for _, r := range st.matching(q) {
			r.mu.Lock()
			c := cursors[r] // 0 for a worker that started since
			oldest := r.total - uint64(r.n)
			if c < oldest {
				gaps = append(gaps, Record{Worker: r.w.Slot, Generation: r.w.Generation, PID: r.w.PID, Skipped: oldest - c})
				st.skipped.Add(oldest - c)
				c = oldest
			}
			for i := int(c - oldest); i < r.n; i++ {
				recs = append(recs, r.record(i))
			}
			next[r] = r.total
			r.mu.Unlock()
		}
		cursors = next
		if len(recs)+len(gaps) > 0 {
			sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
			if err := emit(append(gaps, recs...)); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ch:
		case <-done:
			return nil
		}
	}
}

func nanoTime(n int64) string { return time.Unix(0, n).UTC().Format(time.RFC3339Nano) }
