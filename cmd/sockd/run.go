package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/keeper"
	"golang.org/x/sys/unix"
)

func runCommand(args []string, stdout, stderr io.Writer) error {
	// Signals are caught from the start: one that comes while the
	// configuration is read (an ecosystem file run by node) or the
	// sockets, cgroups and files are set up is handled once sockd runs
	// (a stop then starts nothing more and cleans up), instead of
	// killing it half set up.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, handledSignals...)
	defer signal.Stop(sigs)
	src := config.Source{Args: args, Environ: os.Environ(), Self: self()}
	c, err := config.Load(src)
	if errors.Is(err, config.ErrHelp) {
		config.Usage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	log, apply := newLogger(c, stderr)
	d, err := daemon.New(daemon.Options{Config: c, Source: src, Apply: apply, Logger: log})
	if err != nil {
		return err
	}
	kept := make(chan os.Signal, 16)
	var keeping atomic.Bool
	// SIGHUP's reloads, one at a time off the signal goroutine (a reload
	// reads the configuration again, which can take a while or hang on a
	// bad file, and a SIGTERM after it must not wait for that); one more
	// pending at most, as the pool coalesces reloads anyway.
	hups := make(chan struct{}, 1)
	go func() {
		for range hups {
			if err := d.Reload(context.Background(), false, nil); err != nil {
				log.Warn("reload refused", "error", err)
			}
		}
	}()
	hup := func() {
		select {
		case hups <- struct{}{}:
		default:
		}
	}
	go func() {
		for sig := range sigs {
			if s := d.Successor(); s != nil {
				// Handed over: the signal is the new sockd's. This one
				// keeps the process for it, or is on its way out while
				// the new sockd is still its child (then reparented to
				// this one's keeper, which passes on what comes later).
				// While this one's old workers drain, it goes straight
				// to the new sockd (a stop must not wait for the drain);
				// the keeper hears of a stop too, to pass it on again
				// should the new sockd hand over in turn.
				switch {
				case d.Keeps() && (keeping.Load() || closed(s.Exited())):
					kept <- sig
				case !closed(s.Exited()):
					unix.Kill(s.PID(), sig.(syscall.Signal))
					if d.Keeps() && (sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
						select {
						case kept <- sig:
						default:
						}
					}
				}
				continue
			}
			onSignal(d, log, sig.(syscall.Signal), hup)
		}
	}()
	if err := d.Run(); err != nil {
		return err
	}
	s := d.Successor()
	switch {
	case s != nil && d.Keeps():
		keeping.Store(true)
		code := keeper.Keep(keeper.Child{PID: s.PID(), Exited: s.Exited(), Status: s.ExitStatus}, kept, log.Named("keeper"))
		if code != 0 {
			return exitStatus{code}
		}
	case s != nil && closed(s.Exited()):
		// The new sockd, in charge, ended while this one drained (and
		// reaped it): its status is the service's, for whoever keeps this
		// process (a keeper passes on what this one exits with).
		if code := s.ExitStatus(); code != 0 {
			log.Warn("the sockd this one handed over to exited meanwhile", "event", "upgrade_successor_exit", "status", code)
			return exitStatus{code}
		}
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// exitStatus is an exit status passed on as it is (a kept sockd's).
type exitStatus struct{ code int }

func (e exitStatus) Error() string {
	return fmt.Sprintf("the sockd in charge exited with status %d", e.code)
}

// handledSignals are the signals sockd acts on or ignores; docs/reference.md's
// table says what each does. The real-time signals are among them: Go
// leaves them at their default action, which ends the process. (Not
// signal.Ignore: an ignored signal stays ignored in the workers sockd
// execs.)
var handledSignals = func() []os.Signal {
	sigs := []os.Signal{
		syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGTSTP, syscall.SIGPIPE,
	}
	for n := 34; n <= 64; n++ { // SIGRTMIN to SIGRTMAX
		sigs = append(sigs, syscall.Signal(n))
	}
	return sigs
}()

// onSignal turns a signal into a call of the daemon.
func onSignal(d *daemon.Daemon, log hclog.Logger, sig syscall.Signal, hup func()) {
	ctx := context.Background()
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		d.Stop()
	case syscall.SIGHUP:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		hup()
	case syscall.SIGUSR2:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		if err := d.Upgrade(ctx, false); err != nil {
			log.Warn("upgrade refused", "error", err)
		}
	case syscall.SIGTTIN, syscall.SIGTTOU:
		delta := +1
		if sig == syscall.SIGTTOU {
			delta = -1
		}
		log.Info("signal received", "event", "signal", "signal", sig.String(), "scale", delta)
		if _, err := d.Scale(ctx, delta, true, false); err != nil {
			log.Warn("scale refused", "error", err)
		}
	default: // SIGUSR1, SIGTSTP, SIGPIPE, real-time signals
		log.Debug("signal ignored", "event", "signal", "signal", sig.String())
	}
}

// newLogger makes sockd's logger, and the function that applies a new
// configuration's level and format to it (a reload may change them).
// Under systemd it logs to the journal, whatever the format.
func newLogger(c *config.Run, stderr io.Writer) (hclog.Logger, func(*config.Run)) {
	out := &logFormat{w: stderr}
	out.json.Store(c.LogFormat == "json")
	opts := &hclog.LoggerOptions{
		Name: "sockd", Level: hclog.LevelFromString(c.LogLevel), Output: out,
		JSONFormat: true, TimeFormat: time.RFC3339Nano,
	}
	if journal.Enabled() {
		opts.Output = &journal.Writer{Identifier: "sockd", Fallback: stderr}
	}
	log := hclog.New(opts)
	return log, func(c *config.Run) {
		log.SetLevel(hclog.LevelFromString(c.LogLevel))
		out.json.Store(c.LogFormat == "json")
	}
}
