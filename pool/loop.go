package pool

import (
	"cmp"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"github.com/sockd/sockd/internal/output"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
)

// worker is one worker process. Only the loop touches it.
type worker struct {
	slot, gen, pid int
	home           *slot // the slot it was started in
	cfg            *conf // the configuration it runs
	owner          owner // decides what its events mean (owner.go)
	state          string
	started        time.Time
	readyAt        time.Time
	lastPing       time.Time
	restarts       int
	requests       int64
	hasRequests    bool
	status         string
	failure        string // why sockd stopped it as a failure (ready timeout, watchdog), or judged its exit one
	why            string // the Exit… reason its exit will have: sockd's last decision about it
	stopSent       bool   // sockd asked it to stop
	leaving        bool   // it announced STOPPING=1 on its own
	queueLeft      bool   // it was stopped with connections still queued on its sockets
	exited         bool
	exitedAt       time.Time
	killAt         time.Time // when sockd SIGKILLs it (and its group), once asked to stop
	timers         []timer
	watchdog       timer         // its watchdog's, re-armed after every ping (not kept in timers: one at a time)
	groupKilled    bool          // what it left was sent SIGKILL
	goneBy         time.Time     // lingering: when to stop waiting for its group
	id             string        // SOCKD_WORKER_ID: unique while sockd runs
	cgroup         *cgroup.Group // its cgroup, when the pool has a cgroup tree
	out            *output.Pipes // its stdout and stderr, with Deps.Output
	maxRequests    int64         // its own MaxRequests (0: none)
	recycle        string        // why it is to be recycled ("": it is not)
	recycleKind    string        // memory, requests or age
	usage          procfs.Usage  // last sample of its process tree
	sampledAt      time.Time
	// sock is its socket index in every reuseport group (its slot's
	// without Deps.Steering); replaces names the worker it was started
	// to take the place of; rampEnd is when its slow start ends;
	// draining: asked to stop, it keeps running until its sockets are
	// drained (Deps.Steering), then gets its stop signal.
	sock     int
	replaces string
	rampEnd  time.Time
	draining bool
	// low: it was started at a low CPU priority (Config.LowStart)
	// and has not been given its normal one back yet.
	low bool
	// threads: the threads raise has looked at (the OS env's; its
	// second pass touches only new ones).
	threads map[int]bool
}

// steerName names the worker to Deps.Steering: slot/generation/id.
func (w *worker) steerName() string { return fmt.Sprintf("%d/%d/%s", w.slot, w.gen, w.id) }

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
	seq       int     // workers started, for their SOCKD_WORKER_ID
	events    []Event // the last recentEvents
	// pendingSize is a size asked for during a reload (0: none); parked
	// are slots a scale-down retired whose workers still take the
	// connections queued on their reuseport sockets; steered is how many
	// slots' sockets the kernel hands new connections to.
	pendingSize int
	parked      []*slot
	steered     int
	spawnLog    rateLog
	// spawnFailures counts the workers sockd could not start.
	spawnFailures int
}

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
	st.genSeq = p.deps.FirstGeneration
	st.gen = st.genSeq
	n := cmp.Or(p.deps.Size, p.cfg.Workers)
	p.log.Info("starting workers", "event", "pool_start", "generation", st.gen, "workers", n,
		"command", p.cfg.command, "ready", p.cfg.Ready.String())
	if err := p.resize(n, true); err != nil {
		p.giveUp(err)
	}
	p.updateStatus()
}

// step handles one event and tells systemd if the summary changed.
func (p *Pool) step(ev loopEvent) {
	ev.apply(p)
	p.updateStatus()
}

// after posts ev to the loop once d has passed.
func (p *Pool) after(d time.Duration, ev loopEvent) timer { return p.env.after(d, ev) }

// onExit reaps a worker, deals with what is left of its group, and hands
// the exit to the worker's owner.
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
	p.env.gone(w)
	for _, t := range w.timers {
		t.Stop()
	}
	if w.watchdog != nil {
		w.watchdog.Stop()
	}
	how := es.String()
	p.event(Event{Kind: EventExit, Slot: w.slot, Generation: w.gen, PID: w.pid, Reason: w.why, Detail: how})
	log := p.wlog(w).With("event", "worker_exit", "status", how, "reason", w.why, "cpu_seconds", es.cpu.Seconds())
	if w.failure != "" {
		log.Warn("worker crashed", "failure", w.failure)
	} else if w.why == ExitCrash && es.ws.Exited() && es.ws.ExitStatus() == 0 && w.readyAt.IsZero() && w.exitedAt.Sub(w.started) < daemonizeWithin {
		// Exit 0 at once, before it was ready: most likely a server that
		// went to the background, which sockd cannot supervise.
		log.Warn("worker crashed", "hint", "it exited 0 right after it started: did the command go to the background (daemonize)? sockd runs it in the foreground: turn daemon mode off (nginx: daemon off; others: --foreground, --no-daemon)")
	} else if w.why == ExitCrash {
		log.Warn("worker crashed")
	} else {
		log.Info("worker exited")
	}
	p.afterLeader(w, groupLeft, log)
	w.owner.exited(w, how)
	for _, pol := range p.policies {
		pol.gone(w)
	}
}

// beginStop drains every worker of every generation.
func (p *Pool) beginStop() {
	st := &p.st
	if st.stopping {
		return
	}
	st.stopping = true
	p.log.Info("stopping all workers", "event", "pool_stop", "workers", len(st.byPID), "stop_timeout", p.cfg.StopTimeout.String())
	p.deps.Notify("STOPPING=1")
	p.endReloadsForStop()
	for _, w := range st.byPID {
		w.owner = p.retired
		p.stopWorker(w, ExitStopped)
		w.why = ExitStopped
	}
}

// markReady handles READY=1 (or the after:D rule, or "ready" on Node's
// IPC channel).
// daemonizeWithin: a worker that exits 0 this soon after it started,
// before it was ready, is taken for a server that went to the background.
const daemonizeWithin = 2 * time.Second

func (p *Pool) markReady(w *worker) {
	if w.exited || w.state != Starting {
		return
	}
	if w.failure != "" {
		// It announced its exit before it was ready: leaving, it does not
		// take anything over (its exit counts as a failure), and it is
		// stopped, or a worker that never goes (with --ready after:D no
		// ready timeout is armed) would hold its slot.
		p.wlog(w).Warn("ready after the worker announced its exit; ignored, and the worker stopped", "event", "worker_ready_ignored", "reason", w.failure)
		p.stopWorker(w, ExitEarlyStopping)
		return
	}
	w.state = Ready
	w.readyAt = p.env.now()
	for _, s := range p.st.slots {
		s.unready = 0
	}
	p.raise(w)
	w.rampEnd = p.env.steerReady(w)
	p.wlog(w).Info("worker ready", "event", "worker_ready", "seconds", w.readyAt.Sub(w.started).Seconds())
	p.event(Event{Kind: EventReady, Slot: w.slot, Generation: w.gen, PID: w.pid, Seconds: w.readyAt.Sub(w.started).Seconds()})
	if d := w.cfg.WorkerWatchdog; d > 0 {
		w.watchdog = p.after(d, watchdogTimer{w})
	}
	w.owner.ready(w)
}

func (p *Pool) announce() {
	st := &p.st
	st.announced = true
	close(p.ready)
	p.log.Info("all workers ready", "event", "pool_ready", "generation", st.gen,
		"seconds", p.env.now().Sub(st.started).Seconds())
	st.lastStatus = p.summary()
	p.deps.Notify("READY=1\nSTATUS=" + st.lastStatus)
}

func (p *Pool) onReadyTimeout(w *worker) {
	if w.exited || w.state != Starting || w.stopSent {
		return
	}
	w.owner.readyTimeout(w)
}

func (p *Pool) onWatchdogTimer(w *worker) {
	if w.exited || w.state != Ready {
		return
	}
	last := w.readyAt
	if w.lastPing.After(last) {
		last = w.lastPing
	}
	if left := w.cfg.WorkerWatchdog - p.env.now().Sub(last); left > 0 {
		w.watchdog = p.after(left, watchdogTimer{w})
		return
	}
	p.wlog(w).Warn("worker watchdog timeout; aborting it", "event", "worker_watchdog", "watchdog", w.cfg.WorkerWatchdog)
	w.state = Stopping
	w.failure, w.why = fmt.Sprintf("silent for %s (watchdog)", w.cfg.WorkerWatchdog), ExitWatchdog
	p.env.signal(w, unix.SIGABRT)
	w.killAt = p.env.now().Add(w.cfg.StopTimeout)
	w.timers = append(w.timers, p.after(w.cfg.StopTimeout, killTimer{w}))
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
		w.lastPing = p.env.now()
	}
	for _, pol := range p.policies {
		pol.reported(w)
	}
	if m.Ready() {
		p.markReady(w)
	}
	if m.Stopping() && !w.stopSent && !w.leaving && w.failure == "" {
		w.owner.stopping(w)
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

func (p *Pool) updateStatus() {
	st := &p.st
	if s := p.summary(); s != st.lastStatus {
		st.lastStatus = s
		p.deps.Notify("STATUS=" + s)
	}
}

func (p *Pool) wlog(w *worker) hclog.Logger {
	return p.log.With("generation", w.gen, "worker", w.slot, "worker_pid", w.pid)
}
