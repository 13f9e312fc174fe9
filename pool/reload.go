package pool

import (
	"fmt"
	"slices"
	"sort"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// A reload, from request to end, in this one file:
//
//  1. onReloadRequest: a request starts a reload, or joins the one queued
//     behind the running reload (coalescing: at most one waits).
//  2. maybeStartQueued: the queued reload starts once the previous one is
//     over and no worker of a generation that no slot runs is alive, so
//     there are never three generations alive. systemd hears RELOADING=1.
//  3. startBatch: the next ReloadBatch slots (all of them by default) get
//     the new generation as their wanted one, and a new worker starts in
//     each as the slot's next (slot.go), owned by the rollout, while the
//     old workers serve on. A worker of the old generation starting in one
//     of those slots (a restart, a replacement) is dropped.
//  4. ready (the rollout as the owner of the batch's workers): once every
//     worker of the batch is ready, the first batch soaks for ReloadSoak
//     beside the old workers (the canary), then
//  5. commitBatch promotes the batch's workers and retires the old ones;
//     checkHandover waits until none of those holds a listening socket any
//     more. Then the next batch starts (3), or
//  6. finishReload: the reload is done; systemd hears READY=1.
//  7. gone (the reload policy): as the retired workers exit, a queued
//     reload may start (2).
//
// If a worker of the batch exits, announces STOPPING=1 or is not ready in
// time (the rollout's exited, stopping, readyTimeout), abortReload stops
// the batch's new workers; the slots keep their old workers, untouched.
// When that happens to the first batch, the reload
// failed and the pool is as before; when it happens to a later one, the
// reload halted with the earlier batches' slots on the new generation
// (sockd cannot bring back old code: the old workers of those slots are
// gone). Either way the caller hears it only once the failed workers let
// go of the listeners, so that no answer of the failed deploy comes after
// it was told the reload failed.

// reloadJob is the callers waiting for one reload (coalesced requests
// share it), and the configuration it brings (nil: the one in force; the
// newest request's wins).
type reloadJob struct {
	waiters []chan error
	cfg     *conf
}

func (j *reloadJob) finish(err error) {
	for _, w := range j.waiters {
		w <- err // buffered, one send each
	}
	j.waiters = nil
}

// rolloutPhase is where a reload stands.
type rolloutPhase int

const (
	phaseStarting rolloutPhase = iota // a batch's new workers are starting
	phaseSoaking                      // the ready canary batch serves beside the old workers
	phaseHandover                     // the batch took over; its old workers are letting go of the listeners
	phaseRollback                     // failed; the batch's new workers are letting go of the listeners
)

// rollout is the reload under way, and the owner of its batch's workers.
type rollout struct {
	p         *Pool
	job       *reloadJob
	gen, from int // the generation rolled out, and the one serving before
	phase     rolloutPhase
	started   time.Time
	batch     int           // batches started so far
	done      int           // slots that took the new generation
	cfg       *conf         // the configuration the new generation runs
	slots     []*slot       // the running batch's slots
	prev      map[*slot]int // the wanted generation of the batch's slots before
	prevCfg   map[*slot]*conf
	// size is the number of slots the new configuration asks for, when it
	// changed (0: it did not); added are the slots the reload made for it,
	// removed again if it fails.
	size      int
	added     []*slot
	deadline  timer
	committed time.Time // when the last batch took over (or failed)
	// superseded are old-generation workers that were starting in the
	// batch's slots (a restart, a replacement) when the batch began, and
	// a batch worker that announced its exit: endBatch watches them.
	superseded []*worker
	// retired are the workers watched until they let go of the
	// listeners: the batch's old ones after a commit, its new ones after
	// a rollback.
	retired []*worker
	err     error
}

// The reload's requests and timers.
type (
	refusal       struct{ reason string }
	reloadRequest struct {
		reply chan error
		cfg   *conf
	}
	handoverTimer  struct{}
	reloadDeadline struct{ gen, batch int }
	soakTimer      struct{ gen int }
)

func (e reloadRequest) apply(p *Pool)  { p.onReloadRequest(e.reply, e.cfg) }
func (handoverTimer) apply(p *Pool)    { p.checkHandover() }
func (r refusal) apply(p *Pool)        { p.onRefusal(r.reason) }
func (e reloadDeadline) apply(p *Pool) { p.onReloadDeadline(e.gen, e.batch) }
func (e soakTimer) apply(p *Pool)      { p.onSoakOver(e.gen) }

// reloads is the policy that starts a queued reload once the workers of
// the generation the last one retired are gone.
type reloads struct{ p *Pool }

func (reloads) promoted(*worker) {}
func (reloads) reported(*worker) {}
func (reloads) sampled(*worker)  {}
func (r reloads) gone(w *worker) { r.p.maybeStartQueued() }

// The rollout as the owner of its batch's workers: ready, they wait for
// the whole batch; failed, the reload rolls back.

// ready: once every worker of the batch is ready, the first batch soaks
// for ReloadSoak beside the old workers (the canary); then, or at once,
// the batch is committed.
func (r *rollout) ready(*worker) {
	p := r.p
	if r.phase != phaseStarting {
		return
	}
	for _, s := range r.slots {
		if s.next == nil || s.next.state != Ready {
			return
		}
	}
	if d := r.cfg.ReloadSoak; d > 0 && r.batch == 1 {
		r.deadline.Stop()
		r.phase = phaseSoaking
		p.log.Info("canary batch ready; soaking beside the old workers", "event", "reload_soak", "generation", r.gen, "soak", d)
		p.after(d, soakTimer{gen: r.gen})
		return
	}
	p.commitBatch()
}
func (*rollout) dropped(*worker) {}

func (r *rollout) readyTimeout(w *worker) {
	r.p.abortReload(fmt.Sprintf("worker %d was not ready within %s", w.slot, w.cfg.ReadyTimeout))
}

func (r *rollout) stopping(w *worker) {
	r.p.leave(w)
	w.home.next = nil
	// Watched like the batch's other workers: the caller hears of the
	// rollback once it let go of the listeners (endBatch makes the
	// superseded the watched).
	r.superseded = append(r.superseded, w)
	r.p.abortReload(fmt.Sprintf("worker %d announced it is stopping", w.slot))
}

func (r *rollout) exited(w *worker, how string) {
	w.home.next = nil
	when := "before"
	if w.state == Ready {
		when = "after"
	}
	r.p.abortReload(fmt.Sprintf("worker %d exited %s it was ready (%s)", w.slot, when, how))
}

// onReloadRequest starts a reload, or queues it behind the running one.
// At most one reload waits: later requests join it, so a storm of SIGHUPs
// becomes one more generation, never a pile of them.
func (p *Pool) onReloadRequest(reply chan error, cfg *conf) {
	st := &p.st
	switch {
	case st.stopping:
		reply <- ErrStopping
	case st.queued != nil:
		st.queued.waiters = append(st.queued.waiters, reply)
		if cfg != nil {
			st.queued.cfg = cfg
		}
	default:
		st.queued = &reloadJob{waiters: []chan error{reply}, cfg: cfg}
		if st.reload != nil || p.strayGeneration() {
			p.log.Info("reload queued behind the running one", "event", "reload_queued")
		}
		p.maybeStartQueued()
	}
}

// strayGeneration reports whether a worker is alive whose generation no
// slot runs: the old generation of the last reload, still draining.
func (p *Pool) strayGeneration() bool {
	running := map[int]bool{}
	for _, s := range p.st.slots {
		for _, w := range []*worker{s.cur, s.next} {
			if w != nil {
				running[w.gen] = true
			}
		}
	}
	for _, w := range p.st.byPID {
		if !running[w.gen] {
			return true
		}
	}
	return false
}

// maybeStartQueued starts the queued reload once the previous one is over
// and its retired generation is gone.
func (p *Pool) maybeStartQueued() {
	st := &p.st
	if st.queued == nil || st.reload != nil || st.stopping || p.strayGeneration() {
		return
	}
	st.genSeq++
	r := &rollout{p: p, job: st.queued, gen: st.genSeq, from: st.gen, started: p.env.now(), cfg: p.cfg,
		prev: map[*slot]int{}, prevCfg: map[*slot]*conf{}}
	if c := st.queued.cfg; c != nil {
		r.cfg = c
		if c.Workers != p.cfg.Workers {
			r.size = c.Workers
		}
	}
	st.queued, st.reload = nil, r
	p.log.Info("reload started", "event", "reload_start", "generation", r.gen)
	if r.size > len(st.slots) {
		if err := p.env.grow(r.size); err != nil {
			p.log.Error("cannot grow the sockets for the new size; reloading at the old one", "event", "scale_failed", "workers", r.size, "error", err)
			r.size = 0
		}
		for len(st.slots) < r.size {
			s := &slot{index: len(st.slots), want: st.gen, cfg: p.cfg}
			st.slots = append(st.slots, s)
			r.added = append(r.added, s)
		}
	}
	st.lastStatus = p.summary()
	p.deps.Notify("RELOADING=1\n" + sddaemon.SdNotifyMonotonicUsec() + "\nSTATUS=" + st.lastStatus)
	p.startBatch()
}

// startBatch moves the next ReloadBatch slots to the new generation: a new
// worker starts in each beside the old one.
func (p *Pool) startBatch() {
	st := &p.st
	r := st.reload
	r.phase = phaseStarting
	r.batch++
	r.deadline = p.after(r.cfg.ReloadTimeout, reloadDeadline{gen: r.gen, batch: r.batch})
	r.slots = r.slots[:0]
	for _, s := range st.slots {
		if s.want != r.gen && (r.cfg.ReloadBatch == 0 || len(r.slots) < r.cfg.ReloadBatch) {
			r.slots = append(r.slots, s)
		}
	}
	if r.batch > 1 {
		p.log.Info("reload batch started", "event", "reload_batch", "generation", r.gen, "batch", r.batch, "slots", len(r.slots))
	}
	for _, s := range r.slots {
		r.prev[s], r.prevCfg[s] = s.want, s.cfg
		s.want, s.cfg = r.gen, r.cfg
		if w := s.next; w != nil { // a restart or replacement of the old generation
			p.drop(w)
			r.superseded = append(r.superseded, w)
		}
	}
	for _, s := range r.slots {
		w, err := p.startNext(s)
		if err != nil {
			p.abortReload(err.Error())
			return
		}
		w.owner, w.restarts = r, 0
	}
}

func (p *Pool) onSoakOver(gen int) {
	if r := p.st.reload; r != nil && r.gen == gen && r.phase == phaseSoaking {
		p.commitBatch()
	}
}

// commitBatch makes the batch's ready workers the serving ones and asks
// the old ones to drain. The listening sockets never close, so connections
// the old workers did not accept wait in the queue for the new ones.
func (p *Pool) commitBatch() {
	st := &p.st
	r := st.reload
	p.endBatch()
	for _, s := range r.slots {
		s.crashes, s.restarts = 0, 0
		if old := p.promote(s); old != nil {
			r.retired = append(r.retired, old)
		}
		r.done++
	}
	r.slots = r.slots[:0]
	st.gen = r.gen
	if p.cfg != r.cfg {
		p.setConf(r.cfg)
	}
	r.added = nil // theirs now
	r.committed = p.env.now()
	r.phase = phaseHandover
	p.checkHandover()
}

// checkHandover moves the reload on once the workers it retired have let
// go of the listeners, polling their descriptors until then (at most
// ReloadTimeout+StopTimeout: they are killed by then). A retired worker
// not yet asked to stop (serving out a slow start, or draining its
// steered sockets) holds them by definition: its descriptors are not read
// (a Node worker has dozens; reading them every 2 ms for the seconds a
// ramp and a drain last cost sockd a sixth of a core).
func (p *Pool) checkHandover() {
	r := p.st.reload
	if r == nil || r.phase != phaseHandover && r.phase != phaseRollback {
		return
	}
	for _, w := range r.retired {
		if p.env.now().Sub(r.committed) >= p.cfg.ReloadTimeout+w.cfg.StopTimeout {
			continue
		}
		if w.exited {
			if _, lingers := p.st.lingering[w.pid]; lingers {
				// Its leader is gone, but what it started drains on
				// until its stop deadline and may hold the listeners
				// (the server a wrapper script started). Its group is
				// looked at every groupPoll.
				p.after(groupPoll, handoverTimer{})
				return
			}
			continue
		}
		if !w.stopSent && !w.leaving || w.draining {
			p.after(socketPoll, handoverTimer{})
			return
		}
		if p.env.holdsListener(w.pid) {
			p.after(handoverPoll, handoverTimer{})
			return
		}
	}
	switch {
	case r.phase == phaseRollback:
		p.finishReload(r.err)
	case p.slotsLeft(r.gen) > 0:
		p.startBatch()
	default:
		p.finishReload(nil)
	}
}

// handoverPoll is how often a reload looks at the retired workers'
// descriptors.
const handoverPoll = 2 * time.Millisecond

// slotsLeft counts the slots that do not run gen yet.
func (p *Pool) slotsLeft(gen int) int {
	n := 0
	for _, s := range p.st.slots {
		if s.want != gen {
			n++
		}
	}
	return n
}

// finishReload ends the reload: its callers hear how it went.
func (p *Pool) finishReload(err error) {
	st := &p.st
	r := st.reload
	st.reload = nil
	switch {
	case st.pendingSize > 0: // sockd scale during the reload: it wins
		defer p.scaleTo(st.pendingSize)
	case err == nil && r.size > 0 && r.size < len(st.slots):
		defer p.scaleTo(r.size)
	}
	if err != nil {
		r.job.finish(err)
		p.maybeStartQueued()
		return
	}
	now := p.env.now()
	took := now.Sub(r.started)
	st.lastReload = &ReloadResult{Generation: r.gen, OK: true, FinishedAt: now, Seconds: took.Seconds()}
	// The timings split the (last batch of the) reload into the new
	// workers' start-up (ready_seconds), the old workers letting go of the
	// sockets after SIGTERM (handover_seconds) and, when they have all
	// exited by now, how long their drain took (old_gone_seconds).
	log := p.log.With("event", "reload_done", "generation", r.gen, "retired_generation", r.from, "seconds", took.Seconds(),
		"ready_seconds", r.committed.Sub(r.started).Seconds(), "handover_seconds", now.Sub(r.committed).Seconds())
	if gone := lastExit(r.retired); !gone.IsZero() {
		log = log.With("old_gone_seconds", gone.Sub(r.committed).Seconds())
	}
	log.Info("reload finished")
	p.event(Event{Kind: EventReloadDone, Generation: r.gen, Seconds: took.Seconds()})
	r.job.finish(nil)
	if !st.announced {
		p.announce()
	} else {
		st.lastStatus = p.summary()
		p.deps.Notify("READY=1\nSTATUS=" + st.lastStatus)
	}
	p.maybeStartQueued()
}

func (p *Pool) onReloadDeadline(gen, batch int) {
	r := p.st.reload
	if r == nil || r.gen != gen || r.batch != batch || r.phase != phaseStarting {
		return
	}
	ready, size := 0, len(r.slots)
	for _, s := range r.slots {
		if s.next != nil && s.next.state == Ready {
			ready++
		}
	}
	p.abortReload(fmt.Sprintf("not every worker was ready within %s (%d/%d ready)", r.cfg.ReloadTimeout, ready, size))
}

// endBatch stops the running batch's deadline and starts the list of
// workers the handover waits for with the ones the batch dropped (old
// workers that were starting in its slots when it began); commit and
// rollback add theirs.
func (p *Pool) endBatch() {
	r := p.st.reload
	r.deadline.Stop()
	r.retired = append(r.retired[:0], r.superseded...)
	r.superseded = nil
}

// abortReload rolls the running batch back: its new workers drain away,
// the old ones were never touched (but slots whose worker crashed
// meanwhile are refilled).
func (p *Pool) abortReload(reason string) {
	st := &p.st
	r := st.reload
	p.endBatch()
	for _, s := range r.slots {
		s.want, s.cfg = r.prev[s], r.prevCfg[s]
		if w := s.next; w != nil {
			s.next = nil
			p.retire(w, time.Time{})
			r.retired = append(r.retired, w)
		}
	}
	r.slots = r.slots[:0]
	p.dropAdded(r)
	now := p.env.now()
	err := &ReloadError{Generation: r.gen, Serving: r.from, Reason: reason, Slots: len(st.slots), Replaced: r.done, Unserved: p.countReady() == 0}
	for _, s := range st.slots {
		if !s.removed && s.want != r.gen && !slices.Contains(err.Others, s.want) {
			err.Others = append(err.Others, s.want)
		}
	}
	sort.Ints(err.Others)
	if len(err.Others) == 1 {
		err.Serving = err.Others[0]
	}
	st.lastReload = &ReloadResult{Generation: r.gen, Error: reason, Replaced: r.done, FinishedAt: now, Seconds: now.Sub(r.started).Seconds()}
	switch {
	case r.done == 0 && err.Unserved:
		p.log.Error("reload failed; no worker of the previous generation was ready: it starts again", "event", "reload_failed",
			"generation", r.gen, "previous", r.from, "reason", reason)
	case r.done == 0:
		p.log.Error("reload failed; previous generation keeps serving", "event", "reload_failed",
			"generation", r.gen, "serving", r.from, "reason", reason)
	default:
		p.log.Error("reload halted; the slots not reached keep their workers", "event", "reload_failed",
			"generation", r.gen, "replaced", r.done, "slots", len(st.slots), "reason", reason)
	}
	result := "rolled_back"
	if r.done > 0 {
		result = "halted"
	}
	p.event(Event{Kind: EventReloadFailed, Generation: r.gen, Reason: result, Seconds: now.Sub(r.started).Seconds(), Detail: reason})
	r.err, r.phase, r.committed = err, phaseRollback, now
	st.lastStatus = p.summary()
	p.deps.Notify("READY=1\nSTATUS=" + st.lastStatus)
	for _, s := range st.slots {
		switch {
		case s.next != nil || s.restartArmed || st.stopping:
		case s.cur == nil:
			s.restarts++
			st.restarts++
			p.startOrCrash(s)
		case s.cur.leaving:
			// It announced its exit while the reload's worker was to
			// take its slot over: it gets its own replacement.
			p.startOrCrash(s)
		}
	}
	p.checkHandover()
}

// dropAdded removes the slots a failed reload made for its new size:
// they never served (a later batch's failure finds them committed).
func (p *Pool) dropAdded(r *rollout) {
	st := &p.st
	for i := len(r.added) - 1; i >= 0; i-- {
		if s := r.added[i]; st.slots[len(st.slots)-1] == s && s.cur == nil {
			st.slots = st.slots[:len(st.slots)-1]
			s.removed = true
		}
	}
	r.added = nil
}

// endReloadsForStop answers the reload callers when the pool stops: a
// reload that took every slot over is done, a rolled-back one failed, any
// other is cut short.
func (p *Pool) endReloadsForStop() {
	st := &p.st
	if r := st.reload; r != nil {
		r.deadline.Stop()
		switch {
		case r.phase == phaseRollback:
			r.job.finish(r.err)
		case r.phase == phaseHandover && p.slotsLeft(r.gen) == 0:
			r.job.finish(nil)
		default:
			r.job.finish(ErrStopping)
		}
	}
	if st.queued != nil {
		st.queued.finish(ErrStopping)
	}
	st.reload, st.queued = nil, nil
}

// Refuse records a reload that failed before it reached the pool (its
// configuration was not valid): status and systemd's STATUS= say so
// until the next reload, and nothing changed.
func (p *Pool) Refuse(reason string) { p.post(refusal{reason}) }

func (p *Pool) onRefusal(reason string) {
	now := p.env.now()
	p.st.lastReload = &ReloadResult{Generation: p.st.gen, Error: reason, FinishedAt: now}
	p.event(Event{Kind: EventReloadFailed, Generation: p.st.gen, Reason: "refused", Detail: reason})
}

// lastExit is when the last of ws exited, or zero while one still runs.
func lastExit(ws []*worker) time.Time {
	var last time.Time
	for _, w := range ws {
		if !w.exited {
			return time.Time{}
		}
		if w.exitedAt.After(last) {
			last = w.exitedAt
		}
	}
	return last
}
