package pool

import (
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/resources"
)

// slot is one place in the pool, and the pool's one mechanism: replacing
// the worker of a slot. At most two workers belong to a slot: cur, the
// one that took the slot over (once it was ready), and next, the one
// starting to take its place. Every worker enters a slot as next, owned
// by the policy that started it (owner.go); when its owner promotes it,
// it becomes cur and the worker it replaces is retired (asked to drain).
// If next fails first, cur was never touched. A scale-down replaces a
// slot's worker by nothing (scale.go).
type slot struct {
	index int
	cur   *worker
	next  *worker
	// want is the generation the slot runs, or is being moved to by a
	// reload's batch, and cfg that generation's configuration.
	want int
	cfg  *conf
	// crashes counts consecutive crashes, for backoff; restarts counts
	// crash restarts since the slot's generation took over (shown per
	// worker in status).
	crashes, restarts int
	// unready counts the slot's workers in a row that were stopped for
	// not being ready in time (reset when a worker of the pool is ready).
	unready      int
	restartArmed bool // a restartTimer or a retry is pending
	removed      bool // dropped by a scale-down
	// served: new connections are steered to the slot's reuseport
	// sockets (it had a ready worker, or was there from the start).
	served   bool
	parkedAt time.Time // when a scale-down steered connections away from it
}

// startNext forks the worker that is to take slot s over, of the slot's
// wanted generation; its caller makes itself the worker's owner.
func (p *Pool) startNext(s *slot) (*worker, error) {
	p.st.seq++
	w := &worker{slot: s.index, home: s, cfg: s.cfg, gen: s.want, state: Starting, started: p.env.now(), why: ExitCrash,
		id: fmt.Sprintf("%d-%d", p.env.pid(), p.st.seq), restarts: s.restarts}
	if c := s.cur; c != nil && !c.exited {
		w.replaces = c.steerName()
	}
	w.low = w.cfg.LowStart && p.othersServe() && p.env.mayLower(w)
	pid, err := p.env.start(w)
	if err != nil {
		p.st.spawnFailures++
		reason := "error"
		if resources.Of(err) != "" {
			reason = "resources"
		}
		p.event(Event{Kind: EventSpawnFailed, Slot: w.slot, Generation: w.gen, Reason: reason, Detail: err.Error()})
		if n, ok := p.st.spawnLog.note(p.env.now()); ok {
			p.log.Error("cannot start worker", "event", "worker_spawn_failed", "generation", w.gen, "worker", w.slot, "error", err, "failures", n)
		}
		return nil, err
	}
	p.st.spawnLog = rateLog{}
	w.pid = pid
	s.next = w
	p.st.byPID[pid] = w
	p.env.track(pid)
	p.wlog(w).Info("worker started", "event", "worker_start")
	p.event(Event{Kind: EventStart, Slot: w.slot, Generation: w.gen, PID: w.pid})
	if w.low {
		w.timers = append(w.timers, p.after(w.cfg.ReadyTimeout/2, lowTimer{w}))
	}
	if d := w.cfg.Ready.After; d > 0 {
		w.timers = append(w.timers, p.after(d, readyTimer{w}))
	} else {
		w.timers = append(w.timers, p.after(w.cfg.ReadyTimeout, readyTimeout{w}))
	}
	return w, nil
}

// promote makes s.next the worker of slot s, owned by the slot's serving
// rules from now on, and retires the one it replaces, which it returns:
// at once, or, with slow start (Deps.Steering), once its successor's ramp
// is over (it serves what the ramp leaves it until then).
func (p *Pool) promote(s *slot) *worker {
	old, w := s.cur, s.next
	s.cur, s.next = w, nil
	w.owner = p.serving
	if !s.served {
		s.served = true
		p.steer()
	}
	for _, pol := range p.policies {
		pol.promoted(w)
	}
	if old != nil {
		p.retire(old, w.rampEnd)
	}
	return old
}

func (p *Pool) onRampTimer(w *worker) {
	if !w.exited {
		p.stopWorker(w, ExitRetired)
	}
}

// startAs starts a worker in s as the slot's next, owned by o. On error
// nothing was started.
func (p *Pool) startAs(s *slot, o owner) error {
	w, err := p.startNext(s)
	if err != nil {
		return err
	}
	w.owner = o
	return nil
}

// retire takes w out of service: it is owned by the retirement from now
// on and asked to drain, unless it announced its exit already; not before
// until, if that is later (a successor's slow start).
func (p *Pool) retire(w *worker, until time.Time) {
	w.owner = p.retired
	if w.leaving {
		return
	}
	if d := until.Sub(p.env.now()); d > 0 && !p.st.stopping {
		p.wlog(w).Debug("worker serves the rest of its successor's slow start", "event", "worker_ramp_out", "seconds", d.Seconds())
		w.timers = append(w.timers, p.after(d, rampTimer{w}))
		return
	}
	p.stopWorker(w, ExitRetired)
}

// drop takes a starting worker from its owner and retires it.
func (p *Pool) drop(w *worker) {
	w.owner.dropped(w)
	if s := w.home; s != nil && s.next == w {
		s.next = nil
	}
	p.retire(w, time.Time{})
}

// stopWorker sends StopSignal (SIGTERM) and arms the SIGKILL deadline;
// its exit will have reason why. With Deps.Steering a worker that served
// first loses its share of new connections and keeps accepting until its
// sockets are drained (at most StopTimeout), so that no connection is
// left waiting in a socket nobody takes from; not at sockd's own stop,
// when nobody else would take them, unless a successor sockd serves.
func (p *Pool) stopWorker(w *worker, why string) {
	if w.stopSent || w.exited {
		return
	}
	w.stopSent, w.why = true, why
	w.state = Stopping
	p.raise(w) // it drains at its normal priority
	w.killAt = p.env.now().Add(w.cfg.StopTimeout)
	if p.env.steered() && !w.readyAt.IsZero() && !w.leaving {
		p.env.leave(w)
		if !p.st.stopping || p.env.yielded() {
			w.draining = true
			p.wlog(w).Debug("worker leaves steering; stopping it once its sockets are drained", "event", "worker_drain_sockets")
			p.onSocketPoll(w)
			return
		}
	}
	p.signalStop(w)
}

// signalStop sends w its stop signal and arms the SIGKILL deadline.
func (p *Pool) signalStop(w *worker) {
	w.draining = false
	p.wlog(w).Debug("stopping worker", "event", "worker_stop")
	if err := p.env.signal(w, w.cfg.StopSignal); err != nil {
		p.wlog(w).Warn("cannot signal worker", "error", err)
	}
	w.killAt = p.env.now().Add(w.cfg.StopTimeout)
	w.timers = append(w.timers, p.after(w.cfg.StopTimeout, killTimer{w}))
}

// socketPoll is how often a draining worker's sockets are looked at.
const socketPoll = 10 * time.Millisecond

// onSocketPoll sends a draining worker its stop signal once its sockets
// are drained, or once it has waited StopTimeout for them.
func (p *Pool) onSocketPoll(w *worker) {
	if !w.draining || w.exited {
		return
	}
	if p.env.drained(w) {
		p.signalStop(w)
		return
	}
	if !p.env.now().Before(w.killAt) {
		p.wlog(w).Warn("connections still queued on a leaving worker's sockets; stopping it anyway (they wait for the next worker given its sockets)", "event", "steer_queue_left")
		w.queueLeft = true
		if p.env.halted(w) {
			// SIGSTOPped: a stop signal would wait as long again for
			// nothing.
			w.draining = false
			p.wlog(w).Warn("the leaving worker is stopped (SIGSTOP): it can neither drain nor stop; killing it", "event", "worker_kill", "stop_timeout", w.cfg.StopTimeout.String())
			if err := p.env.signal(w, unix.SIGKILL); err != nil {
				p.wlog(w).Warn("cannot signal worker", "error", err)
			}
			return
		}
		p.signalStop(w)
		return
	}
	p.after(socketPoll, socketPollTimer{w}) // a no-op once it exited
}

// failReady stops a worker that was not ready in time; its exit is then
// its owner's to judge, as a failure.
func (p *Pool) failReady(w *worker) {
	log := p.wlog(w)
	if filepath.Base(w.cfg.command) == "node" && !w.cfg.Ready.NodeIPC && w.cfg.Ready.After == 0 {
		log = log.With("hint", "a Node.js app that never sends READY=1: run it with --ready node-listen (ready once it listens) or --ready node-ipc (it calls process.send('ready'))")
	}
	log.Warn("worker not ready in time; stopping it", "event", "worker_ready_timeout")
	w.failure = fmt.Sprintf("not ready within %s", w.cfg.ReadyTimeout)
	p.stopWorker(w, ExitReadyTimeout)
}

// failEarly marks a worker that announced STOPPING=1 before it served
// (or right after it was ready): its exit will be a failure, not a
// planned one.
func (p *Pool) failEarly(w *worker) {
	if w.state != Ready {
		w.failure = "announced STOPPING=1 before it was ready"
	} else {
		served := p.env.now().Sub(w.readyAt)
		w.failure = fmt.Sprintf("announced STOPPING=1 %s after it was ready (less than %s)", served.Round(time.Millisecond), p.cfg.MinServe)
	}
	w.why = ExitEarlyStopping
	p.wlog(w).Warn("worker announced its exit too early; its exit will count as a crash", "event", "worker_leaving_early", "reason", w.failure)
}

// starter owns a worker started to fill a slot: the first start, a
// crash restart, a scale-up, the replacement of a worker that announced
// STOPPING=1. Ready, it takes the slot over; failed, the slot crashed.
type starter struct{ p *Pool }

func (o starter) ready(w *worker) {
	p := o.p
	p.promote(w.home)
	if p.state() == StateStarting && p.countReady() == len(p.st.slots) {
		p.announce()
	}
}

func (o starter) readyTimeout(w *worker) { o.p.failReady(w) }
func (o starter) stopping(w *worker)     { o.p.failEarly(w) }
func (starter) dropped(*worker)          {}

func (o starter) exited(w *worker, how string) {
	if s := w.home; s.next == w {
		s.next = nil
	}
	o.p.crashed(w.home, w, how)
}

// server owns the worker serving a slot. Its unannounced exit is a crash
// of the slot; an announced one (STOPPING=1, the "suicide" message of
// Node's cluster) starts its replacement at once, and its exit is then
// not a crash — unless it came before the worker served MinServe.
type server struct{ p *Pool }

func (server) ready(*worker)        {}
func (server) readyTimeout(*worker) {}
func (server) dropped(*worker)      {}

func (o server) stopping(w *worker) {
	p := o.p
	if p.env.now().Sub(w.readyAt) < p.cfg.MinServe {
		p.failEarly(w) // a crash loop in disguise: no early replacement
		return
	}
	p.leave(w)
	if s := w.home; s.next == nil {
		p.wlog(w).Info("worker announced its exit; starting its replacement", "event", "worker_leaving")
		p.startOrCrash(s)
	}
}

func (o server) exited(w *worker, how string) {
	if s := w.home; s.cur == w {
		s.cur = nil
	}
	o.p.crashed(w.home, w, how)
}

// leave records that w announced its exit: it is retiring on its own,
// with the usual stop deadline.
func (p *Pool) leave(w *worker) {
	w.leaving, w.why, w.state = true, ExitAnnounced, Stopping
	w.owner = p.retired
	p.env.leave(w) // no new connection for it
	w.killAt = p.env.now().Add(w.cfg.StopTimeout)
	w.timers = append(w.timers, p.after(w.cfg.StopTimeout, killTimer{w}))
}

// startOrCrash fills s; a failure to fork counts as a crash of the slot,
// unless sockd ran short of a resource.
func (p *Pool) startOrCrash(s *slot) {
	err := p.startAs(s, p.starting)
	switch {
	case err == nil:
	case resources.Of(err) != "":
		p.shortOf(s, err)
	default:
		p.crashed(s, &worker{slot: s.index, gen: s.want, cfg: s.cfg, why: ExitCrash}, err.Error())
	}
}

// shortOf handles a worker sockd could not start for want of a resource
// (descriptors, processes, memory): not the worker's fault, so it does
// not spend the restart budget. Before the pool was ever ready it gives
// up (ErrResources: the service cannot run as configured); later the
// slot is tried again with backoff while the others serve, the failures
// logged at most once every rateLogEvery.
func (p *Pool) shortOf(s *slot, err error) {
	if !p.st.announced {
		p.giveUp(fmt.Errorf("%w: worker %d: %w (short of %s)", ErrResources, s.index, err, resources.Of(err)))
		return
	}
	s.crashes++
	s.restartArmed = true
	p.after(max(p.backoff(s.crashes), p.cfg.BackoffMin), restartTimer{s})
}

// rateLog lets a repeated failure be logged at most once every
// rateLogEvery, with how many happened: a storm of them must cost next to
// nothing and not flood the journal.
type rateLog struct {
	n    int
	last time.Time
}

const rateLogEvery = 10 * time.Second

// note counts one more failure and says whether to log it now, with the
// count since the last line.
func (r *rateLog) note(now time.Time) (int, bool) {
	r.n++
	if !r.last.IsZero() && now.Sub(r.last) < rateLogEvery {
		return r.n, false
	}
	n := r.n
	r.n, r.last = 0, now
	return n, true
}

// countReady counts the slots whose worker is ready and serving.
func (p *Pool) countReady() int {
	n := 0
	for _, s := range p.st.slots {
		if s.cur != nil && s.cur.state == Ready {
			n++
		}
	}
	return n
}

// crashed accounts for a worker of a slot that died without being asked
// to (or failed to start) and schedules its replacement with backoff, or
// gives up when the restart budget is spent. A slot that has a worker
// starting already (a reload's, a recycle's) or a worker serving (this
// was its replacement) is not refilled.
func (p *Pool) crashed(s *slot, w *worker, how string) {
	st := &p.st
	now := p.env.now()
	if w.failure != "" {
		how = w.failure + ", then " + how
	}
	lim := p.cfg.RestartLimit
	kept := st.crashes[:0]
	for _, t := range st.crashes {
		if now.Sub(t) < lim.Period {
			kept = append(kept, t)
		}
	}
	st.crashes = append(kept, now)
	if w.why == ExitReadyTimeout {
		s.unready++
	} else {
		s.unready = 0
	}
	if s.unready >= UnreadyLimit && p.countReady() == 0 && !s.removed {
		// Ready timeouts come one per --ready-timeout: the crash budget
		// would never run out, and sockd would restart for ever a worker
		// that does not say it is ready.
		p.giveUp(fmt.Errorf("%w: no worker became ready: worker %d was not ready within %s %d times in a row (%s)",
			ErrRestartLimit, w.slot, w.cfg.ReadyTimeout, s.unready, readyHint(w.cfg.Ready)))
		return
	}
	if len(st.crashes) > lim.Burst {
		p.giveUp(fmt.Errorf("%w: %d crashes within %s (last: worker %d, %s)", ErrRestartLimit, len(st.crashes), lim.Period, w.slot, how))
		return
	}
	switch {
	case s.removed:
		return
	case s.next != nil:
		p.log.Info("not restarting a worker whose slot is being taken over", "generation", w.gen, "worker", w.slot)
		return
	case s.cur != nil && !s.cur.leaving:
		p.log.Info("replacement failed; the slot's worker keeps serving", "generation", s.cur.gen, "worker", s.index)
		return
	}
	if !w.readyAt.IsZero() && now.Sub(w.readyAt) >= DefaultStableAfter {
		s.crashes = 0
	}
	s.crashes++
	delay := p.backoff(s.crashes)
	s.restarts++
	st.restarts++
	p.event(Event{Kind: EventRestart, Slot: s.index, Generation: s.want, PID: w.pid, Reason: w.why, Detail: how})
	p.log.Info("restarting worker", "event", "worker_restart", "generation", s.want, "worker", s.index, "delay", delay.String())
	if delay == 0 {
		p.startOrCrash(s)
		return
	}
	s.restartArmed = true
	p.after(delay, restartTimer{s})
}

// backoff is 0 for a slot's first crash, then BackoffMin doubling up to
// maxBackoff.
func (p *Pool) backoff(consecutive int) time.Duration {
	if consecutive <= 1 {
		return 0
	}
	top := p.maxBackoff()
	d := p.cfg.BackoffMin
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
	top := p.cfg.BackoffMax
	if lim := p.cfg.RestartLimit; lim.Burst > 0 {
		top = min(top, lim.Period/time.Duration(2*lim.Burst))
	}
	return max(top, p.cfg.BackoffMin)
}

func (p *Pool) onRestartTimer(s *slot) {
	s.restartArmed = false
	// A worker that announced its exit still holds the slot: the
	// restart is its replacement (as crashed decided).
	if p.st.stopping || s.removed || s.cur != nil && !s.cur.leaving || s.next != nil {
		return
	}
	p.startOrCrash(s)
}

// UnreadyLimit is how many workers of a slot in a row may be stopped for
// not being ready in time, while no worker of the pool is ready, before
// sockd gives up.
const UnreadyLimit = 3

// readyHint says what the ready rule waits for, and what to do if the app
// does not do it.
func readyHint(r ReadyRule) string {
	switch {
	case r.Listening:
		return "--ready node-listen waits for the app to listen on one of sockd's sockets: does it listen on another port?"
	case r.NodeIPC:
		return "--ready node-ipc waits for the app to call process.send('ready'); for an app that does not, --ready node-listen"
	case r.After > 0:
		return fmt.Sprintf("--ready after:%s is longer than --ready-timeout", r.After)
	}
	return "--ready notify waits for the app to send READY=1 to $NOTIFY_SOCKET (sd_notify(3)); for an app that does not, --ready after:2s (any app) or node-listen (Node.js)"
}

func (p *Pool) giveUp(err error) {
	p.log.Error("giving up", "event", "give_up", "error", err)
	p.event(Event{Kind: EventGiveUp, Detail: err.Error()})
	p.st.fatal = err
	p.beginStop()
}

// othersServe reports whether a ready worker serves, this pool's or an
// old sockd's: a worker started now starts beside it (Config.LowStart).
func (p *Pool) othersServe() bool {
	if p.deps.Predecessor != nil && p.deps.Predecessor() {
		return true
	}
	for _, w := range p.st.byPID {
		if w.state == Ready {
			return true
		}
	}
	return false
}

// raise gives a worker started at a low CPU priority its normal one
// back: it is ready, asked to stop, or still starting at half its
// ReadyTimeout.
func (p *Pool) raise(w *worker) {
	if !w.low || w.exited {
		return
	}
	w.low = false
	p.env.raise(w)
	w.timers = append(w.timers, p.after(raiseAgain, raiseTimer{w}))
}

// raiseAgain is when raise makes its second pass. A thread that a low
// one was starting while the first pass ran inherited the low priority
// but was not yet listed (the kernel copies the priority early in
// clone(2) and lists the thread late, and a low thread on a busy CPU can
// take long between the two); its creator, restored, finishes the clone
// at its normal priority well within this.
const raiseAgain = time.Second

func (p *Pool) onRaiseTimer(w *worker) {
	if !w.exited {
		p.env.raise(w)
	}
}

// onLowTimer: a worker still starting at half its ReadyTimeout (a busy
// machine gave it little CPU) gets its normal priority for the other
// half, so that it is not timed out for being starved.
func (p *Pool) onLowTimer(w *worker) {
	if w.low && !w.exited {
		p.wlog(w).Info("worker still starting; it gets its normal CPU priority now", "event", "worker_priority_restored", "after", w.cfg.ReadyTimeout/2)
		p.raise(w)
	}
}

// takeOverQueue: a retired worker that left connections queued on its
// sockets (it hung, or was killed before it took them) leaves them to the
// next worker given those sockets (Assign prefers them). That worker is
// made now: one serving worker, of the same slot if it has one, is
// recycled, and its replacement gets the sockets and their queue.
func (p *Pool) takeOverQueue(w *worker) {
	if !w.queueLeft || p.st.stopping {
		return
	}
	var target *worker
	if s := w.home; s != nil && !s.removed && s.cur != nil && s.cur.state == Ready && s.cur.owner == p.serving {
		target = s.cur
	}
	for _, s := range p.st.slots {
		if target == nil && s.cur != nil && s.cur.state == Ready && s.cur.owner == p.serving {
			target = s.cur
		}
	}
	if target == nil {
		return // the next worker started takes them
	}
	p.recycler.mark(target, "queue", fmt.Sprintf("its replacement takes the connections worker %d left queued", w.pid))
	p.after(0, recycleSoon{})
}

// recycleSoon runs the recycler once the event that marked a worker is
// over: a reload ends with the exit of its last old worker, and the
// recycler waits for the reload to end.
type recycleSoon struct{}

func (recycleSoon) apply(p *Pool) {
	if p.state() == StateReloading {
		p.after(recycleSoonPoll, recycleSoon{})
		return
	}
	p.recycler.next()
}

// recycleSoonPoll is how often recycleSoon looks whether the reload that
// held it up is over.
const recycleSoonPoll = 50 * time.Millisecond
