// Command sockd runs N copies of a socket-activation-aware server on the
// same listening sockets, keeps them alive and reloads them without losing
// a connection. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sockd/sockd/handoff"
	"github.com/sockd/sockd/internal/demo"
	"github.com/sockd/sockd/internal/guard"
	"github.com/sockd/sockd/pool"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const helpText = `sockd runs N copies of a socket-activated server on shared listening sockets,
restarts them when they crash and reloads them without dropping a connection.

Usage:
  sockd run [flags] [-- COMMAND [ARGS...]]   supervise workers (no COMMAND: the built-in demo worker)
  sockd status [--json|--check]               show generation, workers and listeners (--check: a health probe)
  sockd reload [--wait] [--update-env]        start a new generation, retire the old one
  sockd upgrade [--wait]                      hand the sockets to a new sockd binary
  sockd scale [--wait] N|+K|-K                set the number of workers at run time
  sockd top [--interval D] [-n N]             a live view: workers, CPU, memory, requests, queues, events
  sockd signal [--worker N] SIGNAL            send a signal to the workers (not to sockd)
  sockd send [--worker N] [--topic T] JSON    send a message to Node workers (process.on('message'))
  sockd logs [-f] [--worker N] [-n LINES]     the workers' recent output, attributed (-f: follow)
  sockd pm2 [--root DIR] FILE                 turn a PM2 ecosystem file into sockd@APP units and env files
  sockd version                               print the version
  sockd man [roff|bash|zsh|markdown]          the manual page sockd(8), or shell completions
  sockd help [COMMAND]                        this text, or a command's flags

Client commands (all but run and pm2) take --control PATH or --pid PID: the sockd to talk to.
Run 'sockd COMMAND --help' for the flags of a command.
`

func main() {
	pool.Trampoline()
	guard.Main()
	handoff.MainPIDHelper()
	// sockd allocates little and lives long: with Go's default GOGC=100 the
	// heap may grow to its 4 MB minimum goal between collections, which
	// shows as RSS after many reloads. 25 lowers that floor to 1 MB for a
	// negligible amount of CPU. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	// The supervisor needs no parallelism (one goroutine owns its state;
	// the others wait on sockets and signals), and every P keeps a cache of
	// partly used heap spans: with one P sockd's heap touches about 0.5 MB
	// less. Workers (demo-worker) keep every core. GOMAXPROCS in the
	// environment still wins.
	if len(os.Args) > 1 && os.Args[1] == "run" && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "run" {
		ignoreSignal34()
	}
	os.Exit(sockd(os.Args[1:], os.Stdout, os.Stderr))
}

func sockd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, helpText)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = runCommand(args[1:], stdout, stderr)
	case "top":
		err = topCommand(args[1:], stdout)
	case "status", "reload", "upgrade", "scale":
		err = clientCommand(args[0], args[1:], stdout)
	case "pm2":
		err = pm2Command(args[1:], stdout)
	case "signal", "send":
		err = tellCommand(args[0], args[1:], stdout)
	case "logs":
		err = logsCommand(args[1:], stdout)
	case "man": // hidden: sockd(8) and shell completions from the flag definitions (scripts/package)
		return manCommand(args[1:], stdout, stderr)
	case "demo-worker": // hidden: the embedded demo worker sockd runs by default
		return demo.Main(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "sockd %s\n", version)
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			switch args[1] {
			case "run", "top", "status", "reload", "upgrade", "scale", "pm2", "signal", "send", "logs":
				return sockd([]string{args[1], "--help"}, stdout, stderr)
			case "version":
				fmt.Fprintln(stdout, "Usage: sockd version\n\nPrints sockd's version.")
				return exitOK
			case "man":
				fmt.Fprintln(stdout, "Usage: sockd man [roff|bash|zsh|markdown]\n\nPrints the manual page sockd(8) (roff, the default), a completion script for bash or\nzsh, or the flag table of docs/reference.md, all from sockd's own flag definitions.")
				return exitOK
			case "help":
				fmt.Fprint(stdout, helpText)
				return exitOK
			}
			err = usagef("help %q: no such command (see sockd help)", args[1])
			break
		}
		fmt.Fprint(stdout, helpText)
	default:
		err = usagef("unknown command %q (see sockd help)", args[0])
	}
	var je jsonError
	switch {
	case errors.As(err, &je):
		lastWord(stderr, je.record(exitCodeOf(err)))
	case err != nil:
		lastWord(stderr, []byte(fmt.Sprintf("sockd: %s\n", oneLine(err))))
	}
	return exitCodeOf(err)
}

// lastWord writes sockd's last line to stderr, waiting at most 2 s: a
// stderr nobody reads must not keep a sockd that gave up from exiting
// (and systemd or a container runtime from restarting it).
func lastWord(w io.Writer, b []byte) {
	done := make(chan struct{})
	go func() {
		w.Write(b)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// self is the path of this binary, for the demo worker.
func self() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return filepath.Clean(os.Args[0])
}
