package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/sockd/sockd/internal/cgroup"
)

// Errors callers can branch on.
var (
	// ErrRestartLimit: workers crashed more often than the restart budget
	// allows and the pool gave up.
	ErrRestartLimit = errors.New("restart limit reached")
	// ErrResources: sockd could not start the first workers for want of
	// a resource (descriptors, processes, memory): the service cannot
	// run as configured.
	ErrResources = errors.New("cannot start workers")
	// ErrStopping: the pool is shutting down.
	ErrStopping = errors.New("pool is stopping")
	// ErrConfig: a reload's configuration is not valid; nothing changed.
	ErrConfig = errors.New("invalid configuration")
)

// ReloadError says why a reload was rolled back. The previous generation
// kept serving every slot the reload had not taken over yet: all of them
// unless a batch after the first one failed (Replaced > 0: the reload
// halted with those slots on the new generation).
type ReloadError struct {
	Generation int // the generation that failed
	Serving    int // the generation still serving the slots not taken over
	// Others: every generation those slots run, when there are several (a
	// pool that an earlier reload left halfway).
	Others   []int
	Reason   string
	Slots    int // the pool's size
	Replaced int // slots that took the new generation before the failure
	// Unserved: no worker of generation Serving was ready when the reload
	// failed (a reload during the first start): it starts again.
	Unserved bool
}

func (e *ReloadError) Error() string {
	serving := fmt.Sprintf("generation %d", e.Serving)
	if len(e.Others) > 1 {
		s := make([]string, len(e.Others))
		for i, g := range e.Others {
			s[i] = strconv.Itoa(g)
		}
		serving = "generations " + strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
	}
	if e.Replaced > 0 {
		return fmt.Sprintf("reload to generation %d halted after %d of %d slots: %s; the other slots still run %s",
			e.Generation, e.Replaced, e.Slots, e.Reason, serving)
	}
	if e.Unserved {
		return fmt.Sprintf("reload to generation %d failed: %s; no worker of %s was ready: it starts again", e.Generation, e.Reason, serving)
	}
	return fmt.Sprintf("reload to generation %d failed: %s; %s still serving", e.Generation, e.Reason, serving)
}

// Pool runs generations of workers on a fixed set of listeners. One
// goroutine (run) owns all of its state; the methods send it requests.
type Pool struct {
	cfg  *conf // the configuration of the serving generation (the loop's)
	deps Deps
	log  hclog.Logger
	env  env
	rand func(n int64) int64 // [0, n)

	// inForce is cfg for the other goroutines; uids are the workers'
	// users of every configuration so far (who may send notify messages).
	inForce atomic.Pointer[conf]
	uids    sync.Map

	// The owners of workers that are not a policy's (owner.go) and the
	// policies that watch the pool as it runs.
	starting, serving, retired, parking owner
	recycler                            *recycler
	policies                            []policy

	events chan loopEvent
	done   chan struct{} // closed when run returns
	ready  chan struct{} // closed when the first generation is all ready
	err    error         // run's result, readable after done

	stopOnce sync.Once
	st       state // owned by run

	sampleMu sync.Mutex    // one Sample at a time
	sampled  time.Time     // when the last one was read
	newConf  chan struct{} // setConf's nudge to sampleLoop (one waiting at most)
}

// New validates cfg and deps, resolves the command and opens the notify
// socket. Nothing is forked until Start. Its errors are one line each,
// naming the setting.
func New(cfg Config, deps Deps) (*Pool, error) {
	deps, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := newConf(cfg, deps)
	if err != nil {
		return nil, err
	}
	p := newPool(c, deps)
	e, err := newOSEnv(p)
	if err != nil {
		return nil, err
	}
	p.env = e
	return p, nil
}

// conf is a Config in force: checked, its defaults filled in, its
// command found.
type conf struct {
	Config
	command string // Command[0], found in PATH
}

// newConf checks c: its values, its command, and that its user may run
// the command and sockd's own binary (the trampoline).
func newConf(cfg Config, deps Deps) (*conf, error) {
	c, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if c.Limits != (cgroup.Limits{}) && deps.Cgroups == nil {
		return nil, errors.New("per-worker cgroup limits need cgroups (--cgroups auto or yes, where sockd may manage a cgroup v2 subtree)")
	}
	if deps.Cgroups != nil {
		if err := deps.Cgroups.Enable(c.Limits); err != nil {
			return nil, err
		}
	}
	trampoline := deps.Trampoline
	command, err := ResolveCommand(c.Command[0], c.Dir)
	if err != nil {
		return nil, err
	}
	if c.User != nil {
		if err := c.User.CanExecute(command); err != nil {
			return nil, err
		}
		if trampoline == "/proc/self/exe" {
			exe, err := os.Executable()
			if err == nil {
				err = c.User.CanExecute(exe)
			}
			if err != nil {
				return nil, fmt.Errorf("sockd's own binary, which starts every worker: %w", err)
			}
		}
	}
	return &conf{Config: c, command: command}, nil
}

// newPool makes a pool of a valid configuration, before it has an env:
// New gives it the OS, the simulator a fake one.
func newPool(c *conf, deps Deps) *Pool {
	p := &Pool{deps: deps, log: deps.Logger, rand: rand.Int64N,
		events: make(chan loopEvent, 64), done: make(chan struct{}), ready: make(chan struct{}),
		newConf: make(chan struct{}, 1)}
	p.setConf(c)
	p.starting, p.serving, p.retired, p.parking = starter{p}, server{p}, retiree{p}, parker{p}
	p.recycler = &recycler{p: p}
	p.policies = []policy{p.recycler, reloads{p}}
	return p
}

// Start runs the first generation. It returns at once; Ready says when
// every worker is ready and Wait when the pool has stopped.
func (p *Pool) Start() {
	p.env.begin()
	go p.sampleLoop()
	go func() {
		p.err = p.run()
		p.env.end()
		close(p.done)
	}()
}

// Ready is closed once every worker of the first generation is ready.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

// Done is closed when the pool has stopped and every worker is reaped.
func (p *Pool) Done() <-chan struct{} { return p.done }

// Wait blocks until the pool has stopped and returns why: nil after Stop,
// an error wrapping ErrRestartLimit if it gave up.
func (p *Pool) Wait() error {
	<-p.done
	return p.err
}

// Stop asks every worker to drain (SIGTERM, SIGKILL after StopTimeout) and
// stops restarting them. It does not wait; see Wait and Shutdown.
func (p *Pool) Stop() {
	p.stopOnce.Do(func() { p.post(stopRequest{}) })
}

// Shutdown stops the pool and waits for it, or for ctx.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.Stop()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reload starts a new generation, waits until it is ready and retires the
// current one. With cfg the new generation runs that configuration (nil:
// the one in force); it is checked first, and an invalid one fails the
// reload with nothing started. It returns nil once the new generation has
// taken over, a *ReloadError if it was rolled back (the configuration
// stays as it was), or ErrStopping. Reloads requested while one runs are
// coalesced into at most one more, which runs the newest configuration
// asked for.
func (p *Pool) Reload(ctx context.Context, cfg *Config) error {
	var c *conf
	if cfg != nil {
		var err error
		if c, err = newConf(*cfg, p.deps); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	reply := make(chan error, 1)
	if !p.post(reloadRequest{reply: reply, cfg: c}) {
		return ErrStopping
	}
	select {
	case err := <-reply:
		return err
	case <-p.done:
		return ErrStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status returns a snapshot of the pool.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	reply := make(chan Status, 1)
	if !p.post(statusRequest{reply: reply}) {
		return Status{}, ErrStopping
	}
	select {
	case s := <-reply:
		return s, nil
	case <-p.done:
		return Status{}, ErrStopping
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// Healthy reports whether the supervisor loop answers and at least one
// worker of the serving generation is ready. sockd pings systemd's
// watchdog only while this holds.
func (p *Pool) Healthy(ctx context.Context) bool {
	s, err := p.Status(ctx)
	return err == nil && s.State != StateStopping && s.Ready > 0
}

// post hands an event to the loop; it reports false once the loop is gone.
func (p *Pool) post(ev loopEvent) bool {
	select {
	case p.events <- ev:
		return true
	case <-p.done:
		return false
	}
}

// Config returns the configuration of the serving generation, with every
// default filled in.
func (p *Pool) Config() Config { return p.inForce.Load().Config }

// setConf makes c the serving generation's configuration.
func (p *Pool) setConf(c *conf) {
	p.cfg = c
	p.inForce.Store(c)
	uid := -1
	if c.User != nil {
		uid = int(c.User.UID)
	}
	p.uids.Store(uid, true)
	select {
	case p.newConf <- struct{}{}:
	default:
	}
}

// workerUID reports whether uid runs (or ran) workers of this pool.
func (p *Pool) workerUID(uid int) bool {
	_, ok := p.uids.Load(uid)
	return ok
}
