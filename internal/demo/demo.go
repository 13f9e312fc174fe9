// Package demo is the demo HTTP worker: sockd embeds it (as a hidden
// subcommand) and examples/hello wraps it. It serves the sockets passed by
// sockd or systemd, answers every request with who served it, and drains
// carefully on SIGTERM (see package worker).
package demo

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sockd/sockd/worker"
)

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
// HELLO_DRAIN_TIMEOUT. Only -h writes to stdout (the usage); errors are
// one line on stderr, and so is the log.
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
	ls, err := worker.Listeners()
	if errors.Is(err, worker.ErrNotActivated) {
		fmt.Fprintln(stderr, "hello: no listening sockets: LISTEN_FDS is not set (run it under sockd or systemd socket activation; it binds no port itself)")
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "hello: %v\n", err)
		return ExitUsage
	}
	logger := log.New(stderr, fmt.Sprintf("hello[%d]: ", os.Getpid()), 0)
	srv := &http.Server{Handler: Handler(cfg.delay), ReadHeaderTimeout: 10 * time.Second}
	opts := worker.Options{DrainTimeout: cfg.drainTimeout, Logger: logger}
	if err := worker.ServeHTTP(context.Background(), srv, ls, opts); err != nil {
		logger.Print(err)
		return ExitFailed
	}
	return ExitOK
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
	if cfg.drainTimeout, err = envDuration(getenv, "HELLO_DRAIN_TIMEOUT", worker.DefaultDrainTimeout); err != nil {
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

// Handler answers every request with 200 and
// "hello from pid=<pid> worker=<slot> generation=<gen>\n", in headers
// X-Sockd-Pid, X-Sockd-Worker and X-Sockd-Generation too, after delay.
func Handler(delay time.Duration) http.Handler {
	pid := strconv.Itoa(os.Getpid())
	slot, gen := strconv.Itoa(worker.Slot()), strconv.Itoa(worker.Generation())
	body := fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n", pid, slot, gen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Sockd-Pid", pid)
		h.Set("X-Sockd-Worker", slot)
		h.Set("X-Sockd-Generation", gen)
		io.WriteString(w, body)
	})
}
