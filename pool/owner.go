package pool

// Every worker belongs to an owner: the policy that started it, until it
// is promoted (the slot's serving rules own it then, server in slot.go),
// and the retirement once it is asked to drain. The loop's generic
// handlers (loop.go) do what is the same for every worker — reap it,
// log, record the event, arm or cancel its timers — and hand the event
// to the worker's owner, which alone decides what it means:
//
//	owner        started by              ready            failed before promotion      exited after promotion
//	starter      first start, crash      promote          a crash of the slot          (server's)
//	             restart, scale-up,                       (budget, backoff, restart)
//	             STOPPING=1 replacement
//	recycler     a worker over a         promote, next    the worker keeps serving;    (server's)
//	             Recycle limit           recycle          retry after a backoff
//	rollout      a reload's batch        when the whole   the reload rolls back        (server's)
//	                                     batch is: commit
//	server       (promotion)             —                —                            a crash of the slot
//	retiree      (retirement)            —                —                            nothing; a reload's
//	                                                                                   handover may move on
//
// A policy that watches the pool as it runs (recycling, the reload queue)
// is a policy: it hears of promotions, notify reports and exits, and may
// start a replacement in a slot with an owner of its own (replace).

// owner decides what a worker's events mean.
type owner interface {
	// ready: w became ready (READY=1, after:D, node ipc "ready").
	ready(w *worker)
	// readyTimeout: w was not ready within its ReadyTimeout.
	readyTimeout(w *worker)
	// stopping: w announced STOPPING=1 before anyone asked it to stop.
	stopping(w *worker)
	// exited: w exited and was reaped; how says how, with why sockd had
	// stopped it as a failure (a ready timeout), if it had.
	exited(w *worker, how string)
	// dropped: the pool takes w, still starting, from its owner (a
	// reload takes the slot over); w is asked to stop.
	dropped(w *worker)
}

// policy watches the pool as it runs. Its hooks are called by the loop
// after the owners had their say.
type policy interface {
	// promoted: w took its slot over.
	promoted(w *worker)
	// reported: w sent a notify message (requests, status, watchdog).
	reported(w *worker)
	// sampled: what w uses was read (its memory, its CPU time).
	sampled(w *worker)
	// gone: w exited.
	gone(w *worker)
}

// retiree owns a worker that was asked to drain, or announced that it
// will: nothing it does matters any more but its exit, which frees its
// slot if it still held it (an announced exit before its replacement was
// ready).
type retiree struct{ p *Pool }

func (retiree) ready(*worker)        {}
func (retiree) readyTimeout(*worker) {}
func (retiree) stopping(*worker)     {}
func (retiree) dropped(*worker)      {}

func (o retiree) exited(w *worker, how string) {
	o.p.takeOverQueue(w)
	s := w.home
	if s == nil || s.cur != w {
		return
	}
	s.cur = nil // it announced its exit; its replacement starts as s.next
	if p := o.p; s.next == nil && !s.restartArmed && !s.removed && !p.st.stopping {
		// Its replacements failed and none is due: the slot must not
		// stay empty.
		p.log.Warn("the slot of a worker that announced its exit has no replacement; starting one", "event", "worker_restart", "worker", s.index)
		p.startOrCrash(s)
	}
}
