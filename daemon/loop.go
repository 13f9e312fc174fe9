package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/pool"
)

// phase is where a sockd stands. One goroutine (Run) owns it.
type phase int

const (
	// phaseTakingOver: a new sockd whose workers start on an old sockd's
	// sockets; not in charge (of systemd, the control socket) until the
	// old one commits.
	phaseTakingOver phase = iota
	// phaseRunning: in charge; reloads and upgrades are accepted, never
	// both at once.
	phaseRunning
	// phaseUpgrading: in charge; a new sockd binary is starting on this
	// one's sockets. If it fails, back to running.
	phaseUpgrading
	// phaseHandedOff: the new sockd is in charge; this one drains its
	// workers and exits, leaving the sockets and files to it.
	phaseHandedOff
	// phaseStopping: in charge; draining before exit.
	phaseStopping
	// phaseAbandoned: took nothing over (the takeover failed, or a stop
	// came first); drains and exits, leaving the old sockd's files alone.
	phaseAbandoned
)

var phaseNames = [...]string{"taking over", "running", "upgrading", "handed off", "stopping", "abandoned"}

func (p phase) String() string { return phaseNames[p] }

// inCharge: this sockd is the one systemd and the control socket know;
// at exit it removes the control socket and the unix socket files.
func (p phase) inCharge() bool {
	return p == phaseRunning || p == phaseUpgrading || p == phaseStopping
}

// machine is the daemon's decisions: it owns the phase, takes requests
// and news one at a time, and does what they mean through its env (the
// new sockd, systemd, the control socket), so that every transition and
// every awkward timing is tested without forking (machine_test.go).
type machine struct {
	env  env
	pool poolControl
	log  hclog.Logger

	phase   phase
	reloads int                // reloads under way
	cancel  context.CancelFunc // ends the upgrade under way (phaseUpgrading)
	over    bool               // the pool is done: Run returns
}

// poolControl is what the machine asks of the pool.
type poolControl interface {
	Status(ctx context.Context) (pool.Status, error)
	Ready() <-chan struct{}
	Done() <-chan struct{}
	Stop()
	Config() pool.Config
}

// request is something the machine handles: each kind says what it does
// (apply), so a kind that nothing handles cannot be written.
type request interface{ apply(m *machine) }

type (
	reloadRequest  struct{ reply chan error }
	reloadDone     struct{}
	upgradeRequest struct {
		ctx   context.Context
		wait  bool
		reply chan error
	}
	upgradeDone struct {
		err   error
		reply chan error // nil if nobody waits
	}
	tookOver    struct{ err error }
	stopRequest struct{}
	poolDone    struct{}
)

func (r reloadRequest) apply(m *machine)  { r.reply <- m.onReload() }
func (reloadDone) apply(m *machine)       { m.reloads-- }
func (r upgradeRequest) apply(m *machine) { m.onUpgrade(r) }
func (u upgradeDone) apply(m *machine)    { m.onUpgradeDone(u) }
func (t tookOver) apply(m *machine)       { m.onTookOver(t.err) }
func (stopRequest) apply(m *machine)      { m.onStop() }
func (poolDone) apply(m *machine)         { m.onPoolDone() }

// begin starts the phase's work: a new sockd waits for its workers and
// the old sockd's commit; one in charge serves the control socket.
func (m *machine) begin() {
	if m.phase == phaseTakingOver {
		m.env.async(func() { m.env.post(tookOver{m.takeOver()}) })
		return
	}
	m.env.serveControl()
}

func (m *machine) onReload() error {
	switch m.phase {
	case phaseRunning:
		m.reloads++
		return nil
	case phaseHandedOff:
		m.env.counted("reload", "refused")
		return tag(ErrRefused, fmt.Errorf("%w; reload refused", control.ErrHandedOver))
	case phaseStopping, phaseAbandoned:
		return pool.ErrStopping
	default:
		m.env.counted("reload", "refused")
		// The new sockd numbers its generation after the old one's: a
		// reload now would make a third generation, with a clashing
		// number.
		return tag(ErrRefused, control.Busy(fmt.Errorf("sockd is %s; reload refused", m.phase)))
	}
}

func (m *machine) onUpgrade(r upgradeRequest) {
	var err error
	switch {
	case m.phase == phaseUpgrading:
		err = errors.New("an upgrade is already running")
	case m.phase == phaseStopping || m.phase == phaseAbandoned:
		err = pool.ErrStopping
	case m.phase == phaseHandedOff:
		err = fmt.Errorf("%w; upgrade refused", control.ErrHandedOver)
	case m.phase != phaseRunning:
		err = fmt.Errorf("this sockd is %s, not in charge; upgrade refused", m.phase)
	case m.reloads > 0:
		err = control.Busy(errors.New("sockd is reloading; upgrade when it is running"))
	}
	if err != nil {
		m.env.counted("upgrade", "refused")
		r.reply <- tag(ErrRefused, err)
		return
	}
	m.phase = phaseUpgrading
	reply := r.reply
	if !r.wait {
		reply <- nil
		reply = nil
	}
	ctx, cancel := context.WithCancel(r.ctx)
	m.cancel = cancel
	m.env.async(func() { m.env.post(upgradeDone{m.handOn(ctx), reply}) })
}

func (m *machine) onUpgradeDone(u upgradeDone) {
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	err := u.err
	switch {
	case err == nil:
		// The new sockd committed: it is in charge, even if a stop came
		// meanwhile (it was too late to call the upgrade off); then the
		// stop is passed on to it, or it would serve on.
		m.env.counted("upgrade", "done")
		stopping := m.phase == phaseStopping
		m.phase = phaseHandedOff
		m.env.handedOver()
		m.env.stopControl()
		m.pool.Stop()
		if stopping {
			m.log.Info("stopped while the new sockd took charge: the stop is passed on to it", "event", "upgrade_stop")
			m.env.stopSuccessor()
		}
	case m.phase == phaseStopping:
		m.env.counted("upgrade", "failed")
		m.log.Warn("upgrade abandoned: sockd is stopping", "event", "upgrade_failed", "error", err)
		err = fmt.Errorf("upgrade abandoned, sockd is stopping: %w", err)
	default:
		m.env.counted("upgrade", "failed")
		m.phase = phaseRunning
		m.log.Error("upgrade failed; this sockd keeps serving", "event", "upgrade_failed", "error", err)
		m.env.notify("STATUS=upgrade failed: " + oneLine(err))
		err = fmt.Errorf("upgrade failed, old sockd keeps serving: %w", err)
	}
	if u.reply != nil {
		u.reply <- err
	}
}

// onTookOver puts a new sockd in charge once the old one committed: it
// talks to systemd and serves the control socket from now on.
func (m *machine) onTookOver(err error) {
	if m.phase != phaseTakingOver {
		return // stopped meanwhile: abandoned
	}
	if err != nil {
		m.log.Error("upgrade: cannot take over; stopping", "event", "upgrade_failed", "error", err)
		m.env.predecessor().Close()
		m.phase = phaseAbandoned
		m.pool.Stop()
		return
	}
	m.phase = phaseRunning
	m.env.takeCharge()
	m.log.Info("upgrade: this sockd is in charge now", "event", "upgrade_done", "pid", os.Getpid())
}

// onStop drains the workers, and calls off an upgrade whose new sockd is
// not in charge yet (it is killed; its done news still comes).
func (m *machine) onStop() {
	switch m.phase {
	case phaseTakingOver:
		m.phase = phaseAbandoned
	case phaseRunning, phaseUpgrading:
		m.phase = phaseStopping
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.pool.Stop()
}

// onPoolDone ends Run: the workers are gone (stopped, handed off, or
// given up on). An upgrade still under way is called off.
func (m *machine) onPoolDone() {
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	m.over = true
}

// handOn is the old sockd's half of an upgrade: start the new binary on
// the sockets, wait until its workers are ready, make it systemd's main
// pid and tell it to take charge. On error the new sockd is gone and this
// one serves on.
func (m *machine) handOn(ctx context.Context) error {
	s, err := m.pool.Status(ctx)
	if err != nil {
		return err
	}
	if s.State != pool.StateRunning {
		return fmt.Errorf("sockd is %s; upgrade when it is running", s.State)
	}
	u, err := m.env.startSuccessor(s)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, m.pool.Config().ReloadTimeout+2*time.Second)
	defer cancel()
	if err := u.WaitReady(rctx); err != nil {
		return err // the new sockd was killed
	}
	// Not the main pid any more: nothing more to systemd (no watchdog ping
	// may slip in between).
	m.env.lastWord(fmt.Sprintf("MAINPID=%d\nSTATUS=handed over to pid %d", u.PID(), u.PID()))
	if err := u.Commit(); err != nil {
		// The new sockd died between ready and commit. Take the main pid
		// back; under NotifyAccess=main systemd may refuse that, since it
		// now listens to the dead pid only, and will restart the service.
		u.Abort(time.Second)
		m.env.resumeTalking(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=upgrade failed at commit", os.Getpid()))
		return err
	}
	m.log.Info("upgrade: new sockd in charge; retiring this one", "event", "upgrade_handed_over", "new_pid", u.PID())
	return nil
}

// takeOver is the new sockd's half of an upgrade: once its workers are
// ready it says so and waits until the old sockd made it the main pid.
func (m *machine) takeOver() error {
	select {
	case <-m.pool.Ready():
	case <-m.pool.Done():
		return errors.New("workers never became ready")
	}
	pred := m.env.predecessor()
	if err := pred.Ready(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultHandoffTimeout)
	defer cancel()
	return pred.WaitCommit(ctx)
}
