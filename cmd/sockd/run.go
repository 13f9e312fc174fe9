package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/metrics"
	"github.com/sockd/sockd/pool"
)

// demoListen is where the built-in demo worker listens when nothing else
// is configured.
const demoListen = "http=tcp://127.0.0.1:8080"

type runConfig struct {
	workers       int
	listen        listFlag
	reuseport     bool
	ready         string
	readyTimeout  time.Duration
	reloadTimeout time.Duration
	stopTimeout   time.Duration
	stopSignal    string
	restartLimit  string
	watchdog      time.Duration
	reloadBatch   int
	reloadSoak    time.Duration
	maxMemory     string
	maxRequests   string
	maxAge        string
	recycle       pool.Recycle
	signal        syscall.Signal
	cgroups       string
	metrics       string
	user          string
	runAs         *pool.User
	memoryMax     string
	limits        cgroup.Limits
	control       string
	logFormat     string
	logLevel      string
	command       []string
	readyRule     pool.ReadyRule
	limit         pool.RestartLimit
}

func parseRun(args []string, stdout io.Writer) (*runConfig, error) {
	c := &runConfig{}
	fs := flag.NewFlagSet("sockd run", flag.ContinueOnError)
	fs.IntVar(&c.workers, "workers", pool.DefaultWorkers(), "number of worker processes, 1 to 1024")
	fs.Var(&c.listen, "listen", "listener `[NAME=]URL`, repeatable: tcp://HOST:PORT, tcp4://, tcp6://, udp://HOST:PORT, unix:///PATH[?mode=0660]")
	fs.BoolVar(&c.reuseport, "reuseport", false, "one SO_REUSEPORT socket per worker slot instead of one shared socket (TCP/UDP listeners sockd binds)")
	fs.StringVar(&c.ready, "ready", pool.ReadyRule{}.String(), "when a worker is ready: `notify` (it sends READY=1) or after:DURATION")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", pool.DefaultReadyTimeout, "how long a worker may take to become ready")
	fs.DurationVar(&c.reloadTimeout, "reload-timeout", 0, "how long a reload waits for the new generation (default: --ready-timeout)")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", pool.DefaultStopTimeout, "how long a worker may drain after SIGTERM before SIGKILL")
	fs.StringVar(&c.stopSignal, "stop-signal", "TERM", "the `signal` that asks a worker to drain: TERM, INT (what PM2 sends), QUIT, …")
	fs.StringVar(&c.restartLimit, "restart-limit", pool.DefaultRestartLimit.String(), "crash budget `N/DURATION`: more crashes than N within DURATION and sockd gives up")
	fs.DurationVar(&c.watchdog, "worker-watchdog", 0, "pass WATCHDOG_USEC to workers and replace a worker silent for this long (0: off)")
	fs.IntVar(&c.reloadBatch, "reload-batch", 0, "reload `N` slots at a time: each batch's old workers drain once its new ones are ready (0: all at once)")
	fs.DurationVar(&c.reloadSoak, "reload-soak", 0, "the first batch of a reload (the canary) serves beside the old workers this long before the rest follows (0: no soak)")
	fs.StringVar(&c.maxMemory, "worker-max-memory", "", "replace a worker whose process tree's resident memory is over `SIZE` (512M, 2G), its replacement first")
	fs.StringVar(&c.maxRequests, "worker-max-requests", "", "replace a worker after `N[±J]` requests (it reports them with SOCKD_REQUESTS=), its replacement first")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics at `URL`: tcp://127.0.0.1:9464 or unix:///PATH (off by default); workers get SOCKD_METRICS_SOCKET for their own")
	fs.StringVar(&c.user, "user", "", "run the workers as `USER[:GROUP]` (names or numbers) with the user's groups, HOME, USER and LOGNAME; sockd must be root")
	fs.StringVar(&c.cgroups, "cgroups", daemon.CgroupsAuto, "give each worker a cgroup of its own: `auto` (where sockd may manage a cgroup v2 subtree), yes (required) or no")
	fs.StringVar(&c.memoryMax, "worker-memory-max", "", "cgroup memory.max of each worker: the kernel kills a worker over `SIZE` (512M, 2G) and sockd replaces it (needs cgroups with the memory controller)")
	fs.Int64Var(&c.limits.PidsMax, "worker-pids-max", 0, "cgroup pids.max of each worker: at most `N` processes and threads (needs the pids controller; 0: no limit)")
	fs.Int64Var(&c.limits.CPUWeight, "worker-cpu-weight", 0, "cgroup cpu.weight of each worker, `1 to 10000` (100 is the kernel's default; needs the cpu controller; 0: not set)")
	fs.StringVar(&c.maxAge, "worker-max-age", "", "replace a worker `D[±J]` after it was ready (6h±30m), its replacement first")
	fs.StringVar(&c.control, "control", "", "control socket `path` (default $RUNTIME_DIRECTORY/sockd.sock, /run/sockd/sockd.sock for root, else $XDG_RUNTIME_DIR/sockd/sockd.sock)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format on stderr: text or json (under systemd sockd logs natively to the journal)")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.Usage = usageFunc(fs, "sockd run [flags] [-- COMMAND [ARGS...]]",
		"Runs --workers copies of COMMAND; each gets the listeners as fds 3, 4, … with LISTEN_FDS,\nLISTEN_FDNAMES and LISTEN_PID set as systemd would. Without COMMAND sockd runs its built-in\ndemo HTTP worker, on "+demoListen+" unless --listen or systemd says otherwise.\n")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return nil, err
	}
	c.command = fs.Args()
	return c, c.validate()
}

func (c *runConfig) validate() error {
	if c.workers < 1 || c.workers > pool.MaxWorkers {
		return usagef("--workers %d: want 1 to %d", c.workers, pool.MaxWorkers)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return usagef("--log-format %q: want text or json", c.logFormat)
	}
	if hclog.LevelFromString(c.logLevel) == hclog.NoLevel {
		return usagef("--log-level %q: want trace, debug, info, warn or error", c.logLevel)
	}
	var err error
	if c.readyRule, err = pool.ParseReadyRule(c.ready); err != nil {
		return usagef("--ready: %v", err)
	}
	if c.limit, err = pool.ParseRestartLimit(c.restartLimit); err != nil {
		return usagef("--restart-limit: %v", err)
	}
	if c.signal, err = pool.ParseSignal(c.stopSignal); err != nil {
		return usagef("--stop-signal: %v", err)
	}
	if c.metrics != "" {
		if err := metrics.ParseAddr(c.metrics); err != nil {
			return usagef("--metrics: %v", err)
		}
	}
	if c.user != "" {
		if os.Geteuid() != 0 {
			return usagef("--user %s: sockd must run as root to start workers as another user", c.user)
		}
		if c.runAs, err = pool.LookupUser(c.user); err != nil {
			return usagef("--user: %v", err)
		}
	}
	if c.cgroups != daemon.CgroupsAuto && c.cgroups != daemon.CgroupsYes && c.cgroups != daemon.CgroupsNo {
		return usagef("--cgroups %q: want auto, yes or no", c.cgroups)
	}
	if c.memoryMax != "" {
		if c.limits.MemoryMax, err = pool.ParseSize(c.memoryMax); err != nil || c.limits.MemoryMax == 0 {
			return usagef("--worker-memory-max: %v", errors.Join(err, errors.New("want a size like 512M")))
		}
	}
	if c.limits.PidsMax < 0 {
		return usagef("--worker-pids-max %d: must not be negative", c.limits.PidsMax)
	}
	if w := c.limits.CPUWeight; w < 0 || w > 10000 {
		return usagef("--worker-cpu-weight %d: want 1 to 10000", w)
	}
	if c.reloadBatch < 0 || c.reloadBatch > pool.MaxWorkers {
		return usagef("--reload-batch %d: want 0 (all at once) to %d", c.reloadBatch, pool.MaxWorkers)
	}
	positive := func(flag string, err error, zero bool) error {
		if err == nil && zero {
			err = errors.New("want more than 0")
		}
		if err != nil {
			return usagef("--%s: %v", flag, err)
		}
		return nil
	}
	if c.maxMemory != "" {
		c.recycle.MaxMemory, err = pool.ParseSize(c.maxMemory)
		if err := positive("worker-max-memory", err, c.recycle.MaxMemory == 0); err != nil {
			return err
		}
	}
	if c.maxRequests != "" {
		c.recycle.MaxRequests, err = pool.ParseJitter(c.maxRequests)
		if err := positive("worker-max-requests", err, c.recycle.MaxRequests.N == 0); err != nil {
			return err
		}
	}
	if c.maxAge != "" {
		c.recycle.MaxAge, err = pool.ParseDurationJitter(c.maxAge)
		if err := positive("worker-max-age", err, c.recycle.MaxAge.D == 0); err != nil {
			return err
		}
	}
	// On the command line a zero would read as "no time at all", not as
	// the packages' "default".
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{{"ready-timeout", c.readyTimeout, 1}, {"stop-timeout", c.stopTimeout, 1}, {"reload-timeout", c.reloadTimeout, 0}, {"worker-watchdog", c.watchdog, 0}, {"reload-soak", c.reloadSoak, 0}} {
		if d.v < d.min {
			if d.min > 0 {
				return usagef("--%s %s: must be positive", d.name, d.v)
			}
			return usagef("--%s %s: must not be negative", d.name, d.v)
		}
	}
	return nil
}

// options turns the flags into the daemon's options.
func (c *runConfig) options(log hclog.Logger) (daemon.Options, error) {
	raw := c.listen
	if len(raw) == 0 && len(c.command) == 0 && os.Getenv("LISTEN_FDS") == "" {
		raw = listFlag{demoListen}
	}
	o := daemon.Options{ReusePort: c.reuseport, ControlPath: c.control, Cgroups: c.cgroups, Limits: c.limits, Metrics: c.metrics, Logger: log}
	for _, r := range raw {
		s, err := activation.ParseSpec(r)
		if err != nil {
			return o, usagef("--listen: %v", err)
		}
		o.Listen = append(o.Listen, s)
	}
	cmd := c.command
	if len(cmd) == 0 {
		cmd = []string{self(), "demo-worker"}
	} else if path, err := pool.ResolveCommand(cmd[0]); err != nil {
		// Checked before anything is bound, and before N copies fork.
		return o, usageError{err.Error()}
	} else if c.runAs != nil {
		if err := c.runAs.CanExecute(path); err != nil {
			return o, usageError{err.Error()}
		}
	}
	o.Pool = pool.Options{
		Command: cmd, Workers: c.workers, Ready: c.readyRule,
		ReadyTimeout: c.readyTimeout, ReloadTimeout: c.reloadTimeout, StopTimeout: c.stopTimeout, StopSignal: c.signal,
		RestartLimit: c.limit, WorkerWatchdog: c.watchdog,
		ReloadBatch: c.reloadBatch, ReloadSoak: c.reloadSoak, Recycle: c.recycle, User: c.runAs,
	}
	return o, nil
}

func runCommand(args []string, stdout, stderr io.Writer) (int, error) {
	c, err := parseRun(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK, nil
	}
	if err != nil {
		return exitUsage, err
	}
	log := newLogger(c, stderr)
	opts, err := c.options(log)
	if err != nil {
		return exitUsage, err
	}
	d, err := daemon.New(opts)
	switch {
	case errors.Is(err, daemon.ErrResources):
		return exitResources, err
	case errors.Is(err, daemon.ErrConfig):
		return exitUsage, err
	case errors.Is(err, daemon.ErrSockets):
		return exitListeners, err
	case err != nil:
		return exitFailed, err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, handledSignals...)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			onSignal(d, log, sig.(syscall.Signal))
		}
	}()
	err = d.Run()
	switch {
	case errors.Is(err, pool.ErrResources):
		return exitResources, err
	case errors.Is(err, pool.ErrRestartLimit):
		return exitWorkers, err
	case err != nil:
		return exitFailed, err
	}
	return exitOK, nil
}

// handledSignals are the signals sockd acts on or ignores; README.md's
// table says what each does. The real-time signals are among them: Go
// leaves them at their default action, which ends the process. (Not
// signal.Ignore: an ignored signal stays ignored in the workers sockd
// execs.)
var handledSignals = func() []os.Signal {
	sigs := []os.Signal{
		syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGTSTP, syscall.SIGPIPE,
	}
	for n := 34; n <= 64; n++ { // SIGRTMIN to SIGRTMAX
		sigs = append(sigs, syscall.Signal(n))
	}
	return sigs
}()

// onSignal turns a signal into a call of the daemon.
func onSignal(d *daemon.Daemon, log hclog.Logger, sig syscall.Signal) {
	ctx := context.Background()
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		d.Stop()
	case syscall.SIGHUP:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		if err := d.Reload(ctx, false); err != nil {
			log.Warn("reload refused", "error", err)
		}
	case syscall.SIGUSR2:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		if err := d.Upgrade(ctx, false); err != nil {
			log.Warn("upgrade refused", "error", err)
		}
	case syscall.SIGTTIN, syscall.SIGTTOU:
		delta := +1
		if sig == syscall.SIGTTOU {
			delta = -1
		}
		log.Info("signal received", "event", "signal", "signal", sig.String(), "scale", delta)
		if _, err := d.Scale(ctx, delta, true, false); err != nil {
			log.Warn("scale refused", "error", err)
		}
	default: // SIGUSR1, SIGTSTP, SIGPIPE, real-time signals
		log.Debug("signal ignored", "event", "signal", "signal", sig.String())
	}
}

func newLogger(c *runConfig, stderr io.Writer) hclog.Logger {
	opts := &hclog.LoggerOptions{
		Name: "sockd", Level: hclog.LevelFromString(c.logLevel), Output: stderr,
		JSONFormat: c.logFormat == "json", TimeFormat: time.RFC3339Nano,
	}
	if journal.Enabled() {
		opts.Output = &journal.Writer{Identifier: "sockd", Fallback: stderr}
		opts.JSONFormat = true
	}
	return hclog.New(opts)
}
