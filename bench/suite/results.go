package suite

// Results is everything a run measured; results.json holds it, and the
// report is made from it alone (sockd-bench report re-renders it).
type Results struct {
	Meta     Meta
	Overhead []OverheadRun `json:",omitempty"`
	Reloads  []ReloadRun   `json:",omitempty"`
	// ReloadTput is throughput and latency during reloads under a
	// closed-loop load, one entry per peer and round.
	ReloadTput []ReloadTputRun `json:",omitempty"`
	Timelines  []Timeline      `json:",omitempty"`
	Crashes    []CrashRun      `json:",omitempty"`
	Footprint  *Footprint      `json:",omitempty"`
	Scale      []ScaleRun      `json:",omitempty"`
	ScaleLoad  []ScaleLoadRun  `json:",omitempty"`
	Commands   map[string][]string
	Notes      []string `json:",omitempty"`
	Params     Params
}

// NamedFloat is a name and a number.
type NamedFloat struct {
	Name  string
	Value float64
}

// Meta describes the machine and the run.
type Meta struct {
	Date            string
	Mode            string
	Command         string
	Commit          string
	OS, Kernel, CPU string
	Cores           int
	MemGiB          float64
	Versions        map[string]string
	Sysctl          []string
	LoadBefore      string
	LoadAfter       string
	Seconds         float64
	ScenarioSeconds []NamedFloat
}

// Window is the load in a stretch of time.
type Window struct {
	From, To  float64 // seconds since the load started
	Seconds   float64
	OK        int
	Failed    int
	ByKind    map[string]int `json:",omitempty"`
	RPS       float64
	P50us     int64
	P99us     int64
	MaxUs     int64
	CPUsec    float64 // server side
	CPUPerReq float64 // µs of server CPU per answered request
}

// OverheadRun is one closed-loop run of one peer.
type OverheadRun struct {
	Peer      string
	Round     int
	Workers   int
	Clients   int
	W         Window
	PerWorker []int               // answers per worker process, largest first
	PerNew    []int               // same, new-connection requests only
	ErrText   map[string][]string `json:",omitempty"`
}

// ReloadEvent is one reload, times in seconds since the load started.
type ReloadEvent struct {
	T0       float64 // trigger sent (signal, or the command started)
	Cmd      float64 // trigger command returned
	FirstNew float64 // first answer from a new worker (0: none)
	AllNew   float64 // every new worker answered once (0: not seen)
	OldGone  float64 // the last old worker exited
	Done     float64 // new workers all up and old ones gone
	CmdCPUms float64
	Err      string `json:",omitempty"`
	Failed   int    // failed requests that started between T0 and Done
	Retries  int    `json:",omitempty"` // triggers sent again (tableflip refuses an upgrade until it noticed its parent exited)
	// Sockd is the same reload as sockd's own log tells it (sockd peers
	// whose stderr the run directory holds).
	Sockd *SockdReload `json:",omitempty"`
}

// SockdReload is one reload from sockd's log: its reload_start line, its
// reload_done line (ready_seconds, handover_seconds, old_gone_seconds) and
// the worker_exit lines of the retired generation. Milliseconds.
type SockdReload struct {
	Generation int
	StartMS    float64 // trigger sent (the runner's clock) → sockd logs reload_start
	ReadyMS    float64 // reload_start → every new worker ready (ready_seconds): the new workers' start-up
	HandoverMS float64 // SIGTERM to the old workers → none holds a listener (handover_seconds)
	OldGoneMS  float64 // SIGTERM → the last old worker exited (old_gone_seconds, else its worker_exit line); 0: not in the log
	TotalMS    float64 // reload_start → reload_done (seconds)
}

// Failure is one failed request.
type Failure struct {
	T         float64 // start, seconds since the load started
	Kind      string
	KeepAlive bool
	Reused    bool
}

// ProcCount is sockd's own resources at one moment.
type ProcCount struct {
	FDs, Threads, Procs int
	RSSKB               int64
	PeakRSSKB           int64 // VmHWM: the most RSS sockd ever had, between the samples too
}

// ReloadRun is reloads one after another under a paced load.
type ReloadRun struct {
	Peer          string
	Workers       int
	Rate          float64
	Clients       int
	Planned       int
	Done          int
	FailedReloads int
	Capped        bool // stopped by the time budget before Planned
	ReloadSeries
	Before, After *ProcCount `json:",omitempty"` // sockd's fds, threads and processes
	RSSEvery100   []int64    `json:",omitempty"` // sockd's RSS in KiB before reload 1, 101, 201, …
}

// ReloadSeries is a load with a steady window, then a window of reloads.
type ReloadSeries struct {
	Steady    Window
	During    Window
	Events    []ReloadEvent
	Failures  []Failure           `json:",omitempty"`
	ErrText   map[string][]string `json:",omitempty"`
	CmdCPUsec float64             // total CPU of the reload commands (pm2 reload, nginx -s reload), not in the windows'
}

// ReloadTputRun is one round of one peer under a closed-loop load: a
// steady window, then a window of the same length with reloads spread
// evenly across it (each one waited for before the next is due).
type ReloadTputRun struct {
	Peer          string
	Round         int
	Workers       int
	Clients       int
	Planned       int
	Done          int
	FailedReloads int
	Late          int  // reloads that started after their time because the previous one was not over
	Capped        bool // stopped reloading at 3× the window length
	ReloadSeries
}

// Bucket is 100 ms of a timeline.
type Bucket struct {
	T      float64
	OK     int
	Failed int
	P50ms  float64
	P99ms  float64
}

// Timeline is latency over time across a few reloads.
type Timeline struct {
	Peer     string
	Rate     float64
	Buckets  []Bucket
	Reloads  []ReloadEvent
	Failures []Failure `json:",omitempty"`
}

// CrashEvent is one worker killed with SIGKILL.
type CrashEvent struct {
	SpawnMS float64 // a replacement process exists
	ReadyMS float64 // it reported ready (ready file), 0 if the peer has none
	ServeMS float64 // it answered its first request
	Failed  int     // failed requests started from the kill to 1 s after
	Err     string  `json:",omitempty"`
}

// CrashRun is a peer's crash recoveries.
type CrashRun struct {
	Peer    string
	Workers int
	Kills   []CrashEvent
}

// SupFoot is one supervisor's idle footprint.
type SupFoot struct {
	Peer       string
	Process    string
	PID        int
	RSSKB      int64
	CPUsec     float64 // its own CPU over the idle window
	TotalRSSKB int64   // supervisor and workers
	TotalCPU   float64 // supervisor and workers over the idle window
	Procs      int
}

// Footprint is the idle cost of supervisors.
type Footprint struct {
	IdleSeconds float64
	Sups        []SupFoot
}

// ScaleRun is the time from the start command to all workers ready.
// ScaleLoadRun is scenario (8) for one peer: scaling up by Step and
// back down under a paced load.
type ScaleLoadRun struct {
	Peer          string
	Workers, Step int
	// UpWaitMS: `sockd scale +Step --wait` until it returned (the new
	// workers ready); UpServeMS: the command until every new worker had
	// answered a request; DownWaitMS: `sockd scale -Step --wait`.
	UpWaitMS, UpServeMS, DownWaitMS []float64
	Requests, Failed                int
	ErrText                         map[string][]string `json:",omitempty"`
}

type ScaleRun struct {
	Peer    string
	Workers int
	ReadyMS float64
	// LogMS is sockd's own pool_ready seconds (pool start → every worker
	// ready), 0 for other peers.
	LogMS float64 `json:",omitempty"`
	Err   string  `json:",omitempty"`
}
