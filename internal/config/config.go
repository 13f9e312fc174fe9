// Package config is `sockd run`'s configuration: every setting once —
// its flag, its SOCKD_<FLAG> variable, its type, its default and its
// help — read from the command line and the environment into typed
// values and checked in one place (Parse). The help text, the man page
// and the README's table of flags are made from the same table
// (Settings), so they cannot drift apart.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/account"
	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/cpus"
	"github.com/sockd/sockd/internal/metrics"
	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/internal/pm2"
	"github.com/sockd/sockd/pool"
)

// ErrUsage: a flag, variable or argument is wrong (sockd exits 2).
var ErrUsage = errors.New("usage")

// usageError is a one-line message about a setting, of kind ErrUsage.
type usageError struct{ msg string }

func (e usageError) Error() string      { return e.msg }
func (usageError) Is(target error) bool { return target == ErrUsage }

// Usagef makes an ErrUsage error.
func Usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// Run is `sockd run`'s configuration, typed.
type Run struct {
	Workers        int64
	Listen         []string // listener specs, checked (activation.ParseSpec)
	ReusePort      bool
	SlowStart      time.Duration
	Ready          pool.ReadyRule
	ReadyTimeout   time.Duration
	ReloadTimeout  time.Duration
	StopTimeout    time.Duration
	StopSignal     unix.Signal
	RestartLimit   pool.RestartLimit
	WorkerWatchdog time.Duration
	ReloadBatch    int64
	ReloadSoak     time.Duration
	MaxMemory      int64
	MaxRequests    pool.Jitter
	MaxAge         pool.DurationJitter
	Metrics        string
	User           *account.User
	Cgroups        string
	Limits         cgroup.Limits
	Control        string
	LogFormat      string
	LogLevel       string
	WorkerOutput   string
	EnvFiles       []string
	Dir            string
	Name           string
	PM2            string // --pm2 FILE[:APP]
	PM2Env         string
	InstanceVar    string
	NodePreload    string
	Warmup         string // --warmup PATH
	WarmupRequests int64
	// Warnings are what Load noticed but did not refuse: fields of an
	// ecosystem file sockd does not support, SOCKD_ variables that are
	// no setting (a typo). sockd logs them at start and at every reload.
	Warnings []string
	// Command is what follows the flags (after --), or SOCKD_COMMAND
	// split into words: the worker's program and arguments; empty for the
	// built-in demo worker.
	Command []string
	// Env is the workers' environment: the one sockd was given (or the
	// reload client's, with reload --update-env), with the env files'
	// variables over it; Base is that environment without the files'.
	// Set by Load.
	Env, Base []string
}

// Setting describes one setting of `sockd run`.
type Setting struct {
	Name   string   // the flag, without dashes: stop-timeout
	Arg    string   // what its value is, for the help: DURATION ("" for a switch)
	Help   string   // one sentence or two
	Values []string // the values it takes, if they are a list
	// Default is the value it has when neither the flag nor the variable
	// is given, as text ("" for none).
	Default string
	// Restart: the setting cannot change on a reload (it holds the
	// sockets, or what sockd itself binds); changing it needs a restart.
	Restart bool
	value   func(r *Run) value
}

// Var is the setting's environment variable: SOCKD_STOP_TIMEOUT.
func (s Setting) Var() string {
	return "SOCKD_" + strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
}

// Repeatable says whether the setting may be given more than once (its
// variable then holds space-separated values).
func (s Setting) Repeatable() bool { _, ok := s.value(&Run{}).(listValue); return ok }

// Switch says whether the setting is a flag without a value.
func (s Setting) Switch() bool { _, ok := s.value(&Run{}).(boolValue); return ok }

// Settings lists every setting of `sockd run`, in the order --help shows
// them.
func Settings() []Setting { return settings }

var settings = []Setting{
	{Name: "workers", Arg: "N", Default: "max",
		Help: fmt.Sprintf("number of worker processes, 1 to %d, max: one per CPU sockd may use, counting a container's or unit's CPU quota, or max-N: N fewer", pool.MaxWorkers),
		value: func(r *Run) value {
			return typed[int64]{&r.Workers, parseWorkers, showInt}
		}},
	{Name: "listen", Restart: true, Arg: "[NAME=]URL", Help: "a listener, repeatable: tcp://HOST:PORT, tcp4://, tcp6://, udp://HOST:PORT, unix:///PATH[?mode=0660], or none: no listener at all (a queue consumer), whatever systemd passes (default without a command and without systemd's sockets: " + DemoListen + ")",
		value: func(r *Run) value {
			return listValue{&r.Listen, func(s string) error {
				if s == NoListen {
					return nil
				}
				_, err := activation.ParseSpec(s)
				return err
			}}
		}},
	{Name: "reuseport", Restart: true, Help: "one SO_REUSEPORT socket per worker slot instead of one shared socket (TCP and UDP listeners sockd binds)",
		value: func(r *Run) value { return boolValue{&r.ReusePort} }},
	{Name: "slow-start", Arg: "DURATION", Restart: true, Help: "with --reuseport: a new worker's share of new connections rises from 10 % to its whole share over DURATION after it is ready, while the worker it replaces serves the rest (0: its whole share at once); with any socket, a worker that starts while others serve runs ten nice levels down until it is ready (at most half --ready-timeout)",
		value: func(r *Run) value { return typed[time.Duration]{&r.SlowStart, duration(0), showDuration} }},
	{Name: "ready", Arg: "RULE", Default: "notify", Values: []string{"notify", "node-ipc", "node-listen", "after:DURATION"},
		Help: "when a worker is ready: notify (it sends READY=1 to NOTIFY_SOCKET), node-ipc (a Node.js worker calls process.send('ready'), as under PM2's wait_ready; READY=1 counts too), node-listen (a Node.js worker listens on sockd's sockets, told by sockd's preload) or after:DURATION (that long after it started, or at its READY=1 if that comes first)",
		value: func(r *Run) value {
			return typed[pool.ReadyRule]{&r.Ready, pool.ParseReadyRule, pool.ReadyRule.String}
		}},
	{Name: "ready-timeout", Arg: "DURATION", Default: pool.DefaultReadyTimeout.String(), Help: "how long a worker may take to become ready",
		value: func(r *Run) value { return typed[time.Duration]{&r.ReadyTimeout, duration(1), showDuration} }},
	{Name: "reload-timeout", Arg: "DURATION", Help: "how long a reload waits for the new generation (default: --ready-timeout)",
		value: func(r *Run) value { return typed[time.Duration]{&r.ReloadTimeout, duration(0), showDuration} }},
	{Name: "stop-timeout", Arg: "DURATION", Default: pool.DefaultStopTimeout.String(), Help: "how long a worker may drain after the stop signal before SIGKILL",
		value: func(r *Run) value { return typed[time.Duration]{&r.StopTimeout, duration(1), showDuration} }},
	{Name: "stop-signal", Arg: "SIGNAL", Default: "TERM", Help: "the signal that asks a worker to drain: TERM, INT (what PM2 sends), QUIT, …",
		value: func(r *Run) value {
			return typed[unix.Signal]{&r.StopSignal, pool.ParseSignal, func(s unix.Signal) string { return strings.TrimPrefix(unix.SignalName(s), "SIG") }}
		}},
	{Name: "restart-limit", Arg: "N/DURATION", Default: pool.DefaultRestartLimit.String(), Help: "crash budget: more crashes than N within DURATION and sockd gives up (exit 4)",
		value: func(r *Run) value {
			return typed[pool.RestartLimit]{&r.RestartLimit, pool.ParseRestartLimit, pool.RestartLimit.String}
		}},
	{Name: "worker-watchdog", Arg: "DURATION", Help: "pass WATCHDOG_USEC to workers and replace a worker silent for this long (default: off)",
		value: func(r *Run) value { return typed[time.Duration]{&r.WorkerWatchdog, duration(0), showDuration} }},
	{Name: "reload-batch", Arg: "N", Help: "reload N slots at a time: each batch's old workers drain once its new ones are ready (default: all at once)",
		value: func(r *Run) value {
			return typed[int64]{&r.ReloadBatch, intIn(0, pool.MaxWorkers, fmt.Sprintf("0 (all at once) to %d", pool.MaxWorkers)), showInt}
		}},
	{Name: "reload-soak", Arg: "DURATION", Help: "the first batch of a reload (the canary) serves beside the old workers this long before the rest follows (default: no soak)",
		value: func(r *Run) value { return typed[time.Duration]{&r.ReloadSoak, duration(0), showDuration} }},
	{Name: "worker-max-memory", Arg: "SIZE", Help: "replace a worker whose process tree's resident memory is over SIZE (512M, 2G), its replacement first",
		value: func(r *Run) value { return typed[int64]{&r.MaxMemory, positiveSize, showSize} }},
	{Name: "worker-max-requests", Arg: "N[±J]", Help: "replace a worker after N±J requests (it reports them with SOCKD_REQUESTS=), its replacement first",
		value: func(r *Run) value {
			return typed[pool.Jitter]{&r.MaxRequests, positive(pool.ParseJitter, func(j pool.Jitter) bool { return j.N == 0 }), showJitter}
		}},
	{Name: "worker-max-age", Arg: "D[±J]", Help: "replace a worker D±J after it was ready (6h±30m), its replacement first",
		value: func(r *Run) value {
			return typed[pool.DurationJitter]{&r.MaxAge, positive(pool.ParseDurationJitter, func(j pool.DurationJitter) bool { return j.D == 0 }), showDurationJitter}
		}},
	{Name: "metrics", Restart: true, Arg: "URL", Help: "serve Prometheus metrics at tcp://127.0.0.1:9464 or unix:///PATH (default: off); workers get SOCKD_METRICS_SOCKET for their own",
		value: func(r *Run) value {
			return typed[string]{&r.Metrics, func(s string) (string, error) { return s, metrics.ParseAddr(s) }, showString}
		}},
	{Name: "user", Restart: true, Arg: "USER[:GROUP]", Help: "run the workers as USER (names or numbers) with the user's groups, HOME, USER and LOGNAME; sockd must be root",
		value: func(r *Run) value { return typed[*account.User]{&r.User, lookupUser, showUser} }},
	{Name: "cgroups", Restart: true, Arg: "MODE", Default: "auto", Values: []string{"auto", "yes", "no"},
		Help:  "give each worker a cgroup of its own: auto (where sockd may manage a cgroup v2 subtree), yes (required) or no",
		value: func(r *Run) value { return typed[string]{&r.Cgroups, oneOf("auto", "yes", "no"), showString} }},
	{Name: "worker-memory-max", Arg: "SIZE", Help: "cgroup memory.max of each worker: the kernel kills a worker over SIZE (512M, 2G) and sockd replaces it (needs cgroups with the memory controller)",
		value: func(r *Run) value { return typed[int64]{&r.Limits.MemoryMax, positiveSize, showSize} }},
	{Name: "worker-pids-max", Arg: "N", Help: "cgroup pids.max of each worker: at most N processes and threads (needs the pids controller; default: no limit)",
		value: func(r *Run) value {
			return typed[int64]{&r.Limits.PidsMax, intIn(0, 1<<31, "0 (no limit) or more"), showInt}
		}},
	{Name: "worker-cpu-weight", Arg: "N", Help: "cgroup cpu.weight of each worker, 1 to 10000 (100 is the kernel's default; needs the cpu controller; default: not set)",
		value: func(r *Run) value {
			return typed[int64]{&r.Limits.CPUWeight, intIn(0, 10000, "1 to 10000"), showInt}
		}},
	{Name: "control", Restart: true, Arg: "PATH", Help: "the control socket (default: $RUNTIME_DIRECTORY/sockd.sock, /run/sockd/sockd.sock for root, else $XDG_RUNTIME_DIR/sockd/sockd.sock, else $TMPDIR/sockd-UID/sockd.sock, /tmp by default)",
		value: func(r *Run) value { return typed[string]{&r.Control, controlPath, showString} }},
	{Name: "log-format", Arg: "FORMAT", Default: "text", Values: []string{"text", "json"},
		Help:  "log format on stderr: text or json (under systemd sockd logs natively to the journal)",
		value: func(r *Run) value { return typed[string]{&r.LogFormat, oneOf("text", "json"), showString} }},
	{Name: "worker-output", Arg: "MODE", Default: "auto", Values: []string{"auto", "journal", "prefix", "json", "raw"},
		Help: "what becomes of the workers' stdout and stderr, relayed line by line: journal (one entry per line with SOCKD_WORKER, SOCKD_GENERATION, SOCKD_WORKER_PID), prefix (\"[w1 g3] line\", \"[w1 g3 err]\" for stderr), json (one object per line, the shape of --log-format json) or raw (unchanged); auto: journal under systemd, json with --log-format json, else prefix",
		value: func(r *Run) value {
			return typed[string]{&r.WorkerOutput, oneOf("auto", "journal", "prefix", "json", "raw"), showString}
		}},
	{Name: "env-file", Arg: "FILE", Restart: true,
		Help:  "read settings (SOCKD_*) and the workers' variables from FILE, in systemd's EnvironmentFile= syntax, at start and again at every reload; repeatable, later files win",
		value: func(r *Run) value { return listValue{&r.EnvFiles, nonEmptyCheck} }},
	{Name: "cwd", Arg: "DIR", Help: "the workers' working directory (default: sockd's)",
		value: func(r *Run) value { return typed[string]{&r.Dir, existingDir, showString} }},
	{Name: "name", Arg: "NAME", Help: "the application's name, in logs, status and metrics (default: the command's file name)",
		value: func(r *Run) value { return typed[string]{&r.Name, nonEmpty, showString} }},
	{Name: "pm2", Arg: "FILE[:APP]", Help: "run APP of a PM2 ecosystem file (.js, .cjs, .mjs, .json) as PM2 would: its script, args, cwd, instances, env, wait_ready, timeouts, memory limit, restarts; flags given here win over the file, the file over SOCKD_ variables; read again at every reload",
		value: func(r *Run) value { return typed[string]{&r.PM2, nonEmpty, showString} }},
	{Name: "pm2-env", Arg: "NAME", Help: "with --pm2: merge the app's env_NAME over its env, as pm2 start --env NAME",
		value: func(r *Run) value { return typed[string]{&r.PM2Env, nonEmpty, showString} }},
	{Name: "node-preload", Arg: "MODE", Default: "on", Values: []string{"on", "off"},
		Help:  "on: Node.js workers get sockd's preload (through NODE_OPTIONS), so that an unchanged app's listen(PORT) on a port sockd holds takes sockd's socket, keeping its backlog, and its server.close() drains without losing a request; off: Node runs as it is",
		value: func(r *Run) value { return typed[string]{&r.NodePreload, oneOf("on", "off"), showString} }},
	{Name: "warmup", Arg: "PATH", Help: "Node.js workers with --ready node-ipc or node-listen: before a worker's ready reaches sockd, sockd's preload has the app's own HTTP server answer --warmup-requests GET requests for PATH (\"/\", \"/health?deep=1\"), sent from inside the worker over a private socket, never sockd's, so that a new worker's slow first requests (a cold V8) are not a client's; the worker is ready after the last answer, the first failed request or half of --ready-timeout",
		value: func(r *Run) value {
			return typed[string]{&r.Warmup, func(s string) (string, error) { return s, nodeshim.CheckWarmupPath(s) }, showString}
		}},
	{Name: "warmup-requests", Arg: "N", Default: strconv.Itoa(nodeshim.DefaultWarmupRequests), Help: fmt.Sprintf("how many requests --warmup sends to each HTTP server of the worker, one after another on one keep-alive connection, 1 to %d", nodeshim.MaxWarmupRequests),
		value: func(r *Run) value {
			return typed[int64]{&r.WarmupRequests, intIn(1, nodeshim.MaxWarmupRequests, fmt.Sprintf("1 to %d", nodeshim.MaxWarmupRequests)), showInt}
		}},
	{Name: "instance-var", Arg: "NAME", Default: "NODE_APP_INSTANCE", Help: "the variable that tells each worker its slot, 0 to N-1, stable across reloads and restarts (PM2's NODE_APP_INSTANCE; an app runs its cron jobs where it is 0); NAME,NAME…: each of them (--pm2 sets pm_id too, as PM2 does)",
		value: func(r *Run) value { return typed[string]{&r.InstanceVar, envNames, showString} }},
	{Name: "log-level", Arg: "LEVEL", Default: "info", Values: []string{"trace", "debug", "info", "warn", "error"},
		Help: "the least level sockd logs: trace, debug, info, warn or error",
		value: func(r *Run) value {
			return typed[string]{&r.LogLevel, oneOf("trace", "debug", "info", "warn", "error"), showString}
		}},
}

// DemoListen is where the built-in demo worker listens when nothing else
// is configured.
const DemoListen = "http=tcp://127.0.0.1:8080"

func parseWorkers(s string) (int64, error) {
	if strings.HasPrefix(s, "max") {
		n, err := pm2.ParseWorkers(s, cpus.Usable())
		if err != nil {
			return 0, fmt.Errorf("want 1 to %d, max, or max-N", pool.MaxWorkers)
		}
		return int64(min(n, pool.MaxWorkers)), nil
	}
	return intIn(1, pool.MaxWorkers, fmt.Sprintf("1 to %d, max, or max-N", pool.MaxWorkers))(s)
}

// NoListen is --listen none: the pool has no listener.
const NoListen = "none"

// controlPath is a --control path: not empty, not a directory's, short
// enough for a socket address.
func controlPath(s string) (string, error) {
	if _, err := nonEmpty(s); err != nil {
		return "", err
	}
	if strings.HasSuffix(s, "/") {
		return "", errors.New("want the socket's path, not a directory's")
	}
	return s, activation.CheckUnixPath(s)
}

// envNames is one variable name or several, comma-separated.
func envNames(s string) (string, error) {
	for _, n := range strings.Split(s, ",") {
		if _, err := envName(n); err != nil {
			return "", fmt.Errorf("%q: %w", n, err)
		}
	}
	return s, nil
}

func envName(s string) (string, error) {
	if !validName(s) {
		return "", errors.New("want a variable name (letters, digits and _)")
	}
	return s, nil
}

func positive[T any](parse func(string) (T, error), zero func(T) bool) func(string) (T, error) {
	return func(s string) (T, error) {
		v, err := parse(s)
		if err == nil && zero(v) {
			err = errors.New("want more than 0")
		}
		return v, err
	}
}

func showJitter(j pool.Jitter) string {
	if j.N == 0 {
		return ""
	}
	return j.String()
}

func showDurationJitter(j pool.DurationJitter) string {
	if j.D == 0 {
		return ""
	}
	return j.String()
}

func nonEmptyCheck(s string) error { _, err := nonEmpty(s); return err }

func existingDir(s string) (string, error) {
	fi, err := os.Stat(s)
	switch {
	case err != nil:
		return "", errors.Unwrap(err)
	case !fi.IsDir():
		return "", errors.New("not a directory")
	}
	return s, nil
}

func nonEmpty(s string) (string, error) {
	if s == "" {
		return "", errors.New("want a path")
	}
	return s, nil
}

func lookupUser(s string) (*account.User, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sockd must run as root to start workers as another user")
	}
	return account.Lookup(s)
}

func showUser(u *account.User) string {
	if u == nil {
		return ""
	}
	return u.Name
}

// defaults is Run with every default set.
func defaults() *Run {
	r := &Run{}
	for _, s := range settings {
		if s.Default != "" {
			if err := s.value(r).Set(s.Default); err != nil {
				panic(fmt.Sprintf("default of --%s: %v", s.Name, err))
			}
		}
	}
	return r
}

// Parse reads `sockd run`'s arguments: flags (-name, --name, --name=value,
// --name value), then the command (after --, or from the first argument
// that is not a flag). Every setting not given as a flag is read from its
// SOCKD_<FLAG> variable through getenv. An error is one line naming the
// flag or variable, of kind ErrUsage; -h or --help gives ErrHelp.
func Parse(args []string, getenv func(string) string) (*Run, error) {
	r := defaults()
	byName := map[string]Setting{}
	for _, s := range settings {
		byName[s.Name] = s
	}
	given := map[string]bool{}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			args = args[1:]
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		args = args[1:]
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if name == "h" || name == "help" {
			return nil, ErrHelp
		}
		s, ok := byName[name]
		if !ok {
			return nil, Usagef("sockd run: flag provided but not defined: %s (see sockd run --help)", a)
		}
		if !hasVal && !s.Switch() {
			if len(args) == 0 {
				return nil, Usagef("sockd run: flag needs an argument: --%s %s", name, s.Arg)
			}
			val, args = args[0], args[1:]
		} else if !hasVal {
			val = "true"
		}
		if err := s.value(r).Set(val); err != nil {
			return nil, Usagef("--%s %s: %v", name, val, err)
		}
		given[name] = true
	}
	r.Command = args
	for _, s := range settings {
		v := getenv(s.Var())
		if given[s.Name] || v == "" {
			continue
		}
		vals := []string{v}
		if s.Repeatable() {
			vals = strings.Fields(v)
		}
		for _, v := range vals {
			if err := s.value(r).Set(v); err != nil {
				return nil, Usagef("%s=%q: %v", s.Var(), v, err)
			}
		}
	}
	return r, r.check()
}

// ErrHelp: -h or --help was given.
var ErrHelp = errors.New("help requested")

// check looks at what settings say together.
func (r *Run) check() error {
	if hclog.LevelFromString(r.LogLevel) == hclog.NoLevel {
		return Usagef("--log-level %q: want trace, debug, info, warn or error", r.LogLevel)
	}
	if r.NoListeners() && len(r.Listen) > 1 {
		return Usagef("--listen none: no other --listen with it")
	}
	named := map[string]bool{}
	for _, l := range r.Listen {
		s, err := activation.ParseSpec(l)
		if l == NoListen || err != nil || !explicitName(l) {
			continue
		}
		if named[s.Name] {
			// A worker that looks its sockets up by name (LISTEN_FDNAMES)
			// could not tell them apart.
			return Usagef("--listen %s: a second listener named %q: give each its own NAME=", l, s.Name)
		}
		named[s.Name] = true
	}
	if r.PM2Env != "" && r.PM2 == "" {
		return Usagef("--pm2-env %s: needs --pm2", r.PM2Env)
	}
	if r.PM2 == "" { // else the ecosystem file may set --ready: Load checks once it is read
		if err := r.checkWarmup(); err != nil {
			return err
		}
	}
	if r.Cgroups == "no" && r.Limits != (cgroup.Limits{}) {
		return Usagef("--cgroups no: per-worker cgroup limits (--worker-memory-max, --worker-pids-max, --worker-cpu-weight) need cgroups")
	}
	return nil
}

// checkWarmup: --warmup needs the preload and a ready on Node's channel.
func (r *Run) checkWarmup() error {
	if r.Warmup != "" && r.NodePreload == "off" {
		return Usagef("--warmup %s: needs --node-preload on (the preload sends the warm-up requests)", r.Warmup)
	}
	if r.Warmup != "" && !r.Ready.NodeIPC {
		return Usagef("--warmup %s: needs --ready node-ipc or node-listen (the preload holds the worker's ready on Node's IPC channel until the warm-up is done)", r.Warmup)
	}
	return nil
}

// NoListeners reports whether the pool is to run without listeners
// (--listen none).
func (r *Run) NoListeners() bool {
	for _, l := range r.Listen {
		if l == NoListen {
			return true
		}
	}
	return false
}

// Specs are the parsed --listen values. Listeners named after the same
// address (two tcp://127.0.0.1:0) get -2, -3, … after their name, so
// that LISTEN_FDNAMES tells them apart.
func (r *Run) Specs() []activation.Spec {
	specs := make([]activation.Spec, 0, len(r.Listen))
	var explicit []bool
	taken := map[string]bool{}
	for _, l := range r.Listen {
		if l == NoListen {
			continue
		}
		s, _ := activation.ParseSpec(l) // checked by Set
		if explicitName(l) {
			taken[s.Name] = true
		}
		specs = append(specs, s)
		explicit = append(explicit, explicitName(l))
	}
	for i := range specs {
		if explicit[i] {
			continue
		}
		name := specs[i].Name
		for n := 2; taken[name]; n++ {
			name = fmt.Sprintf("%s-%d", specs[i].Name, n)
		}
		specs[i].Name = name
		taken[name] = true
	}
	return specs
}

// explicitName says whether a --listen value names its listener (NAME=URL).
func explicitName(l string) bool {
	eq, scheme := strings.IndexByte(l, '='), strings.Index(l, "://")
	return eq >= 0 && (scheme < 0 || eq < scheme)
}

// Pool is the workers' configuration.
func (r *Run) Pool() pool.Config {
	return pool.Config{
		Command: r.Command, Dir: r.Dir, Env: r.Env, Limits: r.Limits, Revision: r.Revision(), InstanceVar: r.InstanceVar, NodePreload: r.NodePreload == "on",
		Warmup:  nodeshim.Warmup{Path: r.Warmup, Requests: int(r.WarmupRequests)},
		Workers: int(r.Workers), Ready: r.Ready,
		ReadyTimeout: r.ReadyTimeout, ReloadTimeout: r.ReloadTimeout, StopTimeout: r.StopTimeout, StopSignal: r.StopSignal,
		RestartLimit: r.RestartLimit, WorkerWatchdog: r.WorkerWatchdog,
		ReloadBatch: int(r.ReloadBatch), ReloadSoak: r.ReloadSoak, LowStart: r.SlowStart > 0,
		Recycle: pool.Recycle{MaxMemory: r.MaxMemory, MaxRequests: r.MaxRequests, MaxAge: r.MaxAge},
		User:    r.User,
	}
}

// Synopsis and About are what --help and the man page say of sockd run.
const (
	Synopsis = "sockd run [flags] [-- COMMAND [ARGS...]]"
	About    = "Runs --workers copies of COMMAND (or SOCKD_COMMAND, split into words as a shell would, without\n" +
		"expanding anything); each gets the listeners as fds 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and\n" +
		"LISTEN_PID set as systemd would. Without COMMAND sockd runs its built-in demo HTTP worker, on\n" +
		DemoListen + " unless --listen or systemd says otherwise. A reload (SIGHUP, sockd reload,\n" +
		"systemctl reload) reads the settings and --env-file files again and the new generation runs them."
)

// Usage writes `sockd run --help`.
func Usage(w interface{ Write([]byte) (int, error) }) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\n"+
		"Flags (each also read from SOCKD_<FLAG>, dashes as underscores: --stop-timeout from SOCKD_STOP_TIMEOUT):\n", Synopsis, About)
	for _, s := range settings {
		head := "  --" + s.Name
		if s.Arg != "" {
			head += " " + s.Arg
		}
		def := ""
		if s.Default != "" {
			def = " (default " + s.Default + ")"
		}
		if s.Name == "workers" {
			def += fmt.Sprintf(" (max here: %d)", cpus.Usable())
		}
		fmt.Fprintf(w, "%s\n    \t%s%s\n", head, s.Help, def)
	}
}
