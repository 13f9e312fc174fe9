package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/notify"
	"github.com/sockd/sockd/internal/procfs"
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
)

// ReloadError says why a reload was rolled back. The previous generation
// kept serving every slot the reload had not taken over yet: all of them
// unless a batch after the first one failed (Replaced > 0: the reload
// halted with those slots on the new generation).
type ReloadError struct {
	Generation int // the generation that failed
	Serving    int // the generation still serving the slots not taken over
	Reason     string
	Slots      int // the pool's size
	Replaced   int // slots that took the new generation before the failure
}

func (e *ReloadError) Error() string {
	if e.Replaced > 0 {
		return fmt.Sprintf("reload to generation %d halted after %d of %d slots: %s; the other slots still run generation %d",
			e.Generation, e.Replaced, e.Slots, e.Reason, e.Serving)
	}
	return fmt.Sprintf("reload to generation %d failed: %s; generation %d still serving", e.Generation, e.Reason, e.Serving)
}

// Pool runs generations of workers on a fixed set of listeners. One
// goroutine (run) owns all of its state; the methods send it requests.
type Pool struct {
	opts    Options
	log     hclog.Logger
	command string // resolved Command[0]
	devnull int
	nsrv    *notify.Server
	env     env
	rand    func(n int64) int64 // [0, n)
	self    int                 // sockd's pid, for SOCKD_WORKER_ID
	uid     int                 // sockd's uid
	// noClone3: clone3 (CLONE_INTO_CGROUP) was refused once.
	noClone3 atomic.Bool

	events chan any
	done   chan struct{} // closed when run returns
	ready  chan struct{} // closed when the first generation is all ready
	err    error         // run's result, readable after done

	stopOnce sync.Once
	st       state // owned by run

	listenerInodes map[string]bool // "socket:[ino]" of every listening socket

	// exiting holds the pids of workers that have exited until their exit
	// reaches the loop through the notify socket; notifyDead says the
	// notify socket stopped, so exits go to the loop directly.
	exiting    sync.Map
	notifyDead atomic.Bool

	sampleMu sync.Mutex // one Sample at a time
	sampled  time.Time  // when the last one was read
}

// New validates opts, resolves the command and opens the notify socket.
// Nothing is forked until Start.
func New(opts Options) (*Pool, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{opts: o, log: o.Logger, events: make(chan any, 64), done: make(chan struct{}), ready: make(chan struct{})}
	p.env = osEnv{p}
	p.rand = rand.Int64N
	p.self, p.uid = os.Getpid(), os.Geteuid()
	if p.command, err = ResolveCommand(o.Command[0]); err != nil {
		return nil, err
	}
	if o.User != nil {
		if err := o.User.CanExecute(p.command); err != nil {
			return nil, err
		}
		if o.Trampoline == "/proc/self/exe" {
			exe, err := os.Executable()
			if err == nil {
				err = o.User.CanExecute(exe)
			}
			if err != nil {
				return nil, fmt.Errorf("sockd's own binary, which starts every worker: %w", err)
			}
		}
	}
	p.listenerInodes = map[string]bool{}
	for _, l := range o.Listeners {
		for _, fd := range l.FDs() {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.Name, err)
			}
			p.listenerInodes[fmt.Sprintf("socket:[%d]", st.Ino)] = true
		}
	}
	if p.devnull, err = unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	if p.nsrv, err = notify.Listen(o.NotifySocket); err != nil {
		unix.Close(p.devnull)
		return nil, err
	}
	p.nsrv.Trusted = p.trusted
	return p, nil
}

// Start runs the first generation. It returns at once; Ready says when
// every worker is ready and Wait when the pool has stopped.
func (p *Pool) Start() {
	go p.receiveNotify()
	go p.sampleLoop()
	go func() {
		p.err = p.run()
		p.nsrv.Close()
		unix.Close(p.devnull)
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
// current one. It returns nil once the new generation has taken over, a
// *ReloadError if it was rolled back, or ErrStopping. Reloads requested
// while one runs are coalesced into at most one more.
func (p *Pool) Reload(ctx context.Context) error {
	reply := make(chan error, 1)
	if !p.post(reloadRequest{reply: reply}) {
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

// trusted says whether a notify sender may be a worker at all, before its
// message is read: only the workers' user (sockd's, or Options.User) and
// root can be. The rest is decided by the loop (a live worker or one of
// its descendants).
func (p *Pool) trusted(pid, uid int) bool {
	return uid == 0 || uid == p.uid || p.opts.User != nil && uid == int(p.opts.User.UID)
}

// post hands an event to the loop; it reports false once the loop is gone.
func (p *Pool) post(ev any) bool {
	select {
	case p.events <- ev:
		return true
	case <-p.done:
		return false
	}
}

func (p *Pool) receiveNotify() {
	self := os.Getpid()
	var drops rateLog // dropped messages: a flood of them must cost next to nothing
	defer func() {
		p.notifyDead.Store(true)
		p.exiting.Range(func(pid, _ any) bool {
			p.exited(pid.(int))
			return true
		})
	}()
	for {
		m, err := p.nsrv.Receive()
		if tag, ok := m.Fields[notify.MarkField]; ok && err == nil && m.PID == self {
			if pid, err := strconv.Atoi(tag); err == nil {
				p.exited(pid)
			}
			continue
		}
		var drop *notify.DropError
		switch {
		case errors.As(err, &drop):
			if n, ok := drops.note(time.Now()); ok {
				p.log.Debug("notify messages dropped", "event", "notify_dropped", "messages", n, "sender_pid", drop.PID, "reason", drop.Reason)
			}
		case errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			p.log.Error("notify socket failed", "error", err)
			return
		default:
			// Now, while the sender surely runs (systemd-notify waits on a
			// BARRIER=1 that is answered only after this is read).
			// One /proc read for a worker itself (its parent is sockd).
			m.Ancestors = procfs.Ancestors(m.PID, self, 8)
			if !p.post(notifyEvent{msg: m}) {
				return
			}
		}
	}
}

// Options returns the pool's options with every default filled in.
func (p *Pool) Options() Options { return p.opts }
