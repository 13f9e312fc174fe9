package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/pool"
)

// The daemon's machine on a fake world: every transition of its phase
// and every awkward timing, with no fork and no waiting. Work the machine
// starts off its loop (an upgrade's hand-off, a takeover) waits in tasks
// until the test runs it, and what that work posts waits in posted until
// the test delivers it: the test decides every interleaving.

type fakeEnv struct {
	t       *testing.T
	m       *machine
	tasks   []func()
	posted  []request
	sent    []string // to systemd, while talking
	talking bool
	serving bool // the control socket
	charged bool // takeCharge
	over    bool // handedOver
	stops   int  // stopSuccessor
	counts  map[string]int
	// The new sockd of an upgrade: startErr fails its start.
	succ     *fakeSuccessor
	startErr error
	pred     *fakePredecessor
}

type fakeSuccessor struct {
	readyErr, commitErr error
	committed, aborted  bool
}

func (s *fakeSuccessor) PID() int { return 4242 }
func (s *fakeSuccessor) WaitReady(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		s.aborted = true
		return fmt.Errorf("new sockd not ready in time: %w", err)
	}
	if s.readyErr != nil {
		s.aborted = true
	}
	return s.readyErr
}
func (s *fakeSuccessor) Commit() error {
	if s.commitErr == nil {
		s.committed = true
	}
	return s.commitErr
}
func (s *fakeSuccessor) Abort(time.Duration) { s.aborted = true }

type fakePredecessor struct {
	readyErr, commitErr error
	readied, closed     bool
}

func (p *fakePredecessor) Ready() error                     { p.readied = true; return p.readyErr }
func (p *fakePredecessor) WaitCommit(context.Context) error { return p.commitErr }
func (p *fakePredecessor) Close()                           { p.closed = true }

func (e *fakeEnv) async(f func())           { e.tasks = append(e.tasks, f) }
func (e *fakeEnv) post(r request) bool      { e.posted = append(e.posted, r); return true }
func (e *fakeEnv) predecessor() predecessor { return e.pred }
func (e *fakeEnv) notify(state string) {
	if e.talking {
		e.sent = append(e.sent, state)
	}
}
func (e *fakeEnv) lastWord(state string)      { e.notify(state); e.talking = false }
func (e *fakeEnv) resumeTalking(state string) { e.talking = true; e.notify(state) }
func (e *fakeEnv) takeCharge()                { e.charged, e.talking, e.serving = true, true, true }
func (e *fakeEnv) serveControl()              { e.serving = true }
func (e *fakeEnv) stopControl()               { e.serving = false }
func (e *fakeEnv) handedOver()                { e.over = true }
func (e *fakeEnv) stopSuccessor()             { e.stops++ }
func (e *fakeEnv) counted(what, result string) {
	e.counts[what+" "+result]++
}
func (e *fakeEnv) startSuccessor(s pool.Status) (successor, error) {
	if e.startErr != nil {
		return nil, e.startErr
	}
	return e.succ, nil
}

type fakePool struct {
	state         string
	ready, done   chan struct{}
	stopped       bool
	reloadTimeout time.Duration
}

func (p *fakePool) Status(context.Context) (pool.Status, error) {
	return pool.Status{State: p.state, Generation: 3, Size: 2}, nil
}
func (p *fakePool) Ready() <-chan struct{} { return p.ready }
func (p *fakePool) Done() <-chan struct{}  { return p.done }
func (p *fakePool) Stop()                  { p.stopped = true }
func (p *fakePool) Config() pool.Config    { return pool.Config{ReloadTimeout: p.reloadTimeout} }

// newMachine makes a machine in phase ph, begun.
func newMachine(t *testing.T, ph phase) (*machine, *fakeEnv, *fakePool) {
	t.Helper()
	e := &fakeEnv{t: t, counts: map[string]int{}, succ: &fakeSuccessor{}, pred: &fakePredecessor{}, talking: ph != phaseTakingOver}
	p := &fakePool{state: pool.StateRunning, ready: make(chan struct{}), done: make(chan struct{}), reloadTimeout: time.Second}
	m := &machine{env: e, pool: p, phase: ph, log: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testLog{t}})}
	e.m = m
	m.begin()
	return m, e, p
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// runTasks runs the work started off the loop, in order; deliver applies
// what it posted. settle does both until nothing is left.
func (e *fakeEnv) runTasks() {
	for len(e.tasks) > 0 {
		f := e.tasks[0]
		e.tasks = e.tasks[1:]
		f()
	}
}

func (e *fakeEnv) deliver() {
	for len(e.posted) > 0 {
		r := e.posted[0]
		e.posted = e.posted[1:]
		r.apply(e.m)
	}
}

func (e *fakeEnv) settle() {
	for len(e.tasks) > 0 || len(e.posted) > 0 {
		e.runTasks()
		e.deliver()
	}
}

func reload(m *machine) error {
	reply := make(chan error, 1)
	reloadRequest{reply}.apply(m)
	return <-reply
}

// upgrade asks for an upgrade that waits for its outcome; the reply
// channel answers once upgradeDone is delivered.
func upgrade(m *machine) chan error {
	reply := make(chan error, 1)
	upgradeRequest{ctx: context.Background(), wait: true, reply: reply}.apply(m)
	return reply
}

func answer(t *testing.T, c chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	default:
		t.Fatal("no answer")
		return nil
	}
}

func wantPhase(t *testing.T, m *machine, want phase) {
	t.Helper()
	if m.phase != want {
		t.Fatalf("phase %s, want %s", m.phase, want)
	}
}

// A reload is accepted only while sockd is running, in charge and not
// upgrading; refused ones are counted.
func TestMachineReloadOnlyWhileRunning(t *testing.T) {
	cases := []struct {
		phase phase
		want  error
		msg   string
	}{
		{phaseRunning, nil, ""},
		{phaseUpgrading, ErrRefused, "sockd is upgrading"},
		{phaseTakingOver, ErrRefused, "sockd is taking over"},
		{phaseHandedOff, ErrRefused, "handed over"},
		{phaseStopping, pool.ErrStopping, ""},
		{phaseAbandoned, pool.ErrStopping, ""},
	}
	for _, c := range cases {
		t.Run(c.phase.String(), func(t *testing.T) {
			m, e, _ := newMachine(t, c.phase)
			err := reload(m)
			if !errors.Is(err, c.want) && !(c.want == nil && err == nil) || c.msg != "" && !strings.Contains(fmt.Sprint(err), c.msg) {
				t.Fatalf("reload in %s: %v, want %v (%q)", c.phase, err, c.want, c.msg)
			}
			if c.want == nil && m.reloads != 1 {
				t.Fatalf("reloads %d, want 1", m.reloads)
			}
			if c.want == ErrRefused && e.counts["reload refused"] != 1 {
				t.Fatalf("refusal not counted: %v", e.counts)
			}
		})
	}
}

// The whole hand-off: upgrading while the new sockd starts, then it is
// made systemd's main pid (the last thing this sockd says), committed,
// and this sockd drains without the control socket, leaving its files.
func TestMachineUpgradeHandsOver(t *testing.T) {
	m, e, p := newMachine(t, phaseRunning)
	reply := upgrade(m)
	wantPhase(t, m, phaseUpgrading)
	if len(e.tasks) != 1 {
		t.Fatalf("%d tasks started, want the hand-off", len(e.tasks))
	}
	e.settle()
	if err := answer(t, reply); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	wantPhase(t, m, phaseHandedOff)
	if !e.succ.committed || !p.stopped || e.serving || e.talking || m.phase.inCharge() || !e.over {
		t.Fatalf("after the hand-off: committed %v, pool stopped %v, serving %v, talking %v", e.succ.committed, p.stopped, e.serving, e.talking)
	}
	if last := e.sent[len(e.sent)-1]; !strings.HasPrefix(last, "MAINPID=4242\n") {
		t.Fatalf("last word to systemd %q", last)
	}
	if e.counts["upgrade done"] != 1 || e.stops != 0 {
		t.Fatalf("counts %v, stops passed on %d", e.counts, e.stops)
	}
	if err := reload(m); !errors.Is(err, ErrRefused) {
		t.Fatalf("reload after the hand-off: %v", err)
	}
}

// An upgrade without --wait is answered at once; its outcome is logged.
func TestMachineUpgradeWithoutWait(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	reply := make(chan error, 1)
	upgradeRequest{ctx: context.Background(), reply: reply}.apply(m)
	if err := answer(t, reply); err != nil {
		t.Fatalf("accepted upgrade answered %v", err)
	}
	e.settle()
	wantPhase(t, m, phaseHandedOff)
}

// Never two upgrades at once, never an upgrade during a reload nor a
// reload during an upgrade: each is refused and counted.
func TestMachineUpgradeExclusions(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	if err := reload(m); err != nil {
		t.Fatal(err)
	}
	if err := answer(t, upgrade(m)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "reloading") {
		t.Fatalf("upgrade during a reload: %v", err)
	}
	reloadDone{}.apply(m)
	first := upgrade(m)
	if err := answer(t, upgrade(m)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second upgrade: %v", err)
	}
	if err := reload(m); !errors.Is(err, ErrRefused) {
		t.Fatalf("reload during the upgrade: %v", err)
	}
	if e.counts["upgrade refused"] != 2 || e.counts["reload refused"] != 1 {
		t.Fatalf("counts %v", e.counts)
	}
	e.settle()
	if err := answer(t, first); err != nil {
		t.Fatalf("the first upgrade: %v", err)
	}
}

// The new sockd fails to start, or before it is ready: this sockd keeps
// serving, systemd's status says why, and reloads work again.
func TestMachineUpgradeFailsBeforeCommit(t *testing.T) {
	for _, c := range []struct {
		name     string
		startErr error
		readyErr error
	}{
		{"start", errors.New("fork/exec /usr/bin/sockd: exec format error"), nil},
		{"ready", nil, errors.New("new sockd exited before it was ready (exit status 2)")},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, e, p := newMachine(t, phaseRunning)
			e.startErr, e.succ.readyErr = c.startErr, c.readyErr
			reply := upgrade(m)
			e.settle()
			err := answer(t, reply)
			if err == nil || !strings.Contains(err.Error(), "old sockd keeps serving") {
				t.Fatalf("upgrade: %v", err)
			}
			wantPhase(t, m, phaseRunning)
			if p.stopped || !e.talking || !strings.HasPrefix(e.sent[len(e.sent)-1], "STATUS=upgrade failed: ") {
				t.Fatalf("after the failure: pool stopped %v, talking %v, sent %q", p.stopped, e.talking, e.sent)
			}
			if c.readyErr != nil && !e.succ.aborted {
				t.Fatal("the new sockd was not killed")
			}
			if e.counts["upgrade failed"] != 1 {
				t.Fatalf("counts %v", e.counts)
			}
			if err := reload(m); err != nil {
				t.Fatalf("reload after a failed upgrade: %v", err)
			}
		})
	}
}

// The new sockd dies between ready and commit: after the MAINPID it was
// given, this sockd takes the main pid back and says READY=1.
func TestMachineUpgradeFailsAtCommit(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	e.succ.commitErr = errors.New("commit: broken pipe")
	reply := upgrade(m)
	e.settle()
	if err := answer(t, reply); err == nil {
		t.Fatal("a failed commit succeeded")
	}
	wantPhase(t, m, phaseRunning)
	want := []string{"MAINPID=4242", fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid()), "STATUS=upgrade failed"}
	got := strings.Join(e.sent, "|")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("systemd was told %q, want %q in it", e.sent, w)
		}
	}
	if !e.succ.aborted || !e.talking {
		t.Fatalf("aborted %v, talking %v", e.succ.aborted, e.talking)
	}
}

// A stop while the new sockd starts calls the upgrade off (the new sockd
// sees its context end and is killed): the caller hears "abandoned", and
// this sockd, still in charge, removes its files when it exits.
func TestMachineStopWhileUpgrading(t *testing.T) {
	m, e, p := newMachine(t, phaseRunning)
	reply := upgrade(m)
	stopRequest{}.apply(m) // before the hand-off ran
	wantPhase(t, m, phaseStopping)
	if !p.stopped {
		t.Fatal("pool not stopped")
	}
	e.settle()
	err := answer(t, reply)
	if err == nil || !strings.Contains(err.Error(), "abandoned, sockd is stopping") {
		t.Fatalf("upgrade: %v", err)
	}
	if !e.succ.aborted || e.succ.committed {
		t.Fatalf("new sockd aborted %v, committed %v", e.succ.aborted, e.succ.committed)
	}
	wantPhase(t, m, phaseStopping)
	if !m.phase.inCharge() {
		t.Fatal("a stopping sockd that never handed over must clean up")
	}
}

// A stop that comes after the new sockd committed, but before its news
// reached the loop: the new sockd is in charge, so this one must not
// remove the control socket and files that are the new one's now.
func TestMachineStopRacesCommit(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	reply := upgrade(m)
	e.runTasks() // committed; upgradeDone posted, not delivered
	stopRequest{}.apply(m)
	e.deliver()
	if err := answer(t, reply); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	wantPhase(t, m, phaseHandedOff)
	if m.phase.inCharge() {
		t.Fatal("handed off but still in charge")
	}
	// The stop was this sockd's to pass on: the new one would serve on.
	if e.stops != 1 {
		t.Fatalf("the stop was passed on to the new sockd %d times, want once", e.stops)
	}
}

// Requests while stopping are refused as stopping, not as refusals.
func TestMachineUpgradeWhileStopping(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	stopRequest{}.apply(m)
	if err := answer(t, upgrade(m)); !errors.Is(err, pool.ErrStopping) {
		t.Fatalf("upgrade while stopping: %v", err)
	}
	if err := reload(m); !errors.Is(err, pool.ErrStopping) {
		t.Fatalf("reload while stopping: %v", err)
	}
	if len(e.tasks) != 0 {
		t.Fatal("work started while stopping")
	}
}

// The pool ends (workers gave up) during an upgrade: it is called off and
// Run ends.
func TestMachinePoolDoneWhileUpgrading(t *testing.T) {
	m, e, _ := newMachine(t, phaseRunning)
	reply := upgrade(m)
	poolDone{}.apply(m)
	if !m.over {
		t.Fatal("loop not over")
	}
	e.runTasks()
	if !e.succ.aborted {
		t.Fatal("the new sockd of a called-off upgrade lives on")
	}
	e.deliver()
	if err := answer(t, reply); err == nil {
		t.Fatal("called-off upgrade succeeded")
	}
}

// An upgrade of a pool that is not running (reloading, starting) fails
// before anything is started.
func TestMachineUpgradeNeedsARunningPool(t *testing.T) {
	m, e, p := newMachine(t, phaseRunning)
	p.state = pool.StateReloading
	reply := upgrade(m)
	e.settle()
	if err := answer(t, reply); err == nil || !strings.Contains(err.Error(), "sockd is reloading") {
		t.Fatalf("upgrade of a reloading pool: %v", err)
	}
	wantPhase(t, m, phaseRunning)
}

// The new side: once its workers are ready it tells the old sockd and
// waits for the commit, then takes charge.
func TestMachineTakeOver(t *testing.T) {
	m, e, p := newMachine(t, phaseTakingOver)
	if e.serving || e.talking {
		t.Fatal("a sockd taking over serves or talks before the commit")
	}
	close(p.ready)
	e.settle()
	wantPhase(t, m, phaseRunning)
	if !e.pred.readied || !e.charged {
		t.Fatalf("readied %v, took charge %v", e.pred.readied, e.charged)
	}
	if err := reload(m); err != nil {
		t.Fatalf("reload once in charge: %v", err)
	}
}

// The takeover fails (workers never ready, or the old sockd never
// commits): this sockd stops, never in charge, and leaves the old one's
// files alone.
func TestMachineTakeOverFails(t *testing.T) {
	for _, c := range []struct {
		name      string
		neverUp   bool
		commitErr error
	}{
		{"workers never ready", true, nil},
		{"no commit", false, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, e, p := newMachine(t, phaseTakingOver)
			if c.neverUp {
				close(p.done)
			} else {
				close(p.ready)
			}
			e.pred.commitErr = c.commitErr
			e.settle()
			wantPhase(t, m, phaseAbandoned)
			if !p.stopped || !e.pred.closed || e.charged || m.phase.inCharge() {
				t.Fatalf("pool stopped %v, hand-off closed %v, took charge %v", p.stopped, e.pred.closed, e.charged)
			}
		})
	}
}

// A stop during a takeover abandons it; news that the takeover worked
// after all changes nothing.
func TestMachineStopWhileTakingOver(t *testing.T) {
	m, e, p := newMachine(t, phaseTakingOver)
	stopRequest{}.apply(m)
	wantPhase(t, m, phaseAbandoned)
	close(p.ready)
	e.settle()
	wantPhase(t, m, phaseAbandoned)
	if e.charged || !p.stopped {
		t.Fatalf("took charge %v, pool stopped %v", e.charged, p.stopped)
	}
}
