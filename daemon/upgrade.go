package daemon

import (
	"context"
	"fmt"
	"os"

	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/pool"
)

// Daemon as the machine's env (env.go).

func (d *Daemon) async(f func())           { go f() }
func (d *Daemon) predecessor() predecessor { return d.child }
func (d *Daemon) notify(state string)      { d.sd.Notify(state) }
func (d *Daemon) lastWord(state string)    { d.sd.lastWord(state) }

func (d *Daemon) resumeTalking(state string) {
	d.sd.set(true)
	d.sd.Notify(state)
}

func (d *Daemon) counted(what, result string) {
	if d.metrics == nil {
		return
	}
	switch what {
	case "reload":
		d.metrics.Reload(result)
	case "upgrade":
		d.metrics.Upgrade(result)
	}
}

// startSuccessor starts the new sockd binary on this one's sockets.
func (d *Daemon) startSuccessor(s pool.Status) (successor, error) {
	ho := handoff.Options{Generation: s.Generation, Workers: s.Size, Listeners: d.ls, Control: d.ctl, Reaper: d.reaper, Logger: d.log.Named("upgrade")}
	if d.tree != nil {
		ho.Cgroup = d.tree.Base
		if d.tree.Created() {
			ho.CgroupOrigin = d.tree.Origin()
		}
	}
	u, err := handoff.Start(ho)
	if err != nil {
		return nil, err
	}
	return u, nil
}

// serveControl answers the control socket until stopControl or the end
// of Run.
func (d *Daemon) serveControl() {
	if d.served != nil {
		return
	}
	d.served = make(chan struct{})
	go func() {
		control.Serve(d.ctlCtx, d.ctl, d, d.log.Named("control"))
		close(d.served)
	}()
}

func (d *Daemon) stopControl() { d.stopServing() }

// takeCharge: the old sockd made this one the main pid.
func (d *Daemon) takeCharge() {
	d.sd.set(true)
	if s, err := d.pool.Status(d.ctx); err == nil {
		d.sd.Notify("READY=1\nSTATUS=" + s.Summary)
	}
	go d.adoptMainPID(d.ctx)
	d.serveControl()
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
