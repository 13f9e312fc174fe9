package pm2

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultInstanceVar is the variable that tells a worker its slot, as
// under PM2 (instance_var renames it).
const DefaultInstanceVar = "NODE_APP_INSTANCE"

// PM2's defaults, where sockd keeps them.
const (
	// DefaultInstances: an app without instances runs once under PM2.
	DefaultInstances = 1
	// PM2MinUptime and PM2MaxRestarts are PM2's crash budget: a process
	// that exits within min_uptime of its start counts as an unstable
	// restart, and after max_restarts of them PM2 stops restarting it.
	PM2MinUptime   = time.Second
	PM2MaxRestarts = 16
	// PM2KillTimeout and PM2ListenTimeout are PM2's defaults for
	// kill_timeout and listen_timeout, which sockd does not take over
	// (see Settings).
	PM2KillTimeout   = 1600 * time.Millisecond
	PM2ListenTimeout = 3000 * time.Millisecond
)

// App is one app of an ecosystem file, resolved as PM2 resolves it for
// `pm2 start FILE --only NAME [--env ENV]`.
type App struct {
	// Name is the app's name: name, else the script's file name without
	// its extension; with append_env_to_name, "-ENV" appended.
	Name string
	// Index is the app's position in the file's apps list.
	Index int

	// Script is the absolute path of the script (PM2's pm_exec_path):
	// resolved against Cwd, else looked up in PATH.
	Script string
	// Interpreter is the absolute path of the program that runs Script
	// (node for .js and for text files PM2 does not recognise), or "" when
	// Script runs directly (interpreter 'none', or a binary).
	Interpreter string
	// InterpreterArgs are node_args / interpreter_args: the interpreter's
	// own options, before the script.
	InterpreterArgs []string
	// Args are the script's arguments; a string is split as PM2 splits it
	// (see SplitArgs).
	Args []string
	// Cwd is the working directory: cwd, resolved against Options.Dir,
	// else Options.Dir itself.
	Cwd string
	// ExecMode is "cluster" or "fork", as PM2 would choose.
	ExecMode string
	// Instances is instances as PM2 reads it: N > 0 copies, 0 one per
	// CPU ('max'), -N the CPUs less N (at least 1). See Workers.
	Instances int

	// Env is the app's environment: env, with port as PORT, and with
	// env_<EnvName> merged over it. Variables named SOCKD_* are not here:
	// they are settings (see Settings).
	Env map[string]string
	// EnvName is the env set chosen (Options.EnvName).
	EnvName string
	// Port is env.PORT as a number, 0 when the app has none: the port sockd
	// listens on for it.
	Port int

	WaitReady     bool          // wait_ready: ready on process.send('ready')
	ListenTimeout time.Duration // listen_timeout; 0: not set
	KillTimeout   time.Duration // kill_timeout; 0: not set
	MaxMemory     int64         // max_memory_restart in bytes; 0: not set
	MinUptime     time.Duration // min_uptime; 0: not set
	MaxRestarts   int           // max_restarts; -1: not set
	// CronRestart is cron_restart as written; MaxAge the fixed period it
	// repeats at, which sockd maps to --worker-max-age (see cron.go).
	CronRestart string
	MaxAge      time.Duration
	// InstanceVar names the variable holding the worker's slot.
	InstanceVar string
	// User and Group are uid/user and gid: who the workers run as.
	User, Group string

	// Ignored lists the fields sockd does not honour that are set to
	// something other than PM2's default; Unknown the keys PM2 does not
	// know either (typos); Notes other things worth a warning.
	Ignored, Unknown, Notes []string

	raw          map[string]any
	instancesSet bool
	cpus         int
	settings     map[string]string // SOCKD_* variables from the env sets
	file         string
	port         any // the value env.PORT came from, for messages
}

// Command is what sockd runs in each worker: [interpreter,
// interpreter args…, script, args…], or [script, args…] when the script
// runs directly.
func (a *App) Command() []string {
	var c []string
	if a.Interpreter != "" {
		c = append(append(c, a.Interpreter), a.InterpreterArgs...)
	}
	return append(append(c, a.Script), a.Args...)
}

// Workers resolves Instances against cpus, the CPUs the workers may use
// (pass the cgroup's quota, not the host's count): as PM2, 0 means cpus,
// -N means cpus-N, and the result is at least 1.
func (a *App) Workers(cpus int) int { return resolveInstances(a.Instances, cpus) }

func resolveInstances(n, cpus int) int {
	if n == 0 {
		n = cpus
	} else if n < 0 {
		n += cpus
	}
	return max(n, 1)
}

// WorkersSpec is Instances written for sockd's --workers: "N", "max", or
// "max-N", so the count follows the machine the setting is read on.
func (a *App) WorkersSpec() string {
	switch {
	case a.Instances > 0:
		return strconv.Itoa(a.Instances)
	case a.Instances == 0:
		return "max"
	}
	return "max" + strconv.Itoa(a.Instances)
}

// Warning is the one line that names everything in the app sockd does
// not honour, "" when there is nothing to say.
func (a *App) Warning() string {
	var parts []string
	if len(a.Ignored) > 0 {
		parts = append(parts, "ignored, sockd does not do them: "+strings.Join(a.Ignored, ", "))
	}
	if len(a.Unknown) > 0 {
		parts = append(parts, "unknown fields, ignored (typos?): "+quoteList(a.Unknown))
	}
	parts = append(parts, a.Notes...)
	if len(parts) == 0 {
		return ""
	}
	return oneLine(fmt.Sprintf("%s: app %s: %s", a.file, quote(a.Name), strings.Join(parts, "; ")))
}

// get returns the first truthy spelling of field k PM2 accepts, else the
// first present one.
func get(obj map[string]any, k string) (any, bool) {
	var first any
	found := false
	for _, s := range spellings(k) {
		v, ok := obj[s]
		if !ok {
			continue
		}
		if truthy(v) {
			return v, true
		}
		if !found {
			first, found = v, true
		}
	}
	if found && first == nil {
		return nil, false // PM2's validator skips null like undefined
	}
	return first, found
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	}
	if f, ok := toFloat(v); ok {
		return f != 0
	}
	return true
}

// reader reads an app's fields and records the first error.
type reader struct {
	obj  map[string]any
	file string
	app  string
	err  error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = newErr(ErrInvalid, r.file, r.app, format, a...)
	}
}

func (r *reader) typeErr(k string, v any, want string) {
	r.fail("%s is a %s: want %s", k, jsTypeName(v), want)
}

func (r *reader) str(k string) (string, bool) {
	v, ok := get(r.obj, k)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		r.typeErr(k, v, "a string")
		return "", false
	}
	return s, true
}

// strOrNum reads a field PM2 takes as a string or a number (uid, gid).
func (r *reader) strOrNum(k string) (string, bool) {
	v, ok := get(r.obj, k)
	if !ok {
		return "", false
	}
	if _, isObj := v.(map[string]any); !isObj {
		if s, ok := jsString(v); ok && v != nil {
			if _, isBool := v.(bool); !isBool {
				return s, true
			}
		}
	}
	r.typeErr(k, v, "a string or a number")
	return "", false
}

func (r *reader) boolean(k string) (value, set bool) {
	v, ok := get(r.obj, k)
	if !ok {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		r.typeErr(k, v, "true or false")
		return false, false
	}
	return b, true
}

// num reads a number field (numeric strings count, as in PM2).
func (r *reader) num(k string) (float64, bool) {
	v, ok := get(r.obj, k)
	if !ok {
		return 0, false
	}
	f, isNum := toFloat(v)
	if !isNum || math.IsInf(f, 0) {
		r.typeErr(k, v, "a number")
		return 0, false
	}
	return f, true
}

// millis reads a duration in milliseconds that must not be negative.
func (r *reader) millis(k string) time.Duration {
	f, ok := r.num(k)
	if !ok {
		return 0
	}
	if f < 0 || f > float64(math.MaxInt64/int64(time.Millisecond)) {
		r.fail("%s %s: want milliseconds, 0 or more", k, jsNumber(f))
		return 0
	}
	return time.Duration(f * float64(time.Millisecond))
}

// list reads args and node_args: an array, or a string split as PM2 does.
func (r *reader) list(k string) []string {
	v, ok := get(r.obj, k)
	if !ok {
		return nil
	}
	switch x := v.(type) {
	case string:
		return SplitArgs(x)
	case []any:
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := jsString(e)
			if !ok {
				r.fail("%s[%d] is an %s: want a string", k, i, jsTypeName(e))
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	r.typeErr(k, v, "an array or a string")
	return nil
}

var (
	sizeRE    = regexp.MustCompile(`^(\d+)([GMK]?)$`)
	stimeRE   = regexp.MustCompile(`^(\d+)([hms]?)$`)
	execModes = regexp.MustCompile(`^(cluster|fork)(_mode)?$`)
)

// read validates an app object and reads every field that needs no file
// system: what PM2's validator checks for every app of the file. The
// rest (script, interpreter, cwd, exec mode) is locate's.
func read(obj map[string]any, index int, file, envName string, deploy map[string]any) (*App, error) {
	a := &App{Index: index, file: file, EnvName: envName, MaxRestarts: -1, raw: obj}
	r := &reader{obj: obj, file: file, app: fmt.Sprintf("#%d", index)}
	script, ok := r.str("script")
	if r.err != nil {
		return nil, r.err
	}
	if !ok || script == "" {
		return nil, newErr(ErrInvalid, file, "", "apps[%d]: script is required", index)
	}
	a.Name, _ = r.str("name")
	if a.Name == "" {
		a.Name = defaultName(script)
	}
	if b, _ := r.boolean("append_env_to_name"); b && envName != "" {
		a.Name += "-" + envName
	}
	r.app = a.Name
	a.Ignored, a.Unknown = classify(obj)

	if b, set := r.boolean("autorestart"); set && !b {
		r.fail("autorestart is false, but sockd restarts every worker that exits: remove it (for a task that runs once, use a systemd service of Type=oneshot)")
	}
	if v, ok := get(obj, "stop_exit_codes"); ok {
		if l, isList := v.([]any); !isList || len(l) > 0 {
			r.fail("stop_exit_codes: sockd restarts every worker that exits, whatever its exit code; remove it")
		}
	}
	if b, _ := r.boolean("shutdown_with_message"); b {
		r.fail("shutdown_with_message: sockd asks a worker to stop with a signal (SIGINT), not a message; handle SIGINT in the app and remove the field")
	}
	if s, _ := r.str("increment_var"); s != "" {
		r.fail("increment_var %s: sockd gives each worker its slot 0..N-1 in %s, not a count of its own (and every worker shares one port); remove it", quote(s), DefaultInstanceVar)
	}
	if s, ok := r.str("exec_mode"); ok && !execModes.MatchString(s) {
		r.fail("exec_mode %s: want cluster or fork", quote(s))
	}
	if s, ok := r.str("exec_interpreter"); ok && strings.Contains(s, "node@") {
		r.fail("interpreter %s: sockd does not install Node.js versions (PM2 uses nvm); give the path of the node binary", quote(s))
	}
	r.str("cwd")                 // resolved by locate; its type is checked for every app, as PM2 does
	r.boolean("execute_command") // likewise
	a.InterpreterArgs = r.list("node_args")
	a.Args = r.list("args")
	if a.CronRestart = r.cron(); a.CronRestart != "" {
		a.MaxAge, a.Notes = cronPeriod(a.CronRestart, r, a.Notes)
	}
	a.readInstances(r)
	a.readLimits(r)
	a.InstanceVar = DefaultInstanceVar
	if s, ok := r.str("instance_var"); ok {
		if !validEnvName(s) {
			r.fail("instance_var %s: want a variable name (letters, digits, _)", quote(s))
		}
		a.InstanceVar = s
	}
	a.User, _ = r.strOrNum("uid")
	a.Group, _ = r.strOrNum("gid")
	if a.Group != "" && a.User == "" {
		r.fail("gid %s without uid: sockd runs workers as a user (with its groups); give uid too", quote(a.Group))
	}
	a.readEnv(r, deploy)
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

// defaultName is PM2's name for an app without one
// (Common.renderApplicationName): the script's base name up to its last
// dot, a command with arguments too ("node dist/server.js --x" is
// "server", "npm run start" stays whole, "python3 -m http.server 8000" is
// "python3 -m http").
func defaultName(script string) string {
	n := filepath.Base(script)
	if i := strings.LastIndexByte(n, '.'); i > 0 {
		n = n[:i]
	}
	return n
}

func (a *App) readInstances(r *reader) {
	a.Instances = DefaultInstances
	v, ok := get(r.obj, "instances")
	if !ok {
		return
	}
	a.instancesSet = true
	if s, isStr := v.(string); isStr && strings.TrimSpace(s) == "max" {
		a.Instances = 0
		return
	}
	f, isNum := toFloat(v)
	if !isNum || math.Abs(f) > 1e6 {
		r.fail("instances %s: want a number, 'max', 0 (one per CPU) or -N (the CPUs less N)", jsonText(v))
		return
	}
	a.Instances = int(f) // parseInt: 2.5 is 2
}
