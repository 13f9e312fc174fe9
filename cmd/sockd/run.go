package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/guard"
	"github.com/sockd/sockd/internal/journal"
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
	restartLimit  string
	watchdog      time.Duration
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
	fs.IntVar(&c.workers, "workers", runtime.NumCPU(), "number of worker processes, 1 to 1024")
	fs.Var(&c.listen, "listen", "listener `[NAME=]URL`, repeatable: tcp://HOST:PORT, tcp4://, tcp6://, udp://HOST:PORT, unix:///PATH[?mode=0660]")
	fs.BoolVar(&c.reuseport, "reuseport", false, "one SO_REUSEPORT socket per worker slot instead of one shared socket (TCP/UDP listeners sockd binds)")
	fs.StringVar(&c.ready, "ready", "notify", "when a worker is ready: `notify` (it sends READY=1) or after:DURATION")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", pool.DefaultReadyTimeout, "how long a worker may take to become ready")
	fs.DurationVar(&c.reloadTimeout, "reload-timeout", 0, "how long a reload waits for the new generation (default: --ready-timeout)")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", pool.DefaultStopTimeout, "how long a worker may drain after SIGTERM before SIGKILL")
	fs.StringVar(&c.restartLimit, "restart-limit", "10/60s", "crash budget `N/DURATION`: more crashes than N within DURATION and sockd gives up")
	fs.DurationVar(&c.watchdog, "worker-watchdog", 0, "pass WATCHDOG_USEC to workers and replace a worker silent for this long (0: off)")
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
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{{"ready-timeout", c.readyTimeout, 1}, {"stop-timeout", c.stopTimeout, 1}, {"reload-timeout", c.reloadTimeout, 0}, {"worker-watchdog", c.watchdog, 0}} {
		if d.v < d.min {
			if d.min > 0 {
				return usagef("--%s %s: must be positive", d.name, d.v)
			}
			return usagef("--%s %s: must not be negative", d.name, d.v)
		}
	}
	return nil
}

func (c *runConfig) poolOptions(log hclog.Logger, ls activation.Set) pool.Options {
	cmd := c.command
	if len(cmd) == 0 {
		cmd = []string{self(), "demo-worker"}
	}
	return pool.Options{
		Command: cmd, Listeners: ls, Workers: c.workers, Ready: c.readyRule,
		ReadyTimeout: c.readyTimeout, ReloadTimeout: c.reloadTimeout, StopTimeout: c.stopTimeout,
		RestartLimit: c.limit, WorkerWatchdog: c.watchdog, Logger: log.Named("pool"),
	}
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
	specs, err := c.specs()
	if err != nil {
		return exitUsage, err
	}
	ctlPath, err := controlPath(c.control)
	if err != nil {
		return exitUsage, err
	}
	// Check the command before binding anything, and before forking N copies.
	if len(c.command) > 0 {
		if _, err := pool.ResolveCommand(c.command[0]); err != nil {
			return exitUsage, err
		}
	}
	d := &daemon{log: log, ctlPath: ctlPath, sd: &notifier{on: true}, reloadTimeout: c.reloadTimeout}
	if d.reloadTimeout == 0 {
		d.reloadTimeout = c.readyTimeout
	}
	child, err := handoff.Accept(os.Getenv, 30*time.Second)
	if err != nil {
		return exitListeners, err
	}
	first := 1
	if child != nil {
		// Taking over from an old sockd: its sockets, its control socket,
		// and its generation numbering. Not the main pid yet: quiet.
		d.ls, d.ctl, d.child = child.Listeners, child.Control, child
		first = child.State.Generation + 1
		d.sd.set(false)
		log.Info("took the sockets from the old sockd", "event", "upgrade_accept", "listeners", len(d.ls), "generation", first)
	} else {
		// The control socket first: a second sockd on the same one must
		// fail before it binds anything (and leaves unix socket files).
		if d.ctl, err = control.Listen(ctlPath); err != nil {
			return exitListeners, err
		}
		var usage usageError
		d.ls, err = acquireListeners(specs, c, log)
		if err != nil {
			d.ctl.Close() // and unlinks it
		}
		if errors.As(err, &usage) {
			return exitUsage, err
		}
		if err != nil {
			return exitListeners, err
		}
	}
	defer d.ls.Close()
	opts := c.poolOptions(log, d.ls)
	opts.FirstGeneration = first
	opts.Notify = d.sd.Notify
	return d.supervise(opts)
}

// specs parses --listen; with nothing to listen on and no command, the
// demo gets its default.
func (c *runConfig) specs() ([]activation.Spec, error) {
	raw := c.listen
	if len(raw) == 0 && len(c.command) == 0 && os.Getenv("LISTEN_FDS") == "" {
		raw = listFlag{demoListen}
	}
	specs := make([]activation.Spec, 0, len(raw))
	for _, r := range raw {
		s, err := activation.ParseSpec(r)
		if err != nil {
			return nil, usagef("--listen: %v", err)
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// acquireListeners takes systemd's sockets, then binds the --listen ones
// whose names systemd did not pass (restored from the fd store).
func acquireListeners(specs []activation.Spec, c *runConfig, log hclog.Logger) (activation.Set, error) {
	inherited, err := activation.Inherit(os.Getenv, os.Getpid())
	if errors.Is(err, activation.ErrNotOurs) {
		log.Warn("ignoring inherited sockets", "reason", err)
	} else if err != nil {
		return nil, err
	}
	if inherited, err = handoff.Regroup(inherited); err != nil {
		return nil, err
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	have := map[string]bool{}
	for _, l := range inherited {
		// A socket unit's unnamed sockets do not stand for an unnamed
		// --listen; sockets back from the fd store do.
		have[l.Name] = have[l.Name] || !l.Inherited || l.Name != activation.DefaultName
		log.Info("took inherited listener", "event", "listener", "name", l.Name, "network", l.Network, "address", l.Addr, "sockets", l.Slots())
	}
	var todo []activation.Spec
	for _, s := range specs {
		if !have[s.Name] {
			todo = append(todo, s)
		}
	}
	bound, err := activation.Bind(context.Background(), todo, activation.BindOptions{ReusePort: c.reuseport, Slots: c.workers})
	if err != nil {
		inherited.Close()
		return nil, err
	}
	for _, l := range bound {
		log.Info("listening", "event", "listener", "name", l.Name, "network", l.Network, "address", l.Addr, "sockets", l.Slots())
	}
	all := append(inherited, bound...)
	// Sockets sockd bound survive a restart of the service in systemd's
	// fd store (FileDescriptorStoreMax=), queued connections included.
	if n, err := handoff.Store(os.Getenv("NOTIFY_SOCKET"), all); err != nil {
		log.Warn("cannot put sockets into systemd's fd store", "error", err)
	} else if n > 0 {
		log.Debug("sockets sent to systemd's fd store", "event", "fdstore", "sockets", n)
	}
	if len(all) == 0 {
		return nil, usagef("no listeners: pass --listen or run under a systemd .socket unit")
	}
	return all, nil
}

// daemon turns signals and control requests into pool calls.
type daemon struct {
	pool          *pool.Pool
	log           hclog.Logger
	ls            activation.Set
	ctlPath       string
	ctl           *net.UnixListener
	child         *handoff.Child // set while taking over from an old sockd
	sd            *notifier
	reloadTimeout time.Duration
	stopControl   context.CancelFunc
	upgrading     atomic.Bool
	handedOff     atomic.Bool
	trim          *trimmer
	// inCharge: this sockd owns the control socket and the unix socket
	// files (a new sockd only once the old one committed the upgrade), so
	// it removes them when it exits, unless it handed them on.
	inCharge atomic.Bool
}

func (d *daemon) supervise(opts pool.Options) (int, error) {
	// The guard kills whatever the workers started should sockd die.
	if g, err := guard.Start("/proc/self/exe"); err != nil {
		d.log.Warn("no guard: if sockd is killed, processes started by workers may survive it", "error", err)
	} else {
		opts.Guard = g
		defer func() {
			if err := g.Close(); err != nil {
				d.log.Warn("guard", "error", err)
			}
		}()
	}
	d.ctl.SetUnlinkOnClose(false) // removed below, by the sockd in charge
	p, err := pool.New(opts)
	if err != nil {
		d.ctl.Close()
		if d.child == nil {
			os.Remove(d.ctlPath)
			d.ls.Remove()
		}
		return exitFailed, err
	}
	d.pool = p
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctlCtx, stopControl := context.WithCancel(ctx)
	d.stopControl = stopControl
	served := make(chan struct{})
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	d.inCharge.Store(d.child == nil)
	d.trim = newTrimmer()
	defer d.trim.stop()
	p.Start()
	go func() {
		select {
		case <-p.Ready():
			d.trim.soon()
		case <-p.Done():
		}
	}()
	if d.child != nil {
		go d.takeOver(ctx, ctlCtx, served)
	} else {
		go d.serveControl(ctlCtx, served)
	}
	go d.watchdog(ctx)
	for done := false; !done; {
		select {
		case sig := <-sigs:
			d.onSignal(sig.(syscall.Signal))
		case <-p.Done():
			done = true
		}
	}
	stopControl()
	d.ctl.Close()
	<-served
	if d.inCharge.Load() && !d.handedOff.Load() {
		os.Remove(d.ctlPath)
		d.ls.Remove()
	}
	if err := p.Wait(); err != nil {
		if errors.Is(err, pool.ErrRestartLimit) {
			return exitWorkers, err
		}
		return exitFailed, err
	}
	d.log.Info("sockd stopped", "event", "sockd_exit", "handed_off", d.handedOff.Load())
	return exitOK, nil
}

func (d *daemon) serveControl(ctx context.Context, served chan<- struct{}) {
	control.Serve(ctx, d.ctl, d, d.log.Named("control"))
	close(served)
}

// takeOver is the new sockd's half of an upgrade: once its workers are
// ready it says so, waits until the old sockd made it the main pid, then
// talks to systemd and serves the control socket.
func (d *daemon) takeOver(ctx, ctlCtx context.Context, served chan struct{}) {
	fail := func(err error) {
		d.log.Error("upgrade: cannot take over; stopping", "event", "upgrade_failed", "error", err)
		d.child.Close()
		close(served)
		d.pool.Stop()
	}
	select {
	case <-d.pool.Ready():
	case <-d.pool.Done():
		fail(errors.New("workers never became ready"))
		return
	}
	if err := d.child.Ready(); err != nil {
		fail(err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.child.WaitCommit(wctx); err != nil {
		fail(err)
		return
	}
	d.inCharge.Store(true)
	d.sd.set(true)
	if s, err := d.pool.Status(ctx); err == nil {
		d.sd.Notify("READY=1\nSTATUS=" + s.Summary)
	}
	d.log.Info("upgrade: this sockd is in charge now", "event", "upgrade_done", "pid", os.Getpid())
	go d.adoptMainPID(ctx)
	d.serveControl(ctlCtx, served)
}

// adoptMainPID makes this sockd systemd's own child once the old sockd is
// gone (see handoff.AdoptMainPID): otherwise systemd cannot see it exit and
// `systemctl stop` would SIGKILL the service instead of letting it drain.
func (d *daemon) adoptMainPID(ctx context.Context) {
	err := handoff.AdoptMainPID(ctx, func(helper int) {
		d.sd.lastWord(fmt.Sprintf("MAINPID=%d", helper))
	}, func() { d.sd.set(true) })
	if err != nil {
		d.log.Warn("upgrade: systemd may not see this sockd exit; a stop may SIGKILL it", "event", "upgrade_mainpid", "error", err)
		return
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		d.log.Info("upgrade: systemd's main pid and child again", "event", "upgrade_mainpid", "ppid", os.Getppid())
	}
}

func (d *daemon) onSignal(sig syscall.Signal) {
	d.log.Info("signal received", "event", "signal", "signal", sig.String())
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		d.pool.Stop()
	case syscall.SIGHUP:
		if err := d.Reload(context.Background(), false); err != nil {
			d.log.Warn("reload refused", "error", err)
		}
	case syscall.SIGUSR2:
		go d.Upgrade(context.Background(), false)
	}
}

func (d *daemon) Status(ctx context.Context) (any, error) { return d.pool.Status(ctx) }

// Reload starts a reload; with wait it returns the outcome, else it
// returns once the request is queued (and logs the outcome).
func (d *daemon) Reload(ctx context.Context, wait bool) error {
	if d.upgrading.Load() {
		// The new sockd numbers its generation after the old one's: a
		// reload now would make a third generation, with a clashing number.
		return errors.New("an upgrade is running; reload refused")
	}
	if wait {
		defer d.trim.soon()
		return d.pool.Reload(ctx)
	}
	go func() {
		defer d.trim.soon()
		if err := d.pool.Reload(context.Background()); err != nil {
			d.log.Warn("reload did not take effect", "error", err)
		}
	}()
	return nil
}

// Upgrade hands the sockets to the sockd binary now at sockd's path. With
// wait it returns the outcome; a failed upgrade leaves this sockd serving.
func (d *daemon) Upgrade(ctx context.Context, wait bool) error {
	if !d.upgrading.CompareAndSwap(false, true) {
		return errors.New("an upgrade is already running")
	}
	if !wait {
		go d.upgrade(context.Background())
		return nil
	}
	return d.upgrade(ctx)
}

func (d *daemon) upgrade(ctx context.Context) error {
	err := d.handOn(ctx)
	if err != nil {
		d.upgrading.Store(false)
		d.log.Error("upgrade failed; this sockd keeps serving", "event", "upgrade_failed", "error", err)
		d.sd.Notify("STATUS=upgrade failed: " + oneLine(err))
		return fmt.Errorf("upgrade failed, old sockd keeps serving: %w", err)
	}
	return nil
}

func (d *daemon) handOn(ctx context.Context) error {
	s, err := d.pool.Status(ctx)
	if err != nil {
		return err
	}
	if s.State != pool.StateRunning {
		return fmt.Errorf("sockd is %s; upgrade when it is running", s.State)
	}
	u, err := handoff.Start(handoff.Options{Generation: s.Generation, Listeners: d.ls, Control: d.ctl, Logger: d.log.Named("upgrade")})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, d.reloadTimeout+2*time.Second)
	defer cancel()
	if err := u.WaitReady(rctx); err != nil {
		return err
	}
	// Not the main pid any more: nothing more to systemd (no watchdog ping
	// may slip in between).
	d.sd.lastWord(fmt.Sprintf("MAINPID=%d\nSTATUS=handed over to pid %d", u.PID(), u.PID()))
	if err := u.Commit(); err != nil {
		// The new sockd died between ready and commit. Take the main pid
		// back; under NotifyAccess=main systemd may refuse that, since it
		// now listens to the dead pid only, and will restart the service.
		u.Abort(time.Second)
		d.sd.set(true)
		d.sd.Notify(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=upgrade failed at commit", os.Getpid()))
		return err
	}
	d.handedOff.Store(true)
	d.log.Info("upgrade: new sockd in charge; retiring this one", "event", "upgrade_handed_over", "new_pid", u.PID())
	d.stopControl()
	d.pool.Stop()
	return nil
}

// notifier sends sd_notify(3) messages to systemd while on.
type notifier struct {
	mu sync.Mutex
	on bool
}

func (n *notifier) set(on bool) {
	n.mu.Lock()
	n.on = on
	n.mu.Unlock()
}

// lastWord sends state and turns the notifier off, with nothing sent in
// between.
func (n *notifier) lastWord(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.on {
		sddaemon.SdNotify(false, state)
	}
	n.on = false
}

func (n *notifier) Notify(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.on {
		sddaemon.SdNotify(false, state)
	}
}

// watchdog pings systemd's watchdog (WatchdogSec=) only while the pool's
// loop answers and some worker is ready, so a wedged or workerless sockd
// gets restarted.
func (d *daemon) watchdog(ctx context.Context) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, interval/3)
			if d.pool.Healthy(hctx) {
				// Through the notifier: a new sockd pings only once it is
				// the main pid, an old one no longer once it handed over.
				d.sd.Notify(sddaemon.SdNotifyWatchdog)
			}
			cancel()
		}
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

// controlPath picks the control socket.
func controlPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.Join(strings.Split(d, ":")[0], "sockd.sock"), nil
	}
	if os.Geteuid() == 0 {
		return "/run/sockd/sockd.sock", nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sockd", "sockd.sock"), nil
	}
	return "", fmt.Errorf("no place for the control socket: pass --control or set XDG_RUNTIME_DIR")
}
