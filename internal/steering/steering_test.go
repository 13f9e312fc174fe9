package steering

import (
	"context"
	"math"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/worker/workertest"
)

// stallAndResume stalls worker w2 of four with stall (and resumes it with
// resume) under about 1,000 connections a second, and checks: w2 is
// excluded; while it is, every new connection is answered by the others;
// once it took its queue it is readmitted and answers again.
func stallAndResume(t *testing.T, stall, resume func(p *proc), wantState byte) {
	p := newPool(t, 4, Options{Logger: testLogger(t)})
	addr := p.l.Addr
	if who := ask(t, addr, 100); len(who) != 4 {
		t.Fatalf("before the stall, answers from %v, want all four", who)
	}
	w2 := p.procs["w2"]
	stall(w2)
	workertest.Eventually(t, 5*time.Second, "w2's state", func() bool { return w2.state(t) == wantState })
	stop, done := make(chan struct{}), make(chan int, 1)
	start := time.Now()
	go knock(addr, stop, done)
	p.waitReason(t, "w2", ReasonStalled)
	close(stop)
	t.Logf("w2 excluded %v after the traffic started (%d connections meanwhile)", time.Since(start).Round(time.Millisecond), <-done)
	// Every connection is answered, so none went to w2 (its queue is
	// not taken from): answers come from the others only.
	if who := ask(t, addr, 300); who["w2"] != 0 {
		t.Fatalf("while w2 is stalled, answers from %v", who)
	}
	if p.reason("w2") != ReasonStalled {
		t.Fatal("w2 was readmitted while stalled")
	}
	resume(w2)
	p.waitReason(t, "w2", ReasonReady)
	if who := ask(t, addr, 300); who["w2"] == 0 {
		t.Fatalf("after w2 resumed, answers from %v", who)
	}
	// On a loaded machine a healthy worker not scheduled for StallAfter
	// is excluded too, briefly: counted, not failed.
	t.Logf("stall decisions: %d", p.s.Stats().Decisions[ReasonStalled])
}

// A stopped worker (SIGSTOP, process state T) loses its new connections
// and gets them back after SIGCONT.
func TestStoppedWorkerIsExcluded(t *testing.T) {
	stallAndResume(t,
		func(p *proc) { p.signal(t, syscall.SIGSTOP) },
		func(p *proc) { p.signal(t, syscall.SIGCONT) }, 'T')
}

// A worker whose loop burns CPU and never gets to accept (running, as
// /proc sees it) loses its new connections the same way.
func TestBusyLoopWorkerIsExcluded(t *testing.T) {
	stallAndResume(t,
		func(p *proc) { p.signal(t, syscall.SIGUSR1) },
		func(p *proc) { p.signal(t, syscall.SIGUSR2) }, 'R')
}

// Saturation: every worker busy, every queue growing: nobody is excluded,
// sample after sample.
func TestSaturationExcludesNone(t *testing.T) {
	p := newPool(t, 4, Options{Logger: testLogger(t)})
	for _, w := range p.procs {
		w.signal(t, syscall.SIGUSR1)
	}
	for _, w := range p.procs {
		workertest.Eventually(t, 5*time.Second, "burning", func() bool { return w.state(t) == 'R' })
	}
	stop, done := make(chan struct{}), make(chan int, 1)
	go knock(p.l.Addr, stop, done)
	// Saturation begins once a connection waits on every socket: before,
	// a busy worker beside an empty queue looks like one stall among
	// healthy peers (a pause of the knocking could show it).
	workertest.Eventually(t, 5*time.Second, "a connection queued on every socket", func() bool {
		for _, name := range []string{"w0", "w1", "w2", "w3"} {
			k, _ := p.s.Index(name)
			if d, _, _ := p.l.Queue(k); d == 0 {
				return false
			}
		}
		return true
	})
	before := map[string]Reason{}
	st := p.s.Stats()
	for _, w := range st.Workers {
		before[w.Worker] = w.Reason
	}
	d0, s0 := st.Decisions[ReasonStalled], st.Samples
	workertest.Eventually(t, 10*time.Second, "50 samples", func() bool {
		st := p.s.Stats()
		for _, w := range st.Workers {
			if w.Reason != before[w.Worker] {
				t.Fatalf("under saturation, %+v (before: %s)", w, before[w.Worker])
			}
		}
		return st.Samples >= s0+50
	})
	close(stop)
	t.Logf("%d connections, none taken, %d excluded before saturation, none since", <-done, d0)
	if n := p.s.Stats().Decisions[ReasonStalled]; n != d0 {
		t.Fatalf("%d stall decisions under saturation", n-d0)
	}
}

// A starting worker takes no connection before it is ready, even though
// it accepts from its first instant; then it gets its share.
func TestNoConnectionBeforeReady(t *testing.T) {
	p := newPool(t, 2, Options{Logger: testLogger(t)})
	p.start(t, "cold", "w1", false)
	if who := ask(t, p.l.Addr, 300); who["cold"] != 0 {
		t.Fatalf("before READY=1: answers %v", who)
	}
	p.s.Ready("cold")
	if who := ask(t, p.l.Addr, 300); who["cold"] == 0 || who["w1"] != 0 {
		t.Fatalf("after READY=1 (no slow start: it takes w1's whole share at once): answers %v", who)
	}
}

// A leaving worker gets no new connection; it is drained once Dwell has
// passed with nothing queued.
func TestLeavingAndDrained(t *testing.T) {
	p := newPool(t, 3, Options{Logger: testLogger(t), Dwell: 50 * time.Millisecond})
	p.s.Leave("w1")
	if who := ask(t, p.l.Addr, 300); who["w1"] != 0 {
		t.Fatalf("answers %v after w1 left", who)
	}
	workertest.Eventually(t, 5*time.Second, "w1 drained", func() bool { return p.s.Drained("w1") })
	if p.s.Drained("w0") {
		t.Fatal("a serving worker is drained")
	}
}

// A worker that dies with connections queued on its socket: the next
// worker gets that socket and answers them.
func TestQueuedConnectionsOfADeadWorker(t *testing.T) {
	p := newPool(t, 2, Options{Logger: testLogger(t)})
	w1 := p.procs["w1"]
	w1.signal(t, syscall.SIGSTOP)
	k, _ := p.s.Index("w1")
	stop, done := make(chan struct{}), make(chan int, 1)
	go knock(p.l.Addr, stop, done)
	workertest.Eventually(t, 5*time.Second, "connections queued on w1", func() bool { d, _, _ := p.l.Queue(k); return d >= 3 })
	close(stop)
	<-done
	w1.kill()
	p.s.Exited("w1")
	if got := p.start(t, "w1b", "", true); got != k {
		t.Fatalf("the new worker got socket %d, want %d (connections wait there)", got, k)
	}
	workertest.Eventually(t, 5*time.Second, "w1's queue taken", func() bool { d, _, _ := p.l.Queue(k); return d == 0 })
}

// The sampler stops when nothing waits: no sample is taken while idle; a
// connection that waits wakes it.
func TestIdleStopsSampling(t *testing.T) {
	p := newPool(t, 2, Options{Logger: testLogger(t), Quiet: 100 * time.Millisecond})
	p.procs["w0"].signal(t, syscall.SIGSTOP)
	p.procs["w1"].signal(t, syscall.SIGSTOP)
	c, err := net.Dial("tcp", p.l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	workertest.Eventually(t, 5*time.Second, "sampling", func() bool { return p.s.Stats().Samples > 0 })
	p.procs["w0"].signal(t, syscall.SIGCONT)
	p.procs["w1"].signal(t, syscall.SIGCONT)
	workertest.Eventually(t, 5*time.Second, "sampling stopped", func() bool { return !p.s.Stats().Sampling })
	n := p.s.Stats().Samples
	<-time.After(20 * DefaultPeriod)
	if m := p.s.Stats().Samples; m != n {
		t.Fatalf("%d samples while idle", m-n)
	}
	p.procs["w0"].signal(t, syscall.SIGSTOP)
	p.procs["w1"].signal(t, syscall.SIGSTOP)
	c2, err := net.Dial("tcp", p.l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	workertest.Eventually(t, 5*time.Second, "sampling again", func() bool { return p.s.Stats().Samples > n })
}

// Slow start over real sockets: a replacement's share of new connections
// follows the ramp (10 % at once, linear to its whole share over
// SlowStart) while the worker it replaces keeps the rest; both
// measured on a fake clock at five points of the ramp.
func TestSlowStartShareFollowsRamp(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0).Add(-time.Hour) // the pool's workers ramped long ago
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	// Stall detection is off: under a CPU hog a worker's queue can wait
	// past StallAfter, which would (rightly) move its share to the other.
	p := newPool(t, 2, Options{Logger: testLogger(t), SlowStart: 10 * time.Second, Now: clock, StallAfter: time.Hour})
	mu.Lock()
	now = time.Unix(1000, 0)
	mu.Unlock()
	p.start(t, "new", "w1", false)
	end := p.s.Ready("new")
	if want := clock().Add(10 * time.Second); !end.Equal(want) {
		t.Fatalf("ramp ends %v, want %v", end, want)
	}
	for _, at := range []time.Duration{0, 2500 * time.Millisecond, 5 * time.Second, 7500 * time.Millisecond, 10 * time.Second} {
		mu.Lock()
		now = time.Unix(1000, 0).Add(at)
		mu.Unlock()
		p.s.mu.Lock()
		p.s.update(clock())
		p.s.mu.Unlock()
		want := max(0.1, at.Seconds()/10) / 2 // of the two slots' connections
		var share float64
		for _, w := range p.s.Stats().Workers {
			if w.Worker == "new" {
				share = w.Share
			}
		}
		if math.Abs(share-want) > 0.011 {
			t.Fatalf("at %v of the ramp the program gives the new worker %.3f, want %.3f", at, share, want)
		}
		who := ask(t, p.l.Addr, 400)
		got := float64(who["new"]) / 400
		t.Logf("at %4v: share %.3f, connections %v", at, share, who)
		if math.Abs(got-want) > 0.1 {
			t.Fatalf("at %v: the new worker answered %.2f of the connections, want about %.2f", at, got, want)
		}
	}
}

// A ramp steps with no traffic at all: the idle sampler, blocked for
// ever before the worker was ready, is kicked and wakes for each step.
func TestRampStepsWhileIdle(t *testing.T) {
	p := newPool(t, 1, Options{Logger: testLogger(t), SlowStart: 500 * time.Millisecond})
	share := func(name string) float64 {
		for _, w := range p.s.Stats().Workers {
			if w.Worker == name {
				return w.Share
			}
		}
		return -1
	}
	workertest.Eventually(t, 5*time.Second, "w0's own ramp over", func() bool { return share("w0") == 1 && !p.s.Stats().Sampling })
	p.start(t, "new", "w0", false)
	before := p.s.Stats().Samples
	if end := p.s.Ready("new"); end.IsZero() {
		t.Fatal("no ramp")
	}
	workertest.Eventually(t, 5*time.Second, "the new worker's whole share, with no connection", func() bool { return share("new") == 1 })
	if n := p.s.Stats().Samples - before; n != 0 {
		t.Fatalf("%d queue samples without traffic", n)
	}
}

// Options.StallAfter reaches the detector: with an hour, a stopped
// worker whose queue waits for 50 samples beside a healthy one is not
// excluded (with the default 60 ms it would be after a few).
func TestStallAfterIsHonoured(t *testing.T) {
	p := newPool(t, 2, Options{Logger: testLogger(t), StallAfter: time.Hour})
	p.procs["w1"].signal(t, syscall.SIGSTOP)
	k, _ := p.s.Index("w1")
	stop, done := make(chan struct{}), make(chan int, 1)
	go knock(p.l.Addr, stop, done)
	defer func() { close(stop); <-done }()
	workertest.Eventually(t, 5*time.Second, "connections queued on w1", func() bool { d, _, _ := p.l.Queue(k); return d >= 1 })
	s0 := p.s.Stats().Samples
	workertest.Eventually(t, 10*time.Second, "50 samples with w1's queue waiting", func() bool {
		if r := p.reason("w1"); r != ReasonReady {
			t.Fatalf("w1 excluded (%s) although StallAfter is an hour", r)
		}
		return p.s.Stats().Samples >= s0+50
	})
}

// Sockets back from systemd's fd store after a restart: the old sockd's
// program steered connections to some of them, which now wait there with
// no worker. A new worker gets such a socket first, not the first free one,
// so that nothing waits on a socket nobody is given. (Here the group has no
// program yet and the kernel hashed the connections over every socket;
// socket 0's queue is then taken by hand.)
func TestAssignPrefersAFreeSocketWithQueuedConnections(t *testing.T) {
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "web", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{ReusePort: true, Slots: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	l := set[0]
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 60 {
		c, err := net.Dial("tcp", l.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	depth := func(k int) int { d, _, _ := l.Queue(k); return d }
	workertest.Eventually(t, 5*time.Second, "60 connections queued over the 3 sockets", func() bool { return depth(0)+depth(1)+depth(2) == 60 })
	for {
		nfd, _, err := unix.Accept4(l.FD(0), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			break
		}
		unix.Close(nfd)
	}
	if depth(0) != 0 || depth(1)+depth(2) == 0 {
		t.Fatalf("queues %d %d %d", depth(0), depth(1), depth(2))
	}
	s, err := New(set, Options{Logger: testLogger(t), Probe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, err := s.Assign("w0", "")
	if err != nil {
		t.Fatal(err)
	}
	if depth(k) == 0 {
		t.Fatalf("w0 got socket %d, whose queue is empty (queues %d %d %d)", k, depth(0), depth(1), depth(2))
	}
}
