package daemon

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sockd/sockd/internal/steering"
	"github.com/sockd/sockd/pool"
)

// setupSteering steers the new connections of the reuseport groups sockd
// bound (--reuseport) among the workers (internal/steering). The new
// sockd of an upgrade steers nothing until it is in charge (takeCharge):
// the old one's program stays, and the sockets the old one's workers hold
// are left to them. Groups back from systemd's fd store have their order
// probed first. Where steering is unavailable sockd goes on without it,
// as before: slot i's workers get socket i of each group.
func (d *Daemon) setupSteering(deps *pool.Deps) {
	c := d.opts.Config
	if !c.ReusePort {
		return
	}
	opts := steering.Options{Logger: d.log.Named("steering"), SlowStart: c.SlowStart, Passive: d.child != nil, Probe: d.stored,
		Grown: d.storeSockets}
	st, err := steering.New(d.ls, opts)
	if err != nil {
		if errors.Is(err, steering.ErrUnavailable) {
			d.log.Warn("steering unavailable: new connections are hashed over every worker's socket, ready or not", "event", "steering", "reason", err)
		} else {
			d.log.Error("steering unavailable", "event", "steering", "error", err)
		}
		return
	}
	if d.child != nil {
		for w, k := range d.child.State.Steered {
			name := "old/" + w
			if err := st.Adopt(name, k); err != nil {
				d.log.Warn("upgrade: the old sockd's worker socket is not known here", "event", "steering", "error", err)
				continue
			}
			d.adopted = append(d.adopted, name)
		}
	}
	d.steer = st
	deps.Steering = st
	if d.metrics != nil {
		d.metrics.Extra = append(d.metrics.Extra, d.writeSteeringMetrics)
	}
	d.log.Info("steering new connections among the workers' own sockets", "event", "steering", "slow_start", c.SlowStart, "passive", opts.Passive, "probed", opts.Probe)
}

// activateSteering puts the new sockd of an upgrade in charge of the
// steering once it committed: the old workers' sockets get no new
// connection from now on (the old sockd drains them before it stops its
// workers).
func (d *Daemon) activateSteering() {
	if d.steer == nil {
		return
	}
	for _, name := range d.adopted {
		d.steer.Exited(name)
	}
	d.adopted = nil
	d.steer.Activate()
}

// heldSockets is what the successor of an upgrade must leave alone.
func (d *Daemon) heldSockets() map[string]int {
	if d.steer == nil {
		return nil
	}
	return d.steer.Held()
}

// closeSteering stops the sampler; the groups keep the last program.
func (d *Daemon) closeSteering() {
	if d.steer != nil {
		d.steer.Close()
	}
}

// writeSteeringMetrics writes each worker socket's weight and share of new
// connections and the steering decisions by reason.
func (d *Daemon) writeSteeringMetrics(w io.Writer) error {
	s := d.steer.Stats()
	var b strings.Builder
	b.WriteString("# HELP sockd_steering_weight The weight of the worker's socket in its reuseport groups' steering program (0 to 1000).\n# TYPE sockd_steering_weight gauge\n")
	for _, ws := range s.Workers {
		fmt.Fprintf(&b, "sockd_steering_weight{%s} %d\n", steerLabels(ws), ws.Weight)
	}
	b.WriteString("# HELP sockd_steering_share The part of new connections the kernel hands the worker's socket (0 to 1).\n# TYPE sockd_steering_share gauge\n")
	for _, ws := range s.Workers {
		fmt.Fprintf(&b, "sockd_steering_share{%s} %g\n", steerLabels(ws), ws.Share)
	}
	b.WriteString("# HELP sockd_steering_decisions_total Changes of a worker socket's weight, by the reason of its new weight.\n# TYPE sockd_steering_decisions_total counter\n")
	for _, r := range steering.Reasons {
		fmt.Fprintf(&b, "sockd_steering_decisions_total{reason=%q} %d\n", r, s.Decisions[r])
	}
	fmt.Fprintf(&b, "# HELP sockd_steering_programs_total Steering programs attached.\n# TYPE sockd_steering_programs_total counter\nsockd_steering_programs_total %d\n", s.Updates)
	fmt.Fprintf(&b, "# HELP sockd_steering_sockets Sockets in each reuseport group.\n# TYPE sockd_steering_sockets gauge\nsockd_steering_sockets %d\n", s.Sockets)
	_, err := io.WriteString(w, b.String())
	return err
}

// steerLabels are a worker's labels: its slot and generation (from its
// steering name, slot/generation/id), its socket index, state and reason.
func steerLabels(ws steering.WorkerStats) string {
	slot, gen := "", ""
	if f := strings.SplitN(ws.Worker, "/", 3); len(f) == 3 && f[0] != "old" {
		slot, gen = f[0], f[1]
	}
	return fmt.Sprintf("slot=%q,generation=%q,socket=\"%d\",state=%q,reason=%q", slot, gen, ws.Index, ws.State, ws.Reason)
}
