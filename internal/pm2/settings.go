package pm2

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NoListen is the value of SOCKD_LISTEN for an app without a port (a
// queue consumer): the pool has no listener, its workers get no
// LISTEN_FDS, and sockets a socket unit passes anyway are not used.
const NoListen = "none"

// ListenerName is the name (LISTEN_FDNAMES) of an app's listener: the one
// sockd@.socket gives its sockets (FileDescriptorName=http), so that under
// the unit sockd takes systemd's socket instead of binding its own.
const ListenerName = "http"

// Settings returns the app as sockd settings, SOCKD_<FLAG> → value, the
// form of sockd's environment file (the app's own variables are in Env):
//
//	SOCKD_NAME            name
//	SOCKD_COMMAND         Command(), quoted (QuoteCommand; SplitCommand reads it)
//	SOCKD_CWD             cwd (default: Options.Dir)
//	SOCKD_WORKERS         instances: N, or "max" / "max-N" (resolved when Options.CPUs > 0)
//	SOCKD_INSTANCE_VAR    instance_var (NODE_APP_INSTANCE)
//	SOCKD_LISTEN          http=tcp://:PORT for env.PORT, else "none" (NoListen)
//	SOCKD_READY           node-ipc with wait_ready; else node-listen for a node app with a port
//	                      (ready once it listens, as PM2's cluster mode has it); else
//	                      after:MIN_UPTIME (PM2's 1s), also for an app with no port
//	SOCKD_READY_TIMEOUT   listen_timeout, with wait_ready and when set
//	SOCKD_STOP_SIGNAL     INT, what PM2 sends
//	SOCKD_STOP_TIMEOUT    kill_timeout, when set
//	SOCKD_WORKER_MAX_MEMORY  max_memory_restart
//	SOCKD_RESTART_LIMIT   max_restarts / (max_restarts × min_uptime), when either is set
//	SOCKD_WORKER_MAX_AGE  cron_restart's period ±10% (see cron.go)
//	SOCKD_USER            uid[:gid]
//
// then any SOCKD_* variable of the app's env sets, which override the
// above: the file's way to set what PM2 has no field for
// (SOCKD_RELOAD_BATCH, SOCKD_WORKER_MAX_REQUESTS, …).
//
// Where PM2 has a default and sockd another, sockd's stays: kill_timeout
// (PM2 1.6s, sockd's --stop-timeout 30s: a drain that ends sooner ends
// sooner, a longer one is not cut short), listen_timeout (PM2 3s, after
// which PM2 takes a silent worker as ready; sockd's --ready-timeout 30s,
// after which the worker has failed), the crash budget (PM2 16 crashes
// within a second of starting, per process; sockd --restart-limit 10/60s
// for the pool). PM2's instances default (1) is kept: it is what the
// file asks for.
// NodeLike says whether the app runs under node (node, nodejs, ts-node):
// sockd's preload then says when it listens (--ready node-listen).
func (a *App) NodeLike() bool {
	b := filepath.Base(a.Interpreter)
	return strings.HasPrefix(b, "node") || strings.HasSuffix(b, "node")
}

func (a *App) Settings() map[string]string {
	s := map[string]string{
		"SOCKD_NAME":         a.Name,
		"SOCKD_COMMAND":      QuoteCommand(a.Command()),
		"SOCKD_CWD":          a.Cwd,
		"SOCKD_WORKERS":      a.WorkersSpec(),
		"SOCKD_INSTANCE_VAR": a.instanceVars(),
		"SOCKD_STOP_SIGNAL":  "INT",
		"SOCKD_LISTEN":       NoListen,
	}
	if a.cpus > 0 {
		s["SOCKD_WORKERS"] = strconv.Itoa(a.Workers(a.cpus))
	}
	if a.Port != 0 {
		s["SOCKD_LISTEN"] = fmt.Sprintf("%s=tcp://:%d", ListenerName, a.Port)
	}
	if a.WaitReady {
		s["SOCKD_READY"] = "node-ipc"
		if a.ListenTimeout > 0 {
			s["SOCKD_READY_TIMEOUT"] = fmtDuration(a.ListenTimeout)
		}
	} else if a.Port != 0 && a.NodeLike() {
		// PM2 counts a cluster worker as online once it listens: sockd's
		// Node preload says when it does (node, nodejs, ts-node).
		s["SOCKD_READY"] = "node-listen"
	} else {
		// PM2 counts a process as started once it has run min_uptime; so
		// too an app with no port for sockd to hold, which would never
		// listen on one of sockd's sockets (a queue consumer).
		s["SOCKD_READY"] = "after:" + fmtDuration(a.minUptime())
	}
	if a.KillTimeout > 0 {
		s["SOCKD_STOP_TIMEOUT"] = fmtDuration(a.KillTimeout)
	}
	if a.MaxMemory > 0 {
		s["SOCKD_WORKER_MAX_MEMORY"] = fmtSize(a.MaxMemory)
	}
	if a.MaxRestarts >= 0 || a.MinUptime > 0 {
		s["SOCKD_RESTART_LIMIT"] = a.restartLimit()
	}
	if a.MaxAge > 0 {
		s["SOCKD_WORKER_MAX_AGE"] = AgeSpec(a.MaxAge)
	}
	if a.User != "" {
		s["SOCKD_USER"] = a.User
		if a.Group != "" {
			s["SOCKD_USER"] += ":" + a.Group
		}
	}
	for k, v := range a.settings {
		s[k] = v
	}
	return s
}

// instanceVars are the variables that tell a worker its slot: instance_var
// (NODE_APP_INSTANCE), and pm_id as PM2 sets it (the process's id in PM2's
// list, 0 to N-1 for the first app), which apps test to tell they run
// under PM2 (process.env.pm_id !== undefined) or are the first.
func (a *App) instanceVars() string {
	if a.InstanceVar == PMID {
		return a.InstanceVar
	}
	return a.InstanceVar + "," + PMID
}

// PMID is PM2's variable with the process's id.
const PMID = "pm_id"

func (a *App) minUptime() time.Duration {
	if a.MinUptime > 0 {
		return a.MinUptime
	}
	return PM2MinUptime
}

// restartLimit maps PM2's crash budget to sockd's N/DURATION: PM2 gives
// up on a process after max_restarts exits within min_uptime of starting,
// counted while the process is younger than max_restarts × min_uptime.
func (a *App) restartLimit() string {
	n := a.MaxRestarts
	if n < 0 {
		n = PM2MaxRestarts
	}
	window := time.Duration(max(n, 1)) * a.minUptime()
	return fmt.Sprintf("%d/%s", n, fmtDuration(window))
}

// fmtSize writes bytes in the largest unit that divides them (K, M, G:
// powers of 1024, as PM2 and sockd read them).
func fmtSize(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"G", 30}, {"M", 20}, {"K", 10}} {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Getenv returns a getenv for sockd's flag parsing with the app's
// settings in it. Precedence, highest first:
//
//  1. flags on the command line (parseFlags consults getenv only for
//     flags not given there);
//  2. the ecosystem file (settings);
//  3. SOCKD_* variables of the environment (env);
//  4. sockd's defaults.
//
// The file beats the environment because --pm2 FILE is the explicit
// choice, and because sockd@.service sets SOCKD_WORKERS and others with
// Environment= as defaults, which must not undo the file's instances.
func Getenv(settings map[string]string, env func(string) string) func(string) string {
	return func(k string) string {
		if v, ok := settings[k]; ok {
			return v
		}
		return env(k)
	}
}

// Environ is the workers' environment: base (sockd's environment) with
// the app's variables set over it, as PM2 sets env over its own.
func (a *App) Environ(base []string) []string {
	env := a.processEnv()
	out := make([]string, 0, len(base)+len(env))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, over := env[k]; !over {
			out = append(out, kv)
		}
	}
	for _, k := range sortedKeys(env) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// processEnv is the app's env with what PM2 adds to every process's
// environment from its own record of it and sockd can give: name, the
// app's name (pm_id comes with the slot: instanceVars). The app's own
// env wins.
func (a *App) processEnv() map[string]string {
	if _, set := a.Env["name"]; set || a.Name == "" {
		return a.Env
	}
	env := make(map[string]string, len(a.Env)+1)
	for k, v := range a.Env {
		env[k] = v
	}
	env["name"] = a.Name
	return env
}

// ParseWorkers reads a --workers value: N, "max" (one per CPU), or
// "max-N" (the CPUs less N, at least 1), as PM2's instances. cpus is what
// the service may use (cgroup quota and cpuset), not the host's count.
func ParseWorkers(s string, cpus int) (int, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "max"); ok {
		n := 0
		if rest != "" {
			var err error
			if n, err = strconv.Atoi(rest); err != nil || n > 0 || !strings.HasPrefix(rest, "-") {
				return 0, fmt.Errorf("workers %q: want a number, max, or max-N", s)
			}
		}
		return resolveInstances(n, max(cpus, 1)), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("workers %q: want a number from 1, max, or max-N", s)
	}
	return n, nil
}

// sortedSettings returns the settings' names in a stable, readable order:
// the ones that say what runs first, then the rest alphabetically.
func sortedSettings(s map[string]string) []string {
	first := []string{"SOCKD_NAME", "SOCKD_COMMAND", "SOCKD_CWD", "SOCKD_WORKERS", "SOCKD_LISTEN"}
	rank := func(k string) int {
		for i, f := range first {
			if f == k {
				return i
			}
		}
		return len(first)
	}
	keys := sortedKeys(s)
	sort.SliceStable(keys, func(i, j int) bool { return rank(keys[i]) < rank(keys[j]) })
	return keys
}
