package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sockd/sockd/internal/pm2"
	"github.com/sockd/sockd/internal/reaper"
	"github.com/sockd/sockd/pool"
)

// Source is where a configuration comes from: the command line, which
// never changes while sockd runs, and an environment, which may (the env
// files re-read at a reload, or the reload client's environment with
// `sockd reload --update-env`).
type Source struct {
	Args    []string // sockd run's arguments
	Environ []string // KEY=VALUE, as os.Environ
	// Self is sockd's own binary, for the built-in demo worker.
	Self string
	// Reaper, if set, is sockd's (a child subreaper's): an ecosystem
	// file's node runs through it (internal/pm2).
	Reaper *reaper.Reaper
}

// Load reads the whole configuration: the flags, then every setting not
// given as a flag from the environment, where the env files'
// (--env-file) variables stand over Environ; the command from the
// arguments or SOCKD_COMMAND. It checks what can be checked before
// anything starts: every value, that the command exists and is
// executable (by --user, if given), that --cwd is a directory. Errors are
// one line naming the setting, of kind ErrUsage.
func Load(src Source) (*Run, error) {
	first, err := Parse(src.Args, lookup(src.Environ))
	if err != nil {
		return nil, err
	}
	env := append([]string(nil), src.Environ...)
	for _, f := range first.EnvFiles {
		vars, err := ReadEnvFile(f)
		if err != nil {
			return nil, Usagef("--env-file: %v", err)
		}
		env = mergeEnv(env, vars...)
	}
	r := first
	if len(first.EnvFiles) > 0 {
		if r, err = Parse(src.Args, lookup(env)); err != nil {
			return nil, err
		}
	}
	var app *pm2.App
	if r.PM2 != "" {
		// The ecosystem file's settings stand over the environment's,
		// the command line's over both.
		path, name := pm2.SplitRef(r.PM2)
		f, err := pm2.Load(context.Background(), pm2.Options{Path: path, EnvName: r.PM2Env, Environ: env, Reaper: src.Reaper})
		if err != nil {
			return nil, Usagef("--pm2 %s: %v", r.PM2, err)
		}
		if app, err = f.App(name); err != nil {
			return nil, Usagef("--pm2 %s: %v", r.PM2, err)
		}
		warns := []string{f.Warning(), app.Warning()}
		settings := app.Settings()
		if app.Port == 0 && app.NodeLike() && !app.WaitReady && len(r.Listen) > 0 && !r.NoListeners() {
			// No env.PORT, but sockd listens for it (--listen, or the
			// environment's SOCKD_LISTEN): ready once it listens there.
			settings["SOCKD_READY"] = "node-listen"
		}
		if r, err = Parse(src.Args, pm2.Getenv(settings, lookup(env))); err != nil {
			return nil, err
		}
		for _, w := range warns {
			if w != "" {
				r.Warnings = append(r.Warnings, w)
			}
		}
		env = app.Environ(env)
		if err := r.checkWarmup(); err != nil {
			return nil, err
		}
	}
	r.Env, r.Base = env, src.Environ
	r.Warnings = append(r.Warnings, unknownSettings(env)...)
	if len(r.Command) == 0 && app != nil {
		r.Command = app.Command()
	}
	if len(r.Command) == 0 {
		if c := lookup(env)("SOCKD_COMMAND"); c != "" {
			if r.Command, err = SplitCommand(c); err != nil {
				return nil, Usagef("SOCKD_COMMAND: %v", err)
			}
		}
	}
	if len(r.Command) == 0 {
		r.Command = []string{src.Self, "demo-worker"}
		if r.Name == "" {
			r.Name = "sockd-demo"
		}
	} else if err := r.checkCommand(); err != nil {
		return nil, err
	}
	if r.Name == "" {
		r.Name = filepath.Base(r.Command[0])
	}
	return r, nil
}

// otherVars are SOCKD_ variables that are not settings of sockd run but
// are sockd's all the same: the client commands' flags, what sockd tells
// workers, its own plumbing.
var otherVars = map[string]bool{"SOCKD_COMMAND": true, "SOCKD_WAIT": true, "SOCKD_TIMEOUT": true, "SOCKD_JSON": true,
	"SOCKD_CHECK": true, "SOCKD_UPDATE_ENV": true, "SOCKD_INTERVAL": true, "SOCKD_N": true, "SOCKD_WORKER": true,
	"SOCKD_GENERATION": true, "SOCKD_WORKER_ID": true, "SOCKD_METRICS_SOCKET": true, "SOCKD_UPGRADE_FD": true,
	"SOCKD_CGROUP_GATE": true, "SOCKD_FOLLOW": true, "SOCKD_LINES": true, "SOCKD_KEEPER": true}

// unknownSettings names the SOCKD_ variables of env that are no setting:
// a typo (SOCKD_WOKRERS=4) would otherwise be ignored without a word.
func unknownSettings(env []string) []string {
	known := map[string]bool{}
	for _, s := range settings {
		known[s.Var()] = true
	}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SOCKD_") && !known[k] && !otherVars[k] && !strings.HasPrefix(k, "SOCKD_NODE_") {
			out = append(out, fmt.Sprintf("%s is not a setting of sockd run (a typo? sockd run --help lists them); ignored", k))
		}
	}
	sort.Strings(out)
	return out
}

// Demo reports whether the workers are the built-in demo worker.
func (r *Run) Demo() bool { return len(r.Command) == 2 && r.Command[1] == "demo-worker" }

func (r *Run) checkCommand() error {
	path, err := pool.ResolveCommand(r.Command[0], r.Dir)
	if err != nil {
		return usageError{err.Error()}
	}
	if r.User != nil {
		if err := r.User.CanExecute(path); err != nil {
			return usageError{err.Error()}
		}
	}
	return nil
}

func lookup(env []string) func(string) string {
	return func(k string) string {
		for i := len(env) - 1; i >= 0; i-- {
			if ek, v, ok := strings.Cut(env[i], "="); ok && ek == k {
				return v
			}
		}
		return ""
	}
}

// SplitCommand splits a command line into words as a POSIX shell would,
// without expanding anything: white space separates words; '…' keeps
// everything verbatim; "…" takes \ before " \ ` $; \ outside quotes keeps
// the next character. SOCKD_COMMAND="/srv/app --title 'two words'" is
// three words.
func SplitCommand(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated '")
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			inWord = true
			for i++; ; i++ {
				if i >= len(s) {
					return nil, errors.New(`unterminated "`)
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\`$", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
		case c == '\\':
			if i+1 < len(s) {
				i++
				w.WriteByte(s[i])
			}
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// processVars are variables systemd sets for each process it starts (or
// that describe sockd's own place), which a reload client's environment
// must not hand to the workers: the running sockd keeps its own.
var processVars = []string{"MAINPID", "MANAGERPID", "SYSTEMD_EXEC_PID", "JOURNAL_STREAM", "INVOCATION_ID",
	"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC",
	"SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "PIDFILE", "TRIGGER_UNIT", "TRIGGER_PATH", "TRIGGER_TIMER_REALTIME_USEC",
	"TRIGGER_TIMER_MONOTONIC_USEC", "MONITOR_SERVICE_RESULT", "MONITOR_EXIT_CODE", "MONITOR_EXIT_STATUS",
	"MONITOR_INVOCATION_ID", "MONITOR_UNIT", "MEMORY_PRESSURE_WATCH", "MEMORY_PRESSURE_WRITE", "_"}

// ReloadEnviron is the environment a reload reads its configuration
// from, given sockd's own (own) and the reload client's (client): the
// client's, but for the variables that are a process's own (MAINPID,
// JOURNAL_STREAM, …), which keep sockd's values.
func ReloadEnviron(own, client []string) []string {
	per := map[string]bool{}
	for _, k := range processVars {
		per[k] = true
	}
	var env []string
	for _, kv := range client {
		if k, _, _ := strings.Cut(kv, "="); !per[k] {
			env = append(env, kv)
		}
	}
	for _, kv := range own {
		if k, _, _ := strings.Cut(kv, "="); per[k] {
			env = append(env, kv)
		}
	}
	return env
}

// Change is one difference between two configurations.
type Change struct {
	Setting string `json:"setting"`        // --workers, the command, or a variable's name
	From    string `json:"from,omitempty"` // "" where secret, or new
	To      string `json:"to,omitempty"`   // "" where secret, or removed
	Secret  bool   `json:"secret,omitempty"`
}

func (c Change) String() string {
	switch {
	case c.Secret:
		return c.Setting + " changed"
	case c.From == "":
		return fmt.Sprintf("%s %q added", c.Setting, c.To)
	case c.To == "":
		return fmt.Sprintf("%s %q removed", c.Setting, c.From)
	}
	return fmt.Sprintf("%s %q → %q", c.Setting, c.From, c.To)
}

// Secret reports whether a variable's value must not be shown: names
// like *_KEY, *_TOKEN, *_SECRET or *PASSWORD* (any case).
func Secret(name string) bool {
	u := strings.ToUpper(name)
	return strings.HasSuffix(u, "_KEY") || strings.HasSuffix(u, "_TOKEN") || strings.HasSuffix(u, "_SECRET") ||
		strings.Contains(u, "PASSWORD") || strings.Contains(u, "PASSWD") || u == "KEY" || u == "TOKEN" || u == "SECRET"
}

// Diff lists what changed from old to r: settings, the command, and the
// workers' variables (sockd's own SOCKD_ ones are the settings), secrets
// without their values.
func (r *Run) Diff(old *Run) []Change {
	var out []Change
	for _, s := range settings {
		a, b := s.value(old).String(), s.value(r).String()
		if a != b {
			out = append(out, Change{Setting: "--" + s.Name, From: a, To: b})
		}
	}
	if a, b := strings.Join(quoteAll(old.Command), " "), strings.Join(quoteAll(r.Command), " "); a != b {
		out = append(out, Change{Setting: "command", From: a, To: b})
	}
	was, is := appVars(old.Env), appVars(r.Env)
	var names []string
	for k := range was {
		names = append(names, k)
	}
	for k := range is {
		if _, ok := was[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		a, inA := was[k]
		b, inB := is[k]
		if inA && inB && a == b {
			continue
		}
		c := Change{Setting: k, From: a, To: b, Secret: Secret(k)}
		if c.Secret {
			c.From, c.To = "", ""
		}
		out = append(out, c)
	}
	return out
}

// RestartNeeded names the changed settings a reload cannot apply.
func (r *Run) RestartNeeded(old *Run) []string {
	var names []string
	for _, s := range settings {
		if s.Restart && s.value(old).String() != s.value(r).String() {
			names = append(names, "--"+s.Name)
		}
	}
	return names
}

// appVars are the variables the workers see and sockd does not read.
func appVars(env []string) map[string]string {
	m := map[string]string{}
	per := map[string]bool{}
	for _, k := range processVars {
		per[k] = true
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "SOCKD_") && !per[k] {
			m[k] = v
		}
	}
	return m
}

func quoteAll(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		if w != "" && !strings.ContainsAny(w, " \t\n'\"\\$`") {
			out[i] = w
		} else {
			out[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return out
}

// Revision is a short hash of everything that makes the configuration:
// two configurations with the same revision run the same workers the
// same way.
func (r *Run) Revision() string {
	h := sha256.New()
	for _, s := range settings {
		fmt.Fprintf(h, "%s=%q\n", s.Name, s.value(r).String())
	}
	fmt.Fprintf(h, "command=%q\n", r.Command)
	vars := appVars(r.Env)
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(h, "env %s=%q\n", k, vars[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// Settings as the status shows them: every setting with a value, secrets
// hidden (none of sockd's own is one).
func (r *Run) Values() map[string]string {
	m := map[string]string{}
	for _, s := range settings {
		if v := s.value(r).String(); v != "" && v != "false" {
			m[s.Name] = v
		}
	}
	return m
}

// CommandLine is the command as one line, quoted where needed.
func (r *Run) CommandLine() string { return strings.Join(quoteAll(r.Command), " ") }
