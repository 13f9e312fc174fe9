// Package demo is the demo HTTP worker that sockd embeds (as a hidden
// subcommand, the default worker of `sockd run`). It serves the sockets
// passed by sockd or systemd (LISTEN_FDS), answers every request with who
// served it, and drains carefully on SIGTERM, like package worker does. It
// is what examples/hello is, plus a few knobs for tests (HELLO_CONFIG,
// HELLO_DELAY), written without net/http to keep the sockd binary small
// (see server.go).
package demo

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/sockd/sockd/activation"
)

// DefaultDrainTimeout bounds the drain; keep it below sockd's stop timeout.
const DefaultDrainTimeout = 25 * time.Second

// Exit codes of Main.
const (
	ExitOK     = 0 // clean drain
	ExitFailed = 1 // bad configuration, serve failure, unclean drain
	ExitUsage  = 2 // bad flags or environment, no sockets passed
)

// config is what the flags (and HELLO_* variables) set.
type config struct {
	file         string
	delay        time.Duration
	drainTimeout time.Duration
}

// Main runs the worker with args (without the program name) and returns
// its exit code. Every flag defaults to an environment variable, so a unit
// can set it: --config HELLO_CONFIG, --delay HELLO_DELAY, --drain-timeout
// HELLO_DRAIN_TIMEOUT. Errors are one line on stderr; the log of what it
// does (ready, stopping, drained) goes to stdout, so that the journal has
// it at the info priority, not as errors.
func Main(args []string, stdout, stderr io.Writer) int {
	// SIGHUP is sockd's reload signal; `systemctl kill -s HUP` sends it to
	// the whole cgroup, workers included. It must not kill them.
	signal.Ignore(syscall.SIGHUP)
	cfg, err := parseArgs(args, os.Getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "hello: %v\n", err)
		return ExitUsage
	}
	if err := checkConfig(cfg.file); err != nil {
		fmt.Fprintf(stderr, "hello: %v\n", err)
		return ExitFailed
	}
	lns, err := listeners()
	if err != nil {
		fmt.Fprintf(stderr, "hello: %v\n", err)
		return ExitUsage
	}
	logger := log.New(stdout, fmt.Sprintf("hello[%d]: ", os.Getpid()), 0)
	errs := log.New(stderr, fmt.Sprintf("hello[%d]: ", os.Getpid()), 0)
	srv := newServer(cfg.delay, envInt("SOCKD_WORKER", 0), envInt("SOCKD_GENERATION", 1), logger)
	return serve(srv, lns, cfg.drainTimeout, logger, errs)
}

// serve runs srv until SIGTERM or SIGINT (or a failing accept loop), then
// drains. It tells sockd READY=1 once it accepts, SOCKD_REQUESTS=n at most
// once a second, WATCHDOG=1 when WATCHDOG_USEC asks for it, STATUS=draining,
// and STOPPING=1 first when the drain is its own decision.
func serve(srv *server, lns []net.Listener, drainTimeout time.Duration, logger, errs *log.Logger) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	srv.start(lns)
	defer serveMetrics(srv)()
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	logger.Printf("ready: serving %d listeners", len(lns))
	report := time.NewTicker(time.Second)
	defer report.Stop()
	var ping <-chan time.Time
	if d, err := sddaemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		t := time.NewTicker(d / 2)
		defer t.Stop()
		ping = t.C
	}
	reported := int64(-1)
	sendCount := func() {
		if n := srv.requests.Load(); n != reported {
			reported = n
			sddaemon.SdNotify(false, "SOCKD_REQUESTS="+strconv.FormatInt(n, 10))
		}
	}
loop:
	for {
		select {
		case sig := <-sigs:
			logger.Printf("stopping: %v signal received", sig)
			break loop
		case err := <-srv.errs:
			errs.Printf("stopping: %v", err)
			sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
			break loop
		case <-report.C:
			sendCount()
		case <-ping:
			sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT) // sockd SIGKILLs an overlong drain
	sddaemon.SdNotify(false, "STATUS=draining")
	err := srv.drain(time.Now().Add(drainTimeout))
	sendCount()
	if err != nil {
		errs.Print(err)
		return ExitFailed
	}
	return ExitOK
}

// listeners takes the stream sockets passed as LISTEN_FDS (checked
// against LISTEN_PID), as sockd's own activation package reads them.
func listeners() ([]net.Listener, error) {
	set, err := activation.Inherit(os.Getenv, os.Getpid())
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if err != nil {
		return nil, err
	}
	if len(set) == 0 {
		return nil, errors.New("no listening sockets: LISTEN_FDS is not set (run it under sockd or systemd socket activation; it binds no port itself)")
	}
	var lns []net.Listener
	for _, l := range set {
		if strings.HasPrefix(l.Network, "udp") || l.Network == "unixgram" {
			continue // a datagram socket: nothing for an HTTP server
		}
		f := os.NewFile(uintptr(l.FD(0)), l.Name)
		ln, err := net.FileListener(f) // a duplicate; never makes the socket blocking
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, errors.New("no stream socket among LISTEN_FDS")
	}
	return lns, nil
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n >= 0 {
		return n
	}
	return def
}

// parseArgs reads the flags, defaulting to HELLO_* from getenv. On -h it
// writes the usage to help and returns flag.ErrHelp.
func parseArgs(args []string, getenv func(string) string, help io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, as one line
	fs.Usage = func() {}
	fs.StringVar(&cfg.file, "config", getenv("HELLO_CONFIG"),
		"configuration `file`; one containing \"broken\" makes the worker fail before READY (env HELLO_CONFIG)")
	var err error
	if cfg.delay, err = envDuration(getenv, "HELLO_DELAY", 0); err != nil {
		return cfg, err
	}
	if cfg.drainTimeout, err = envDuration(getenv, "HELLO_DRAIN_TIMEOUT", DefaultDrainTimeout); err != nil {
		return cfg, err
	}
	fs.DurationVar(&cfg.delay, "delay", cfg.delay, "artificial latency of every request (env HELLO_DELAY)")
	fs.DurationVar(&cfg.drainTimeout, "drain-timeout", cfg.drainTimeout, "longest drain on SIGTERM (env HELLO_DRAIN_TIMEOUT)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(help)
		fmt.Fprintln(help, "usage: hello [flags]\nServes the sockets passed as LISTEN_FDS; drains on SIGTERM.")
		fs.PrintDefaults()
		return cfg, err
	} else if err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.delay < 0 || cfg.drainTimeout <= 0 {
		return cfg, errors.New("--delay must be >= 0 and --drain-timeout > 0")
	}
	return cfg, nil
}

func envDuration(getenv func(string) string, k string, def time.Duration) (time.Duration, error) {
	v := getenv(k)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("invalid %s: %w", k, err)
	}
	return d, nil
}

// checkConfig fails when the configuration file cannot be read or contains
// "broken", which end-to-end tests use to simulate a bad deploy.
func checkConfig(file string) error {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if bytes.Contains(b, []byte("broken")) {
		return fmt.Errorf("config %s is broken: refusing to start", file)
	}
	return nil
}
