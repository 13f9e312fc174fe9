package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
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

func runCommand(args []string, stdout, stderr io.Writer) (err error) {
	// Signals are caught from the start: one that comes while the
	// configuration is read (an ecosystem file run by node) or the
	// sockets, cgroups and files are set up is handled once sockd runs
	// (a stop then starts nothing more and cleans up), instead of
	// killing it half set up.
	// The stop signals have a channel of their own: a flood of others
	// (SIGTTOU raised by every write of a background job to a terminal
	// with tostop) fills a channel, and the signals that find it full are
	// dropped.
	stops := make(chan os.Signal, 4)
	signal.Notify(stops, stopSignals...)
	defer signal.Stop(stops)
	tty := controllingTerminal()
	others := otherSignals
	if tty.background() {
		// A background job of its terminal (sockd run … &): SIGTTIN and
		// SIGTTOU are the kernel's job control, which with tostop sends
		// SIGTTOU to the whole process group at a write to the terminal,
		// stopping a child caught between fork and exec. Ignored from
		// the start, the writes go through and nothing stops.
		signal.Ignore(syscall.SIGTTIN, syscall.SIGTTOU)
		tty.jobControlled.Store(true)
		others = slices.DeleteFunc(slices.Clone(others), func(s os.Signal) bool { return s == syscall.SIGTTIN || s == syscall.SIGTTOU })
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, others...)
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
	if c.LogFormat == "json" && !journal.Enabled() {
		// The last word too is a JSON record, in a stream that is JSON.
		defer func() {
			if err != nil {
				err = jsonError{err}
			}
		}()
	}
	if err := checkProc(); err != nil {
		return err
	}
	log, apply, closeLog := newLogger(c, stderr)
	defer closeLog()
	if tty.jobControlled.Load() {
		log.Info("sockd runs in the background of its terminal: SIGTTIN and SIGTTOU are the terminal's job control, not scale requests (use sockd scale)", "event", "job_control")
	}
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
	next := func() os.Signal { // a stop first
		select {
		case sig := <-stops:
			return sig
		default:
		}
		select {
		case sig := <-stops:
			return sig
		case sig := <-sigs:
			return sig
		}
	}
	go func() {
		for {
			sig := next()
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
			onSignal(d, log, sig.(syscall.Signal), hup, tty)
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
		d.RemoveHandedOverTree()
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

// checkProc: sockd finds its workers, their children and itself (to start
// a worker, /proc/self/exe) through /proc, which must be the one of its
// own pid namespace: without it, or with the host's in a container's pid
// namespace, it would crash-loop or never reap.
func checkProc() error {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return usagef("/proc is not mounted: sockd needs it (mount -t proc proc /proc; unshare --mount-proc): %v", err)
	}
	if self != strconv.Itoa(os.Getpid()) {
		return usagef("/proc is another pid namespace's (/proc/self is %s, sockd is pid %d): mount the namespace's own (unshare --mount-proc)", self, os.Getpid())
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

// jsonError is an error sockd reports as a JSON record (--log-format
// json), as hclog writes its records.
type jsonError struct{ error }

func (e jsonError) Unwrap() error { return e.error }

func (e jsonError) record(code int) []byte {
	b, _ := json.Marshal(map[string]any{
		"@level": "error", "@module": "sockd", "@timestamp": time.Now().Format(time.RFC3339Nano),
		"@message": oneLine(e.error), "event": "exit", "exit_code": code,
	})
	return append(b, '\n')
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
var handledSignals = append(append([]os.Signal(nil), stopSignals...), otherSignals...)

var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}

var otherSignals = func() []os.Signal {
	sigs := []os.Signal{
		syscall.SIGHUP, syscall.SIGUSR2,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGTSTP, syscall.SIGPIPE,
	}
	for n := 34; n <= 64; n++ { // SIGRTMIN to SIGRTMAX
		sigs = append(sigs, syscall.Signal(n))
	}
	return sigs
}()

// terminal is sockd's controlling terminal, when one of its standard
// descriptors is it (sockd run in a shell); fd -1: none (systemd, a
// container without -t, a pipe).
type terminal struct {
	fd            int
	jobControlled atomic.Bool // SIGTTIN and SIGTTOU left to the kernel's job control
}

func controllingTerminal() *terminal {
	for fd := 0; fd <= 2; fd++ {
		// TIOCGPGRP answers only for the caller's controlling terminal.
		if _, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			return &terminal{fd: fd}
		}
	}
	return &terminal{fd: -1}
}

// hungUp says whether the controlling terminal is gone (its window
// closed, the ssh connection lost): the kernel's SIGHUP then means that,
// not a reload.
func (t *terminal) hungUp() bool {
	if t.fd < 0 {
		return false
	}
	_, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP)
	return err != nil
}

// background says whether sockd runs as a background job of its terminal
// (its process group is not the foreground one): SIGTTIN and SIGTTOU are
// then the kernel's job control (a write with tostop, a read), not an
// operator's scale request.
func (t *terminal) background() bool {
	if t.fd < 0 {
		return false
	}
	fg, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP)
	return err == nil && fg != unix.Getpgrp()
}

// onSignal turns a signal into a call of the daemon.
func onSignal(d *daemon.Daemon, log hclog.Logger, sig syscall.Signal, hup func(), tty *terminal) {
	ctx := context.Background()
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		d.Stop()
		log.Info("signal received", "event", "signal", "signal", sig.String())
	case syscall.SIGHUP:
		if tty.hungUp() {
			// A foreground sockd ends with its terminal, as Ctrl-C ends it.
			d.Stop()
			log.Info("signal received: the terminal hung up; stopping", "event", "signal", "signal", sig.String())
			return
		}
		log.Info("signal received", "event", "signal", "signal", sig.String())
		hup()
	case syscall.SIGUSR2:
		log.Info("signal received", "event", "signal", "signal", sig.String())
		if err := d.Upgrade(ctx, false); err != nil {
			log.Warn("upgrade refused", "error", err)
		}
	case syscall.SIGTTIN, syscall.SIGTTOU:
		if tty.background() {
			// Job control: a background job writing to a terminal with
			// tostop gets SIGTTOU, and caught it is raised again at every
			// retry of the write. Ignored, the kernel lets the write
			// through.
			if !tty.jobControlled.Swap(true) {
				signal.Ignore(syscall.SIGTTIN, syscall.SIGTTOU)
				log.Warn("sockd runs in the background of its terminal: SIGTTIN and SIGTTOU are the terminal's job control from now on, not scale requests (use sockd scale)", "event", "signal", "signal", sig.String())
			}
			return
		}
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
//
// Records go out through a queue (asyncLog): a stderr that takes nothing
// must not stop the supervisor. The last function writes out what is
// queued (at most 2 s).
func newLogger(c *config.Run, stderr io.Writer) (hclog.Logger, func(*config.Run), func()) {
	out := &logFormat{w: stderr}
	out.json.Store(c.LogFormat == "json")
	var w io.Writer = out
	if journal.Enabled() {
		w = &journal.Writer{Identifier: "sockd", Fallback: stderr}
	}
	q := newAsyncLog(w)
	log := hclog.New(&hclog.LoggerOptions{
		Name: "sockd", Level: hclog.LevelFromString(c.LogLevel), Output: q,
		JSONFormat: true, TimeFormat: time.RFC3339Nano,
	})
	return log, func(c *config.Run) {
			log.SetLevel(hclog.LevelFromString(c.LogLevel))
			out.json.Store(c.LogFormat == "json")
		}, func() {
			q.Close(2 * time.Second)
		}
}
