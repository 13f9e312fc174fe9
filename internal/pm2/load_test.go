package pm2

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fileCase loads one ecosystem file of testdata with the real node and
// checks one of its apps.
type fileCase struct {
	name    string
	file    string // below testdata/
	envName string
	cpus    int
	app     string

	err    error    // the kind expected, nil: success
	errHas []string // parts of the error message

	command  []string          // $NODE, $DIR (testdata/apps), $BIN (stand-in interpreters)
	mode     string            // exec mode
	settings map[string]string // a subset of Settings(); "" means absent
	env      map[string]string // the whole of Env
	warn     []string          // parts of App.Warning; nil: no warning
	names    []string          // the file's apps
}

func TestLoadFiles(t *testing.T) {
	cases := []fileCase{
		{
			name: "pm2 init simple", file: "apps/simple.config.js", names: []string{"app1"},
			command: []string{"$NODE", "$DIR/server.js"}, mode: "fork",
			settings: map[string]string{"SOCKD_NAME": "app1", "SOCKD_WORKERS": "1", "SOCKD_LISTEN": "none", "SOCKD_READY": "after:1s",
				"SOCKD_CWD": "$DIR", "SOCKD_STOP_SIGNAL": "INT", "SOCKD_INSTANCE_VAR": "NODE_APP_INSTANCE,pm_id", "SOCKD_COMMAND": "$NODE $DIR/server.js",
				"SOCKD_STOP_TIMEOUT": "", "SOCKD_READY_TIMEOUT": "", "SOCKD_RESTART_LIMIT": "", "SOCKD_WORKER_MAX_MEMORY": ""},
			env: map[string]string{},
		},
		{
			name: "documented cluster app, env", file: "apps/docs.config.js",
			command: []string{"$NODE", "--max-old-space-size=512", "--enable-source-maps", "$DIR/server.js", "--color", `--title="My API"`, "two words"},
			mode:    "cluster",
			settings: map[string]string{"SOCKD_WORKERS": "max", "SOCKD_LISTEN": "http=tcp://:3000", "SOCKD_READY": "node-ipc", "SOCKD_READY_TIMEOUT": "10s",
				"SOCKD_STOP_TIMEOUT": "5s", "SOCKD_WORKER_MAX_MEMORY": "300M", "SOCKD_RESTART_LIMIT": "5/10s",
				"SOCKD_COMMAND": `$NODE --max-old-space-size=512 --enable-source-maps $DIR/server.js --color '--title="My API"' 'two words'`},
			env:  map[string]string{"NODE_ENV": "development", "PORT": "3000"},
			warn: []string{"ignored, sockd does not do them: error_file, log_date_format, merge_logs, out_file"},
		},
		{
			name: "documented cluster app, env_production, 4 CPUs", file: "apps/docs.config.js", envName: "production", cpus: 4,
			settings: map[string]string{"SOCKD_WORKERS": "4", "SOCKD_LISTEN": "http=tcp://:8080"},
			env:      map[string]string{"NODE_ENV": "production", "PORT": "8080", "DATABASE_URL": "postgres://app:s3cr3t@db/app"},
			warn:     []string{"out_file"},
		},
		{
			name: "several apps, none chosen", file: "apps/multi.config.js",
			err: ErrAppRequired, errHas: []string{"multi.config.js: 3 apps, choose one", `"web", "consumer", "nightly"`},
		},
		{
			name: "several apps, unknown one", file: "apps/multi.config.js", app: "nope",
			err: ErrUnknownApp, errHas: []string{`no app named "nope"`, `"web", "consumer", "nightly"`},
		},
		{
			name: "instances -1 on 2 CPUs", file: "apps/multi.config.js", app: "web", cpus: 2,
			command: []string{"$NODE", "$DIR/server.js"}, mode: "cluster",
			settings: map[string]string{"SOCKD_WORKERS": "1", "SOCKD_LISTEN": "http=tcp://:4000"},
			env:      map[string]string{"PORT": "4000"},
		},
		{
			name: "instances -1, CPUs left to sockd", file: "apps/multi.config.js", app: "web",
			settings: map[string]string{"SOCKD_WORKERS": "max-1"}, env: map[string]string{"PORT": "4000"},
		},
		{
			name: "fork mode queue consumer with env_production and deploy env", file: "apps/multi.config.js", app: "consumer", envName: "production",
			command: []string{"$NODE", "$DIR/worker.js"}, mode: "fork",
			settings: map[string]string{"SOCKD_WORKERS": "4", "SOCKD_LISTEN": "none", "SOCKD_INSTANCE_VAR": "INSTANCE_ID,pm_id"},
			env:      map[string]string{"QUEUE": "jobs", "DEPLOYED": "yes"},
		},
		{
			name: "cron_restart daily", file: "apps/multi.config.js", app: "nightly", envName: "production",
			settings: map[string]string{"SOCKD_WORKER_MAX_AGE": "24h+-2h24m", "SOCKD_WORKERS": "1"},
			env:      map[string]string{"QUEUE": "nightly", "DEPLOYED": "yes"},
			warn:     []string{`cron_restart "0 3 * * *" becomes --worker-max-age 24h+-2h24m`},
		},
		{
			name: "env name no app has", file: "apps/multi.config.js", envName: "staging",
			err: ErrInvalid, errHas: []string{`env "staging": no app has env_staging (the file has: env_production)`},
		},
		{
			name: "env name some apps lack", file: "apps/multi.config.js", app: "web", envName: "production",
			env: map[string]string{"PORT": "4000", "DEPLOYED": "yes"}, warn: []string{"no env_production, so env alone applies"},
		},
		{name: "exports an array", file: "apps/array.config.js", app: "b", names: []string{"a", "b"}, command: []string{"$NODE", "$DIR/worker.js"}},
		{
			name: "apps is one object, port field", file: "apps/single.config.js", names: []string{"solo"},
			settings: map[string]string{"SOCKD_LISTEN": "http=tcp://:5000"}, env: map[string]string{"PORT": "5000"},
		},
		{
			name: "exports one app, name from the script", file: "apps/bare.config.cjs", names: []string{"worker"},
			mode: "cluster", settings: map[string]string{"SOCKD_WORKERS": "2", "SOCKD_LISTEN": "none"},
		},
		{
			name: "ES module with top-level await", file: "apps/esm.config.mjs",
			settings: map[string]string{"SOCKD_WORKERS": "3", "SOCKD_LISTEN": "http=tcp://:7000"},
		},
		{
			name: "ES module .js in a type:module package", file: "apps/module/ecosystem.config.js",
			command: []string{"$NODE", "$DIR/server.js"}, settings: map[string]string{"SOCKD_CWD": "$DIR/module"},
		},
		{
			name: "strict JSON", file: "apps/docs.json",
			command: []string{"$NODE", "$DIR/server.js", "--color", "--title=My API", "42"}, mode: "cluster",
			settings: map[string]string{"SOCKD_WORKERS": "4", "SOCKD_WORKER_MAX_MEMORY": "256M", "SOCKD_READY": "node-ipc"},
			env:      map[string]string{"NODE_ENV": "development", "PORT": "3000", "FLAGS": `{"a":[1,2]}`, "RATIO": "0.5", "BIG": "1e+21", "DEBUG": "false"},
		},
		{name: "JSON with comments, evaluated as PM2 does", file: "apps/loose.json", settings: map[string]string{"SOCKD_WORKERS": "2", "SOCKD_NAME": "loose"}},
		{
			name: "script without extension is node's", file: "apps/www.config.js", app: "www",
			command: []string{"$NODE", "$DIR/bin/www"}, mode: "cluster", settings: map[string]string{"SOCKD_LISTEN": "http=tcp://:3001"},
		},
		{name: ".sh runs with bash", file: "apps/www.config.js", app: "sh", command: []string{"$BIN/bash", "$DIR/scripts/run.sh"}, mode: "fork"},
		{
			name: ".py runs with python3 where there is no python", file: "apps/www.config.js", app: "py",
			command: []string{"$BIN/python3", "$DIR/tasks/job.py"}, mode: "fork", env: map[string]string{"PYTHONUNBUFFERED": "1"},
			settings: map[string]string{"SOCKD_WORKERS": "2"},
		},
		{name: "a script with a space is a shell command", file: "apps/www.config.js", app: "cmd", command: []string{"$BIN/bash", "-c", "node server.js --port 3002"}},

		{name: "syntax error", file: "bad/syntax.config.js", err: ErrSyntax, errHas: []string{"bad/syntax.config.js:4: SyntaxError: Unexpected identifier 'script'"}},
		{name: "throws while evaluated", file: "bad/throws.config.js", err: ErrSyntax, errHas: []string{"bad/throws.config.js:1: Error: Cannot find module './missing-settings'"}},
		{name: "syntax error in an ES module", file: "bad/syntax.config.mjs", err: ErrSyntax, errHas: []string{"bad/syntax.config.mjs:2: SyntaxError: Unexpected identifier 'oops'"}},
		{name: "exports a function", file: "bad/function.config.js", err: ErrNoApps, errHas: []string{"module.exports is a function, which PM2 does not call"}},
		{name: "exports a promise", file: "bad/promise.config.js", err: ErrNoApps, errHas: []string{"module.exports is a promise"}},
		{name: "empty apps", file: "bad/empty.config.js", err: ErrNoApps, errHas: []string{"no apps: the apps list is empty"}},
		{name: "exports an empty object", file: "bad/nothing.config.js", err: ErrNoApps, errHas: []string{"no apps: want module.exports = {apps:"}},
		{name: "app without script", file: "bad/noscript.config.js", err: ErrInvalid, errHas: []string{"apps[0]: script is required"}},
		{name: "broken JSON", file: "bad/syntax.json", err: ErrSyntax, errHas: []string{"bad/syntax.json: not valid JSON: 4:"}},
		{name: "YAML", file: "bad/ecosystem.yml", err: ErrRead, errHas: []string{"YAML ecosystem files are not supported"}},
		{name: "autorestart false", file: "bad/autorestart.config.js", err: ErrInvalid, errHas: []string{`app "server": autorestart is false`}},
		{name: "exits while evaluated", file: "bad/exit.config.js", err: ErrSyntax, errHas: []string{"node exited (exit status 3) before the file was read"}},
		{name: "no such file", file: "bad/missing.config.js", err: ErrRead, errHas: []string{"missing.config.js: cannot read: no such file or directory"}},
		{name: "a directory", file: "apps", err: ErrRead, errHas: []string{"is a directory"}},
	}
	environ, bin := testEnv(t)
	node, dir := nodePath(t), testdata(t, "apps")
	expand := func(s string) string {
		return strings.NewReplacer("$NODE", node, "$DIR", dir, "$BIN", bin).Replace(s)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Load(context.Background(), Options{Path: testdata(t, c.file), EnvName: c.envName, CPUs: c.cpus, Environ: environ})
			var a *App
			if err == nil {
				if c.names != nil && !reflect.DeepEqual(f.Names(), c.names) {
					t.Errorf("names %q, want %q", f.Names(), c.names)
				}
				a, err = f.App(c.app)
			}
			if c.err != nil {
				checkErr(t, err, c.err, c.errHas...)
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			checkApp(t, a, c, expand)
		})
	}
}

func checkApp(t *testing.T, a *App, c fileCase, expand func(string) string) {
	t.Helper()
	if c.command != nil {
		want := make([]string, len(c.command))
		for i, w := range c.command {
			want[i] = expand(w)
		}
		if got := a.Command(); !reflect.DeepEqual(got, want) {
			t.Errorf("command %q, want %q", got, want)
		}
	}
	if c.mode != "" && a.ExecMode != c.mode {
		t.Errorf("exec mode %s, want %s", a.ExecMode, c.mode)
	}
	s := a.Settings()
	for k, v := range c.settings {
		got, ok := s[k]
		if v == "" && ok {
			t.Errorf("%s=%q, want it unset", k, got)
		} else if v != "" && got != expand(v) {
			t.Errorf("%s=%q, want %q", k, got, expand(v))
		}
	}
	if c.env != nil && !reflect.DeepEqual(a.Env, c.env) {
		t.Errorf("env %q, want %q", a.Env, c.env)
	}
	w := a.Warning()
	if c.warn == nil && w != "" {
		t.Errorf("warning %q, want none", w)
	}
	if strings.ContainsAny(w, "\r\n") {
		t.Errorf("warning is not one line: %q", w)
	}
	for _, part := range c.warn {
		if !strings.Contains(w, part) {
			t.Errorf("warning %q lacks %q", w, part)
		}
	}
}

// TestNodeMissing: a .js file needs node, a .json file does not.
func TestNodeMissing(t *testing.T) {
	env := []string{"PATH=/nonexistent"}
	_, err := Load(context.Background(), Options{Path: testdata(t, "apps/simple.config.js"), Environ: env})
	checkErr(t, err, ErrNodeMissing, "simple.config.js: node not found in PATH: install Node.js to read a .js ecosystem file, or use a .json one")

	// Strict JSON needs no node (the script is found; its interpreter
	// node is not, which App reports).
	f, err := Load(context.Background(), Options{Path: testdata(t, "apps/docs.json"), Environ: env})
	if err != nil {
		t.Fatalf("strict JSON without node: %v", err)
	}
	_, err = f.App("api")
	checkErr(t, err, ErrInvalid, `interpreter "node" not found`)

	// Loose JSON without node: the JSON parser's error.
	_, err = Load(context.Background(), Options{Path: testdata(t, "apps/loose.json"), Environ: env})
	checkErr(t, err, ErrSyntax, "loose.json: not valid JSON: 1:1: invalid character '/'")
}

// TestLoadIsRepeatable: loading twice gives the same apps and settings,
// as a reload needs.
func TestLoadIsRepeatable(t *testing.T) {
	for _, file := range []string{"apps/docs.config.js", "apps/docs.json", "apps/multi.config.js"} {
		var got [2][]map[string]string
		for i := range got {
			f, err := load(t, Options{Path: testdata(t, file), EnvName: "production"})
			if err != nil {
				t.Fatal(err)
			}
			apps, err := f.Apps()
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range apps {
				got[i] = append(got[i], a.Settings(), a.Env)
			}
		}
		if !reflect.DeepEqual(got[0], got[1]) {
			t.Errorf("%s: two loads differ:\n%v\n%v", file, got[0], got[1])
		}
	}
}

func TestSplitRef(t *testing.T) {
	dir := t.TempDir()
	colon := writeTestFile(t, dir+"/odd:name.json", "{}", 0o644)
	eco := writeTestFile(t, dir+"/eco.config.js", "{}", 0o644)
	if p, a := SplitRef(eco + ":api:v2"); p != eco || a != "api:v2" {
		t.Errorf("SplitRef of an app named with a colon = %q, %q", p, a)
	}
	if p, a := SplitRef(colon + ":web:blue"); p != colon || a != "web:blue" {
		t.Errorf("SplitRef of a file and an app both with a colon = %q, %q", p, a)
	}
	for _, c := range []struct{ in, path, app string }{
		{"eco.config.js", "eco.config.js", ""},
		{"eco.config.js:api", "eco.config.js", "api"},
		{"/srv/a:b/eco.json", "/srv/a:b/eco.json", ""},
		{"/srv/a:b/eco.json:web", "/srv/a:b/eco.json", "web"},
		{colon, colon, ""},
		{colon + ":x", colon, "x"},
	} {
		if p, a := SplitRef(c.in); p != c.path || a != c.app {
			t.Errorf("SplitRef(%q) = %q, %q; want %q, %q", c.in, p, a, c.path, c.app)
		}
	}
}

func TestBadDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nonexistent") // not /nonexistent: nobody's HOME, which something may have made
	_, err := load(t, Options{Path: testdata(t, "apps/docs.json"), Dir: dir})
	checkErr(t, err, ErrRead, fmt.Sprintf(`directory %q: not a directory`, dir))
}

// TestTypesOfEveryApp: like PM2, a bad field of any app fails the file,
// not only one of the app chosen.
func TestTypesOfEveryApp(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, dir+"/server.js", "//\n", 0o644)
	path := writeTestFile(t, dir+"/e.json", `{"apps":[{"name":"a","script":"server.js"},{"name":"b","script":"server.js","cwd":7}]}`, 0o644)
	_, err := load(t, Options{Path: path})
	checkErr(t, err, ErrInvalid, `app "b": cwd is a number: want a string`)
}
