package pool

import (
	"fmt"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/notify"
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
	stopSent       bool   // sockd asked it to stop
	leaving        bool   // it announced STOPPING=1 on its own
	exited         bool
	exitedAt       time.Time
	killAt         time.Time // when sockd SIGKILLs it (and its group), once asked to stop
	timers         []*time.Timer
}

// generation is one set of worker slots; a nil slot is empty (restarting).
type generation struct {
	num   int
	slots []*worker
}

// state is everything the loop owns.
type state struct {
	started      time.Time
	genSeq       int
	current      *generation
	next         *generation // during a reload
	byPID        map[int]*worker
	crashes      []time.Time // crash times within the restart period
	slotCrashes  []int       // consecutive crashes per slot, for backoff
	slotRestarts []int
	restarts     int
	stopping     bool
	fatal        error
	announced    bool       // first READY=1 sent
	reload       *reloadJob // starting the next generation
	handover     *reloadJob // committed, waiting for the old one to let go
	queued       *reloadJob
	lastReload   *ReloadResult
	lastStatus   string
	// lingering holds the process groups of exited workers whose other
	// members may still drain until the worker's stop deadline.
	lingering map[int]bool
}

// Events handled by the loop.
type (
	exitEvent      struct{ w *worker }
	notifyEvent    struct{ msg notify.Message }
	stopRequest    struct{}
	reloadRequest  struct{ reply chan error }
	statusRequest  struct{ reply chan Status }
	readyTimer     struct{ w *worker } // after:D elapsed
	readyTimeout   struct{ w *worker }
	killTimer      struct{ w *worker }
	groupKillTimer struct{ pgid int }
	groupPollTimer struct{}
	watchdogTimer  struct{ w *worker }
	restartTimer   struct{ gen, slot int }
	handoverTimer  struct{}
	reloadDeadline struct{ gen int }
)

func (p *Pool) run() error {
	// Never unlocked: workers get SIGKILL as parent-death signal, which
	// Linux sends when the *thread* that forked them exits. This thread
	// lives exactly as long as the loop.
	runtime.LockOSThread()
	st := &p.st
	st.started = time.Now()
	st.byPID = make(map[int]*worker)
	st.lingering = make(map[int]bool)
	st.genSeq = p.opts.FirstGeneration
	st.current = p.newGeneration(st.genSeq)
	p.log.Info("starting workers", "event", "pool_start", "generation", st.genSeq, "workers", p.opts.Workers,
		"command", p.command, "ready", p.opts.Ready.String())
	for slot := range st.current.slots {
		p.spawnInto(st.current, slot)
	}
	p.updateStatus()
	for !(st.stopping && len(st.byPID) == 0 && len(st.lingering) == 0) {
		p.handle(<-p.events)
		p.updateStatus()
	}
	p.log.Info("all workers stopped", "event", "pool_stopped")
	return st.fatal
}

func (p *Pool) newGeneration(num int) *generation {
	p.st.slotCrashes = make([]int, p.opts.Workers)
	p.st.slotRestarts = make([]int, p.opts.Workers)
	return &generation{num: num, slots: make([]*worker, p.opts.Workers)}
}

func (p *Pool) handle(ev any) {
	switch ev := ev.(type) {
	case exitEvent:
		p.onExit(ev.w)
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
			signal(ev.w, unix.SIGKILL)
		}
	case groupKillTimer:
		p.killGroup(ev.pgid)
	case groupPollTimer:
		p.pollGroups()
	case watchdogTimer:
		p.onWatchdogTimer(ev.w)
	case restartTimer:
		p.onRestartTimer(ev.gen, ev.slot)
	case handoverTimer:
		p.checkHandover()
	case reloadDeadline:
		if st := &p.st; st.reload != nil && st.next.num == ev.gen {
			p.abortReload(fmt.Sprintf("not every worker was ready within %s (%d/%d ready)",
				p.opts.ReloadTimeout, countReady(st.next), p.opts.Workers))
		}
	}
}

// spawnInto starts the worker of slot in g. A failure to fork counts as a
// crash (or fails the reload).
func (p *Pool) spawnInto(g *generation, slot int) {
	st := &p.st
	w, err := p.spawn(g.num, slot)
	if err != nil {
		p.log.Error("cannot start worker", "event", "worker_spawn_failed", "generation", g.num, "worker", slot, "error", err)
		if st.next == g {
			p.abortReload(err.Error())
		} else {
			p.crashed(&worker{slot: slot, gen: g.num}, err.Error())
		}
		return
	}
	if g == st.current {
		w.restarts = st.slotRestarts[slot]
	}
	g.slots[slot] = w
	st.byPID[w.pid] = w
	p.wlog(w).Info("worker started", "event", "worker_start")
	if d := p.opts.Ready.After; d > 0 {
		w.timers = append(w.timers, p.after(d, readyTimer{w}))
	} else {
		w.timers = append(w.timers, p.after(p.opts.ReadyTimeout, readyTimeout{w}))
	}
}

func (p *Pool) onExit(w *worker) {
	st := &p.st
	ws, ru := reap(w.pid)
	// Does anything of its process group live on? (Asked after reaping: a
	// zombie leader still counts as a member.)
	groupLeft := unix.Kill(-w.pid, 0) == nil
	delete(st.byPID, w.pid)
	w.exited, w.exitedAt = true, time.Now()
	for _, t := range w.timers {
		t.Stop()
	}
	how := describeExit(ws)
	log := p.wlog(w).With("event", "worker_exit", "status", how,
		"cpu_seconds", float64(ru.Utime.Nano()+ru.Stime.Nano())/1e9)
	p.afterLeader(w, groupLeft, log)
	switch {
	case st.stopping:
		log.Info("worker exited")
	case w.leaving:
		log.Info("worker exited after announcing it")
	case st.next != nil && w.gen == st.next.num && st.next.slots[w.slot] == w:
		st.next.slots[w.slot] = nil
		log.Warn("worker of the new generation exited")
		if w.state == Ready {
			p.abortReload(fmt.Sprintf("worker %d exited after it was ready (%s)", w.slot, how))
		} else {
			p.abortReload(fmt.Sprintf("worker %d exited before it was ready (%s)", w.slot, how))
		}
	case st.current.slots[w.slot] == w && w.gen == st.current.num:
		st.current.slots[w.slot] = nil
		if w.failure != "" {
			how = w.failure + ", then " + how
		}
		log.Warn("worker crashed")
		p.crashed(w, how)
	default:
		log.Info("worker exited")
	}
	p.maybeStartQueued()
}

// afterLeader deals with what is left of an exited worker's process group
// (a wrapper script's server, say): a worker asked to stop leaves the rest
// of its group until its stop deadline to finish draining; any other exit
// takes the group down at once, so nothing of a crashed worker keeps
// accepting beside its replacement.
func (p *Pool) afterLeader(w *worker, groupLeft bool, log hclog.Logger) {
	if !groupLeft {
		p.guardRemove(w.pid)
		return
	}
	if (w.stopSent || w.leaving) && w.failure == "" && time.Until(w.killAt) > 0 {
		log.Debug("worker's process group drains on until its stop deadline", "deadline", w.killAt)
		if len(p.st.lingering) == 0 {
			p.after(groupPoll, groupPollTimer{})
		}
		p.st.lingering[w.pid] = true
		p.after(time.Until(w.killAt), groupKillTimer{pgid: w.pid})
		return
	}
	log.Info("killing what is left of the worker's process group", "event", "worker_group_kill")
	unix.Kill(-w.pid, unix.SIGKILL)
	p.guardRemove(w.pid)
}

// groupPoll is how often lingering process groups are checked for being
// empty: nothing tells when the last member of a group exits.
const groupPoll = 20 * time.Millisecond

// pollGroups forgets the lingering groups that emptied.
func (p *Pool) pollGroups() {
	for pgid := range p.st.lingering {
		if unix.Kill(-pgid, 0) == unix.ESRCH {
			delete(p.st.lingering, pgid)
			p.guardRemove(pgid)
		}
	}
	if len(p.st.lingering) > 0 {
		p.after(groupPoll, groupPollTimer{})
	}
}

// killGroup ends a lingering process group at its deadline.
func (p *Pool) killGroup(pgid int) {
	if !p.st.lingering[pgid] {
		return
	}
	delete(p.st.lingering, pgid)
	if unix.Kill(-pgid, unix.SIGKILL) == nil {
		p.log.Warn("process group of an exited worker did not stop in time; killed it", "event", "worker_group_kill", "pgid", pgid)
	}
	p.guardRemove(pgid)
}

func (p *Pool) guardRemove(pgid int) {
	if g := p.opts.Guard; g != nil {
		if err := g.Remove(pgid); err != nil {
			p.log.Warn("guard", "error", err)
		}
	}
}

// crashed accounts for a worker of the serving generation that died
// without being asked to and schedules its replacement with backoff, or
// gives up when the restart budget is spent.
func (p *Pool) crashed(w *worker, how string) {
	st := &p.st
	now := time.Now()
	lim := p.opts.RestartLimit
	kept := st.crashes[:0]
	for _, t := range st.crashes {
		if now.Sub(t) < lim.Period {
			kept = append(kept, t)
		}
	}
	st.crashes = append(kept, now)
	if len(st.crashes) > lim.Burst {
		p.giveUp(fmt.Errorf("%w: %d crashes within %s (last: worker %d, %s)", ErrRestartLimit, len(st.crashes), lim.Period, w.slot, how))
		return
	}
	if st.next != nil {
		p.log.Info("not restarting a worker of the old generation during a reload", "generation", w.gen, "worker", w.slot)
		return
	}
	if !w.readyAt.IsZero() && now.Sub(w.readyAt) >= DefaultStableAfter {
		st.slotCrashes[w.slot] = 0
	}
	st.slotCrashes[w.slot]++
	delay := p.backoff(st.slotCrashes[w.slot])
	st.slotRestarts[w.slot]++
	st.restarts++
	p.log.Info("restarting worker", "event", "worker_restart", "generation", w.gen, "worker", w.slot, "delay", delay)
	if delay == 0 {
		p.spawnInto(st.current, w.slot)
		return
	}
	p.after(delay, restartTimer{gen: w.gen, slot: w.slot})
}

// backoff is 0 for a slot's first crash, then BackoffMin doubling up to
// maxBackoff.
func (p *Pool) backoff(consecutive int) time.Duration {
	if consecutive <= 1 {
		return 0
	}
	top := p.maxBackoff()
	d := p.opts.BackoffMin
	for i := 2; i < consecutive && d < top; i++ {
		d *= 2
	}
	return min(d, top)
}

// maxBackoff is BackoffMax, but never more than Period/(2·Burst) of the
// restart limit: the backoff must not stretch a crash loop so thin that it
// never spends the budget. With it, a worker that crashes within
// Period/(2·Burst) of starting (3 s with 10/60s) always exhausts the budget
// and sockd gives up, instead of restarting it every BackoffMax forever.
func (p *Pool) maxBackoff() time.Duration {
	top := p.opts.BackoffMax
	if lim := p.opts.RestartLimit; lim.Burst > 0 {
		top = min(top, lim.Period/time.Duration(2*lim.Burst))
	}
	return max(top, p.opts.BackoffMin)
}

func (p *Pool) onRestartTimer(gen, slot int) {
	st := &p.st
	if st.stopping || st.next != nil || st.current.num != gen || st.current.slots[slot] != nil {
		return
	}
	p.spawnInto(st.current, slot)
}

func (p *Pool) giveUp(err error) {
	p.log.Error("giving up", "event", "give_up", "error", err)
	p.st.fatal = err
	p.beginStop()
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
	for _, job := range []*reloadJob{st.reload, st.queued} {
		if job != nil {
			job.finish(ErrStopping)
		}
	}
	if st.handover != nil {
		// Committed: the new generation took over (or, after a rollback,
		// the reload failed); only the retired workers' letting go was
		// still being watched.
		st.handover.finish(st.handover.err)
	}
	st.reload, st.handover, st.queued = nil, nil, nil
	for _, w := range st.byPID {
		p.stopWorker(w)
	}
}

// stopWorker sends SIGTERM and arms the SIGKILL deadline.
func (p *Pool) stopWorker(w *worker) {
	if w.stopSent || w.exited {
		return
	}
	w.stopSent = true
	w.state = Stopping
	p.wlog(w).Debug("stopping worker", "event", "worker_stop")
	if err := signal(w, unix.SIGTERM); err != nil {
		p.wlog(w).Warn("cannot signal worker", "error", err)
	}
	w.killAt = time.Now().Add(p.opts.StopTimeout)
	w.timers = append(w.timers, p.after(p.opts.StopTimeout, killTimer{w}))
}

func (p *Pool) markReady(w *worker) {
	st := &p.st
	if w.exited || w.state != Starting {
		return
	}
	w.state = Ready
	w.readyAt = time.Now()
	p.wlog(w).Info("worker ready", "event", "worker_ready", "seconds", w.readyAt.Sub(w.started).Seconds())
	if d := p.opts.WorkerWatchdog; d > 0 {
		w.timers = append(w.timers, p.after(d, watchdogTimer{w}))
	}
	switch {
	case st.next != nil && w.gen == st.next.num:
		if countReady(st.next) == p.opts.Workers {
			p.commitReload()
		}
	case w.gen == st.current.num && !st.announced && countReady(st.current) == p.opts.Workers:
		p.announce()
	}
}

func (p *Pool) announce() {
	st := &p.st
	st.announced = true
	close(p.ready)
	p.log.Info("all workers ready", "event", "pool_ready", "generation", st.current.num,
		"seconds", time.Since(st.started).Seconds())
	st.lastStatus = p.summary()
	p.opts.Notify("READY=1\nSTATUS=" + st.lastStatus)
}

func (p *Pool) onReadyTimeout(w *worker) {
	st := &p.st
	if w.exited || w.state != Starting || w.stopSent {
		return
	}
	reason := fmt.Sprintf("worker %d was not ready within %s", w.slot, p.opts.ReadyTimeout)
	if st.next != nil && w.gen == st.next.num {
		p.abortReload(reason)
		return
	}
	p.wlog(w).Warn("worker not ready in time; stopping it", "event", "worker_ready_timeout")
	w.failure = fmt.Sprintf("not ready within %s", p.opts.ReadyTimeout)
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
	if left := p.opts.WorkerWatchdog - time.Since(last); left > 0 {
		w.timers = append(w.timers, p.after(left, watchdogTimer{w}))
		return
	}
	p.wlog(w).Warn("worker watchdog timeout; aborting it", "event", "worker_watchdog", "watchdog", p.opts.WorkerWatchdog)
	w.state = Stopping
	w.failure = fmt.Sprintf("silent for %s (watchdog)", p.opts.WorkerWatchdog)
	signal(w, unix.SIGABRT)
	w.killAt = time.Now().Add(p.opts.StopTimeout)
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
	}
	if m.Watchdog() {
		w.lastPing = time.Now()
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
	st := &p.st
	if w.stopSent || w.leaving || st.stopping || w.failure != "" {
		return
	}
	if st.current.slots[w.slot] == w && (w.state != Ready || time.Since(w.readyAt) < p.opts.MinServe) {
		// Announcing an exit before serving (or right after) is a crash
		// loop in disguise: no early replacement, and the exit counts
		// against the restart budget with backoff.
		if w.state != Ready {
			w.failure = "announced STOPPING=1 before it was ready"
		} else {
			w.failure = fmt.Sprintf("announced STOPPING=1 %s after it was ready (less than %s)", time.Since(w.readyAt).Round(time.Millisecond), p.opts.MinServe)
		}
		p.wlog(w).Warn("worker announced its exit too early; its exit will count as a crash", "event", "worker_leaving_early", "reason", w.failure)
		return
	}
	w.leaving = true
	w.killAt = time.Now().Add(p.opts.StopTimeout)
	w.timers = append(w.timers, p.after(p.opts.StopTimeout, killTimer{w}))
	switch {
	case st.next != nil && w.gen == st.next.num:
		st.next.slots[w.slot] = nil
		p.abortReload(fmt.Sprintf("worker %d announced it is stopping", w.slot))
	case st.current.slots[w.slot] == w:
		w.state = Stopping
		st.current.slots[w.slot] = nil
		if st.next == nil {
			p.wlog(w).Info("worker announced its exit; starting its replacement", "event", "worker_leaving")
			p.spawnInto(st.current, w.slot)
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
