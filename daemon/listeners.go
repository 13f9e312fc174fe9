package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/config"
)

// acquire takes systemd's sockets, then binds the Listen ones whose names
// systemd did not pass (sockets sockd bound before a restart come back
// from the fd store under their own names).
func (d *Daemon) acquire() (activation.Set, error) {
	log := d.log
	inherited, err := activation.Inherit(os.Getenv, os.Getpid())
	if errors.Is(err, activation.ErrNotOurs) {
		log.Warn("ignoring inherited sockets", "reason", err)
	} else if err != nil {
		return nil, tag(ErrSockets, err)
	}
	if inherited, err = handoff.Regroup(inherited); err != nil {
		return nil, tag(ErrSockets, err)
	}
	for _, l := range inherited {
		// A reuseport group back from systemd's fd store: its order
		// may have changed meanwhile (internal/steering probes it).
		d.stored = d.stored || l.Growable()
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if d.opts.Config.NoListeners() {
		if len(inherited) > 0 {
			log.Warn("--listen none: the sockets systemd passed are not used", "event", "listener", "sockets", len(inherited))
			for _, l := range inherited {
				if !l.Inherited { // sockd's own, back from the fd store: out of it
					if err := handoff.Unstore(os.Getenv("NOTIFY_SOCKET"), l); err != nil {
						log.Warn("cannot remove a listener from systemd's fd store", "name", l.Name, "error", err)
					}
				}
			}
			inherited.Close()
		}
		log.Info("no listener: the workers get no sockets (--listen none)", "event", "listener")
		return activation.Set{}, nil
	}
	units := false // a socket unit's sockets, not only the fd store's
	for _, l := range inherited {
		units = units || l.Inherited
	}
	specs := d.listenSpecs(units)
	// Sockets back from the fd store are sockd's own from before a
	// restart: kept only while the configuration still asks for them, at
	// the same address (a restart is how a --listen change takes effect).
	var kept activation.Set
	dropped := false
	for _, l := range inherited {
		if !l.Inherited {
			i := slices.IndexFunc(specs, func(s activation.Spec) bool { return s.Name == l.Name })
			if i < 0 || !l.Matches(specs[i]) {
				why := "the configuration has no listener of that name any more"
				if i >= 0 {
					why = "the configuration has it at " + specs[i].String()
				}
				log.Info("stored listener dropped: "+why, "event", "listener_dropped", "name", l.Name, "network", l.Network, "address", l.Addr)
				if err := handoff.Unstore(os.Getenv("NOTIFY_SOCKET"), l); err != nil {
					log.Warn("cannot remove a listener from systemd's fd store", "name", l.Name, "error", err)
				}
				l.Close()
				dropped = true
				continue
			}
		}
		kept = append(kept, l)
	}
	inherited = kept
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
	c := d.opts.Config
	bind := func() (activation.Set, error) {
		return activation.Bind(context.Background(), todo, activation.BindOptions{ReusePort: c.ReusePort, Slots: int(c.Workers)})
	}
	bound, err := bind()
	// A dropped stored socket holds its address until systemd has closed
	// its copy (the removal is a message it handles in its own time).
	for deadline := time.Now().Add(5 * time.Second); dropped && errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		bound, err = bind()
	}
	if err != nil {
		inherited.Close()
		return nil, tag(ErrSockets, err)
	}
	for _, l := range bound {
		log.Info("listening", "event", "listener", "name", l.Name, "network", l.Network, "address", l.Addr, "sockets", l.Slots())
	}
	all := append(inherited, bound...)
	if len(all) == 0 {
		msg := "no listeners: pass --listen or run under a systemd .socket unit"
		if cmd := c.Command; len(cmd) > 0 && filepath.Base(cmd[0]) == "node" {
			msg += " (a Node.js app that listens on PORT: --listen http=tcp://:PORT --ready node-listen)"
		}
		return nil, tag(ErrConfig, errors.New(msg))
	}
	d.ls = all
	d.storeSockets()
	return all, nil
}

// listenSpecs are the listeners the configuration asks for; the demo
// worker's address when it asks for none, runs the demo worker and got
// no sockets from systemd.
func (d *Daemon) listenSpecs(inherited bool) []activation.Spec {
	c := d.opts.Config
	specs := c.Specs()
	if len(specs) == 0 && c.Demo() && !inherited {
		demo, _ := activation.ParseSpec(config.DemoListen)
		specs = []activation.Spec{demo}
	}
	return specs
}

// storeSockets puts the sockets sockd bound into systemd's fd store
// (FileDescriptorStoreMax=), so that they survive a restart of the
// service, queued connections included. systemd ignores the ones it holds
// already.
// Each socket is sent once (a reuseport group's new sockets as steering
// grows it, from Steering's Grown too).
func (d *Daemon) storeSockets() {
	if !d.sd.isOn() {
		return
	}
	d.storedMu.Lock()
	defer d.storedMu.Unlock()
	if d.storedN == nil {
		d.storedN = map[string]int{}
	}
	// StoreFrom records what it sent, from the same snapshot of each
	// group: a socket steering adds meanwhile is sent by its own Grown.
	n, err := handoff.StoreFrom(os.Getenv("NOTIFY_SOCKET"), d.ls, d.storedN)
	if err != nil {
		d.log.Warn("cannot put sockets into systemd's fd store", "error", err)
		return
	}
	if n > 0 {
		d.log.Debug("sockets sent to systemd's fd store", "event", "fdstore", "sockets", n)
	}
}

// DefaultControlPath is where the control socket goes when none is given:
// $RUNTIME_DIRECTORY/sockd.sock (systemd's RuntimeDirectory=), else
// /run/sockd/sockd.sock for root, else $XDG_RUNTIME_DIR/sockd/sockd.sock,
// else (a user with no runtime directory: a container's non-root user)
// $TMPDIR/sockd-UID/sockd.sock, as tmux does, in a directory that must
// be this user's and writable by nobody else.
func DefaultControlPath() (string, error) {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.Join(strings.Split(d, ":")[0], "sockd.sock"), nil
	}
	if os.Geteuid() == 0 {
		return "/run/sockd/sockd.sock", nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sockd", "sockd.sock"), nil
	}
	dir := tmpControlDir()
	if err := ownDir(dir); err != nil {
		return "", err
	}
	return filepath.Join(dir, "sockd.sock"), nil
}

// tmpControlDir is the control socket's directory for a user with no
// runtime directory.
func tmpControlDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("sockd-%d", os.Geteuid()))
}

// ownDir checks, if dir exists, that it is a directory of this user's
// that nobody else may write: one under a shared temporary directory
// could have been made by someone else, to take the control socket's
// place.
func ownDir(dir string) error {
	fi, err := os.Lstat(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory of this user's that only it may write: not using it for the control socket (pass --control, or set XDG_RUNTIME_DIR)", dir)
	}
	return nil
}

func controlPath(p string) (string, error) {
	if p != "" {
		return p, nil
	}
	return DefaultControlPath()
}
