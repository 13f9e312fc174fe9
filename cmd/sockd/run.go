package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/pool"
)

func runCommand(args []string, stdout, stderr io.Writer) error {
	c, err := config.Parse(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		config.Usage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	opts, err := daemonOptions(c, log)
	if err != nil {
		return err
	}
	d, err := daemon.New(opts)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, handledSignals...)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			onSignal(d, log, sig.(syscall.Signal))
		}
	}()
	return d.Run()
}

// daemonOptions turns the configuration into the daemon's options: the
// demo worker and its address where nothing else is configured, the
// command checked before anything is bound and before N copies fork.
func daemonOptions(c *config.Run, log hclog.Logger) (daemon.Options, error) {
	listen := c.Specs()
	if len(listen) == 0 && len(c.Command) == 0 && os.Getenv("LISTEN_FDS") == "" {
		demo, _ := activation.ParseSpec(config.DemoListen)
		listen = []activation.Spec{demo}
	}
	cmd := c.Command
	if len(cmd) == 0 {
		cmd = []string{self(), "demo-worker"}
	} else if path, err := pool.ResolveCommand(cmd[0]); err != nil {
		return daemon.Options{}, config.Usagef("%v", err)
	} else if c.User != nil {
		if err := c.User.CanExecute(path); err != nil {
			return daemon.Options{}, config.Usagef("%v", err)
		}
	}
	return daemon.Options{
		Listen: listen, ReusePort: c.ReusePort, ControlPath: c.Control, Pool: c.Pool(cmd),
		Cgroups: c.Cgroups, Limits: c.Limits, Metrics: c.Metrics, Logger: log,
	}, nil
}

// handledSignals are the signals sockd acts on or ignores; README.md's
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
func onSignal(d *daemon.Daemon, log hclog.Logger, sig syscall.Signal) {
	ctx := context.Background()
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		d.Stop()
	case syscall.SIGHUP:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		if err := d.Reload(ctx, false); err != nil {
			log.Warn("reload refused", "error", err)
		}
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

func newLogger(c *config.Run, stderr io.Writer) hclog.Logger {
	opts := &hclog.LoggerOptions{
		Name: "sockd", Level: hclog.LevelFromString(c.LogLevel), Output: stderr,
		JSONFormat: c.LogFormat == "json", TimeFormat: time.RFC3339Nano,
	}
	if journal.Enabled() {
		opts.Output = &journal.Writer{Identifier: "sockd", Fallback: stderr}
		opts.JSONFormat = true
	}
	return hclog.New(opts)
}
