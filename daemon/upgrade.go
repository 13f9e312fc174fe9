package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/pool"
)

// handOn is the old sockd's half of an upgrade: start the new binary on
// the sockets, wait until its workers are ready, make it systemd's main
// pid and tell it to take charge. On error the new sockd is gone and this
// one serves on.
func (d *Daemon) handOn(ctx context.Context) error {
	s, err := d.pool.Status(ctx)
	if err != nil {
		return err
	}
	if s.State != pool.StateRunning {
		return fmt.Errorf("sockd is %s; upgrade when it is running", s.State)
	}
	ho := handoff.Options{Generation: s.Generation, Workers: s.Size, Listeners: d.ls, Control: d.ctl, Reaper: d.reaper, Logger: d.log.Named("upgrade")}
	if d.tree != nil {
		ho.Cgroup = d.tree.Base
		if d.tree.Created() {
			ho.CgroupOrigin = d.tree.Origin()
		}
	}
	u, err := handoff.Start(ho)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, d.pool.Options().ReloadTimeout+2*time.Second)
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
	d.log.Info("upgrade: new sockd in charge; retiring this one", "event", "upgrade_handed_over", "new_pid", u.PID())
	return nil
}

// takeOver is the new sockd's half of an upgrade: once its workers are
// ready it says so and waits until the old sockd made it the main pid.
func (d *Daemon) takeOver(ctx context.Context) error {
	select {
	case <-d.pool.Ready():
	case <-d.pool.Done():
		return errors.New("workers never became ready")
	}
	if err := d.child.Ready(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, DefaultHandoffTimeout)
	defer cancel()
	return d.child.WaitCommit(wctx)
}

// onTookOver puts the new sockd in charge: it talks to systemd and serves
// the control socket from now on.
func (d *Daemon) onTookOver(err error, ctx, ctlCtx context.Context, served chan struct{}) {
	if err != nil {
		d.log.Error("upgrade: cannot take over; stopping", "event", "upgrade_failed", "error", err)
		d.child.Close()
		d.pool.Stop()
		return
	}
	d.phase, d.inCharge = phaseRunning, true
	d.sd.set(true)
	if s, err := d.pool.Status(ctx); err == nil {
		d.sd.Notify("READY=1\nSTATUS=" + s.Summary)
	}
	d.log.Info("upgrade: this sockd is in charge now", "event", "upgrade_done", "pid", os.Getpid())
	go d.adoptMainPID(ctx)
	go d.serveControl(ctlCtx, served)
}

// adoptMainPID makes this sockd systemd's own child once the old sockd is
// gone (see handoff.AdoptMainPID): otherwise systemd cannot see it exit and
// `systemctl stop` would SIGKILL the service instead of letting it drain.
func (d *Daemon) adoptMainPID(ctx context.Context) {
	err := handoff.AdoptMainPID(ctx, d.reaper, func(helper int) {
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
