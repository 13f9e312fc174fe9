package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/account"
	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/guard"
	"github.com/sockd/sockd/internal/metrics"
	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/internal/reaper"
	"github.com/sockd/sockd/internal/steering"
	"github.com/sockd/sockd/pool"
)

// Errors New wraps, so that a caller can tell a bad configuration from
// sockets it could not get (sockd exits 2 and 3 for them).
var (
	// ErrConfig: the configuration cannot work (e.g. nothing to listen on).
	ErrConfig = errors.New("bad configuration")
	// ErrSockets: the listening sockets or the control socket could not be
	// bound or taken over.
	ErrSockets = errors.New("cannot get the sockets")
	// ErrRefused: a reload or upgrade was refused because of what the
	// daemon is doing (an upgrade under way, say).
	ErrRefused = errors.New("refused")
)

// kindError tags err with one of the errors above without changing its
// message.
type kindError struct{ kind, err error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }

func tag(kind, err error) error {
	if err == nil {
		return nil
	}
	return kindError{kind, err}
}

// Values of Options.Cgroups.
const (
	CgroupsAuto = "auto"
	CgroupsYes  = "yes"
	CgroupsNo   = "no"
)

// DefaultHandoffTimeout bounds how long a new sockd waits for an old one's
// sockets.
const DefaultHandoffTimeout = 30 * time.Second

// Options configure a Daemon.
type Options struct {
	// Config is what sockd runs: sockd run's settings (internal/config).
	// Its listeners are bound unless systemd (LISTEN_FDS) or an old sockd
	// (an upgrade) passes one of that name; without any, the demo
	// worker's address. Required.
	Config *config.Run
	// Source is where Config was read from: a reload reads it again (the
	// env files, and the environment a reload client hands over with
	// --update-env), checks it, and the new generation runs it. Its zero
	// value keeps Config for good.
	Source config.Source
	// Apply, if set, is called with every configuration put in force, at
	// start and when a reload's generation took over, for what only the
	// caller owns: the logger's level and format.
	Apply func(*config.Run)
	// Stdout and Stderr receive the workers' lines under
	// --worker-output prefix, json and raw (os.Stdout and os.Stderr when
	// nil).
	Stdout, Stderr io.Writer
	// Logger defaults to hclog.NewNullLogger().
	Logger hclog.Logger
}

// Daemon is one sockd process's service. The environment it runs in is
// the process's own: LISTEN_* and NOTIFY_SOCKET from systemd,
// SOCKD_UPGRADE_FD from an old sockd. Its decisions are its machine's
// (loop.go); Daemon is the machine's env, and the wiring.
type Daemon struct {
	opts      Options
	log       hclog.Logger
	ctlPath   string
	ls        activation.Set
	ctl       *net.UnixListener
	child     *handoff.Child // set while taking over from an old sockd
	guard     *guard.Guard
	reaper    *reaper.Reaper
	tree      *cgroup.Tree // the workers' cgroups, or nil
	runDir    string       // sockd's files for its workers (metrics sockets), removed at exit
	metrics   *metrics.Exporter
	metricsLn net.Listener
	// oldMetricsPath: the old sockd's unix metrics socket, replaced by
	// another address at an upgrade, removed once this sockd is in charge.
	oldMetricsPath string
	storedMu       sync.Mutex
	storedN        map[string]int // sockets per listener sent to systemd's fd store
	pool           *pool.Pool
	out            *workerOutput
	sd             *notifier
	trim           *trimmer
	m              *machine
	steer          *steering.Steering // nil: not --reuseport, or unavailable
	adopted        []string           // the old sockd's workers' steering names, until in charge
	stored         bool               // reuseport groups came back from systemd's fd store
	oldServes      atomic.Bool        // an old sockd's workers serve: taking over, not yet in charge

	reqs    chan request
	stopped chan struct{} // closed when Run's loop is over: no request is handled after

	conf configs // the configuration in force, and the ones reloads bring
	// starting is the new sockd of the upgrade under way, succ the one
	// that took over.
	starting, succ atomic.Pointer[handoff.Upgrade]

	ctx         context.Context // Run's
	ctlCtx      context.Context // the control server's: ends with stopServing
	stopServing context.CancelCauseFunc
	served      chan struct{} // closed when the control server is done; nil until it serves
}

// New takes the sockets (from an old sockd, from systemd, or by binding
// opts.Listen) and the control socket, and prepares the pool. Nothing is
// forked but the guard until Run. Its errors wrap ErrConfig, ErrSockets or
// pool.ErrResources when they are of those kinds.
func New(opts Options) (*Daemon, error) {
	d, err := build(opts)
	return d, shortOf(err)
}

func build(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Config == nil {
		return nil, tag(ErrConfig, errors.New("no configuration"))
	}
	d := &Daemon{opts: opts, log: opts.Logger, sd: &notifier{on: true}, reqs: make(chan request, 16), stopped: make(chan struct{})}
	d.m = &machine{env: d, log: d.log, phase: phaseRunning}
	d.conf.init(opts.Config)
	d.warn(opts.Config)
	var err error
	if d.ctlPath, err = controlPath(opts.Config.Control); err != nil {
		return nil, tag(ErrConfig, err)
	}
	if d.child, err = handoff.Accept(os.Getenv, DefaultHandoffTimeout); err != nil {
		return nil, tag(ErrSockets, err)
	}
	first := 1
	if d.child != nil {
		// Taking over from an old sockd: its sockets, its control socket
		// and its generation numbering. Not the main pid yet: quiet.
		d.ls, d.ctl = d.child.Listeners, d.child.Control
		first = d.child.State.Generation + 1
		d.sd.set(false)
		d.m.phase = phaseTakingOver
		d.log.Info("took the sockets from the old sockd", "event", "upgrade_accept", "listeners", len(d.ls), "generation", first)
	} else {
		// The control socket first: a second sockd on the same one must
		// fail before it binds anything (and leaves unix socket files).
		if d.ctl, err = control.Listen(d.ctlPath); err != nil {
			return nil, tag(ErrSockets, err)
		}
		if dir := filepath.Dir(d.ctlPath); dir == tmpControlDir() {
			// Made by someone else between the check and the listen?
			if err := ownDir(dir); err != nil {
				d.ctl.Close()
				return nil, tag(ErrSockets, err)
			}
		}
		if d.ls, err = d.acquire(); err != nil {
			d.ctl.Close() // and unlinks it
			return nil, err
		}
	}
	d.ctl.SetUnlinkOnClose(false) // removed by Run, by the sockd in charge
	cfg := opts.Config.Pool()
	size := cmp.Or(cfg.Workers, pool.DefaultWorkers())
	if d.child != nil && d.child.State.Workers > 0 {
		size = d.child.State.Workers // scaled at run time: kept
	}
	if err := checkLimits(size, d.ls, cfg.User); err != nil {
		d.release()
		return nil, err
	}
	if err := d.contain(); err != nil {
		d.release()
		return nil, err
	}
	d.out = newWorkerOutput(opts.Config, opts.Stdout, opts.Stderr, d.log.Named("output"))
	d.out.held = heldListeners(d.ls)
	d.oldServes.Store(d.child != nil)
	deps := pool.Deps{Listeners: d.ls, FirstGeneration: first, Notify: d.sd.Notify, Logger: d.log.Named("pool"),
		Reaper: d.reaper, Cgroups: d.tree, Output: d.out.relay, Predecessor: d.oldServes.Load}
	if d.child != nil {
		deps.Size = d.child.State.Workers
	}
	if err := d.makeRunDir(cfg.User, &deps); err != nil {
		d.release()
		return nil, err
	}
	if err := d.setupMetrics(&deps); err != nil {
		d.release()
		return nil, err
	}
	if d.metrics != nil {
		d.metrics.Extra = append(d.metrics.Extra, d.out.relay.WriteMetrics)
	}
	if d.guard != nil {
		deps.Guard = d.guard
	}
	d.setupSteering(&deps)
	if d.pool, err = pool.New(cfg, deps); err != nil {
		d.release()
		return nil, err
	}
	d.m.pool = d.pool
	return d, nil
}

// contain makes sure nothing a worker starts outlives it or sockd: sockd
// becomes a child subreaper, the workers get cgroups of their own where
// sockd may manage some, and the guard (a second process) kills what is
// left should sockd die.
func (d *Daemon) contain() error {
	var err error
	if d.reaper, err = reaper.New(); err != nil {
		d.log.Warn("not a subreaper: processes workers leave behind are reparented to init", "error", err)
	}
	if d.tree, err = d.cgroups(); err != nil {
		return err
	}
	gopts := guard.Options{Mark: fmt.Sprintf("%s=%d-", pool.WorkerIDVar, os.Getpid()), Reaper: d.reaper, Logger: d.log.Named("guard")}
	if d.tree != nil {
		gopts.Cgroup = d.tree.Base
		if d.tree.Created() {
			gopts.CgroupOrigin = d.tree.Origin()
		}
	}
	if d.guard, err = guard.Start("/proc/self/exe", gopts); err != nil {
		d.log.Warn("no guard: if sockd is killed, processes started by workers may survive it", "error", err)
	}
	return nil
}

// cgroups sets the workers' cgroup tree up, as Options.Cgroups says.
func (d *Daemon) cgroups() (*cgroup.Tree, error) {
	mode, limits := d.opts.Config.Cgroups, d.opts.Config.Limits
	limited := limits != (cgroup.Limits{})
	if mode == CgroupsNo {
		if limited {
			return nil, tag(ErrConfig, errors.New("per-worker limits need cgroups, which --cgroups no turns off"))
		}
		return nil, nil
	}
	copts := cgroup.Options{Limits: limits}
	if d.child != nil {
		// An old sockd's subtree, if it had one.
		copts.Base, copts.Origin = d.child.State.Cgroup, d.child.State.CgroupOrigin
		if copts.Base == "" {
			// Under the old sockd's own cgroup, which is no subtree of
			// this one's: as the old sockd did.
			return nil, nil
		}
	}
	t, err := cgroup.Setup(copts)
	switch {
	case err == nil:
		d.log.Info("workers get cgroups of their own", "event", "cgroups", "base", t.Base)
		return t, nil
	case errors.Is(err, cgroup.ErrUnavailable) && mode != CgroupsYes && !limited:
		d.log.Info("workers get no cgroups; what they leave behind is found by its SOCKD_WORKER_ID", "event", "cgroups", "reason", err)
		return nil, nil
	}
	return nil, tag(ErrConfig, err)
}

// setupMetrics opens the metrics endpoint, and the directory the workers
// make their own metrics sockets in.
func (d *Daemon) setupMetrics(deps *pool.Deps) error {
	if d.opts.Config.Metrics == "" {
		if d.child != nil && d.child.Metrics != nil {
			d.child.Metrics.Close()
		}
		return nil
	}
	d.metrics = metrics.New(d.sampledStatus, d.log.Named("metrics"))
	d.metrics.Name = func() string { return d.conf.current().Name }
	deps.OnEvent = d.metrics.OnEvent
	if d.child != nil && d.child.Metrics != nil {
		// The old sockd's, which it holds until it handed over, if it is
		// still the address asked for; else one of this sockd's own, and
		// the old one's path goes once this sockd is in charge.
		d.metricsLn = d.child.Metrics
		if old := d.child.Metrics.Addr().String(); !metrics.Serves(d.child.Metrics, d.opts.Config.Metrics) {
			ln, err := metrics.Listen(d.opts.Config.Metrics)
			if err != nil {
				d.log.Warn("the metrics address changed, and the new one cannot be used while the old sockd holds its sockets: serving on the old one; restart sockd to move it",
					"event", "metrics_address", "old", old, "new", d.opts.Config.Metrics, "error", err.Error())
			} else {
				if _, ok := d.child.Metrics.(*net.UnixListener); ok {
					d.oldMetricsPath = old
				}
				d.child.Metrics.Close()
				d.metricsLn = ln
				d.log.Info("the metrics address changed", "event", "metrics_address", "old", old, "new", ln.Addr().String())
			}
		}
	} else {
		var err error
		if d.metricsLn, err = metrics.Listen(d.opts.Config.Metrics); err != nil {
			return tag(ErrSockets, err)
		}
	}
	deps.MetricsDir = d.runDir
	return nil
}

// makeRunDir makes the directory of the sockets sockd and its workers
// share: the workers' NOTIFY_SOCKET and, with metrics, their metrics
// sockets. It is next to the control socket, mode 0700, owned by the
// workers' user: nobody else can reach the notify socket, so nobody else
// can make sockd read datagrams (a flood of them would cost sockd a core).
func (d *Daemon) makeRunDir(u *account.User, deps *pool.Deps) error {
	parent := filepath.Dir(d.ctlPath)
	if u != nil && u.CanReach(parent) != nil {
		// The control socket's directory is closed to the workers' user:
		// /tmp is open to everyone (the directory below it is not).
		parent = os.TempDir()
	}
	d.runDir = filepath.Join(parent, fmt.Sprintf("sockd-%d", os.Getpid()))
	os.RemoveAll(d.runDir) // left by a sockd of the same pid, before a reboot
	if err := os.MkdirAll(d.runDir, 0o700); err != nil {
		return fmt.Errorf("workers' directory: %w", err)
	}
	if u != nil {
		if err := os.Chown(d.runDir, int(u.UID), int(u.GID)); err != nil {
			return fmt.Errorf("workers' directory: %w", err)
		}
	}
	if path, err := nodeshim.Install(d.runDir); err != nil {
		d.log.Warn("Node.js workers get no preload", "event", "node_preload", "error", err)
	} else {
		deps.NodePreload = path
	}
	if sock := filepath.Join(d.runDir, "notify"); len(sock) < 100 {
		deps.NotifySocket = sock
	} else {
		d.log.Warn("the notify socket's path would be too long; using an abstract socket, which any local process can write to", "event", "notify", "path", sock)
	}
	return nil
}

// serveMetrics serves the metrics until Run ends.
func (d *Daemon) serveMetrics() (stop func()) {
	if d.metricsLn == nil {
		return func() {}
	}
	go d.metrics.Serve(d.metricsLn)
	d.log.Info("serving metrics", "event", "metrics", "address", d.metricsLn.Addr().String())
	return func() { d.metricsLn.Close() }
}

// release gives back what New took, for a daemon that will not run.
func (d *Daemon) release() {
	d.closeSteering()
	if d.metricsLn != nil {
		d.metricsLn.Close()
	}
	if d.runDir != "" {
		os.RemoveAll(d.runDir)
	}
	d.closeGuard()
	d.closeTree()
	d.ctl.Close()
	if d.child == nil {
		os.Remove(d.ctlPath)
		d.ls.Remove()
	}
	d.ls.Close()
}

func (d *Daemon) closeGuard() {
	if d.guard != nil {
		if err := d.guard.Close(); err != nil {
			d.log.Warn("guard", "error", err)
		}
		d.guard = nil
	}
}

// closeTree removes the cgroup subtree sockd made (not after an upgrade
// handed it on).
func (d *Daemon) closeTree() {
	switch {
	case d.tree == nil:
	case d.m.phase != phaseHandedOff:
		if err := d.tree.Close(); err != nil {
			d.log.Warn("cannot remove sockd's cgroups", "error", err)
		}
	default:
		// Out of the subtree the new sockd now owns (this process may
		// stay as its keeper): it removes it when it ends.
		if err := d.tree.Leave(); err != nil {
			d.log.Warn("cannot leave the cgroups handed over", "error", err)
		}
	}
}

// RemoveHandedOverTree removes the cgroup subtree this sockd made and
// handed over, once the sockds it handed it to have ended (a keeper, whose
// successor has exited): whichever of them ended last may have found this
// process, or its guard, still in it. A moment is given for the last
// processes to leave.
func (d *Daemon) RemoveHandedOverTree() {
	if d.tree == nil || !d.tree.Created() {
		return
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = d.tree.Close(); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.log.Warn("cannot remove the cgroups handed over", "error", err)
}

// Run supervises the workers until the pool stops: after Stop (nil), after
// an upgrade handed the service to a new sockd (nil), or when workers
// crashed beyond the restart limit (an error wrapping pool.ErrRestartLimit).
func (d *Daemon) Run() error {
	loopOver := sync.OnceFunc(func() { close(d.stopped) })
	defer loopOver()
	defer d.ls.Close()
	defer d.closeSteering()
	defer d.closeTree()
	defer d.closeGuard()
	defer d.endLeftovers()
	d.trim = newTrimmer()
	defer d.trim.stop()
	defer d.serveMetrics()()
	if d.runDir != "" {
		defer os.RemoveAll(d.runDir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.ctx = ctx
	d.ctlCtx, d.stopServing = context.WithCancelCause(ctx)
	if d.child == nil {
		d.sd.wait() // until the first generation is ready
	}
	defer d.sd.track("STOPPING=1")
	d.pool.Start()
	go func() {
		select {
		case <-d.pool.Ready():
			d.trim.soon()
		case <-d.pool.Done():
		}
	}()
	go func() {
		<-d.pool.Done()
		d.post(poolDone{})
	}()
	d.m.begin()
	go d.watchdog(ctx)
	if d.reaper != nil {
		go d.reaper.Run(ctx)
	}
	for !d.m.over {
		(<-d.reqs).apply(d.m)
	}
	// Requests in flight on the control socket (an upgrade --wait, say)
	// wait for an answer from the loop or for this; the control server
	// waits for them before Run may return.
	loopOver()
	d.stopServing(nil)
	d.ctl.Close()
	if d.served != nil {
		<-d.served
	}
	if d.m.phase.inCharge() {
		os.Remove(d.ctlPath)
		d.ls.Remove()
		if ul, ok := d.metricsLn.(*net.UnixListener); ok {
			os.Remove(ul.Addr().String()) // one taken over does not unlink itself
		}
	}
	err := d.pool.Wait()
	d.out.close()
	if err != nil {
		return err
	}
	d.log.Info("sockd stopped", "event", "sockd_exit", "handed_off", d.m.phase == phaseHandedOff)
	return nil
}

// endLeftovers kills what the workers left that is still alive once they
// are all gone (without cgroups: the processes sockd adopted that carried
// no SOCKD_WORKER_ID of a worker), so that a clean stop leaves nothing.
func (d *Daemon) endLeftovers() {
	if d.reaper == nil || d.m.phase == phaseHandedOff {
		return
	}
	n, err := d.reaper.KillAdopted(nil, time.Now().Add(5*time.Second))
	if n > 0 || err != nil {
		d.log.Warn("killed processes the workers left behind", "event", "leftovers_killed", "processes", n, "error", err)
	}
}

// post hands a request to Run; false once Run is over.
func (d *Daemon) post(req request) bool {
	select {
	case <-d.stopped:
		return false
	default:
	}
	select {
	case d.reqs <- req:
		return true
	case <-d.stopped:
		return false
	}
}

// Stop drains the workers (and abandons an upgrade whose new sockd is not
// in charge yet); Run returns once they are gone.
func (d *Daemon) Stop() {
	if !d.post(stopRequest{}) {
		d.pool.Stop()
	}
}

// Status is the pool's status, with the workers' usage read now.
func (d *Daemon) Status(ctx context.Context) (any, error) {
	s, err := d.sampledStatus(ctx)
	if err != nil {
		return nil, err
	}
	return Status{Status: s, Config: d.configStatus(), Output: d.out.Mode()}, nil
}

// sampledStatus reads the workers' usage (unless it was read a moment
// ago) and returns the pool's status with it. Only status requests and
// scrapes read it: an idle sockd reads nothing.
func (d *Daemon) sampledStatus(ctx context.Context) (pool.Status, error) {
	if err := d.pool.Sample(ctx); err != nil && ctx.Err() != nil {
		return pool.Status{}, err
	}
	return d.pool.Status(ctx)
}

// Reload starts a new generation of workers, on the configuration read
// again (reconfig.go; environ, if not nil, is the reload client's
// environment). An invalid configuration is refused at once, whether or
// not the caller waits. With wait it returns the outcome; without, it
// returns once the reload is under way (and logs the outcome).
func (d *Daemon) Reload(ctx context.Context, wait bool, environ []string) error {
	reply := make(chan error, 1)
	if !d.post(reloadRequest{reply}) {
		return pool.ErrStopping
	}
	select {
	case err := <-reply:
		if err != nil {
			return err
		}
	case <-d.stopped:
		return pool.ErrStopping
	}
	next, err := d.nextConfig(environ)
	if err != nil {
		d.post(reloadDone{})
		d.refuse(err)
		return err
	}
	run := func(ctx context.Context) error {
		defer d.post(reloadDone{})
		defer d.trim.soon()
		return d.reload(ctx, next)
	}
	if wait {
		return run(ctx)
	}
	go func() {
		if err := run(context.Background()); err != nil {
			d.log.Warn("reload did not take effect", "error", err)
		}
	}()
	return nil
}

// Scale sets the number of worker slots to n (or changes it by n, if
// relative) and returns the new number. New reuseport sockets go into
// systemd's fd store like the first ones. With wait it returns once that
// many workers are ready and retired ones have drained.
func (d *Daemon) Scale(ctx context.Context, n int, relative, wait bool) (int, error) {
	target, err := d.pool.Scale(ctx, n, relative)
	if err != nil {
		return target, err
	}
	d.storeSockets()
	if !wait {
		return target, nil
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	gone := func() error {
		return fmt.Errorf("sockd stopped before the workers were there (its log says why): %w", pool.ErrStopping)
	}
	for {
		s, err := d.pool.Status(ctx)
		if errors.Is(err, pool.ErrStopping) {
			return target, gone()
		}
		if err != nil {
			return target, err
		}
		if s.Size != target {
			return s.Size, fmt.Errorf("scaled to %d meanwhile", s.Size)
		}
		if s.Ready == target && s.Current == target && s.Reload == nil {
			return target, nil
		}
		select {
		case <-tick.C:
		case <-d.stopped:
			return target, gone()
		case <-ctx.Done():
			return target, context.Cause(ctx)
		}
	}
}

// Upgrade hands the sockets to the sockd binary now at sockd's own path.
// With wait it returns the outcome; a failed upgrade leaves this sockd
// serving.
func (d *Daemon) Upgrade(ctx context.Context, wait bool) error {
	if !wait {
		ctx = context.Background()
	}
	reply := make(chan error, 1)
	if !d.post(upgradeRequest{ctx: ctx, wait: wait, reply: reply}) {
		return pool.ErrStopping
	}
	// Not on ctx: the upgrade itself ends with it, and answers.
	select {
	case err := <-reply:
		return err
	case <-d.stopped:
		return pool.ErrStopping
	}
}

func oneLine(err error) string { return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ") }

// Signal sends the signal named sig to the live workers in slot and
// generation (nil: any) and returns how many got it.
func (d *Daemon) Signal(ctx context.Context, sig string, slot, generation *int) (int, error) {
	s, err := pool.ParseSignal(sig)
	if err != nil {
		return 0, err
	}
	return d.pool.Signal(ctx, s, selector(slot, generation))
}

// Send writes msg, one JSON value, on the Node IPC channel of the live
// workers in slot and generation (nil: any).
func (d *Daemon) Send(ctx context.Context, msg json.RawMessage, slot, generation *int) (int, error) {
	return d.pool.Send(ctx, msg, selector(slot, generation))
}

func selector(slot, generation *int) pool.Selector {
	sel := pool.All
	if slot != nil {
		sel.Slot = *slot
	}
	if generation != nil {
		sel.Generation = *generation
	}
	return sel
}
