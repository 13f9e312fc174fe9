package pool

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sockd/sockd/internal/output"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/account"
	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/internal/reaper"
)

// Defaults for the zero values of Options.
const (
	DefaultReadyTimeout  = 30 * time.Second
	DefaultStopTimeout   = 30 * time.Second
	DefaultRestartBurst  = 10
	DefaultRestartPeriod = 60 * time.Second
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	// DefaultStableAfter is how long a worker must stay ready before its
	// slot's backoff starts again from zero.
	DefaultStableAfter = 10 * time.Second
	// DefaultMinServe is how long a worker must have been ready for its
	// STOPPING=1 to count as a planned exit rather than a crash.
	DefaultMinServe = time.Second
	MaxWorkers      = 1024
)

// DefaultRestartLimit is the crash budget when none is set: 10 in 60 s.
var DefaultRestartLimit = RestartLimit{Burst: DefaultRestartBurst, Period: DefaultRestartPeriod}

// DefaultWorkers is the number of worker slots when none is set: one per
// CPU sockd may run on.
func DefaultWorkers() int { return runtime.NumCPU() }

// ReadyRule says when a worker counts as ready.
type ReadyRule struct {
	// After, when non-zero, makes a worker ready that long after it started
	// (for servers that cannot notify). Zero means: ready when the worker
	// sends READY=1 to its NOTIFY_SOCKET.
	After time.Duration
	// NodeIPC gives each worker Node.js's IPC channel (NODE_CHANNEL_FD)
	// and makes it ready when it sends the message "ready" on it, as
	// process.send('ready') does under PM2's wait_ready. READY=1 counts
	// too. See nodeipc.go.
	NodeIPC bool
	// Listening (with NodeIPC) makes a Node.js worker ready once it
	// listens on sockd's sockets: sockd's preload says so on the channel,
	// for apps that never call process.send('ready').
	Listening bool
}

// ParseReadyRule reads "notify", "node-ipc", "node-listen" or
// "after:DURATION".
func ParseReadyRule(s string) (ReadyRule, error) {
	switch s {
	case "notify":
		return ReadyRule{}, nil
	case "node-ipc":
		return ReadyRule{NodeIPC: true}, nil
	case "node-listen":
		return ReadyRule{NodeIPC: true, Listening: true}, nil
	}
	if d, ok := strings.CutPrefix(s, "after:"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return ReadyRule{}, fmt.Errorf("ready rule %q: want after:DURATION with a positive duration like after:500ms", s)
		}
		return ReadyRule{After: dur}, nil
	}
	return ReadyRule{}, fmt.Errorf("ready rule %q: want notify, node-ipc, node-listen or after:DURATION", s)
}

func (r ReadyRule) String() string {
	switch {
	case r.After > 0:
		return "after:" + r.After.String()
	case r.Listening:
		return "node-listen"
	case r.NodeIPC:
		return "node-ipc"
	}
	return "notify"
}

// ParseSignal reads a signal's name: TERM, SIGTERM, INT, … (or its number).
func ParseSignal(s string) (unix.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	return 0, fmt.Errorf("signal %q: want a name like TERM, INT or QUIT", s)
}

// RestartLimit is the crash budget: more than Burst crashes within Period
// and the pool gives up.
type RestartLimit struct {
	Burst  int
	Period time.Duration
}

// ParseRestartLimit reads "N/DURATION", e.g. "10/60s".
func ParseRestartLimit(s string) (RestartLimit, error) {
	n, d, ok := strings.Cut(s, "/")
	burst, err1 := strconv.Atoi(n)
	period, err2 := time.ParseDuration(d)
	if !ok || err1 != nil || err2 != nil || burst < 0 || period <= 0 {
		return RestartLimit{}, fmt.Errorf("restart limit %q: want N/DURATION like 10/60s", s)
	}
	return RestartLimit{Burst: burst, Period: period}, nil
}

func (r RestartLimit) String() string {
	if r.Period%time.Second == 0 {
		return fmt.Sprintf("%d/%ds", r.Burst, r.Period/time.Second)
	}
	return fmt.Sprintf("%d/%s", r.Burst, r.Period)
}

// Config is what a pool runs: plain data, every field's zero value a
// useful default but Command's. A reload can bring a new Config, which
// the workers of the new generation run (see Pool.Reload).
type Config struct {
	// Command is the worker's program and arguments. Command[0] is looked
	// up in PATH once, by New (and by a reload that changes it).
	Command []string
	// Dir is the workers' working directory; "" means sockd's.
	Dir string
	// Env is the workers' base environment; nil means os.Environ(). sockd's
	// own LISTEN_*, NOTIFY_SOCKET, WATCHDOG_* and SOCKD_* are removed.
	Env []string
	// User, if set, is who the workers run as (sockd must be root); New
	// checks that it may execute the command.
	User *account.User
	// Workers is the number of worker slots; 0 means DefaultWorkers().
	Workers int
	// Ready says when a worker is ready.
	Ready ReadyRule
	// ReadyTimeout bounds a worker's start-up; DefaultReadyTimeout if 0.
	ReadyTimeout time.Duration
	// ReloadTimeout bounds a reload's wait for the new generation;
	// ReadyTimeout if 0.
	ReloadTimeout time.Duration
	// ReloadBatch is how many slots a reload moves to the new generation
	// at a time: their new workers start, and once all of them are ready
	// their old workers drain, then the next batch starts. 0 means every
	// slot at once.
	ReloadBatch int
	// ReloadSoak is how long the first batch of a reload (the canary)
	// serves beside the old workers, once ready, before they drain and the
	// rest follows; if one of its workers exits meanwhile the reload is
	// rolled back untouched. 0: no soak.
	ReloadSoak time.Duration
	// LowStart starts a worker that starts while others serve (a
	// reload's, a crash replacement, a scale-up, a recycle) at a low CPU
	// priority, ten nice levels below sockd's (internal/sched), until it
	// is ready, is asked to stop, or half its ReadyTimeout has passed: on
	// a busy machine it boots and warms up on about a tenth of a serving
	// worker's share of the CPUs instead of slowing their answers. It
	// needs sockd to be allowed to give the worker its priority back
	// (CAP_SYS_NICE, as root, or RLIMIT_NICE); where it is not, workers
	// start as without it and the pool says so once.
	LowStart bool
	// StopSignal asks a worker to drain; SIGTERM if 0. (PM2 sends
	// SIGINT, and apps written for it handle that one.)
	StopSignal unix.Signal
	// StopTimeout is how long a worker may drain after SIGTERM before it is
	// killed; DefaultStopTimeout if 0.
	StopTimeout time.Duration
	// RestartLimit is the crash budget; 10/60s if zero.
	RestartLimit RestartLimit
	// BackoffMin and BackoffMax bound the delay before restarting a slot
	// that crashed again (the first crash restarts at once). The delay
	// never exceeds RestartLimit.Period/(2·Burst), so that a crash loop
	// spends the budget rather than being throttled forever.
	BackoffMin, BackoffMax time.Duration
	// MinServe: a worker that announces STOPPING=1 before it is ready, or
	// less than MinServe after, is not retiring but crashing: its exit
	// counts against the restart budget. DefaultMinServe if 0.
	MinServe time.Duration
	// Recycle sets the limits over which a worker is replaced by a fresh
	// one, its replacement first (see Recycle).
	Recycle Recycle
	// SampleInterval is how often the workers' memory and CPU time are
	// read while Recycle.MaxMemory is set (else only on Sample, at most
	// twice per interval); DefaultSampleInterval if 0.
	SampleInterval time.Duration
	// WorkerWatchdog, when non-zero, is passed to workers as WATCHDOG_USEC;
	// a ready worker silent for that long is killed (SIGABRT, then SIGKILL
	// after StopTimeout) and replaced.
	WorkerWatchdog time.Duration
	// Limits are each worker's cgroup limits (with Deps.Cgroups, which
	// must offer their controllers).
	Limits cgroup.Limits
	// NodePreload gives Node.js workers sockd's preload (Deps.NodePreload).
	NodePreload bool
	// Warmup, with NodePreload and Ready.NodeIPC, has the preload warm a
	// Node.js worker's HTTP servers up with requests of its own before the
	// worker's ready reaches sockd (see nodeshim.Warmup; a zero Timeout is
	// half of ReadyTimeout).
	Warmup nodeshim.Warmup
	// InstanceVar, if set, is a variable (or several, comma-separated)
	// each worker gets with its slot,
	// 0 to N-1 (PM2's NODE_APP_INSTANCE), as SOCKD_WORKER.
	InstanceVar string
	// Revision names this configuration (internal/config makes it a hash
	// of everything in it); Status shows the one in force.
	Revision string
}

// Deps are what a pool works with: the sockets, where its files go, and
// the collaborators it tells what happens. Every field but Listeners has
// a useful zero value.
type Deps struct {
	// Listeners are handed to every worker as fds 3, 4, … (none: the
	// workers get no LISTEN_FDS).
	Listeners activation.Set
	// NotifySocket is the address of the workers' NOTIFY_SOCKET; "" means an
	// abstract socket named after sockd's pid.
	NotifySocket string
	// Trampoline is the executable that sets LISTEN_PID to the worker's own
	// pid and execs the command; "" means /proc/self/exe, which must call
	// Trampoline() first thing in main.
	Trampoline string
	// NodePreload, if set, is the path of internal/nodeshim's preload,
	// which every worker whose Config.NodePreload is on gets through
	// NODE_OPTIONS: a Node app's listen(PORT) on a socket sockd holds takes
	// that socket, and its server.close() drains carefully.
	NodePreload string
	// MetricsDir, if set, is a directory the workers may create unix
	// sockets in: each gets SOCKD_METRICS_SOCKET, a path there on which it
	// may serve its own metrics (see internal/metrics).
	MetricsDir string
	// FirstGeneration numbers the first generation; 0 means 1. A sockd that
	// took over from another one continues its numbering.
	FirstGeneration int
	// Size is how many workers the first generation starts, if not
	// Config.Workers (0): a size scaled at run time that a sockd taking
	// over from another one keeps. Config.Workers stays what is
	// configured, so a later reload resizes only if it changes that.
	Size int
	// Notify receives sd_notify(3) assignments meant for systemd ("READY=1",
	// "STATUS=…", "RELOADING=1\nMONOTONIC_USEC=…"). Nil discards them.
	Notify func(state string)
	// OnEvent, if set, is called by the loop with every Event (it must
	// not block: metrics count them).
	OnEvent func(Event)
	// Guard, if set, is told each worker's process group when the worker
	// starts and when nothing of the group is left, so that it can kill
	// them all should sockd die (see internal/guard).
	Guard Guard
	// Reaper, if set, is told of every worker forked and reaped, and
	// finds what a worker left behind among the processes sockd adopted
	// (see internal/reaper).
	Reaper *reaper.Reaper
	// Cgroups, if set, gives every worker a cgroup of its own in that
	// tree, which stands for the worker's group (see internal/cgroup).
	Cgroups *cgroup.Tree
	// Output, if set, gives every worker a pipe for its stdout and one
	// for its stderr and relays their lines, attributed to the worker
	// (see internal/output); nil: workers inherit sockd's stdout and
	// stderr.
	Output *output.Relay
	// Steering, if set, steers the new connections of the reuseport
	// groups among the workers (see internal/steering): each worker gets
	// a socket of its own in every group, takes no new connection before
	// it is ready, none while it stalls or drains, and a rising share
	// during slow start. Nil: worker slot i gets socket i of each group.
	Steering Steerer
	// Predecessor, if set, reports whether another sockd's workers still
	// serve these sockets (the old sockd of an upgrade, until this one is
	// in charge): a worker that starts meanwhile starts as a reload's
	// does, at a low priority with Config.LowStart. The loop calls it
	// when it forks a worker.
	Predecessor func() bool
	// Logger defaults to hclog.NewNullLogger().
	Logger hclog.Logger
}

// Steerer is what the pool needs of internal/steering's Steering; the
// workers are named by Worker.SteerName.
type Steerer interface {
	// Assign gives a starting worker its socket index (replaces: the
	// worker it is to take the place of, or "").
	Assign(worker, replaces string) (int, error)
	Ready(worker string) time.Time
	Leave(worker string)
	Exited(worker string)
	Drained(worker string) bool
	Yielded() bool
}

// Guard keeps the list of the workers' process groups.
type Guard interface {
	Add(pgid int) error
	Remove(pgid int) error
	PID() int
}

// WithDefaults validates c and returns it with every default filled in.
func (c Config) WithDefaults() (Config, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return c, errors.New("no worker command")
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers()
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		return c, fmt.Errorf("workers %d: want 1 to %d", c.Workers, MaxWorkers)
	}
	if c.ReloadBatch < 0 || c.ReloadSoak < 0 {
		return c, fmt.Errorf("reload batch %d, soak %s: must not be negative", c.ReloadBatch, c.ReloadSoak)
	}
	setDur(&c.ReadyTimeout, DefaultReadyTimeout)
	setDur(&c.ReloadTimeout, c.ReadyTimeout)
	setDur(&c.StopTimeout, DefaultStopTimeout)
	if c.StopSignal == 0 {
		c.StopSignal = unix.SIGTERM
	}
	setDur(&c.BackoffMin, DefaultBackoffMin)
	setDur(&c.BackoffMax, DefaultBackoffMax)
	setDur(&c.MinServe, DefaultMinServe)
	setDur(&c.SampleInterval, DefaultSampleInterval)
	if r := c.Recycle; r.MaxMemory < 0 || r.MaxRequests.N < 0 || r.MaxRequests.J < 0 || r.MaxRequests.J > r.MaxRequests.N ||
		r.MaxAge.D < 0 || r.MaxAge.J < 0 || r.MaxAge.J > r.MaxAge.D {
		return c, fmt.Errorf("recycle limits %+v: must not be negative, jitter at most the limit", r)
	}
	if c.Warmup.Path != "" {
		if !c.NodePreload || !c.Ready.NodeIPC {
			return c, errors.New("warm-up: needs the Node.js preload and a ready on the IPC channel (node-ipc or node-listen)")
		}
		if err := c.Warmup.Check(); err != nil {
			return c, err
		}
		if c.Warmup.Timeout == 0 {
			c.Warmup.Timeout = c.ReadyTimeout / 2
		}
	}
	if c.RestartLimit == (RestartLimit{}) {
		c.RestartLimit = DefaultRestartLimit
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.User != nil && os.Geteuid() != 0 {
		return c, fmt.Errorf("workers as user %s: sockd must run as root to change user", c.User.Name)
	}
	return c, nil
}

// withDefaults validates d and fills in the defaults. No listeners is a
// pool of workers that take no connections (queue consumers).
func (d Deps) withDefaults() (Deps, error) {
	if d.NotifySocket == "" {
		d.NotifySocket = fmt.Sprintf("@sockd/%d/%d/notify", os.Getpid(), time.Now().UnixNano())
	}
	if d.Trampoline == "" {
		d.Trampoline = "/proc/self/exe"
	}
	if d.FirstGeneration < 1 {
		d.FirstGeneration = 1
	}
	if d.Size < 0 || d.Size > MaxWorkers {
		return d, fmt.Errorf("size %d: want 1 to %d", d.Size, MaxWorkers)
	}
	if d.Notify == nil {
		d.Notify = func(string) {}
	}
	if d.Logger == nil {
		d.Logger = hclog.NewNullLogger()
	}
	return d, nil
}

func setDur(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}
