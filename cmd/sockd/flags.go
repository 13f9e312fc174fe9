package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/pool"
)

// Exit codes, documented in docs/reference.md, and the kinds of error that make
// them.
const (
	exitOK          = 0
	exitFailed      = 1 // internal error, or a client request that failed (reload rolled back)
	exitUsage       = 2 // bad flags, environment or command
	exitListeners   = 3 // cannot bind or take the listening sockets, or the control socket
	exitWorkers     = 4 // workers crashed beyond the restart limit
	exitUnreachable = 5 // client: no sockd answers on the control socket
	exitResources   = 6 // limits too low for the pool, a full file system, or the first workers could not be forked
)

var exitCodes = []struct {
	kind error
	code int
}{
	{pool.ErrResources, exitResources},
	{pool.ErrRestartLimit, exitWorkers},
	{config.ErrUsage, exitUsage},
	{daemon.ErrConfig, exitUsage},
	{daemon.ErrSockets, exitListeners},
	{control.ErrUnreachable, exitUnreachable},
}

// exitCodeOf is the exit code for err: 0 for nil, exitFailed for an error
// of no kind in the table.
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var st exitStatus
	if errors.As(err, &st) {
		return st.code
	}
	for _, e := range exitCodes {
		if errors.Is(err, e.kind) {
			return e.code
		}
	}
	return exitFailed
}

var usagef = config.Usagef

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// identity are the client flags whose SOCKD_<FLAG> variables sockd sets
// in every worker's environment (its slot and generation): a command a
// worker runs (sockd signal, send, logs) must not be narrowed to that
// worker by them, so they are read from the command line only; so are
// --pid and --worker-pid, which name one process.
var identity = map[string]bool{"worker": true, "generation": true, "pid": true, "worker-pid": true}

// parseFlags parses args with fs, then fills every flag not given on the
// command line from SOCKD_<FLAG> (dashes become underscores), so units can
// use EnvironmentFile=; not the identity flags. A repeatable flag's variable holds space-separated
// values. It returns flag.ErrHelp for -h/--help after printing the usage.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return err
		}
		return usagef("%s: %v (see sockd %s --help)", fs.Name(), err, strings.TrimPrefix(fs.Name(), "sockd "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "SOCKD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := getenv(name)
		if set[f.Name] || v == "" || err != nil || identity[f.Name] {
			return
		}
		values := []string{v}
		if _, ok := f.Value.(*listFlag); ok {
			values = strings.Fields(v)
		}
		for _, v := range values {
			if e := fs.Set(f.Name, v); e != nil { // recorded as set, as on the command line
				err = usagef("%s=%q: %v", name, v, e)
				return
			}
		}
	})
	return err
}

func usageFunc(fs *flag.FlagSet, synopsis, text string) func() {
	return func() {
		w := fs.Output()
		from := "each also read from SOCKD_<FLAG>"
		if fs.Lookup("control") != nil {
			from += ", e.g. SOCKD_CONTROL for --control"
		} else if fs.Lookup("workers") != nil {
			from += ", e.g. SOCKD_WORKERS for --workers"
		}
		if fs.Lookup("worker") != nil {
			from += "; not --worker and --generation, whose variables a worker has of its own"
		}
		var pids []string
		for _, n := range []string{"pid", "worker-pid"} {
			if fs.Lookup(n) != nil {
				pids = append(pids, "--"+n)
			}
		}
		if len(pids) > 0 {
			from += "; not " + strings.Join(pids, " and ") + ", read from the command line only"
		}
		fmt.Fprintf(w, "Usage: %s\n\n%s\nFlags (%s):\n", synopsis, text, from)
		fs.PrintDefaults()
	}
}

func getenv(k string) string { return os.Getenv(k) }
