package pool

import (
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
)

// worker is one worker process. Only the loop touches it.
type worker struct {
	slot, gen, pid int
	state          string
	started        time.Time
	readyAt        time.Time
	lastPing       time.Time
	restarts       int
	requests       int64
	hasRequests    bool
	status         string
	failure        string // why sockd stopped it as a failure (ready timeout, watchdog)
	failureKind    string // the same, as an Exit… reason
	stopSent       bool   // sockd asked it to stop
	leaving        bool   // it announced STOPPING=1 on its own
	exited         bool
	exitedAt       time.Time
	killAt         time.Time // when sockd SIGKILLs it (and its group), once asked to stop
	timers         []timer
	groupKilled    bool          // what it left was sent SIGKILL
	goneBy         time.Time     // lingering: when to stop waiting for its group
	id             string        // SOCKD_WORKER_ID: unique while sockd runs
	cgroup         *cgroup.Group // its cgroup, when the pool has a cgroup tree
	maxRequests    int64         // its own MaxRequests (0: none)
	recycle        string        // why it is to be recycled ("": it is not)
	recycleKind    string        // memory, requests or age
	usage          procfs.Usage  // last sample of its process tree
	sampledAt      time.Time
}

// metricsSocket is where the worker may serve its own metrics.
func (w *worker) metricsSocket(dir string) string { return filepath.Join(dir, w.id+".sock") }

// state is everything the loop owns.
type state struct {
	started   time.Time
	genSeq    int     // the highest generation number given out
	gen       int     // the serving generation: the newest one that took over slots
	slots     []*slot // the desired size is len(slots)
	byPID     map[int]*worker
	crashes   []time.Time // crash times within the restart period
	restarts  int
	stopping  bool
	fatal     error
	announced bool // first READY=1 sent
	// reload is the reload under way, from its first new worker to the
	// last old one letting go of the listeners (or a rollback's failed
	// workers doing so); queued are the requests coalesced behind it.
	reload     *rollout
	queued     *reloadJob
	lastReload *ReloadResult
	lastStatus string
	// lingering holds exited workers whose group (what they started) may
	// still drain until the worker's stop deadline, by pid.
	lingering map[int]*worker
	seq       int // workers started, for their SOCKD_WORKER_ID
	// pendingSize is a size asked for during a reload (0: none); parked
	// are slots a scale-down retired whose workers still take the
	// connections queued on their reuseport sockets; steered is how many
	// slots' sockets the kernel hands new connections to.
	events      []Event // the last recentEvents
	pendingSize int
	parked      []*slot
	steered     int
	recycles    int // workers replaced for being over a Recycle limit
	spawnLog    rateLog
	// spawnFailures counts the workers sockd could not start.
	spawnFailures int
}

// Events handled by the loop.
type (
	exitEvent      struct{ pid int }
	notifyEvent    struct{ msg notify.Message }
	stopRequest    struct{}
	reloadRequest  struct{ reply chan error }
	statusRequest  struct{ reply chan Status }
	readyTimer     struct{ w *worker } // after:D elapsed
	readyTimeout   struct{ w *worker }
	killTimer      struct{ w *worker }
	groupKillTimer struct{ w *worker }
	groupPollTimer struct{}
	watchdogTimer  struct{ w *worker }
	restartTimer   struct{ s *slot }
	handoverTimer  struct{}
	reloadDeadline struct{ gen, batch int }
	soakTimer      struct{ gen int }
	scaleRequest   struct {
		n        int
		relative bool
		reply    chan scaleReply
	}
	parkTimer     struct{}
	sampleRequest struct{ reply chan []sampleTarget }
	usageEvent    struct{ got map[int]procfs.Usage }
	ageTimer      struct {
		w   *worker
		age time.Duration
	}
	recycleRetry struct{ s *slot }
	nodeReady    struct{ pid int } // "ready" on a worker's Node IPC channel
)

func (p *Pool) run() error {
	// Never unlocked: workers get SIGKILL as parent-death signal, which
	// Linux sends when the *thread* that forked them exits. This thread
	// lives exactly as long as the loop.
	runtime.LockOSThread()
	p.begin()
	st := &p.st
	for !(st.stopping && len(st.byPID) == 0 && len(st.lingering) == 0) {
		p.step(<-p.events)
	}
	p.log.Info("all workers stopped", "event", "pool_stopped")
	return st.fatal
}

// begin sets the loop's state up and starts the first generation.
func (p *Pool) begin() {
	st := &p.st
	st.started = p.env.now()
	st.byPID = make(map[int]*worker)
	st.lingering = make(map[int]*worker)
	st.genSeq = p.opts.FirstGeneration
	st.gen = st.genSeq
	p.log.Info("starting workers", "event", "pool_start", "generation", st.gen, "workers", p.opts.Workers,
		"command", p.command, "ready", p.opts.Ready.String())
	if err := p.resize(p.opts.Workers, true); err != nil {
		p.giveUp(err)
	}
	p.updateStatus()
}

// step handles one event and tells systemd if the summary changed.
func (p *Pool) step(ev any) {
	p.handle(ev)
	p.updateStatus()
}

func (p *Pool) handle(ev any) {
	switch ev := ev.(type) {
	case exitEvent:
		p.onExit(ev.pid)
	case notifyEvent:
		p.onNotify(ev.msg)
	case stopRequest:
		p.beginStop()
	case reloadRequest:
		p.onReloadRequest(ev.reply)
	case statusRequest:
		ev.reply <- p.status()
	case readyTimer:
		p.markReady(ev.w)
	case readyTimeout:
		p.onReadyTimeout(ev.w)
	case killTimer:
		if !ev.w.exited {
			p.wlog(ev.w).Warn("worker did not stop in time; killing it", "event", "worker_kill", "stop_timeout", p.opts.StopTimeout)
			p.env.signal(ev.w, unix.SIGKILL)
		}
	case groupKillTimer:
		p.killGroup(ev.w)
	case groupPollTimer:
		p.pollGroups()
	case watchdogTimer:
		p.onWatchdogTimer(ev.w)
	case restartTimer:
		p.onRestartTimer(ev.s)
	case handoverTimer:
		p.checkHandover()
	case reloadDeadline:
		p.onReloadDeadline(ev.gen, ev.batch)
	case soakTimer:
		p.onSoakOver(ev.gen)
	case scaleRequest:
		p.onScale(ev)
	case parkTimer:
		p.onParkTimer()
	case sampleRequest:
		ts := make([]sampleTarget, 0, len(p.st.byPID))
		for pid, w := range p.st.byPID {
			ts = append(ts, sampleTarget{pid, w.cgroup})
		}
		ev.reply <- ts
	case usageEvent:
		p.onUsage(ev.got)
	case ageTimer:
		p.onAgeTimer(ev.w, ev.age)
	case recycleRetry:
		p.onRecycleRetry(ev.s)
	case nodeReady:
		if w := p.st.byPID[ev.pid]; w != nil {
			p.markReady(w)
		}
	}
}

// after posts ev to the loop once d has passed.
func (p *Pool) after(d time.Duration, ev any) timer { return p.env.after(d, ev) }

// onExit handles a worker's exit: a crash of the worker serving its slot
// (or of the one starting there), a failed reload, or the end of a worker
// that was retiring anyway.
func (p *Pool) onExit(pid int) {
	st := &p.st
	w := st.byPID[pid]
	if w == nil {
		return
	}
	es := p.env.reap(pid)
	// Does anything it started live on? (Asked after reaping: a zombie
	// leader still counts as a member of its process group.)
	groupLeft := p.env.groupAlive(w)
	delete(st.byPID, pid)
	w.exited, w.exitedAt = true, p.env.now()
	for _, t := range w.timers {
		t.Stop()
	}
	how := es.String()
	p.event(Event{Kind: EventExit, Slot: w.slot, Generation: w.gen, PID: w.pid, Reason: p.exitReason(w), Detail: how})
	log := p.wlog(w).With("event", "worker_exit", "status", how, "cpu_seconds", es.cpu.Seconds())
	p.afterLeader(w, groupLeft, log)
	s, role := p.slotOf(w)
	switch {
	case st.stopping:
		log.Info("worker exited")
	case w.leaving:
		if role == roleCur {
			s.cur = nil // its replacement is starting as s.next
		}
		log.Info("worker exited after announcing it")
	case role == roleNext && s.recycling:
		s.next = nil
		if w.failure != "" {
			how = w.failure + ", then " + how
		}
		log.Warn("worker's replacement exited before it took over")
		p.recycleFailed(s, how)
	case role == roleNext && s.batch:
		s.next = nil
		log.Warn("worker of the new generation exited")
		when := "before"
		if w.state == Ready {
			when = "after"
		}
		p.abortReload(fmt.Sprintf("worker %d exited %s it was ready (%s)", w.slot, when, how))
	case role != roleNone:
		if role == roleCur {
			s.cur = nil
		} else {
			s.next = nil
		}
		if w.failure != "" {
			how = w.failure + ", then " + how
		}
		log.Warn("worker crashed")
		p.crashed(s, w, how)
	default:
		log.Info("worker exited")
	}
	p.maybeStartQueued()
}

// afterLeader deals with what is left of an exited worker's group (a
// wrapper script's server, a daemon it started): a worker asked to stop
// leaves the rest of its group until its stop deadline to finish
// draining; any other exit takes the group down at once, so nothing of a
// crashed worker keeps accepting beside its replacement.
func (p *Pool) afterLeader(w *worker, groupLeft bool, log hclog.Logger) {
	if !groupLeft {
		p.groupGone(w)
		return
	}
	if left := w.killAt.Sub(p.env.now()); (w.stopSent || w.leaving) && w.failure == "" && left > 0 {
		log.Debug("worker's group drains on until its stop deadline", "deadline", w.killAt)
		p.linger(w)
		p.after(left, groupKillTimer{w})
		// What it started outside its group (a detached child) was its
		// child until now: it is asked to stop too.
		p.env.orphaned(w, p.opts.StopSignal)
		return
	}
	log.Info("killing what is left of the worker's group", "event", "worker_group_kill")
	p.env.killGroup(w)
	w.groupKilled = true
	p.linger(w) // until the killed are gone: a cgroup is removed only once empty
}

// linger watches w's group until it is empty.
func (p *Pool) linger(w *worker) {
	if len(p.st.lingering) == 0 {
		p.after(groupPoll, groupPollTimer{})
	}
	p.st.lingering[w.pid] = w
	w.goneBy = p.env.now().Add(p.opts.StopTimeout)
}

// groupPoll is how often lingering groups are checked for being empty:
// nothing tells when the last member of a process group exits.
const groupPoll = 20 * time.Millisecond

// pollGroups forgets the lingering groups that emptied (or that were
// killed and still are not, after StopTimeout: stuck in the kernel).
func (p *Pool) pollGroups() {
	now := p.env.now()
	for pid, w := range p.st.lingering {
		alive := p.env.groupAlive(w)
		if alive && w.groupKilled && !now.Before(w.goneBy) {
			p.log.Warn("processes of an exited worker outlive SIGKILL", "event", "worker_group_stuck", "worker_pid", pid)
			alive = false
		}
		if !alive {
			delete(p.st.lingering, pid)
			p.groupGone(w)
		}
	}
	if len(p.st.lingering) > 0 {
		p.after(groupPoll, groupPollTimer{})
	}
}

// killGroup ends a lingering group at its deadline.
func (p *Pool) killGroup(w *worker) {
	if p.st.lingering[w.pid] != w || w.groupKilled {
		return
	}
	if p.env.killGroup(w) {
		p.log.Warn("what an exited worker started did not stop in time; killed it", "event", "worker_group_kill", "worker_pid", w.pid)
	}
	w.groupKilled = true
	w.goneBy = p.env.now().Add(p.opts.StopTimeout)
}

// groupGone is told once nothing of a worker's group is left.
func (p *Pool) groupGone(w *worker) {
	p.guardRemove(w.pid)
	p.env.release(w)
	if d := p.opts.MetricsDir; d != "" {
		p.env.remove(w.metricsSocket(d))
	}
}

func (p *Pool) guardAdd(pgid int) {
	if g := p.opts.Guard; g != nil {
		if err := g.Add(pgid); err != nil {
			p.log.Warn("guard", "error", err)
		}
	}
}

func (p *Pool) guardRemove(pgid int) {
	if g := p.opts.Guard; g != nil {
		if err := g.Remove(pgid); err != nil {
			p.log.Warn("guard", "error", err)
		}
	}
}

// beginStop drains every worker of every generation.
func (p *Pool) beginStop() {
	st := &p.st
	if st.stopping {
		return
	}
	st.stopping = true
	p.log.Info("stopping all workers", "event", "pool_stop", "workers", len(st.byPID), "stop_timeout", p.opts.StopTimeout)
	p.opts.Notify("STOPPING=1")
	p.endReloadsForStop()
	for _, w := range st.byPID {
		p.stopWorker(w)
	}
}

// stopWorker sends StopSignal (SIGTERM) and arms the SIGKILL deadline.
func (p *Pool) stopWorker(w *worker) {
	if w.stopSent || w.exited {
		return
	}
	w.stopSent = true
	w.state = Stopping
	p.wlog(w).Debug("stopping worker", "event", "worker_stop")
	if err := p.env.signal(w, p.opts.StopSignal); err != nil {
		p.wlog(w).Warn("cannot signal worker", "error", err)
	}
	w.killAt = p.env.now().Add(p.opts.StopTimeout)
	w.timers = append(w.timers, p.after(p.opts.StopTimeout, killTimer{w}))
}

// markReady handles READY=1 (or the after:D rule): a worker starting in a
// slot takes it over, or, in a reload's batch, waits for the batch.
func (p *Pool) markReady(w *worker) {
	st := &p.st
	if w.exited || w.state != Starting {
		return
	}
	w.state = Ready
	w.readyAt = p.env.now()
	p.wlog(w).Info("worker ready", "event", "worker_ready", "seconds", w.readyAt.Sub(w.started).Seconds())
	p.event(Event{Kind: EventReady, Slot: w.slot, Generation: w.gen, PID: w.pid, Seconds: w.readyAt.Sub(w.started).Seconds()})
	if d := p.opts.WorkerWatchdog; d > 0 {
		w.timers = append(w.timers, p.after(d, watchdogTimer{w}))
	}
	s, role := p.slotOf(w)
	if role != roleNext {
		return
	}
	if s.batch {
		p.batchProgress()
		return
	}
	p.promote(s)
	if !st.announced && st.reload == nil && p.countReady() == len(st.slots) {
		p.announce()
	}
}

func (p *Pool) announce() {
	st := &p.st
	st.announced = true
	close(p.ready)
	p.log.Info("all workers ready", "event", "pool_ready", "generation", st.gen,
		"seconds", p.env.now().Sub(st.started).Seconds())
	st.lastStatus = p.summary()
	p.opts.Notify("READY=1\nSTATUS=" + st.lastStatus)
}

func (p *Pool) onReadyTimeout(w *worker) {
	if w.exited || w.state != Starting || w.stopSent {
		return
	}
	if s, role := p.slotOf(w); role == roleNext && s.batch {
		p.abortReload(fmt.Sprintf("worker %d was not ready within %s", w.slot, p.opts.ReadyTimeout))
		return
	}
	p.wlog(w).Warn("worker not ready in time; stopping it", "event", "worker_ready_timeout")
	w.failure, w.failureKind = fmt.Sprintf("not ready within %s", p.opts.ReadyTimeout), ExitReadyTimeout
	p.stopWorker(w) // still in its slot, so its exit counts as a crash
}

func (p *Pool) onWatchdogTimer(w *worker) {
	if w.exited || w.state != Ready {
		return
	}
	last := w.readyAt
	if w.lastPing.After(last) {
		last = w.lastPing
	}
	if left := p.opts.WorkerWatchdog - p.env.now().Sub(last); left > 0 {
		w.timers = append(w.timers, p.after(left, watchdogTimer{w}))
		return
	}
	p.wlog(w).Warn("worker watchdog timeout; aborting it", "event", "worker_watchdog", "watchdog", p.opts.WorkerWatchdog)
	w.state = Stopping
	w.failure, w.failureKind = fmt.Sprintf("silent for %s (watchdog)", p.opts.WorkerWatchdog), ExitWatchdog
	p.env.signal(w, unix.SIGABRT)
	w.killAt = p.env.now().Add(p.opts.StopTimeout)
	w.timers = append(w.timers, p.after(p.opts.StopTimeout, killTimer{w}))
}

func (p *Pool) onNotify(m notify.Message) {
	w := p.sender(m)
	if w == nil {
		p.log.Debug("notify message from a process that is not a live worker dropped", "event", "notify_dropped", "sender_pid", m.PID)
		return
	}
	if s, ok := m.Status(); ok {
		w.status = s
	}
	if n, ok := m.Requests(); ok {
		w.requests, w.hasRequests = n, true
		p.onRequests(w)
	}
	if m.Watchdog() {
		w.lastPing = p.env.now()
	}
	if m.Ready() {
		p.markReady(w)
	}
	if m.Stopping() {
		p.onStopping(w)
	}
}

// sender finds the worker a message came from: the worker itself or one of
// its descendants (a server started by a shell script, systemd-notify(1)
// run by the server), by the ancestry looked up when it arrived.
func (p *Pool) sender(m notify.Message) *worker {
	if w := p.st.byPID[m.PID]; w != nil {
		return w
	}
	for _, a := range m.Ancestors {
		if w := p.st.byPID[a]; w != nil {
			return w
		}
	}
	return nil
}

// onStopping handles a worker that announces it will exit on its own (the
// "suicide" message of Node's cluster): its replacement starts at once and
// its exit is not a crash.
func (p *Pool) onStopping(w *worker) {
	if w.stopSent || w.leaving || p.st.stopping || w.failure != "" {
		return
	}
	s, role := p.slotOf(w)
	inBatch := role == roleNext && s.batch
	if role != roleNone && !inBatch {
		if served := p.env.now().Sub(w.readyAt); w.state != Ready || served < p.opts.MinServe {
			// Announcing an exit before serving (or right after) is a crash
			// loop in disguise: no early replacement, and the exit counts
			// against the restart budget with backoff.
			w.failureKind = ExitEarlyStopping
			if w.state != Ready {
				w.failure = "announced STOPPING=1 before it was ready"
			} else {
				w.failure = fmt.Sprintf("announced STOPPING=1 %s after it was ready (less than %s)", served.Round(time.Millisecond), p.opts.MinServe)
			}
			p.wlog(w).Warn("worker announced its exit too early; its exit will count as a crash", "event", "worker_leaving_early", "reason", w.failure)
			return
		}
	}
	w.leaving = true
	w.killAt = p.env.now().Add(p.opts.StopTimeout)
	w.timers = append(w.timers, p.after(p.opts.StopTimeout, killTimer{w}))
	switch {
	case inBatch:
		s.next = nil
		p.abortReload(fmt.Sprintf("worker %d announced it is stopping", w.slot))
	case role == roleCur:
		w.state = Stopping
		if s.next == nil {
			p.wlog(w).Info("worker announced its exit; starting its replacement", "event", "worker_leaving")
			p.startOrCrash(s)
		}
	}
}

func (p *Pool) updateStatus() {
	st := &p.st
	if s := p.summary(); s != st.lastStatus {
		st.lastStatus = s
		p.opts.Notify("STATUS=" + s)
	}
}

func (p *Pool) wlog(w *worker) hclog.Logger {
	return p.log.With("generation", w.gen, "worker", w.slot, "worker_pid", w.pid)
}
