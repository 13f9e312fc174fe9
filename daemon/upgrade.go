package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/keeper"
	"github.com/sockd/sockd/pool"
	"golang.org/x/sys/unix"
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
	gen := s.Generation
	if r := s.LastReload; r != nil && r.Generation > gen {
		gen = r.Generation // a rolled-back reload's number is not given out again
	}
	ho := handoff.Options{Generation: gen, Workers: s.Size, Listeners: d.ls, Control: d.ctl, Reaper: d.reaper, Logger: d.log.Named("upgrade"),
		Steered: d.heldSockets(), Env: d.successorEnviron(), Metrics: d.metricsLn}
	if k := os.Getenv(keeper.Var); k != "" || d.Keeps() {
		// The new sockd is kept by this process (or its keeper): it
		// will exit after an upgrade of its own, its successor adopted.
		if k == "" {
			k = keeper.Pid()
		}
		ho.Env = append(ho.Env, keeper.Var+"="+k)
	}
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
	d.starting.Store(u)
	return u, nil
}

// successorEnviron is the environment the new sockd of an upgrade starts
// with: the one the configuration in force was read from (a reload with
// --update-env replaces the one sockd started with), with the variables
// that are this process's own (NOTIFY_SOCKET, INVOCATION_ID, …) as they
// are now, and no keeper mark (startSuccessor decides that).
func (d *Daemon) successorEnviron() []string {
	env := os.Environ()
	if base := d.conf.current().Base; base != nil {
		env = config.ReloadEnviron(env, base)
	}
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != keeper.Var {
			out = append(out, kv)
		}
	}
	return out
}

// Keeps reports whether this sockd's process outlives its hand-over to a
// new sockd, as its keeper (internal/keeper): where its pid must not
// change, as a container's PID 1 or outside systemd (a terminal, a
// foreground supervisor); not a sockd a keeper started, and not under
// systemd, which takes the new sockd as its main pid.
func (d *Daemon) Keeps() bool {
	return os.Getenv(keeper.Var) == "" && (os.Getpid() == 1 || os.Getenv("NOTIFY_SOCKET") == "")
}

// Successor is the new sockd this one handed over to (nil before), for
// its keeper.
func (d *Daemon) Successor() *handoff.Upgrade { return d.succ.Load() }

// handedOver: the new sockd committed; it is the successor.
func (d *Daemon) handedOver() {
	d.succ.Store(d.starting.Load())
	if d.steer != nil {
		// The new sockd steers now; this one's workers drain their
		// sockets before they stop.
		d.steer.Yield()
	}
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

// stopControl: the new sockd is in charge. The listener is closed first,
// before the upgrade's client is answered: a command it runs next must be
// accepted by the new sockd, which shares the socket. What this sockd
// accepted and has not answered gets control.Response.Retry.
func (d *Daemon) stopControl() {
	d.ctl.Close()
	d.stopServing(control.ErrHandedOver)
	// The metrics socket too: the new sockd serves it now, this one's
	// numbers are the past. Its path stays (it is the new sockd's).
	if ul, ok := d.metricsLn.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	if d.metricsLn != nil {
		d.metricsLn.Close()
	}
}

// stopSuccessor: a stop came while the new sockd took charge.
func (d *Daemon) stopSuccessor() {
	if u := d.succ.Load(); u != nil {
		unix.Kill(u.PID(), unix.SIGTERM)
	}
}

// takeCharge: the old sockd made this one the main pid.
func (d *Daemon) takeCharge() {
	d.oldServes.Store(false)
	d.activateSteering()
	d.sd.set(true)
	if s, err := d.pool.Status(d.ctx); err == nil {
		d.sd.Notify("READY=1\nSTATUS=" + s.Summary)
	}
	// The sockets steering added while the old workers held theirs go
	// into systemd's fd store too (those already there are not stored
	// twice): a restart from the store gets the whole group back.
	d.storeSockets()
	if d.oldMetricsPath != "" {
		os.Remove(d.oldMetricsPath)
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
