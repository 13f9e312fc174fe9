package pool

import "time"

// Event is something that happened to the pool: the loop hands each one
// to Options.OnEvent (metrics count them) and keeps the last ones in
// Status.Events (sockd top shows them).
type Event struct {
	Time time.Time `json:"time"`
	// Kind is one of the Event… constants.
	Kind       string `json:"kind"`
	Slot       int    `json:"slot"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	// Reason says why: for EventExit and EventRestart one of the Exit…
	// constants, for EventRecycle the limit (memory, requests, age), for
	// EventReloadFailed rolled_back or halted, for EventSpawnFailed
	// "resources" when sockd ran short of one, else "error".
	Reason string `json:"reason,omitempty"`
	// Seconds: how long a worker took to get ready (EventReady), or a
	// reload took (EventReloadDone, EventReloadFailed).
	Seconds float64 `json:"seconds,omitempty"`
	// Detail is for people: an exit status, a reload's error.
	Detail string `json:"detail,omitempty"`
}

// Kinds of Event.
const (
	EventStart        = "worker_start"
	EventSpawnFailed  = "worker_spawn_failed" // sockd could not start a worker (Detail: why)
	EventReady        = "worker_ready"
	EventExit         = "worker_exit"
	EventRestart      = "worker_restart"
	EventRecycle      = "worker_recycle"
	EventReloadDone   = "reload_done"
	EventReloadFailed = "reload_failed"
	EventScale        = "scale"
	EventGiveUp       = "give_up"
)

// Why a worker exited (Event.Reason of EventExit and EventRestart).
const (
	ExitCrash         = "crash"          // on its own, unannounced
	ExitReadyTimeout  = "ready_timeout"  // stopped: not ready in time
	ExitWatchdog      = "watchdog"       // stopped: silent for WorkerWatchdog
	ExitEarlyStopping = "early_stopping" // announced STOPPING=1 before it served MinServe
	ExitAnnounced     = "announced"      // announced STOPPING=1, then exited
	ExitRetired       = "retired"        // asked to drain: reload, scale, recycle, a failed reload's worker
	ExitStopped       = "stopped"        // the pool stopped
)

// recentEvents is how many events Status keeps.
const recentEvents = 32

// event records e and passes it on.
func (p *Pool) event(e Event) {
	e.Time = p.env.now()
	st := &p.st
	if len(st.events) == recentEvents {
		copy(st.events, st.events[1:])
		st.events = st.events[:recentEvents-1]
	}
	st.events = append(st.events, e)
	if p.opts.OnEvent != nil {
		p.opts.OnEvent(e)
	}
}

// exitReason classifies a worker's exit.
func (p *Pool) exitReason(w *worker) string {
	switch {
	case p.st.stopping:
		return ExitStopped
	case w.failureKind != "":
		return w.failureKind
	case w.leaving:
		return ExitAnnounced
	case w.stopSent:
		return ExitRetired
	}
	return ExitCrash
}
