package pool

import (
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/sockd/sockd/internal/procfs"
)

// reloadJob is one reload: requested, running, then finished for every
// caller that asked for it (coalesced requests share a job).
type reloadJob struct {
	waiters  []chan error
	started  time.Time
	deadline *time.Timer
	old      []*worker // the retired generation, after commit
	oldGen   int
	// committed is when every new worker was ready and the old ones got
	// SIGTERM.
	committed time.Time
	// err is why a rolled-back reload failed; it is reported once the
	// failed generation has let go of the sockets.
	err error
}

func (j *reloadJob) finish(err error) {
	if j.deadline != nil {
		j.deadline.Stop()
	}
	for _, w := range j.waiters {
		w <- err // buffered, one send each
	}
	j.waiters = nil
}

// onReloadRequest starts a reload, or queues it behind the running one.
// At most one reload waits: later requests join it, so a storm of SIGHUPs
// becomes one more generation, never a pile of them.
func (p *Pool) onReloadRequest(reply chan error) {
	st := &p.st
	switch {
	case st.stopping:
		reply <- ErrStopping
	case st.queued != nil:
		st.queued.waiters = append(st.queued.waiters, reply)
	default:
		st.queued = &reloadJob{waiters: []chan error{reply}}
		if st.reload != nil || p.retiring() > 0 {
			p.log.Info("reload queued behind the running one", "event", "reload_queued")
		}
		p.maybeStartQueued()
	}
}

// retiring counts live workers of generations that are neither serving
// nor starting: the ones draining after a reload or a rollback.
func (p *Pool) retiring() int {
	st := &p.st
	n := 0
	for _, w := range st.byPID {
		if w.gen != st.current.num && (st.next == nil || w.gen != st.next.num) {
			n++
		}
	}
	return n
}

// maybeStartQueued starts the queued reload once the previous one is over
// and its retired generation is gone, so no third generation is ever alive.
func (p *Pool) maybeStartQueued() {
	st := &p.st
	if st.queued == nil || st.reload != nil || st.handover != nil || st.stopping || p.retiring() > 0 {
		return
	}
	job := st.queued
	st.queued = nil
	st.reload = job
	job.started = time.Now()
	st.genSeq++
	st.next = &generation{num: st.genSeq, slots: make([]*worker, p.opts.Workers)}
	p.log.Info("reload started", "event", "reload_start", "generation", st.next.num)
	st.lastStatus = p.summary()
	p.opts.Notify("RELOADING=1\n" + sddaemon.SdNotifyMonotonicUsec() + "\nSTATUS=" + st.lastStatus)
	job.deadline = p.after(p.opts.ReloadTimeout, reloadDeadline{gen: st.next.num})
	next := st.next
	for slot := range next.slots {
		if st.next != next { // a spawn failure aborted the reload
			return
		}
		p.spawnInto(next, slot)
	}
}

// commitReload makes the ready new generation the serving one and asks the
// old one to drain. The listening sockets never close, so connections the
// old workers did not accept wait in the queue for the new ones. The reload
// is over once no old worker holds a listening socket any more (it stopped
// accepting, or exited): from then on only the new generation accepts.
func (p *Pool) commitReload() {
	st := &p.st
	job, old := st.reload, st.current
	st.current, st.next, st.reload = st.next, nil, nil
	st.slotCrashes = make([]int, p.opts.Workers)
	st.slotRestarts = make([]int, p.opts.Workers)
	job.old = job.old[:0]
	for _, w := range old.slots {
		if w != nil {
			p.stopWorker(w)
			job.old = append(job.old, w)
		}
	}
	job.oldGen = old.num
	job.committed = time.Now()
	if job.deadline != nil {
		job.deadline.Stop()
	}
	st.handover = job
	p.checkHandover()
}

// checkHandover finishes the committed reload once the old workers have
// let go of the listeners, polling their descriptors until then (at most
// StopTimeout: by then they are killed). A rolled-back reload waits the
// same way for its failed workers: one that was not ready may still
// accept, and an answer of the failed deploy must not come after the
// caller was told the reload failed.
func (p *Pool) checkHandover() {
	st := &p.st
	job := st.handover
	if job == nil {
		return
	}
	for _, w := range job.old {
		if !w.exited && time.Since(job.started) < p.opts.ReloadTimeout+p.opts.StopTimeout && p.holdsListener(w.pid) {
			p.after(handoverPoll, handoverTimer{})
			return
		}
	}
	st.handover = nil
	if job.err != nil { // a rollback: the failed workers no longer accept
		job.finish(job.err)
		p.maybeStartQueued()
		return
	}
	took := time.Since(job.started)
	st.lastReload = &ReloadResult{Generation: st.current.num, OK: true, FinishedAt: time.Now(), Seconds: took.Seconds()}
	// The timings split the reload into the new workers' start-up
	// (ready_seconds), the old workers letting go of the sockets after
	// SIGTERM (handover_seconds) and, when they have all exited by now,
	// how long their drain took (old_gone_seconds).
	log := p.log.With("event", "reload_done", "generation", st.current.num, "retired", job.oldGen, "seconds", took.Seconds(),
		"ready_seconds", job.committed.Sub(job.started).Seconds(), "handover_seconds", time.Since(job.committed).Seconds())
	if gone := lastExit(job.old); !gone.IsZero() {
		log = log.With("old_gone_seconds", gone.Sub(job.committed).Seconds())
	}
	log.Info("reload finished")
	job.finish(nil)
	if !st.announced {
		p.announce()
	} else {
		st.lastStatus = p.summary()
		p.opts.Notify("READY=1\nSTATUS=" + st.lastStatus)
	}
	p.maybeStartQueued()
}

// handoverPoll is how often a committed reload looks at the old workers'
// descriptors.
const handoverPoll = 2 * time.Millisecond

// holdsListener reports whether pid still has one of the pool's listening
// sockets open (compared by socket inode, as /proc/PID/fd shows it).
func (p *Pool) holdsListener(pid int) bool {
	fds, err := procfs.FDs(pid)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := procfs.FDTarget(pid, fd)
		if err == nil && p.listenerInodes[target] {
			return true
		}
	}
	return false
}

// abortReload rolls back: the new generation drains away, the serving one
// was never touched (but slots that crashed meanwhile are refilled).
func (p *Pool) abortReload(reason string) {
	st := &p.st
	job, failed := st.reload, st.next
	st.next, st.reload = nil, nil
	job.old = job.old[:0]
	for _, w := range failed.slots {
		if w != nil {
			p.stopWorker(w)
			job.old = append(job.old, w)
		}
	}
	err := &ReloadError{Generation: failed.num, Serving: st.current.num, Reason: reason}
	st.lastReload = &ReloadResult{Generation: failed.num, Error: reason, FinishedAt: time.Now(), Seconds: time.Since(job.started).Seconds()}
	p.log.Error("reload failed; previous generation keeps serving", "event", "reload_failed",
		"generation", failed.num, "serving", st.current.num, "reason", reason)
	if job.deadline != nil {
		job.deadline.Stop()
	}
	job.err = err
	st.handover = job
	st.lastStatus = p.summary()
	p.opts.Notify("READY=1\nSTATUS=" + st.lastStatus)
	for slot, w := range st.current.slots {
		if w == nil && !st.stopping {
			st.slotRestarts[slot]++
			st.restarts++
			p.spawnInto(st.current, slot)
		}
	}
	p.checkHandover()
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
