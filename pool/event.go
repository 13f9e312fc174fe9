package pool

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
)

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
	// EventReloadFailed rolled_back, halted or refused (its configuration
	// was not valid: nothing started), for EventSpawnFailed
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
	if p.deps.OnEvent != nil {
		p.deps.OnEvent(e)
	}
}

// loopEvent is something the loop handles: a request, a timer, news from
// a worker. Each kind says what the loop does with it (apply), so a kind
// that nothing handles cannot be written.
type loopEvent interface{ apply(p *Pool) }

// Requests, news and timers of the mechanism (loop.go, slot.go). The
// policies' own are next to them: reload.go, recycle.go, scale.go.
type (
	exitEvent       struct{ pid int }
	notifyEvent     struct{ msg notify.Message }
	stopRequest     struct{}
	statusRequest   struct{ reply chan Status }
	sampleRequest   struct{ reply chan []sampleTarget }
	usageEvent      struct{ got map[int]procfs.Usage }
	readyTimer      struct{ w *worker } // after:D elapsed
	readyTimeout    struct{ w *worker }
	killTimer       struct{ w *worker }
	groupKillTimer  struct{ w *worker }
	groupPollTimer  struct{}
	watchdogTimer   struct{ w *worker }
	restartTimer    struct{ s *slot }
	rampTimer       struct{ w *worker }
	socketPollTimer struct{ w *worker }
	lowTimer        struct{ w *worker }
	raiseTimer      struct{ w *worker }
)

func (e lowTimer) apply(p *Pool)   { p.onLowTimer(e.w) }
func (e raiseTimer) apply(p *Pool) { p.onRaiseTimer(e.w) }

func (e rampTimer) apply(p *Pool)       { p.onRampTimer(e.w) }
func (e socketPollTimer) apply(p *Pool) { p.onSocketPoll(e.w) }

func (e exitEvent) apply(p *Pool)      { p.onExit(e.pid) }
func (e notifyEvent) apply(p *Pool)    { p.onNotify(e.msg) }
func (e stopRequest) apply(p *Pool)    { p.beginStop() }
func (e statusRequest) apply(p *Pool)  { e.reply <- p.status() }
func (e readyTimer) apply(p *Pool)     { p.markReady(e.w) }
func (e readyTimeout) apply(p *Pool)   { p.onReadyTimeout(e.w) }
func (e groupKillTimer) apply(p *Pool) { p.killGroup(e.w) }
func (groupPollTimer) apply(p *Pool)   { p.pollGroups() }
func (e watchdogTimer) apply(p *Pool)  { p.onWatchdogTimer(e.w) }
func (e restartTimer) apply(p *Pool)   { p.onRestartTimer(e.s) }
func (e usageEvent) apply(p *Pool)     { p.onUsage(e.got) }

func (e killTimer) apply(p *Pool) {
	if !e.w.exited {
		p.wlog(e.w).Warn("worker did not stop in time; killing it", "event", "worker_kill", "stop_timeout", e.w.cfg.StopTimeout.String())
		p.env.signal(e.w, unix.SIGKILL)
	}
}

func (e sampleRequest) apply(p *Pool) {
	ts := make([]sampleTarget, 0, len(p.st.byPID))
	for pid, w := range p.st.byPID {
		ts = append(ts, sampleTarget{pid, w.cgroup})
	}
	e.reply <- ts
}
