package pool

import (
	"time"

	"github.com/hashicorp/go-hclog"
)

// A worker's group is what it started: its process group (a wrapper
// script's server, say), its cgroup when it has one, and what it left
// outside those that sockd adopted (a daemon that left with setsid). An
// exited worker lingers until its group is gone.

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
		p.env.orphaned(w, w.cfg.StopSignal)
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
	w.goneBy = p.env.now().Add(w.cfg.StopTimeout)
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
	w.goneBy = p.env.now().Add(w.cfg.StopTimeout)
}

// groupGone is told once nothing of a worker's group is left.
func (p *Pool) groupGone(w *worker) {
	p.env.untrack(w.pid)
	p.env.release(w)
	if d := p.deps.MetricsDir; d != "" {
		p.env.remove(w.metricsSocket(d))
	}
}
