package pm2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sockd/sockd/internal/reaper"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultMaxOutput = 4 << 20
)

// Options says how to read an ecosystem file. The zero value of every
// field but Path is a useful default.
type Options struct {
	// Path is the ecosystem file: .js or .cjs (CommonJS, evaluated with
	// node as PM2 requires it; an ES module too), .mjs (ES module, its
	// default export) or .json (parsed by Go; a file that is not strict
	// JSON is evaluated by node as PM2 does, when there is a node).
	Path string
	// EnvName picks the env_NAME set merged over env, as
	// `pm2 start FILE --env NAME`.
	EnvName string
	// Dir is where relative paths in the file (cwd, script, interpreter)
	// resolve and where node evaluates the file: PM2 uses the directory
	// `pm2 start` runs in. Default: the file's own directory, where PM2
	// users run it.
	Dir string
	// CPUs, when positive, is what instances 'max', 0 and -N resolve
	// against in Settings (pass the CPUs the service may use: its cgroup
	// quota, its cpuset). Zero keeps them symbolic there ("max", "max-1")
	// for sockd to resolve where it runs.
	CPUs int
	// Node is the node binary. Default: node in Environ's PATH.
	Node string
	// Environ is the environment the file is evaluated in (its
	// process.env) and whose PATH finds node, scripts and interpreters.
	// Default: this process's. sockd's own variables (LISTEN_*,
	// NOTIFY_SOCKET, NODE_CHANNEL_FD, …) never reach the file.
	Environ []string
	// Timeout bounds node's evaluation. Default: DefaultTimeout.
	Timeout time.Duration
	// MaxOutput bounds the JSON node hands back. Default: DefaultMaxOutput.
	MaxOutput int
	// Reaper is sockd's reaper, if it is a child subreaper: node is
	// started through it, so that it is not reaped as an adopted orphan,
	// and what the file leaves behind is reaped by it. nil: none.
	Reaper *reaper.Reaper

	abs string // Path made absolute
}

func (o *Options) path() string {
	for i := len(o.Environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(o.Environ[i], "PATH="); ok {
			return v
		}
	}
	return ""
}

func (o *Options) node() (string, error) {
	if o.Node != "" {
		return o.Node, nil
	}
	p, err := lookPath("node", o.path())
	if err != nil {
		return "", &Error{Kind: ErrNodeMissing, File: o.Path, Msg: "node not found in PATH: install Node.js to read a .js ecosystem file, or use a .json one", Err: err}
	}
	return p, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Path == "" {
		return o, newErr(ErrRead, "", "", "no ecosystem file given")
	}
	abs, err := filepath.Abs(o.Path)
	if err != nil {
		return o, &Error{Kind: ErrRead, File: o.Path, Msg: err.Error(), Err: err}
	}
	o.abs = abs
	if o.Dir == "" {
		o.Dir = filepath.Dir(abs)
	} else if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return o, &Error{Kind: ErrRead, File: o.Path, Msg: err.Error(), Err: err}
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	return o, nil
}

// File is a loaded ecosystem file: its apps, validated as PM2 validates
// every app of a file it starts (types and values of every field), but
// not yet resolved against the file system (App does that, for one app,
// as `pm2 start FILE --only NAME` does).
type File struct {
	// Path is the file as given in Options.
	Path string
	opts Options
	apps []*App
	// warnings about the file as a whole (unknown top-level keys, static).
	warnings []string
}

// Load reads an ecosystem file. It is a pure function of the file (and,
// for a .js file, of what the file's code reads): called again on every
// reload, it gives the same answer for the same input. Every error but
// ctx's is a *Error whose message is one line.
func Load(ctx context.Context, opts Options) (*File, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(o.abs)
	if err == nil && st.IsDir() {
		err = fmt.Errorf("is a directory")
	}
	if err != nil {
		return nil, &Error{Kind: ErrRead, File: o.Path, Msg: "cannot read: " + strings.TrimPrefix(err.Error(), "stat "+o.abs+": "), Err: err}
	}
	if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
		return nil, newErr(ErrRead, o.Path, "", "directory %s: not a directory", quote(o.Dir))
	}
	var v any
	switch ext := strings.ToLower(filepath.Ext(o.abs)); ext {
	case ".js", ".cjs", ".mjs":
		v, err = evalNode(ctx, &o, evalModule)
	case ".json":
		v, err = loadJSON(ctx, &o)
	case ".yml", ".yaml":
		return nil, newErr(ErrRead, o.Path, "", "YAML ecosystem files are not supported: write it as .json or .config.js")
	default:
		return nil, newErr(ErrRead, o.Path, "", "not an ecosystem file: want .js, .cjs, .mjs or .json")
	}
	if err != nil {
		return nil, err
	}
	return parse(v, o)
}

func loadJSON(ctx context.Context, o *Options) (any, error) {
	data, err := os.ReadFile(o.abs)
	if err != nil {
		return nil, &Error{Kind: ErrRead, File: o.Path, Msg: "cannot read: " + err.Error(), Err: err}
	}
	v, jerr := decodeJSON(data)
	if jerr == nil {
		return v, nil
	}
	// PM2 evaluates a .json file as a JavaScript expression, so comments,
	// single quotes and trailing commas work there: do the same when
	// there is a node, and report the JSON error otherwise.
	if _, nerr := o.node(); nerr == nil {
		if v, err := evalNode(ctx, o, evalExpression); err == nil {
			return v, nil
		} else if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, &Error{Kind: ErrSyntax, File: o.Path, Msg: "not valid JSON: " + jerr.Error(), Err: jerr}
}

const exportsNothing = "no apps: the file exports nothing, want module.exports = {apps: [...]}"

// parse finds the apps in what the file exports, as PM2's _startJson:
// {apps: [...]} (or {pm2: [...]}), an array of apps, or a single app; apps
// may be a single object too.
func parse(v any, o Options) (*File, error) {
	f := &File{Path: o.Path, opts: o}
	var list any
	var deploy map[string]any
	switch x := v.(type) {
	case map[string]any:
		if d, ok := x["deploy"].(map[string]any); ok {
			deploy = d
		}
		wrapped := true
		switch {
		case x["apps"] != nil:
			list = x["apps"]
		case x["pm2"] != nil:
			list = x["pm2"]
		default:
			wrapped = false
			if _, ok := x["script"]; !ok && !hasAppField(x) {
				return nil, newErr(ErrNoApps, o.Path, "", "no apps: want module.exports = {apps: [{name, script, ...}]}")
			}
			list = x
		}
		if wrapped {
			var unknown []string
			for k := range x {
				if !topLevel[k] {
					unknown = append(unknown, k)
				}
			}
			sort.Strings(unknown)
			if len(unknown) > 0 {
				f.warnings = append(f.warnings, "unknown top-level keys, ignored: "+quoteList(unknown))
			}
			if _, ok := x["static"]; ok {
				f.warnings = append(f.warnings, "static: PM2's static file servers are not supported, ignored")
			}
		}
	case []any:
		list = x
	case nil:
		return nil, newErr(ErrNoApps, o.Path, "", exportsNothing)
	default:
		return nil, newErr(ErrNoApps, o.Path, "", "no apps: the file exports a %s, want module.exports = {apps: [...]}", jsTypeName(v))
	}
	apps, ok := list.([]any)
	if !ok {
		apps = []any{list} // apps: {…} is one app
	}
	if len(apps) == 0 {
		return nil, newErr(ErrNoApps, o.Path, "", "no apps: the apps list is empty")
	}
	seen := map[string]int{}
	for i, e := range apps {
		obj, ok := e.(map[string]any)
		if !ok {
			return nil, newErr(ErrInvalid, o.Path, "", "apps[%d] is a %s: want an object with a script", i, jsTypeName(e))
		}
		a, err := read(obj, i, o.Path, o.EnvName, deploy)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[a.Name]; dup {
			return nil, newErr(ErrInvalid, o.Path, a.Name, "two apps have this name (apps[%d] and apps[%d]); give them names of their own", j, i)
		}
		seen[a.Name] = i
		f.apps = append(f.apps, a)
	}
	if err := f.checkEnvName(deploy); err != nil {
		return nil, err
	}
	return f, nil
}

// hasAppField says whether an object without script looks like an app
// all the same, so that the error says script is missing.
func hasAppField(x map[string]any) bool {
	for k := range x {
		if c, ok := canonical[k]; ok && fields[c].treat == mapped {
			return true
		}
	}
	return false
}

// checkEnvName refuses an env name that no app and no deploy section
// knows: a typo would otherwise run production with development settings.
func (f *File) checkEnvName(deploy map[string]any) error {
	name := f.opts.EnvName
	if name == "" {
		return nil
	}
	have := map[string]bool{}
	for _, a := range f.apps {
		for k := range a.raw {
			if isEnvKey(k) {
				have[strings.TrimPrefix(k, "env_")] = true
			}
		}
	}
	if _, inDeploy := deploy[name]; have[name] || inDeploy {
		return nil
	}
	known := sortedKeys(have)
	sets := "none"
	if len(known) > 0 {
		sets = "env_" + strings.Join(known, ", env_")
	}
	return newErr(ErrInvalid, f.Path, "", "env %s: no app has env_%s (the file has: %s)", quote(name), name, sets)
}

// Names lists the apps' names in the file's order.
func (f *File) Names() []string {
	names := make([]string, len(f.apps))
	for i, a := range f.apps {
		names[i] = a.Name
	}
	return names
}

// Warning is the one line about the file as a whole, "" when there is
// nothing to say. Each app has its own (App.Warning).
func (f *File) Warning() string {
	if len(f.warnings) == 0 {
		return ""
	}
	return oneLine(f.Path + ": " + strings.Join(f.warnings, "; "))
}

// App resolves one app as `pm2 start FILE --only NAME` would: the script
// and interpreter found, the working directory checked, the exec mode
// chosen. name "" picks the only app of a file that has one.
func (f *File) App(name string) (*App, error) {
	var a *App
	if name == "" {
		if len(f.apps) > 1 {
			return nil, newErr(ErrAppRequired, f.Path, "", "%d apps, choose one (FILE:APP): %s", len(f.apps), quoteList(f.Names()))
		}
		a = f.apps[0]
	} else {
		for _, x := range f.apps {
			if x.Name == name {
				a = x
			}
		}
		if a == nil {
			return nil, newErr(ErrUnknownApp, f.Path, "", "no app named %s; the file has %s", quote(name), quoteList(f.Names()))
		}
	}
	c := a.clone()
	if err := c.locate(&f.opts); err != nil {
		return nil, err
	}
	c.cpus = f.opts.CPUs
	return c, nil
}

// Apps resolves every app of the file, in its order.
func (f *File) Apps() ([]*App, error) {
	out := make([]*App, 0, len(f.apps))
	for _, a := range f.apps {
		c, err := f.App(a.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (a *App) clone() *App {
	c := *a
	c.Env = make(map[string]string, len(a.Env))
	for k, v := range a.Env {
		c.Env[k] = v
	}
	c.Args = append([]string(nil), a.Args...)
	c.InterpreterArgs = append([]string(nil), a.InterpreterArgs...)
	c.Notes = append([]string(nil), a.Notes...)
	return &c
}

// SplitRef splits sockd's FILE[:APP] argument. A name that is an existing
// file is a FILE alone, so a path holding a colon works; else the FILE is
// the shortest prefix before a colon that is an existing file, so an app
// named with a colon ("api:v2") works; else the last colon splits.
func SplitRef(s string) (path, app string) {
	if _, err := os.Stat(s); err == nil {
		return s, ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ':' || i == 0 {
			continue
		}
		if st, err := os.Stat(s[:i]); err == nil && st.Mode().IsRegular() {
			return s[:i], s[i+1:]
		}
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 && !strings.Contains(s[i+1:], "/") {
		return s[:i], s[i+1:]
	}
	return s, ""
}
