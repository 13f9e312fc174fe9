package pool

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/resources"
)

// sim runs the pool's loop by hand on a fake process table and a fake
// clock: every decision of the loop, with no fork and no waiting.
type sim struct {
	t    *testing.T
	p    *Pool
	now  time.Time
	seq  int // timers created, for a stable firing order
	next int // next pid
	// timers pending, in no particular order.
	timers []*simTimer
	// procs is every worker started, by pid.
	procs map[int]*simProc
	// holding: pids that still hold a listening socket after they were
	// asked to stop (default: they let go at once).
	holding map[int]bool
	// failStart makes the next starts fail, with startErr if set.
	failStart int
	startErr  error
	// reuseport: the listener is a reuseport group of sockets sockets,
	// the kernel hands connections to the first steeredTo; queue is what
	// waits on each.
	reuseport bool
	sockets   int
	steeredTo int
	queue     map[int]int
	sent      []string     // what systemd was told
	channels  bool         // workers have Node IPC channels
	noLow     bool         // sockd may not give a worker its priority back
	sentTo    []string     // messages sent on them, "PID MSG"
	unread    map[int]bool // workers whose channel's queue is full
}

type simProc struct {
	pid, slot, gen int
	exited         bool
	signals        []unix.Signal
	group          bool // a process of its group outlives it
	stuck          bool // and SIGKILL does not end it
	low            bool // started at a low CPU priority, not restored yet
	raised         int  // times given its normal priority back
}

type simTimer struct {
	at      time.Time
	seq     int
	ev      loopEvent
	stopped bool
	fired   bool
}

func (t *simTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func (s *sim) start(w *worker) (int, error) {
	if s.failStart > 0 {
		s.failStart--
		if s.startErr != nil {
			return 0, resources.Check(s.startErr) // as the real env describes a shortage
		}
		return 0, errors.New("fork/exec /bin/true: exec format error")
	}
	s.next++
	s.procs[s.next] = &simProc{pid: s.next, slot: w.slot, gen: w.gen, low: w.low}
	return s.next, nil
}

func (s *sim) reap(pid int) exitStatus {
	pr := s.procs[pid]
	pr.exited = true
	return exitStatus{ws: pr.status()}
}

// status is the exit status a proc leaves: 0 after SIGTERM, killed by
// SIGKILL, else 1.
func (pr *simProc) status() unix.WaitStatus {
	for _, sig := range pr.signals {
		switch sig {
		case unix.SIGKILL:
			return unix.WaitStatus(unix.SIGKILL)
		case unix.SIGTERM:
			return 0
		}
	}
	return 1 << 8
}

func (s *sim) signal(w *worker, sig unix.Signal) error {
	pr := s.procs[w.pid]
	if pr == nil || pr.exited {
		return unix.ESRCH
	}
	pr.signals = append(pr.signals, sig)
	return nil
}

func (s *sim) groupAlive(w *worker) bool { return s.procs[w.pid].group }
func (s *sim) killGroup(w *worker) bool {
	pr := s.procs[w.pid]
	g := pr.group
	pr.group = pr.stuck
	return g
}
func (s *sim) release(w *worker)            {}
func (s *sim) steered() bool                { return false }
func (s *sim) steerReady(*worker) time.Time { return time.Time{} }
func (s *sim) leave(*worker)                {}
func (s *sim) drained(*worker) bool         { return true }
func (s *sim) halted(*worker) bool          { return false }
func (s *sim) yielded() bool                { return false }
func (s *sim) gone(*worker)                 {}
func (s *sim) mayLower(*worker) bool        { return !s.noLow }
func (s *sim) raise(w *worker) {
	pr := s.procs[w.pid]
	pr.low = false
	pr.raised++
}
func (s *sim) orphaned(w *worker, sig unix.Signal) {}
func (s *sim) remove(path string)                  {}
func (s *sim) holdsListener(pid int) bool          { return s.holding[pid] }
func (s *sim) grow(n int) error {
	if s.reuseport {
		s.sockets = max(s.sockets, n)
	}
	return nil
}
func (s *sim) steer(n int) bool {
	if s.reuseport {
		s.steeredTo = n
	}
	return s.reuseport
}
func (s *sim) queued(slot int) int                        { return s.queue[slot] }
func (s *sim) usage(t sampleTarget) (procfs.Usage, error) { return procfs.Usage{}, nil }
func (s *sim) now_() time.Time                            { return s.now }
func (s *sim) after(d time.Duration, ev loopEvent) timer {
	s.seq++
	t := &simTimer{at: s.now.Add(d), seq: s.seq, ev: ev}
	s.timers = append(s.timers, t)
	return t
}

// simOpts is what a sim test may set: the configuration and the wiring.
type simOpts struct {
	Config
	Deps
}

func (s *sim) pid() int { return 1 }
func (s *sim) begin()   {}
func (s *sim) end()     {}
func (s *sim) send(w *worker, msg []byte) error {
	s.sentTo = append(s.sentTo, fmt.Sprintf("%d %s", w.pid, msg))
	switch {
	case !s.channels:
		return errNoChannel
	case s.unread[w.pid]:
		return errBacklog
	}
	return nil
}
func (s *sim) track(int)     {}
func (s *sim) untrack(int)   {}
func (s *sim) guardPID() int { return 0 }
func (e simEnv) queue(l *activation.Listener, i int) (int, int, error) {
	return e.sim.queue[i], 4096, nil
}

// simEnv adapts sim to env (now is a field of sim).
type simEnv struct{ *sim }

func (e simEnv) now() time.Time { return e.now_() }

func newSim(t *testing.T, edit func(*simOpts)) *sim { return newSimMode(t, false, edit) }

// newSimMode makes a sim whose listener is a reuseport group, or shared.
func newSimMode(t *testing.T, reuseport bool, edit func(*simOpts)) *sim {
	t.Helper()
	s := newSimUnstarted(t, reuseport, edit)
	s.p.begin()
	return s
}

// newSimUnstarted is newSimMode before the pool starts its workers.
func newSimUnstarted(t *testing.T, reuseport bool, edit func(*simOpts)) *sim {
	t.Helper()
	s := &sim{t: t, now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), procs: map[int]*simProc{}, holding: map[int]bool{}, next: 100, queue: map[int]int{}}
	o := simOpts{
		Config: Config{Command: []string{"/bin/true"}, Workers: 2},
		Deps: Deps{
			Listeners: activation.Set{&activation.Listener{Name: "http"}},
			Notify:    func(m string) { s.sent = append(s.sent, m) },
			Logger:    hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: simLog{t}}),
		},
	}
	if edit != nil {
		edit(&o)
	}
	c, err := o.Config.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	d, err := o.Deps.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s.reuseport = reuseport
	s.p = newPool(&conf{Config: c, command: c.Command[0]}, d)
	s.p.env = simEnv{s}
	s.p.rand = rand.New(rand.NewPCG(1, 2)).Int64N // deterministic
	return s
}

type simLog struct{ t *testing.T }

func (l simLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (s *sim) step(ev loopEvent) { s.p.step(ev) }

// advance moves the clock by d, firing every timer due on the way, in
// order.
func (s *sim) advance(d time.Duration) {
	end := s.now.Add(d)
	for {
		var due *simTimer
		for _, t := range s.timers {
			if !t.stopped && !t.fired && !t.at.After(end) && (due == nil || t.at.Before(due.at) || t.at.Equal(due.at) && t.seq < due.seq) {
				due = t
			}
		}
		if due == nil {
			break
		}
		due.fired = true
		if due.at.After(s.now) {
			s.now = due.at
		}
		s.step(due.ev)
	}
	s.now = end
}

func (s *sim) notify(pid int, msg string) {
	fields, err := notify.Parse([]byte(msg))
	if err != nil {
		s.t.Fatal(err)
	}
	s.step(notifyEvent{msg: notify.Message{PID: pid, Fields: fields}})
}

func (s *sim) ready(pids ...int) {
	for _, pid := range pids {
		s.notify(pid, "READY=1")
	}
}

// exit makes pid exit (with the status its signals imply) and the loop
// see it.
func (s *sim) exit(pid int) { s.step(exitEvent{pid: pid}) }

// exitStopped makes every live worker that was sent SIGTERM or SIGKILL
// exit.
func (s *sim) exitStopped() {
	for _, pid := range s.livePIDs() {
		pr := s.procs[pid]
		for _, sig := range pr.signals {
			if sig == unix.SIGTERM || sig == unix.SIGKILL {
				s.exit(pid)
				break
			}
		}
	}
}

func (s *sim) livePIDs() []int {
	var pids []int
	for pid := range s.p.st.byPID {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// starting lists the pids of workers not ready yet.
func (s *sim) starting() []int {
	var pids []int
	for _, pid := range s.livePIDs() {
		if s.p.st.byPID[pid].state == Starting {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (s *sim) readyAll() { s.ready(s.starting()...) }

func (s *sim) reload() chan error {
	reply := make(chan error, 1)
	s.step(reloadRequest{reply: reply})
	return reply
}

func (s *sim) status() Status { return s.p.status() }

func (s *sim) signalled(pid int, sig unix.Signal) bool {
	for _, got := range s.procs[pid].signals {
		if got == sig {
			return true
		}
	}
	return false
}

// gens lists the generations alive.
func (s *sim) gens() map[int]int {
	g := map[int]int{}
	for _, w := range s.p.st.byPID {
		g[w.gen]++
	}
	return g
}

func noReply(t *testing.T, c chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s: reload answered %v too early", what, err)
	default:
	}
}

func reply(t *testing.T, c chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	default:
		t.Fatal("the reload has not answered")
		return nil
	}
}

func TestSimStartAndAnnounce(t *testing.T) {
	s := newSim(t, nil)
	if got := s.starting(); len(got) != 2 {
		t.Fatalf("starting %v, want 2 workers", got)
	}
	s.ready(101)
	if s.p.st.announced || s.status().Ready != 1 {
		t.Fatalf("announced with 1 of 2 ready: %+v", s.status())
	}
	s.ready(102)
	if !s.p.st.announced || s.sent[len(s.sent)-1] != "READY=1\nSTATUS=2/2 workers ready, generation 1, 0 restarts" {
		t.Fatalf("not announced: %q", s.sent)
	}
}

// The crash budget and the backoff, against the clock: a slot's first
// crash restarts at once, then BackoffMin doubling up to
// Period/(2·Burst); more than Burst crashes within Period: give up.
func TestSimBackoffAndBudget(t *testing.T) {
	for _, c := range []struct {
		limit  RestartLimit
		min    time.Duration
		delays []time.Duration // between a crash and the restart, crash by crash
	}{
		{RestartLimit{10, 60 * time.Second}, 100 * time.Millisecond,
			[]time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{RestartLimit{4, time.Minute}, time.Millisecond, []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}},
		{RestartLimit{3, 600 * time.Millisecond}, 100 * time.Millisecond, []time.Duration{0, 100 * time.Millisecond, 100 * time.Millisecond}},
	} {
		t.Run(c.limit.String(), func(t *testing.T) {
			s := newSim(t, func(o *simOpts) { o.Workers = 1; o.RestartLimit = c.limit; o.BackoffMin = c.min })
			pid := s.starting()[0]
			for i, want := range c.delays {
				s.exit(pid)
				if want > 0 {
					if len(s.starting()) != 0 {
						t.Fatalf("crash %d: restarted at once, want after %s", i+1, want)
					}
					s.advance(want - time.Nanosecond)
					if len(s.starting()) != 0 {
						t.Fatalf("crash %d: restarted before %s", i+1, want)
					}
					s.advance(time.Nanosecond)
				}
				got := s.starting()
				if len(got) != 1 {
					t.Fatalf("crash %d: not restarted after %s: %v", i+1, want, got)
				}
				pid = got[0]
			}
			if s.p.st.fatal != nil {
				t.Fatalf("gave up after %d crashes: %v", len(c.delays), s.p.st.fatal)
			}
			s.exit(pid)
			if err := s.p.st.fatal; !errors.Is(err, ErrRestartLimit) {
				t.Fatalf("after %d crashes: fatal %v, status %+v", c.limit.Burst+1, err, s.status())
			}
		})
	}
}

// Workers that never say they are ready: each is stopped at its ready
// timeout, one per ReadyTimeout, which the crash budget (10 in 60 s)
// never counts up to; after UnreadyLimit in a row of a slot, with no
// worker of the pool ready, sockd gives up and says what the ready rule
// waits for. With a worker ready, a slot that never gets ready is left to
// the crash budget.
func TestSimNeverReadyGivesUp(t *testing.T) {
	roundOfTimeouts := func(s *sim, pids []int) []int {
		t.Helper()
		s.advance(10 * time.Second)
		for _, pid := range pids {
			s.exit(pid)
		}
		for i := 0; i < 100 && len(s.starting()) < len(pids) && s.p.st.fatal == nil; i++ {
			s.advance(100 * time.Millisecond) // the backoff
		}
		return s.starting()
	}
	s := newSim(t, func(o *simOpts) { o.ReadyTimeout = 10 * time.Second })
	pids := s.starting()
	for round := 1; round <= UnreadyLimit; round++ {
		if len(pids) != 2 || s.p.st.fatal != nil {
			t.Fatalf("round %d: starting %v, fatal %v", round, pids, s.p.st.fatal)
		}
		pids = roundOfTimeouts(s, pids)
	}
	err := s.p.st.fatal
	if !errors.Is(err, ErrRestartLimit) || !strings.Contains(err.Error(), "no worker became ready") || !strings.Contains(err.Error(), "--ready after:2s") {
		t.Fatalf("after %d ready timeouts of each slot: fatal %v", UnreadyLimit, err)
	}

	// In a row: a worker of the pool ready in between starts the count
	// again.
	s = newSim(t, func(o *simOpts) { o.ReadyTimeout = 10 * time.Second; o.RestartLimit = RestartLimit{100, time.Minute} })
	pids = s.starting()
	for round := 1; round < UnreadyLimit; round++ {
		pids = roundOfTimeouts(s, pids)
	}
	s.ready(pids[1])
	s.exit(pids[1])
	for i := 0; i < 100 && len(s.starting()) < 2; i++ {
		s.advance(100 * time.Millisecond)
	}
	if pids = roundOfTimeouts(s, s.starting()); s.p.st.fatal != nil {
		t.Fatalf("gave up though a worker was ready since: %v", s.p.st.fatal)
	}

	s = newSim(t, func(o *simOpts) { o.ReadyTimeout = 10 * time.Second; o.RestartLimit = RestartLimit{100, time.Minute} })
	pids = s.starting()
	s.ready(pids[1])
	pids = pids[:1]
	for round := 1; round <= 2*UnreadyLimit; round++ {
		if pids = roundOfTimeouts(s, pids); len(pids) != 1 || s.p.st.fatal != nil {
			t.Fatalf("round %d with a worker ready: starting %v, fatal %v", round, pids, s.p.st.fatal)
		}
	}
}

// A worker that stayed ready for StableAfter restarts at once after a
// crash again; a crash loop's budget forgets crashes older than Period.
func TestSimStableWorkerResetsBackoffAndBudget(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.RestartLimit = RestartLimit{2, time.Minute} })
	for round := 0; round < 5; round++ {
		pid := s.starting()[0]
		s.ready(pid)
		s.advance(DefaultStableAfter + 30*time.Second) // and older than Period/2
		s.exit(pid)
		if len(s.starting()) != 1 {
			t.Fatalf("round %d: a stable worker's crash was not restarted at once", round)
		}
	}
	if s.p.st.fatal != nil || s.status().Restarts != 5 {
		t.Fatalf("5 crashes 40 s apart under 2/60s: %v, %+v", s.p.st.fatal, s.status())
	}
}

// Ten reload requests while one runs are two reloads, never three
// generations alive; the queued one starts once the old generation is gone.
func TestSimReloadsAreCoalesced(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	var replies []chan error
	for i := 0; i < 10; i++ {
		replies = append(replies, s.reload())
		s.advance(time.Millisecond)
	}
	if g := s.status().Generation; g != 1 || s.p.st.reload == nil || s.p.st.reload.gen != 2 {
		t.Fatalf("first reload not running: %+v", s.status())
	}
	s.readyAll() // generation 2 ready: gen 1 asked to stop
	if err := reply(t, replies[0]); err != nil {
		t.Fatal(err)
	}
	if s.p.st.reload != nil || len(s.gens()) != 2 {
		t.Fatalf("queued reload started while generation 1 still runs: gens %v", s.gens())
	}
	s.exitStopped()
	if s.p.st.reload == nil || s.p.st.reload.gen != 3 {
		t.Fatalf("queued reload did not start once generation 1 was gone")
	}
	s.readyAll()
	s.exitStopped()
	for i, r := range replies[1:] {
		if err := reply(t, r); err != nil {
			t.Fatalf("request %d: %v", i+2, err)
		}
	}
	if st := s.status(); st.Generation != 3 || len(s.gens()) != 1 {
		t.Fatalf("10 requests: generation %d, gens alive %v; want 3 and one", st.Generation, s.gens())
	}
}

// STOPPING=1 less than MinServe after READY=1 is a crash in disguise;
// from MinServe on it is a planned exit with its replacement started first.
func TestSimMinServe(t *testing.T) {
	for _, c := range []struct {
		served time.Duration
		crash  bool
	}{{0, true}, {time.Second - time.Nanosecond, true}, {time.Second, false}, {time.Hour, false}} {
		t.Run(c.served.String(), func(t *testing.T) {
			s := newSim(t, func(o *simOpts) { o.Workers = 1 })
			pid := s.starting()[0]
			s.ready(pid)
			s.advance(c.served)
			s.notify(pid, "STOPPING=1")
			if replaced := len(s.starting()) == 1; replaced == c.crash {
				t.Fatalf("after %s: replacement started %v", c.served, replaced)
			}
			s.exit(pid)
			if got := s.status().Restarts; (got == 1) != c.crash {
				t.Fatalf("after %s: %d restarts", c.served, got)
			}
			if len(s.starting()) != 1 {
				t.Fatal("no worker starting after the exit")
			}
		})
	}
}

// A worker that announced STOPPING=1 keeps its slot until its replacement
// is ready; sockd does not SIGTERM it.
func TestSimStoppingReplacementFirst(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1 })
	old := s.starting()[0]
	s.ready(old)
	s.advance(time.Minute)
	s.notify(old, "STOPPING=1")
	repl := s.starting()
	if len(repl) != 1 || s.status().Ready != 0 {
		t.Fatalf("replacement %v, status %+v", repl, s.status())
	}
	s.ready(repl[0])
	if s.signalled(old, unix.SIGTERM) || s.status().Ready != 1 {
		t.Fatalf("leaving worker was signalled, or replacement not serving: %+v", s.status())
	}
	s.advance(DefaultStopTimeout)
	if !s.signalled(old, unix.SIGKILL) {
		t.Fatal("a leaving worker that never exits is not killed at its stop deadline")
	}
	s.exit(old)
	if s.status().Restarts != 0 {
		t.Fatal("announced exit counted as a crash")
	}
}

func TestSimReloadRollsBack(t *testing.T) {
	for _, c := range []struct {
		name   string
		fail   func(s *sim, newPIDs []int)
		reason string
	}{
		{"exit before ready", func(s *sim, n []int) { s.exit(n[0]) }, "worker 0 exited before it was ready (exit status 1)"},
		{"exit after ready", func(s *sim, n []int) { s.ready(n[0]); s.exit(n[0]) }, "worker 0 exited after it was ready (exit status 1)"},
		{"STOPPING", func(s *sim, n []int) { s.notify(n[1], "STOPPING=1") }, "worker 1 announced it is stopping"},
		{"ready timeout", func(s *sim, n []int) { s.ready(n[0]); s.advance(10 * time.Second) }, "worker 1 was not ready within 10s"},
		{"reload timeout", func(s *sim, n []int) { s.ready(n[0]); s.advance(20 * time.Second) }, "not every worker was ready within 20s (1/2 ready)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(t, func(o *simOpts) {
				o.ReloadTimeout = 20 * time.Second
				if c.name == "ready timeout" {
					o.ReadyTimeout, o.ReloadTimeout = 10*time.Second, time.Minute
				}
			})
			s.readyAll()
			old := s.livePIDs()
			res := s.reload()
			newPIDs := s.starting()
			s.holding[newPIDs[0]], s.holding[newPIDs[1]] = true, true
			c.fail(s, newPIDs)
			noReply(t, res, "failed workers still hold the listeners")
			delete(s.holding, newPIDs[0])
			delete(s.holding, newPIDs[1])
			s.advance(handoverPoll)
			err := reply(t, res)
			var re *ReloadError
			if !errors.As(err, &re) || re.Reason != c.reason || re.Generation != 2 || re.Serving != 1 || re.Replaced != 0 {
				t.Fatalf("reload error %v, want reason %q", err, c.reason)
			}
			for _, pid := range old {
				if len(s.procs[pid].signals) > 0 {
					t.Fatalf("old worker %d was signalled %v", pid, s.procs[pid].signals)
				}
			}
			st := s.status()
			if st.Generation != 1 || st.Ready != 2 || st.Restarts != 0 || !strings.Contains(st.Summary, "; last reload failed: "+c.reason) {
				t.Fatalf("after rollback: %+v", st)
			}
		})
	}
}

// A worker of the old generation that crashed during the reload is not
// restarted into it; after a rollback its slot is refilled.
func TestSimRollbackRefillsCrashedSlot(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	old := s.livePIDs()
	res := s.reload()
	newPIDs := s.starting()
	s.exit(old[0])
	if got := s.starting(); len(got) != 2 {
		t.Fatalf("old worker restarted during a reload: starting %v", got)
	}
	s.exit(newPIDs[0])
	if err := reply(t, res); err == nil {
		t.Fatal("reload succeeded")
	}
	refill := s.starting()
	if len(refill) != 1 || s.p.st.byPID[refill[0]].gen != 1 || s.p.st.byPID[refill[0]].slot != 0 {
		t.Fatalf("slot 0 not refilled with generation 1: starting %v", refill)
	}
}

// Reloads in batches: never more than the batch starting at once, slot i's
// old worker drains only once slot i's new one (and its batch) is ready.
func TestSimRollingReload(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 4; o.ReloadBatch = 1 })
	s.readyAll()
	old := s.livePIDs()
	res := s.reload()
	for i := 0; i < 4; i++ {
		n := s.starting()
		if len(n) != 1 {
			t.Fatalf("batch %d: %v starting, want 1", i+1, n)
		}
		w := s.p.st.byPID[n[0]]
		if w.slot != i || w.gen != 2 {
			t.Fatalf("batch %d started slot %d gen %d", i+1, w.slot, w.gen)
		}
		for j, pid := range old {
			if got := s.signalled(pid, unix.SIGTERM); got != (j < i) {
				t.Fatalf("batch %d: old worker of slot %d signalled: %v", i+1, j, got)
			}
		}
		if st := s.status(); st.Ready != 4 || st.Reload == nil || st.Reload.Ready != i {
			t.Fatalf("batch %d: %+v", i+1, st)
		}
		s.ready(n[0])
	}
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.Generation != 2 || st.Ready != 4 {
		t.Fatalf("after a rolling reload: %+v", st)
	}
}

// A failing canary leaves every old worker untouched; a later batch that
// fails halts the reload with the slots reached on the new generation.
func TestSimRollingReloadFailures(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 4; o.ReloadBatch = 2 })
	s.readyAll()
	old := s.livePIDs()
	res := s.reload()
	s.exit(s.starting()[1])
	err := reply(t, res)
	var re *ReloadError
	if !errors.As(err, &re) || re.Replaced != 0 {
		t.Fatalf("canary failure: %v", err)
	}
	for _, pid := range old {
		if len(s.procs[pid].signals) > 0 {
			t.Fatalf("a failing canary touched old worker %d", pid)
		}
	}
	s.exitStopped()
	res = s.reload()
	s.readyAll() // batch 1 (slots 0, 1) takes over
	n := s.starting()
	if len(n) != 2 || s.p.st.byPID[n[0]].slot != 2 {
		t.Fatalf("second batch: %v", n)
	}
	s.exit(n[0])
	err = reply(t, res)
	if !errors.As(err, &re) || re.Replaced != 2 || re.Generation != 3 || re.Serving != 1 ||
		err.Error() != "reload to generation 3 halted after 2 of 4 slots: worker 2 exited before it was ready (exit status 1); the other slots still run generation 1" {
		t.Fatalf("later batch failure: %v", err)
	}
	gens := map[int]int{}
	for _, w := range s.status().Workers {
		if w.State == Ready {
			gens[w.Generation]++
		}
	}
	if gens[3] != 2 || gens[1] != 2 {
		t.Fatalf("after a halted reload: ready workers by generation %v", gens)
	}
	s.exitStopped()
	if st := s.status(); st.Summary != "4/4 workers ready, generations 3 (2 slots) and 1 (2 slots), 0 restarts; last reload halted after 2 slots: worker 2 exited before it was ready (exit status 1)" ||
		st.LastReload == nil || st.LastReload.Replaced != 2 {
		t.Fatalf("after a halted reload: %+v", st)
	}
	// Another reload of the mixed pool whose first batch (slots 0 and 1,
	// generation 3) takes over and whose second fails: the slots it did
	// not reach run generation 1, not the generation it came from.
	res = s.reload()
	s.readyAll()
	s.exitStopped()
	s.exit(s.starting()[0])
	err = reply(t, res)
	if !errors.As(err, &re) || re.Replaced != 2 || re.Generation != 4 || re.Serving != 1 ||
		!strings.HasSuffix(err.Error(), "; the other slots still run generation 1") {
		t.Fatalf("a halted reload of a mixed pool: %v", err)
	}
	// And one whose first batch fails: generations 1 and 4 keep serving.
	s.exitStopped()
	res = s.reload()
	s.exit(s.starting()[0])
	err = reply(t, res)
	if !errors.As(err, &re) || re.Replaced != 0 || !slices.Equal(re.Others, []int{1, 4}) ||
		!strings.HasSuffix(err.Error(), "; generations 1 and 4 still serving") {
		t.Fatalf("a failed reload of a mixed pool: %v", err)
	}
	// The next reload takes every slot, whatever it runs.
	s.exitStopped()
	res = s.reload()
	for len(s.starting()) > 0 {
		s.readyAll()
		s.exitStopped()
	}
	if err := reply(t, res); err != nil || s.status().Generation != 6 || len(s.gens()) != 1 {
		t.Fatalf("reload after a halt: %v, gens %v", err, s.gens())
	}
}

// The canary batch serves beside the old workers for ReloadSoak; an exit
// meanwhile rolls back with every old worker untouched.
func TestSimCanarySoak(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 3; o.ReloadBatch = 1; o.ReloadSoak = 10 * time.Second })
	s.readyAll()
	old := s.livePIDs()
	res := s.reload()
	canary := s.starting()[0]
	s.ready(canary)
	s.advance(9 * time.Second)
	if s.signalled(old[0], unix.SIGTERM) || len(s.starting()) != 0 {
		t.Fatal("the rest followed before the soak was over")
	}
	s.exit(canary)
	if err := reply(t, res); err == nil || !strings.Contains(err.Error(), "exited after it was ready") {
		t.Fatalf("canary crash during the soak: %v", err)
	}
	for _, pid := range old {
		if len(s.procs[pid].signals) > 0 {
			t.Fatalf("old worker %d touched by a failed canary", pid)
		}
	}
	res = s.reload()
	s.readyAll()
	s.advance(10 * time.Second)
	if !s.signalled(old[0], unix.SIGTERM) || len(s.starting()) != 1 {
		t.Fatal("after the soak the canary did not take over, or the next batch did not start")
	}
	for len(s.starting()) > 0 {
		s.readyAll()
	}
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
}

func TestSimSpawnFailure(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	s.failStart = 1
	res := s.reload()
	if err := reply(t, res); err == nil || !strings.Contains(err.Error(), "exec format error") {
		t.Fatalf("a fork failure during a reload: %v", err)
	}
	if st := s.status(); st.Ready != 2 || st.Generation != 1 {
		t.Fatalf("after a failed fork: %+v", st)
	}
	// Outside a reload it counts as a crash and is retried with backoff.
	s.exit(s.livePIDs()[0]) // crash 1: restarted at once
	s.exit(s.starting()[0]) // crash 2: restart in 100 ms
	s.failStart = 1
	s.advance(DefaultBackoffMin) // that fork fails: crash 3, retried in 200 ms
	if st := s.status(); st.Restarts != 3 || len(s.starting()) != 0 {
		t.Fatalf("after a failed restart: %+v", st)
	}
	s.advance(2*DefaultBackoffMin - time.Nanosecond)
	if len(s.starting()) != 0 {
		t.Fatal("retried before the backoff")
	}
	s.advance(time.Nanosecond)
	if len(s.starting()) != 1 {
		t.Fatal("not retried after the backoff")
	}
}

// A worker sockd cannot start for want of descriptors or processes: at
// start the pool gives up at once (ErrResources, the limit named); once
// it served, the slot is tried again with backoff, forever, without
// spending the restart budget, and logged at most once every 10 s.
func TestSimShortOfResources(t *testing.T) {
	s := newSimUnstarted(t, false, nil)
	s.failStart, s.startErr = 1, fmt.Errorf("start worker 0 of generation 1: %w", unix.EMFILE)
	s.p.begin()
	err := s.p.st.fatal
	if !errors.Is(err, ErrResources) || !errors.Is(err, unix.EMFILE) || !strings.Contains(err.Error(), "short of RLIMIT_NOFILE") {
		t.Fatalf("fatal %v", err)
	}

	var logged int
	s = newSim(t, func(o *simOpts) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Error,
			Exclude: func(_ hclog.Level, msg string, _ ...any) bool {
				if msg == "cannot start worker" {
					logged++
				}
				return false
			}})
	})
	s.readyAll()
	s.failStart, s.startErr = 1000, unix.EAGAIN
	s.exit(s.livePIDs()[0]) // a crash: restarted at once, which fails
	for i := 0; i < 100; i++ {
		if len(s.starting()) != 0 || s.p.st.fatal != nil {
			t.Fatalf("failure %d: starting %v, fatal %v", i, s.starting(), s.p.st.fatal)
		}
		s.advance(s.p.maxBackoff())
	}
	if st := s.status(); st.Restarts != 1 || st.Ready != 1 || len(s.p.st.crashes) != 1 {
		t.Fatalf("after 100 failed forks: %+v, %d crashes counted", st, len(s.p.st.crashes))
	}
	// 100 failures in 300 s: a line at the first, then one per 10 s.
	if logged < 25 || logged > 35 {
		t.Errorf("%d log lines for 101 failures over %s", logged, 100*s.p.maxBackoff())
	}
	s.failStart = 0
	s.advance(s.p.maxBackoff())
	if len(s.starting()) != 1 {
		t.Fatal("not retried once forks work again")
	}
}

func TestSimStopDuringReload(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	res := s.reload()
	queued := s.reload()
	s.step(stopRequest{})
	for _, c := range []chan error{res, queued} {
		if err := reply(t, c); !errors.Is(err, ErrStopping) {
			t.Fatalf("reload during stop: %v", err)
		}
	}
	for _, pid := range s.livePIDs() {
		if !s.signalled(pid, unix.SIGTERM) {
			t.Fatalf("worker %d not stopped", pid)
		}
	}
	if s.sent[len(s.sent)-1] != "STATUS=stopping, 4 workers left" || !contains(s.sent, "STOPPING=1") {
		t.Fatalf("systemd told %q", s.sent)
	}
}

// A reload is over only once every old worker let go of the listeners,
// or was killed at its stop deadline.
func TestSimHandoverWaitsForTheListeners(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.StopTimeout = 5 * time.Second })
	s.readyAll()
	old := s.livePIDs()
	s.holding[old[0]] = true
	res := s.reload()
	s.readyAll()
	s.advance(4 * time.Second)
	noReply(t, res, "an old worker holds a listener")
	if st := s.status(); st.State != StateReloading || !strings.Contains(st.Summary, "retiring generation 1") {
		t.Fatalf("while handing over: %+v", st)
	}
	s.advance(time.Second) // the stop deadline: SIGKILL
	if !s.signalled(old[0], unix.SIGKILL) {
		t.Fatal("old worker not killed at its stop deadline")
	}
	s.exit(old[0])
	s.advance(handoverPoll)
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
}

// Notifications from processes that are not live workers change nothing.
func TestSimForeignNotifications(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1 })
	pid := s.starting()[0]
	before := fmt.Sprintf("%+v", s.status())
	for _, m := range []string{"READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=x", "SOCKD_REQUESTS=5"} {
		s.notify(pid+1000, m)
		s.step(notifyEvent{msg: notify.Message{PID: 7, Ancestors: []int{1}, Fields: map[string]string{"READY": "1"}}})
	}
	if after := fmt.Sprintf("%+v", s.status()); after != before {
		t.Fatalf("foreign messages changed the status:\n%s\n%s", before, after)
	}
	// A descendant of the worker is heard.
	s.step(notifyEvent{msg: notify.Message{PID: 9999, Ancestors: []int{4242, pid}, Fields: map[string]string{"READY": "1"}}})
	if s.status().Ready != 1 {
		t.Fatal("READY=1 from the worker's descendant ignored")
	}
}

// A ready worker silent for WorkerWatchdog is aborted and replaced; one
// that pings is left alone.
func TestSimWorkerWatchdog(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 2; o.WorkerWatchdog = time.Second })
	s.readyAll()
	quiet, pinging := s.livePIDs()[0], s.livePIDs()[1]
	for i := 0; i < 5; i++ {
		s.advance(500 * time.Millisecond)
		s.notify(pinging, "WATCHDOG=1")
	}
	if !s.signalled(quiet, unix.SIGABRT) || s.signalled(pinging, unix.SIGABRT) {
		t.Fatal("watchdog hit the wrong worker")
	}
	s.exit(quiet)
	if st := s.status(); st.Restarts != 1 || len(s.starting()) != 1 {
		t.Fatalf("silent worker not replaced: %+v", st)
	}
	// A worker that pings for long keeps one watchdog timer, not one
	// more per interval.
	w := s.p.st.byPID[pinging]
	for range 2000 {
		s.advance(500 * time.Millisecond)
		s.notify(pinging, "WATCHDOG=1")
	}
	if n := len(w.timers); n > 2 || s.signalled(pinging, unix.SIGABRT) {
		t.Fatalf("after 2,000 pings the worker holds %d timers", n)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// What is left of a worker's process group: killed at once after a crash;
// after a requested stop it drains until the stop deadline, unless it
// empties first.
func TestSimProcessGroups(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.StopTimeout = 10 * time.Second })
	pid := s.starting()[0]
	s.ready(pid)
	s.procs[pid].group = true
	s.exit(pid)
	if s.procs[pid].group {
		t.Fatal("a crashed worker's group was not killed at once")
	}
	if len(s.p.st.lingering) != 1 {
		t.Fatal("a killed group is not watched until it is empty")
	}
	s.advance(groupPoll)
	if len(s.p.st.lingering) != 0 {
		t.Fatal("a killed group that emptied is still watched")
	}
	pid = s.starting()[0]
	s.ready(pid)
	s.procs[pid].group = true
	s.step(stopRequest{})
	s.exit(pid)
	if !s.procs[pid].group || len(s.p.st.lingering) != 1 {
		t.Fatal("a stopped worker's group was not left to drain")
	}
	s.advance(5 * time.Second)
	if !s.procs[pid].group {
		t.Fatal("group killed before the stop deadline")
	}
	s.advance(5 * time.Second)
	if s.procs[pid].group {
		t.Fatal("group not killed at the stop deadline")
	}
	s.advance(groupPoll)
	if len(s.p.st.lingering) != 0 {
		t.Fatal("a killed group that emptied is still watched")
	}
}

func TestSimGroupThatEmptiesIsForgotten(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.StopTimeout = time.Minute })
	pid := s.starting()[0]
	s.ready(pid)
	s.procs[pid].group = true
	s.step(stopRequest{})
	s.exit(pid)
	s.procs[pid].group = false // its last member exited by itself
	s.advance(groupPoll)
	if len(s.p.st.lingering) != 0 {
		t.Fatal("an emptied group is still waited for")
	}
}

// --ready after:D: ready that long after the start, whatever it says.
func TestSimReadyAfter(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Ready = ReadyRule{After: 500 * time.Millisecond} })
	s.advance(499 * time.Millisecond)
	if s.status().Ready != 0 {
		t.Fatal("ready too early")
	}
	s.advance(time.Millisecond)
	if s.status().Ready != 2 || !s.p.st.announced {
		t.Fatalf("not ready after 500ms: %+v", s.status())
	}
}

func (s *sim) scale(n int, relative bool) (int, error) {
	reply := make(chan scaleReply, 1)
	s.step(scaleRequest{n: n, relative: relative, reply: reply})
	r := <-reply
	return r.target, r.err
}

func TestSimScaleShared(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	if n, err := s.scale(4, false); n != 4 || err != nil {
		t.Fatalf("scale 4: %d %v", n, err)
	}
	if st := s.status(); st.Size != 4 || st.Current != 4 || st.Ready != 2 || len(s.starting()) != 2 {
		t.Fatalf("scaling to 4: %+v", st)
	}
	s.readyAll()
	if st := s.status(); st.Ready != 4 || st.Summary != "4/4 workers ready, generation 1, 0 restarts" {
		t.Fatalf("after scaling to 4: %+v", st)
	}
	pids := s.livePIDs()
	if n, err := s.scale(-3, true); n != 1 || err != nil {
		t.Fatalf("scale -3: %d %v", n, err)
	}
	for i, pid := range pids {
		if got := s.signalled(pid, unix.SIGTERM); got != (s.p.st.byPID[pid].slot > 0) {
			t.Fatalf("slot %d's worker signalled: %v", i, got)
		}
	}
	s.exitStopped()
	if st := s.status(); st.Size != 1 || st.Current != 1 || st.Ready != 1 || len(st.Workers) != 1 {
		t.Fatalf("after scaling to 1: %+v", st)
	}
	for _, c := range []struct {
		n   int
		rel bool
	}{{0, false}, {-1, true}, {MaxWorkers + 1, false}, {MaxWorkers, true}} {
		if n, err := s.scale(c.n, c.rel); err == nil || n != 1 {
			t.Fatalf("scale(%d, %v): %d %v, want refused", c.n, c.rel, n, err)
		}
	}
}

// In reuseport mode a new slot's socket gets connections once its worker
// is ready; a retired slot's worker drains only once its socket's queue is
// empty, after the steering had time to take effect; a slot still
// draining is taken back by a scale-up.
func TestSimScaleReuseport(t *testing.T) {
	s := newSimMode(t, true, nil)
	s.readyAll()
	if s.steeredTo != 2 {
		t.Fatalf("steered to %d at start", s.steeredTo)
	}
	s.scale(4, false)
	if s.sockets != 4 || s.steeredTo != 2 {
		t.Fatalf("scaling up: %d sockets, steered to %d", s.sockets, s.steeredTo)
	}
	starting := s.starting()
	s.ready(starting[1]) // slot 3 first: not steered to before slot 2
	if s.steeredTo != 2 {
		t.Fatalf("steered to %d with slot 2 not ready", s.steeredTo)
	}
	s.ready(starting[0])
	if s.steeredTo != 4 {
		t.Fatalf("steered to %d with all 4 ready", s.steeredTo)
	}
	w3 := s.p.st.slots[3].cur.pid
	w2 := s.p.st.slots[2].cur.pid
	s.queue[2] = 5
	s.scale(2, false)
	if s.steeredTo != 2 || s.signalled(w2, unix.SIGTERM) || s.signalled(w3, unix.SIGTERM) {
		t.Fatal("scale-down retired workers before steering away and draining")
	}
	if st := s.status(); st.Size != 2 || st.Current != 4 || !strings.Contains(st.Summary, "2 retired workers draining") {
		t.Fatalf("while draining: %+v", st)
	}
	s.advance(parkDwell)
	if s.signalled(w2, unix.SIGTERM) || !s.signalled(w3, unix.SIGTERM) {
		t.Fatal("after the dwell: the empty queue's worker should drain, the full one's not")
	}
	s.scale(3, false) // slot 2 is still draining: taken back
	if len(s.starting()) != 0 || s.p.st.slots[2].cur.pid != w2 || s.steeredTo != 3 {
		t.Fatalf("scale-up did not take the draining slot back: starting %v", s.starting())
	}
	s.scale(2, false)
	s.queue[2] = 0
	s.advance(parkDwell)
	if !s.signalled(w2, unix.SIGTERM) {
		t.Fatal("drained slot not retired")
	}
	// A queue that never drains (a hung worker) is given up on after the
	// stop timeout.
	s.exitStopped()
	s.scale(3, false)
	s.readyAll()
	w := s.p.st.slots[2].cur.pid
	s.queue[2] = 1
	s.scale(2, false)
	s.advance(DefaultStopTimeout)
	if !s.signalled(w, unix.SIGTERM) {
		t.Fatal("a slot whose queue never drains was never retired")
	}
}

// A scale request during a reload applies once the reload is over.
func TestSimScaleDuringReload(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	res := s.reload()
	if n, err := s.scale(+1, true); n != 3 || err != nil {
		t.Fatalf("scale during reload: %d %v", n, err)
	}
	if st := s.status(); st.Size != 3 || len(s.p.st.slots) != 2 {
		t.Fatalf("target during the reload: %+v", st)
	}
	if n, _ := s.scale(+1, true); n != 4 {
		t.Fatalf("second relative scale during the reload: %d, want 4", n)
	}
	s.readyAll()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); len(s.p.st.slots) != 4 || st.Generation != 2 {
		t.Fatalf("after the reload: %d slots, %+v", len(s.p.st.slots), st)
	}
	for _, pid := range s.starting() {
		if s.p.st.byPID[pid].gen != 2 {
			t.Fatal("a slot added after the reload runs the old generation")
		}
	}
	s.step(stopRequest{})
	if _, err := s.scale(5, false); !errors.Is(err, ErrStopping) {
		t.Fatalf("scale while stopping: %v", err)
	}
}

func (s *sim) usageOf(rss map[int]int64) {
	got := map[int]procfs.Usage{}
	for pid, b := range rss {
		got[pid] = procfs.Usage{RSS: b, Procs: 1}
	}
	s.step(usageEvent{got})
}

// A worker over MaxMemory is replaced, its replacement first, one slot
// at a time, without counting a crash.
func TestSimRecycleMemory(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 3; o.Recycle.MaxMemory = 100 << 20 })
	s.readyAll()
	pids := s.livePIDs()
	s.usageOf(map[int]int64{pids[0]: 200 << 20, pids[1]: 150 << 20, pids[2]: 50 << 20})
	repl := s.starting()
	if len(repl) != 1 || s.p.st.byPID[repl[0]].slot != 0 {
		t.Fatalf("recycling: %v starting, want one replacement of slot 0", repl)
	}
	if s.signalled(pids[0], unix.SIGTERM) {
		t.Fatal("the bloated worker was stopped before its replacement was ready")
	}
	if w := s.status().Workers; w[0].Recycle == "" || !strings.Contains(w[0].Recycle, "200.0 MiB of memory (limit 100.0 MiB)") {
		t.Fatalf("status does not say why: %+v", w[0])
	}
	s.ready(repl[0])
	if !s.signalled(pids[0], unix.SIGTERM) {
		t.Fatal("the bloated worker was not stopped once its replacement was ready")
	}
	next := s.starting()
	if len(next) != 1 || s.p.st.byPID[next[0]].slot != 1 {
		t.Fatalf("second bloated worker: %v starting", next)
	}
	s.ready(next[0])
	s.exitStopped()
	if st := s.status(); st.Restarts != 0 || st.Recycles != 2 || st.Ready != 3 || len(st.Workers) != 3 {
		t.Fatalf("after recycling: %+v", st)
	}
}

// MaxRequests with a jitter gives every worker its own limit within N±J.
func TestSimRecycleRequestsStaggered(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 4; o.Recycle.MaxRequests = Jitter{N: 1000, J: 200} })
	s.readyAll()
	limits := map[int64]bool{}
	for _, pid := range s.livePIDs() {
		m := s.p.st.byPID[pid].maxRequests
		if m < 800 || m > 1200 {
			t.Fatalf("limit %d outside 1000±200", m)
		}
		limits[m] = true
	}
	if len(limits) < 3 {
		t.Fatalf("limits %v: not staggered", limits)
	}
	pid := s.livePIDs()[0]
	limit := s.p.st.byPID[pid].maxRequests
	s.notify(pid, fmt.Sprintf("SOCKD_REQUESTS=%d", limit-1))
	if len(s.starting()) != 0 {
		t.Fatal("recycled below its limit")
	}
	s.notify(pid, fmt.Sprintf("SOCKD_REQUESTS=%d", limit))
	if len(s.starting()) != 1 {
		t.Fatal("not recycled at its limit")
	}
}

func TestSimRecycleAge(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.Recycle.MaxAge = DurationJitter{D: time.Hour} })
	pid := s.starting()[0]
	s.ready(pid)
	s.advance(time.Hour - time.Second)
	if len(s.starting()) != 0 {
		t.Fatal("recycled before its age limit")
	}
	s.advance(time.Second)
	if len(s.starting()) != 1 {
		t.Fatal("not recycled at its age limit")
	}
}

// A replacement that fails leaves the worker serving; the slot tries
// again with backoff, and no crash is counted, however often it fails.
func TestSimRecycleReplacementFails(t *testing.T) {
	s := newSim(t, func(o *simOpts) {
		o.Workers = 1
		o.Recycle.MaxMemory = 1
		o.RestartLimit = RestartLimit{2, time.Minute}
	})
	pid := s.starting()[0]
	s.ready(pid)
	s.usageOf(map[int]int64{pid: 2})
	for i := 0; i < 20; i++ {
		repl := s.starting()
		if len(repl) != 1 {
			t.Fatalf("round %d: no replacement started", i)
		}
		s.exit(repl[0])
		if len(s.starting()) != 0 {
			t.Fatalf("round %d: retried at once", i)
		}
		s.advance(s.p.maxBackoff())
	}
	if s.p.st.fatal != nil || s.signalled(pid, unix.SIGTERM) || s.status().Restarts != 0 || s.status().Ready != 1 {
		t.Fatalf("after 20 failed replacements: %v, %+v", s.p.st.fatal, s.status())
	}
}

// A reload replaces every worker anyway: recycling waits, and a recycle
// under way gives way.
func TestSimRecycleAndReload(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Recycle.MaxMemory = 1 })
	s.readyAll()
	pids := s.livePIDs()
	s.usageOf(map[int]int64{pids[0]: 2})
	recycling := s.starting()[0]
	res := s.reload()
	if !s.signalled(recycling, unix.SIGTERM) || len(s.starting()) != 2 {
		t.Fatal("the reload did not take the recycled slot over")
	}
	s.usageOf(map[int]int64{pids[1]: 2})
	if len(s.starting()) != 2 {
		t.Fatal("recycling during a reload")
	}
	s.readyAll()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
}

func TestParseRecycleLimits(t *testing.T) {
	for in, want := range map[string]Jitter{"1000": {1000, 0}, "1000±100": {1000, 100}, "1000+-1000": {1000, 1000}, "0": {0, 0}} {
		if got, err := ParseJitter(in); err != nil || got != want {
			t.Errorf("ParseJitter(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "10±20", "10±-1", "10±", "1e3"} {
		if _, err := ParseJitter(bad); err == nil {
			t.Errorf("ParseJitter(%q) accepted", bad)
		}
	}
	for in, want := range map[string]DurationJitter{"6h": {6 * time.Hour, 0}, "6h±30m": {6 * time.Hour, 30 * time.Minute}} {
		if got, err := ParseDurationJitter(in); err != nil || got != want {
			t.Errorf("ParseDurationJitter(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "6", "1h±2h", "-1h"} {
		if _, err := ParseDurationJitter(bad); err == nil {
			t.Errorf("ParseDurationJitter(%q) accepted", bad)
		}
	}
}

// A group that SIGKILL does not empty (a process stuck in the kernel) is
// waited for StopTimeout, then given up on: the pool still stops.
func TestSimStuckGroupIsGivenUp(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 1; o.StopTimeout = 2 * time.Second })
	pid := s.starting()[0]
	s.ready(pid)
	s.procs[pid].group, s.procs[pid].stuck = true, true
	s.step(stopRequest{})
	s.exit(pid)
	s.advance(2 * time.Second) // the stop deadline: killed, in vain
	s.advance(2*time.Second - groupPoll)
	if len(s.p.st.lingering) != 1 {
		t.Fatal("stopped waiting before StopTimeout")
	}
	s.advance(2 * groupPoll)
	if len(s.p.st.lingering) != 0 {
		t.Fatal("a stuck group is waited for forever")
	}
}

// With LowStart, a worker that starts while others serve starts at a
// low CPU priority and gets its normal one back once ready, once asked
// to stop, or once half its ReadyTimeout has passed; the first
// generation (nobody serves yet) starts as usual, and so does every
// worker where sockd may not give the priority back.
func TestSimLowStart(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.LowStart = true; o.ReadyTimeout = 10 * time.Second })
	first := s.starting()
	for _, pid := range first {
		if s.procs[pid].low {
			t.Fatalf("worker %d of the first generation started low: nobody serves beside it", pid)
		}
	}
	s.ready(first...)
	for _, pid := range first {
		if n := s.procs[pid].raised; n != 0 {
			t.Fatalf("worker %d, never low, was restored %d times", pid, n)
		}
	}

	// A reload's workers start low; READY=1 restores each, once.
	s.reload()
	gen2 := s.starting()
	if len(gen2) != 2 {
		t.Fatalf("reload started %v", gen2)
	}
	for _, pid := range gen2 {
		if !s.procs[pid].low {
			t.Fatalf("worker %d of the reload did not start low", pid)
		}
	}
	s.ready(gen2[0])
	if pr := s.procs[gen2[0]]; pr.low || pr.raised != 1 {
		t.Fatalf("ready worker: low %v, restored %d times", pr.low, pr.raised)
	}
	if !s.procs[gen2[1]].low {
		t.Fatal("the other worker, not ready, was restored")
	}
	// Still starting at half its ReadyTimeout: restored then (not a
	// moment before), and not again at READY.
	s.advance(raiseAgain - time.Nanosecond)
	if n := s.procs[gen2[0]].raised; n != 1 {
		t.Fatalf("ready worker restored %d times before the second pass", n)
	}
	// A second pass a moment later, for a thread whose clone was under
	// way during the first; not a third.
	s.advance(time.Nanosecond)
	if n := s.procs[gen2[0]].raised; n != 2 {
		t.Fatalf("ready worker restored %d times after the second pass, want 2", n)
	}
	s.advance(5*time.Second - raiseAgain - time.Nanosecond)
	if n := s.procs[gen2[0]].raised; n != 2 {
		t.Fatalf("ready worker restored %d times, want 2", n)
	}
	if !s.procs[gen2[1]].low {
		t.Fatal("restored before half its ReadyTimeout")
	}
	s.advance(time.Nanosecond)
	if pr := s.procs[gen2[1]]; pr.low || pr.raised != 1 {
		t.Fatalf("worker starting for half its ReadyTimeout: low %v, restored %d times", pr.low, pr.raised)
	}
	s.ready(gen2[1])
	if n := s.procs[gen2[1]].raised; n != 1 {
		t.Fatalf("restored %d times", n)
	}
	s.exitStopped()

	// A crash replacement beside a serving worker starts low; asked to
	// stop before it is ready (the pool stops), it is restored first.
	victim := s.livePIDs()[0]
	s.exit(victim)
	repl := s.starting()
	if len(repl) != 1 || !s.procs[repl[0]].low {
		t.Fatalf("crash replacement %v did not start low", repl)
	}
	s.step(stopRequest{})
	if pr := s.procs[repl[0]]; pr.low || pr.raised != 1 {
		t.Fatalf("stopped while starting: low %v, restored %d times", pr.low, pr.raised)
	}

	// Where sockd may not restore a worker, none starts low.
	s = newSim(t, func(o *simOpts) { o.LowStart = true })
	s.noLow = true
	s.readyAll()
	s.reload()
	for _, pid := range s.starting() {
		if s.procs[pid].low {
			t.Fatalf("worker %d started low though sockd may not restore it", pid)
		}
	}
}

// A reload while the first generation is not ready yet, which fails: no
// worker of the previous generation was serving, and the error says so
// (it starts again) instead of saying that it keeps serving.
func TestSimFailedReloadOfAnUnservedGeneration(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.ReloadTimeout = 20 * time.Second })
	first := s.starting()
	res := s.reload()
	var second []int
	for _, pid := range s.starting() {
		if !slices.Contains(first, pid) {
			second = append(second, pid)
		}
	}
	for _, pid := range second {
		s.exit(pid)
	}
	s.exitStopped()
	s.advance(time.Minute)
	err := reply(t, res)
	var re *ReloadError
	if !errors.As(err, &re) || !re.Unserved || !strings.Contains(err.Error(), "no worker of generation 1 was ready: it starts again") {
		t.Fatalf("reload error %v (%+v), want an unserved generation", err, re)
	}
}
