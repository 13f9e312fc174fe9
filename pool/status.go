package pool

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Worker states.
const (
	Starting = "starting"
	Ready    = "ready"
	Stopping = "stopping"
)

// Pool states.
const (
	StateStarting  = "starting"  // first generation not ready yet
	StateRunning   = "running"   // serving
	StateReloading = "reloading" // a new generation is starting
	StateStopping  = "stopping"  // draining before exit
)

// Status is a snapshot of the pool, as `sockd status --json` prints it.
type Status struct {
	PID        int    `json:"pid"`
	State      string `json:"state"`
	Summary    string `json:"summary"`
	Generation int    `json:"generation"`
	Size       int    `json:"size"`    // the number of slots asked for
	Current    int    `json:"current"` // slots with a worker, and retired slots still draining
	Ready      int    `json:"ready"`
	Restarts   int    `json:"restarts"`
	Recycles   int    `json:"recycles"` // workers replaced for being over a recycle limit
	// SpawnFailures counts the workers sockd could not start (fork or
	// exec failed: out of descriptors, processes or memory, say).
	SpawnFailures int       `json:"spawn_failures"`
	StartedAt     time.Time `json:"started_at"`
	ReadyRule     string    `json:"ready_rule"`
	// Revision names the configuration in force (Config.Revision).
	Revision   string           `json:"revision,omitempty"`
	Reload     *ReloadProgress  `json:"reload,omitempty"`
	LastReload *ReloadResult    `json:"last_reload,omitempty"`
	Workers    []WorkerStatus   `json:"workers"`
	Listeners  []ListenerStatus `json:"listeners"`
	// Events are the pool's last events, oldest first.
	Events []Event `json:"events,omitempty"`
	// GuardPID is the guard process that kills the workers' process
	// groups should sockd die (0: none).
	GuardPID int `json:"guard_pid,omitempty"`
}

// WorkerStatus describes one live worker process.
type WorkerStatus struct {
	Slot       int `json:"slot"`
	Generation int `json:"generation"`
	PID        int `json:"pid"`
	// Socket is the index of its socket in each reuseport group (the
	// listeners' QueueDepth): its own with Deps.Steering, its slot's
	// without.
	Socket        int       `json:"socket"`
	State         string    `json:"state"`
	StartedAt     time.Time `json:"started_at"`
	ReadyAt       time.Time `json:"ready_at,omitzero"` // when it became ready (zero: not yet)
	UptimeSeconds float64   `json:"uptime_seconds"`
	Restarts      int       `json:"restarts"`
	// Requests is what the worker last reported with SOCKD_REQUESTS=.
	Requests *int64 `json:"requests,omitempty"`
	// Status is the worker's own STATUS= text.
	Status string `json:"status,omitempty"`
	// RSSBytes and CPUSeconds are what the worker's process tree used at
	// the last sample (Pool.Sample, Options.SampleInterval); absent
	// before one.
	RSSBytes   int64   `json:"rss_bytes,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Recycle says why the worker is to be replaced, once it is over a
	// recycle limit.
	Recycle string `json:"recycle,omitempty"`
	// MetricsSocket is where the worker may serve its own metrics
	// (SOCKD_METRICS_SOCKET; only with --metrics).
	MetricsSocket string `json:"metrics_socket,omitempty"`
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Name      string `json:"name"`
	Network   string `json:"network"`
	Address   string `json:"address"`
	FD        int    `json:"fd"`        // the descriptor number workers see
	SockdFDs  []int  `json:"sockd_fds"` // sockd's own descriptors (one per slot in reuseport mode)
	Inherited bool   `json:"inherited"`
	// QueueDepth is how many connections wait in each socket's accept
	// queue, not yet taken by a worker, and QueueLimit that queue's
	// length (the backlog), one entry per socket; absent where the kernel
	// does not say (unix sockets). For datagram sockets the depth is the
	// size of the next datagram waiting.
	QueueDepth []int `json:"queue_depth,omitempty"`
	QueueLimit []int `json:"queue_limit,omitempty"`
}

// ReloadProgress describes a reload under way.
type ReloadProgress struct {
	Generation int       `json:"generation"`
	StartedAt  time.Time `json:"started_at"`
	Ready      int       `json:"ready"`
	Queued     bool      `json:"queued"` // another reload waits behind this one
}

// ReloadResult is the outcome of the last finished reload.
type ReloadResult struct {
	Generation int    `json:"generation"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
	// Replaced counts the slots a failed reload had moved to its
	// generation before it halted (0: the pool is as before).
	Replaced   int       `json:"replaced,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
	Seconds    float64   `json:"seconds"`
}

func (p *Pool) status() Status {
	st := &p.st
	now := p.env.now()
	s := Status{
		PID: p.env.pid(), State: p.state(), Summary: p.summary(), Generation: st.gen,
		Size: p.targetSize(), Current: p.current(), Ready: p.countReady(), Restarts: st.restarts, Recycles: p.recycler.count, SpawnFailures: st.spawnFailures,
		StartedAt: st.started, ReadyRule: p.cfg.Ready.String(), Revision: p.cfg.Revision, LastReload: st.lastReload, GuardPID: p.env.guardPID(),
		// [] rather than null in JSON: `jq '.workers[]'` on a sockd
		// between restarts, or with --listen none.
		Workers: []WorkerStatus{}, Listeners: []ListenerStatus{},
	}
	s.Events = append([]Event(nil), st.events...)
	if r := st.reload; r != nil && r.phase != phaseRollback {
		s.Reload = &ReloadProgress{Generation: r.gen, StartedAt: r.started, Ready: p.reloadReady(), Queued: st.queued != nil}
	}
	for _, w := range st.byPID {
		ws := WorkerStatus{Slot: w.slot, Generation: w.gen, PID: w.pid, Socket: w.sock, State: w.state, StartedAt: w.started, ReadyAt: w.readyAt,
			UptimeSeconds: now.Sub(w.started).Seconds(), Restarts: w.restarts, Status: w.status}
		if w.hasRequests {
			n := w.requests
			ws.Requests = &n
		}
		if !w.sampledAt.IsZero() {
			ws.RSSBytes, ws.CPUSeconds = w.usage.RSS, w.usage.CPU.Seconds()
		}
		ws.Recycle = w.recycle
		if d := p.deps.MetricsDir; d != "" {
			ws.MetricsSocket = w.metricsSocket(d)
		}
		s.Workers = append(s.Workers, ws)
	}
	sort.Slice(s.Workers, func(i, j int) bool {
		a, b := s.Workers[i], s.Workers[j]
		if a.Generation != b.Generation {
			return a.Generation > b.Generation
		}
		return a.Slot < b.Slot || a.Slot == b.Slot && a.PID < b.PID
	})
	for i, l := range p.deps.Listeners {
		ls := ListenerStatus{Name: l.Name, Network: l.Network, Address: l.Addr, FD: 3 + i, SockdFDs: l.FDs(), Inherited: l.Inherited}
		for j := 0; j < l.Slots(); j++ {
			depth, limit, err := p.env.queue(l, j)
			if err != nil {
				ls.QueueDepth, ls.QueueLimit = nil, nil
				break
			}
			ls.QueueDepth, ls.QueueLimit = append(ls.QueueDepth, depth), append(ls.QueueLimit, limit)
		}
		s.Listeners = append(s.Listeners, ls)
	}
	return s
}

func (p *Pool) state() string {
	st := &p.st
	switch {
	case st.stopping:
		return StateStopping
	case st.reload != nil:
		return StateReloading
	case !st.announced:
		return StateStarting
	default:
		return StateRunning
	}
}

// reloadReady counts the slots on the reload's generation: taken over, or
// ready in the running batch.
func (p *Pool) reloadReady() int {
	r := p.st.reload
	n := 0
	for _, s := range p.st.slots {
		switch {
		case s.next != nil && s.next.owner == r:
			if s.next.state == Ready {
				n++
			}
		case s.want == r.gen && s.cur != nil && s.cur.gen == r.gen:
			n++
		}
	}
	return n
}

// summary is the one line for systemd's STATUS=.
func (p *Pool) summary() string {
	st := &p.st
	if st.stopping {
		if st.fatal != nil {
			return fmt.Sprintf("failed: %v; stopping, %d workers left", st.fatal, len(st.byPID))
		}
		return fmt.Sprintf("stopping, %d workers left", len(st.byPID))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d workers ready, %s, %d restarts", p.countReady(), p.targetSize(), p.generations(), st.restarts)
	if n := len(st.parked); n > 0 {
		fmt.Fprintf(&b, "; %d retired workers draining", n)
	}
	if r := st.reload; r != nil {
		switch {
		case r.phase == phaseStarting || r.phase == phaseSoaking || r.phase == phaseHandover && p.slotsLeft(r.gen) > 0:
			fmt.Fprintf(&b, "; reloading to generation %d (%d/%d ready)", r.gen, p.reloadReady(), len(st.slots))
		case r.phase == phaseHandover:
			fmt.Fprintf(&b, "; retiring generation %d", r.from)
		}
	}
	if r := st.lastReload; r != nil && !r.OK && r.Replaced > 0 {
		fmt.Fprintf(&b, "; last reload halted after %d slots: %s", r.Replaced, r.Error)
	} else if r != nil && !r.OK {
		fmt.Fprintf(&b, "; last reload failed: %s", r.Error)
	}
	return b.String()
}

// current counts the slots that have a worker, and the workers of slots
// a scale-down removed that still run (parked, or retired and draining):
// `scale --wait` waits for those to be gone.
func (p *Pool) current() int {
	n := 0
	for _, s := range p.st.slots {
		if s.cur != nil || s.next != nil {
			n++
		}
	}
	for _, w := range p.st.byPID {
		if s := w.home; s != nil && s.removed && !w.exited {
			n++
		}
	}
	return n
}

// generations says which generation the slots' workers run: "generation
// 3", or after a halted reload "generations 3 (2 slots) and 2 (2 slots)".
func (p *Pool) generations() string {
	count := map[int]int{}
	var gens []int
	for _, s := range p.st.slots {
		if s.cur == nil {
			continue
		}
		if count[s.cur.gen] == 0 {
			gens = append(gens, s.cur.gen)
		}
		count[s.cur.gen]++
	}
	if len(gens) < 2 {
		return fmt.Sprintf("generation %d", p.st.gen)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(gens)))
	parts := make([]string, len(gens))
	for i, g := range gens {
		parts[i] = fmt.Sprintf("%d (%d slot%s)", g, count[g], map[bool]string{true: "s"}[count[g] > 1])
	}
	return "generations " + strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}
