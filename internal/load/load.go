// Package load is sockd's HTTP/1.1 load generator. The tests that prove a
// reload loses nothing (through worker/workertest), the end-to-end load
// client (e2e/internal/loadclient) and the benchmarks (bench/suite) all
// send their requests through it, so "a failed request" means the same
// thing in each of them.
//
// # Clients
//
// A run is a number of client goroutines sending requests to one address,
// each in one Mode: KeepAlive clients send back to back on one kept-alive
// connection, Fresh clients open a new connection for every request
// ("Connection: close"), Sporadic clients keep their connection but pause
// up to Config.IdleMax before each request, so their connection is often
// idle when a server starts to drain. A client never retries a request:
// after a failure it opens a new connection for the next one.
//
// Without Config.Rate each client sends its next request as soon as the
// previous one ended (closed loop), which measures throughput. With it the
// clients send on a fixed schedule (the rate split evenly between them) and
// a request's latency counts from its scheduled start, so a stall is
// charged to every request it delayed (no coordinated omission).
//
// # A failed request
//
// Every request sent ends in exactly one Kind, and every Kind but OK is a
// failed request:
//
//   - ok: a complete response with a 2xx status, accepted by Config.Check
//     if there is one. The only success.
//   - refused: connect(2) was refused (nothing listening).
//   - reset: ECONNRESET or EPIPE while connecting, sending or reading.
//   - timeout: no complete response within Config.Timeout, connect included.
//   - closed: the connection was closed (EOF) before any byte of the
//     response arrived.
//   - truncated: the connection was closed in the middle of the response.
//   - status: a complete response with a status other than 2xx.
//   - invalid: a complete 2xx response that is malformed or that
//     Config.Check rejected.
//   - other: any other error (Record.Err says which).
//
// A request is sent once the client began to connect for it, or wrote it
// on a connection it already had. So a request sent on a kept-alive
// connection that the server then closes without answering is a failed
// request (closed or reset), however soon after the previous answer: the
// client cannot know whether the server saw it, and a POST cannot be sent
// again.
//
// # Reusing a kept-alive connection
//
// With Config.Careful a client behaves like browsers and Go's net/http:
// before it reuses a kept-alive connection it looks whether the server
// closed it while it was idle (a non-blocking recv with MSG_PEEK that finds
// EOF, a reset or bytes nobody asked for), and if so it opens a new
// connection for the request. Such a connection is counted in
// Result.IdleClosed and is not a failed request: no request went out on it.
// Without Careful the request is sent anyway and fails (closed or reset)
// when the server had closed the connection: the keep-alive race in its
// plain form, which the benchmarks count as every other failure.
//
// # Records
//
// Every request is recorded (Record): when it started, its latency, the
// connection it went out on, the process that answered (an X-Pid or
// X-Sockd-Pid header, else "pid=N" in the body), the generation that
// answered (an X-Sockd-Generation or X-Generation header), its Kind. A
// Result holds them all, ordered by start; Result.Window summarises a
// stretch of time.
package load

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is how a request ended. Every Kind but OK is a failed request (see
// the package documentation).
type Kind uint8

// Outcomes of a request.
const (
	OK        Kind = iota // a complete 2xx response that Config.Check, if any, accepted
	Refused               // connect(2) refused: nothing listening
	Reset                 // ECONNRESET or EPIPE
	Timeout               // no complete response within Config.Timeout
	Closed                // the connection was closed before any byte of a response
	Truncated             // the connection was closed in the middle of a response
	BadStatus             // a complete response with a status other than 2xx
	Invalid               // a complete 2xx response, malformed or rejected by Config.Check
	Other                 // anything else (Record.Err has the message)
	NumKinds
)

var kindNames = [NumKinds]string{"ok", "refused", "reset", "timeout", "closed", "truncated", "status", "invalid", "other"}

func (k Kind) String() string { return name(kindNames[:], int(k), "kind") }

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name; an unknown one is Other.
func (k *Kind) UnmarshalText(b []byte) error {
	*k = Kind(index(kindNames[:], string(b), int(Other)))
	return nil
}

// Mode is how a client uses connections.
type Mode uint8

// Client modes.
const (
	KeepAlive Mode = iota // back to back on one kept-alive connection
	Fresh                 // a new connection per request, "Connection: close"
	Sporadic              // kept-alive connection, a pause up to Config.IdleMax before each request
)

var modeNames = [...]string{"keepalive", "fresh", "sporadic"}

func (m Mode) String() string { return name(modeNames[:], int(m), "mode") }

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a mode's name; an unknown one is KeepAlive.
func (m *Mode) UnmarshalText(b []byte) error {
	*m = Mode(index(modeNames[:], string(b), int(KeepAlive)))
	return nil
}

// name is names[i], or prefix and i when i is out of range.
func name(names []string, i int, prefix string) string {
	if i >= 0 && i < len(names) {
		return names[i]
	}
	return prefix + strconv.Itoa(i)
}

// index is the index of s in names, or unknown.
func index(names []string, s string, unknown int) int {
	for i, n := range names {
		if n == s {
			return i
		}
	}
	return unknown
}

// Config describes a run.
type Config struct {
	Addr   string // host:port
	Method string // default GET
	Path   string // default "/"
	Body   []byte // request body, sent with a Content-Length; nil: none

	// Clients of each mode. Their schedules are interleaved (a keep-alive
	// client, a fresh one, a sporadic one, a keep-alive one, …).
	KeepAlive, Fresh, Sporadic int

	Rate     float64       // total requests per second; 0: closed loop
	Duration time.Duration // stop sending after this long; 0: when the context is done
	Timeout  time.Duration // per request, connect included; default 2s
	Pause    time.Duration // closed loop: pause of KeepAlive and Fresh clients before each request
	IdleMax  time.Duration // closed loop: longest pause of a Sporadic client; default 300ms

	// Careful looks, before reusing a kept-alive connection, whether the
	// server closed it while idle (see the package documentation).
	Careful bool

	// Check, if set, validates every complete 2xx response; an error
	// makes the request Invalid. body is only valid during the call.
	// Checks run concurrently, from every client.
	Check func(resp *http.Response, body []byte) error
}

func (c Config) withDefaults() Config {
	if c.Method == "" {
		c.Method = http.MethodGet
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.IdleMax <= 0 {
		c.IdleMax = 300 * time.Millisecond
	}
	return c
}

// clients is the run's client modes, interleaved.
func (c Config) clients() []Mode {
	var modes []Mode
	left := [3]int{c.KeepAlive, c.Fresh, c.Sporadic}
	for left[0]+left[1]+left[2] > 0 {
		for m := range left {
			if left[m] > 0 {
				modes = append(modes, Mode(m))
				left[m]--
			}
		}
	}
	return modes
}

// Run is a load run in progress.
type Run struct {
	cfg Config
	t0  time.Time

	ok, failed                      atomic.Int64
	conns, idleClosed, serverClosed atomic.Int64
	answered                        chan struct{} // closed at the first OK
	answeredOnce                    sync.Once

	seen sync.Map // int32 pid -> time.Duration of its first answer
	mu   sync.Mutex
	gone map[int32]time.Duration // retired pids -> when retired

	wg    sync.WaitGroup
	parts [][]Record // per client, written when the client ends
	done  chan struct{}
	res   *Result
}

// Start begins a run; it stops after cfg.Duration or when ctx is done,
// and lets the requests in flight finish.
func Start(ctx context.Context, cfg Config) *Run {
	r := newRun(cfg)
	modes := r.cfg.clients()
	r.parts = make([][]Record, len(modes))
	if r.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, r.t0.Add(r.cfg.Duration))
		go func() { <-r.done; cancel() }()
	}
	for i, m := range modes {
		r.wg.Add(1)
		go r.newClient(i, m, len(modes)).loop(ctx)
	}
	go func() {
		r.wg.Wait()
		r.res = r.collect()
		close(r.done)
	}()
	return r
}

// Once sends one request on a new connection and returns the result of
// that run of one request.
func Once(cfg Config) *Result {
	r := newRun(cfg)
	c := r.newClient(0, Fresh, 1)
	rec := c.do(time.Now())
	c.closeConn()
	r.count(rec)
	r.parts = [][]Record{{rec}}
	return r.collect()
}

func newRun(cfg Config) *Run {
	return &Run{cfg: cfg.withDefaults(), t0: time.Now(), gone: map[int32]time.Duration{},
		answered: make(chan struct{}), done: make(chan struct{})}
}

func (r *Run) newClient(id int, m Mode, n int) *client {
	c := &client{r: r, id: id, mode: m, req: request(r.cfg, m == Fresh)}
	if m == Sporadic {
		c.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	}
	if r.cfg.Rate > 0 {
		c.interval = time.Duration(float64(time.Second) * float64(n) / r.cfg.Rate)
		c.next = r.t0.Add(c.interval * time.Duration(id) / time.Duration(n))
	}
	return c
}

// Since is the time elapsed since the run started, on the records' clock.
func (r *Run) Since() time.Duration { return time.Since(r.t0) }

// StartTime is the wall-clock start of the run.
func (r *Run) StartTime() time.Time { return r.t0 }

// Counts returns the requests answered OK and failed so far.
func (r *Run) Counts() (ok, failed int64) { return r.ok.Load(), r.failed.Load() }

// Answered is closed once a request was answered OK.
func (r *Run) Answered() <-chan struct{} { return r.answered }

// Done is closed when the run is over.
func (r *Run) Done() <-chan struct{} { return r.done }

// Wait waits for the end of the run and returns its result.
func (r *Run) Wait() *Result {
	<-r.done
	return r.res
}

// Seen returns every process that has answered OK and is not retired,
// with the time of its first answer (since the start).
func (r *Run) Seen() map[int32]time.Duration {
	m := map[int32]time.Duration{}
	r.seen.Range(func(k, v any) bool {
		m[k.(int32)] = v.(time.Duration)
		return true
	})
	return m
}

// retireFor is how long answers from a retired pid are not taken for the
// first answers of a new process; then the kernel may have reused it.
const retireFor = 10 * time.Second

// Retire forgets pids (processes that exited): answers still arriving
// from them are not counted as first answers of a new process for 10 s.
func (r *Run) Retire(pids ...int) {
	now := r.Since()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pids {
		r.gone[int32(p)] = now
		r.seen.Delete(int32(p))
	}
}

func (r *Run) firstAnswer(pid int32, at time.Duration) {
	if _, ok := r.seen.Load(pid); ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.gone[pid]; ok {
		if at-t < retireFor {
			return
		}
		delete(r.gone, pid)
	}
	r.seen.LoadOrStore(pid, at)
}

// count books a finished request in the live counters.
func (r *Run) count(rec Record) {
	if rec.Kind != OK {
		r.failed.Add(1)
		return
	}
	r.ok.Add(1)
	r.answeredOnce.Do(func() { close(r.answered) })
	if rec.PID > 0 {
		r.firstAnswer(rec.PID, rec.End())
	}
}
