package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/pool"
)

// A reload reads the configuration again: the command line it started
// with, the env files (--env-file) and, when a reload client hands one
// over (sockd reload --update-env, the units' ExecReload=), that
// environment instead of the one sockd started with. The new
// configuration is checked before anything starts; a bad one fails the
// reload with one line naming the setting, and nothing changes. A good
// one is the new generation's; it is in force once that generation took
// over, and rolls back with it.

// configs is the configuration in force and the ones reloads brought.
// Reloads asked for while one runs are coalesced by the pool, which runs
// the newest configuration; the one in force afterwards is found by its
// revision, the pool's word.
type configs struct {
	mu      sync.Mutex
	cur     *config.Run
	known   map[string]*config.Run // by revision
	changes []config.Change        // what the last reload that took effect changed
	refused string                 // why the last reload's configuration was refused ("": it was not)
}

func (c *configs) init(r *config.Run) {
	c.cur, c.known = r, map[string]*config.Run{r.Revision(): r}
}

// current is the configuration in force.
func (c *configs) current() *config.Run {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// nextConfig reads the configuration a reload brings: nil when nothing
// changed.
func (d *Daemon) nextConfig(environ []string) (*config.Run, error) {
	src := d.opts.Source
	if src.Args == nil && src.Environ == nil {
		return nil, nil // nothing to read again
	}
	cur := d.conf.current()
	src.Reaper = d.reaper
	if environ != nil {
		src.Environ = config.ReloadEnviron(cur.Base, environ)
	} else {
		src.Environ = cur.Base // the env files are read again over it
	}
	next, err := config.Load(src)
	if err != nil {
		return nil, err
	}
	if rn := next.RestartNeeded(cur); len(rn) > 0 {
		hint := ""
		if slices.Contains(rn, "--listen") {
			hint = " (under systemd, the socket unit's listeners belong to it: edit it, then restart the socket and the service)"
		}
		return nil, config.Usagef("%s changed: a reload cannot change %s; restart sockd to apply it%s", strings.Join(rn, ", "), map[bool]string{true: "it", false: "them"}[len(rn) == 1], hint)
	}
	d.warn(next)
	if next.Revision() == cur.Revision() {
		return nil, nil
	}
	return next, nil
}

// reload is one reload to next (nil: the configuration in force), until
// its outcome.
func (d *Daemon) reload(ctx context.Context, next *config.Run) error {
	var cfg *pool.Config
	if next != nil {
		c := next.Pool()
		cfg = &c
		d.conf.mu.Lock()
		d.conf.known[next.Revision()] = next
		d.conf.mu.Unlock()
		d.log.Info("reloading with a new configuration", "event", "config_reload", "revision", next.Revision(), "changes", changeList(next.Diff(d.conf.current())))
	}
	err := d.pool.Reload(ctx, cfg)
	if errors.Is(err, pool.ErrConfig) {
		d.refuse(err)
		return err
	}
	if err == nil {
		d.commit()
	}
	if d.steer != nil {
		d.storeSockets() // steering may have grown the groups
	}
	return err
}

// warn logs what the configuration reader noticed but did not refuse.
func (d *Daemon) warn(r *config.Run) {
	for _, w := range r.Warnings {
		d.log.Warn(w, "event", "config_warning")
	}
}

// refuse records a configuration a reload could not use.
func (d *Daemon) refuse(err error) {
	d.conf.mu.Lock()
	d.conf.refused = oneLine(err)
	d.conf.mu.Unlock()
	d.log.Error("reload refused: the new configuration is not valid; nothing changed", "event", "config_refused", "error", err)
	d.pool.Refuse("invalid configuration: " + oneLine(err))
}

// commit puts in force the configuration the pool now runs.
func (d *Daemon) commit() {
	rev := d.pool.Config().Revision
	d.conf.mu.Lock()
	next, ok := d.conf.known[rev]
	prev := d.conf.cur
	if !ok || next == prev {
		d.conf.refused = ""
		d.conf.mu.Unlock()
		return
	}
	changes := next.Diff(prev)
	d.conf.cur, d.conf.changes, d.conf.refused = next, changes, ""
	d.conf.known = map[string]*config.Run{rev: next}
	d.conf.mu.Unlock()
	if d.opts.Apply != nil {
		d.opts.Apply(next)
	}
	d.out.apply(next)
	d.log.Info("new configuration in force", "event", "config_applied", "revision", rev, "from_revision", prev.Revision(), "changes", changeList(changes))
}

func changeList(cs []config.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// ConfigStatus is the configuration in force, as status shows it.
type ConfigStatus struct {
	Revision string            `json:"revision"`
	Command  string            `json:"command"`
	Dir      string            `json:"dir,omitempty"`
	User     string            `json:"user,omitempty"`
	Settings map[string]string `json:"settings"`
	// Changes are what the last reload that took effect changed.
	Changes []string `json:"changes,omitempty"`
	// Refused says why the last reload's configuration was not used.
	Refused string `json:"refused,omitempty"`
}

// Status is the pool's status and the configuration in force.
type Status struct {
	pool.Status
	Config ConfigStatus `json:"config"`
	// Output is where the workers' lines go (--worker-output, resolved):
	// journal, prefix, json or raw; `sockd logs` shows them in any case.
	Output string `json:"output,omitempty"`
}

func (d *Daemon) configStatus() ConfigStatus {
	d.conf.mu.Lock()
	defer d.conf.mu.Unlock()
	r := d.conf.cur
	s := ConfigStatus{Revision: r.Revision(), Command: r.CommandLine(), Dir: r.Dir, Settings: r.Values(),
		Changes: changeList(d.conf.changes), Refused: d.conf.refused}
	if r.User != nil {
		s.User = r.User.Name
	}
	return s
}
