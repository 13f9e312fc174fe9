package pm2

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fieldCase is one app object (JSON) and what it must resolve to.
type fieldCase struct {
	name    string
	app     string // the JSON object of one app
	top     string // or the whole file, when set
	envName string
	cpus    int

	err    error
	errHas []string

	command  []string
	mode     string
	settings map[string]string // "" means absent
	env      map[string]string
	warn     []string // nil: none
	noWarn   []string // must not be in the warning
	fileWarn []string
}

func TestFields(t *testing.T) {
	cases := []fieldCase{
		// instances
		{name: "instances 4", app: `{"script":"server.js","instances":4}`, mode: "cluster", settings: map[string]string{"SOCKD_WORKERS": "4"}},
		{name: "instances as a string", app: `{"script":"server.js","instances":"4"}`, settings: map[string]string{"SOCKD_WORKERS": "4"}},
		{name: "instances 2.7 is 2", app: `{"script":"server.js","instances":2.7}`, settings: map[string]string{"SOCKD_WORKERS": "2"}},
		{name: "instances max, symbolic", app: `{"script":"server.js","instances":"max"}`, mode: "cluster", settings: map[string]string{"SOCKD_WORKERS": "max"}},
		{name: "instances max on 6 CPUs", cpus: 6, app: `{"script":"server.js","instances":"max"}`, settings: map[string]string{"SOCKD_WORKERS": "6"}},
		{name: "instances 0 is max", cpus: 3, app: `{"script":"server.js","instances":0}`, mode: "cluster", settings: map[string]string{"SOCKD_WORKERS": "3"}},
		{name: "instances -1 on 4 CPUs", cpus: 4, app: `{"script":"server.js","instances":-1}`, mode: "cluster", settings: map[string]string{"SOCKD_WORKERS": "3"}},
		{name: "instances -2 is fork mode under PM2", app: `{"script":"server.js","instances":-2}`, mode: "fork", settings: map[string]string{"SOCKD_WORKERS": "max-2"}},
		{name: "instances -8 on 4 CPUs is 1", cpus: 4, app: `{"script":"server.js","instances":-8}`, settings: map[string]string{"SOCKD_WORKERS": "1"}},
		{name: "no instances: once, fork", app: `{"script":"server.js"}`, mode: "fork", settings: map[string]string{"SOCKD_WORKERS": "1"}},
		{name: "instances garbage", app: `{"script":"server.js","instances":"lots"}`, err: ErrInvalid, errHas: []string{`app "server": instances "lots": want a number, 'max'`}},
		{name: "instances boolean", app: `{"script":"server.js","instances":true}`, err: ErrInvalid, errHas: []string{"instances true"}},

		// exec mode
		{name: "fork_mode spelled out", app: `{"script":"server.js","instances":2,"exec_mode":"fork_mode"}`, mode: "fork"},
		{name: "cluster_mode spelled out", app: `{"script":"server.js","exec_mode":"cluster_mode"}`, mode: "cluster"},
		{name: "bad exec_mode", app: `{"script":"server.js","exec_mode":"threads"}`, err: ErrInvalid, errHas: []string{`exec_mode "threads": want cluster or fork`}},
		{name: "execute_command is fork", app: `{"script":"server.js","instances":2,"execute_command":true}`, mode: "fork"},
		{name: "fork, several instances, a port", app: `{"script":"server.js","instances":2,"exec_mode":"fork","env":{"PORT":3000}}`,
			err: ErrInvalid, errHas: []string{"exec_mode fork with instances 2 and PORT 3000", "set exec_mode: 'cluster'"}},
		{name: "fork, max instances, a port", app: `{"script":"server.js","instances":"max","exec_mode":"fork","port":3000}`,
			err: ErrInvalid, errHas: []string{"exec_mode fork with instances max and PORT 3000"}},
		{name: "fork, one instance, a port", app: `{"script":"server.js","exec_mode":"fork","env":{"PORT":3000}}`, mode: "fork", settings: map[string]string{"SOCKD_LISTEN": "http=tcp://:3000"}},
		{name: "fork, several instances, no port", app: `{"script":"worker.js","instances":3,"exec_mode":"fork"}`, mode: "fork", settings: map[string]string{"SOCKD_WORKERS": "3", "SOCKD_LISTEN": "none"}},

		// args
		{name: "args string", app: `{"script":"server.js","args":"--a=\"b c\" 'd e' \"f g\" h  \"\" '  ' i\\j"}`,
			command: []string{"$NODE", "$DIR/server.js", `--a="b c"`, "d e", "f g", "h", `i\j`}},
		{name: "args array of scalars", app: `{"script":"server.js","args":["a b",2,true,null,1.5]}`, command: []string{"$NODE", "$DIR/server.js", "a b", "2", "true", "null", "1.5"}},
		{name: "args object", app: `{"script":"server.js","args":{"a":1}}`, err: ErrInvalid, errHas: []string{"args is a object: want an array or a string"}},
		{name: "args array holding an array", app: `{"script":"server.js","args":[["x"]]}`, err: ErrInvalid, errHas: []string{"args[0] is an array"}},
		{name: "node_args", app: `{"script":"server.js","node_args":"--inspect --max-old-space-size=4096"}`, command: []string{"$NODE", "--inspect", "--max-old-space-size=4096", "$DIR/server.js"}},
		{name: "interpreter_args alias", app: `{"script":"server.js","interpreter_args":["--trace-warnings"]}`, command: []string{"$NODE", "--trace-warnings", "$DIR/server.js"}},
		{name: "interpreterArgs alias", app: `{"script":"server.js","interpreterArgs":"--no-warnings"}`, command: []string{"$NODE", "--no-warnings", "$DIR/server.js"}},

		// script and interpreter
		{name: "script in PATH, text: node runs it", app: `{"script":"npm-like","args":"start"}`, command: []string{"$NODE", "$BIN/npm-like", "start"}},
		{name: "script not found", app: `{"script":"nope.js"}`, err: ErrInvalid, errHas: []string{`app "nope": script not found: $DIR/nope.js`}},
		{name: "serve", app: `{"script":"serve","name":"static"}`, err: ErrInvalid, errHas: []string{"PM2's own static file server"}},
		{name: "interpreter python3", app: `{"script":"worker.js","interpreter":"python3"}`, command: []string{"$BIN/python3", "$DIR/worker.js"}, env: map[string]string{"PYTHONUNBUFFERED": "1"}},
		{name: "python3 on a port", app: `{"script":"worker.js","interpreter":"python3","env":{"PORT":8000}}`, command: []string{"$BIN/python3", "$DIR/worker.js"},
			env: map[string]string{"PYTHONUNBUFFERED": "1", "PORT": "8000"}, warn: []string{"it runs with python3, not Node.js: sockd binds PORT 8000 and hands the socket to each worker as fd 3"}},
		{name: "interpreter by absolute path", app: `{"script":"worker.js","exec_interpreter":"$BIN/ruby"}`, command: []string{"$BIN/ruby", "$DIR/worker.js"}},
		{name: "interpreter missing", app: `{"script":"worker.js","interpreter":"deno"}`, err: ErrInvalid, errHas: []string{`interpreter "deno" not found`}},
		{name: "interpreter node@16", app: `{"script":"worker.js","interpreter":"node@16.20.0"}`, err: ErrInvalid, errHas: []string{"does not install Node.js versions"}},
		{name: "interpreter none, executable", app: `{"script":"prog","interpreter":"none","args":["-x"]}`, command: []string{"$DIR/prog", "-x"}, mode: "fork"},
		{name: "not node: ready after min_uptime", app: `{"script":"prog","interpreter":"none"}`, settings: map[string]string{"SOCKD_READY": "after:1s"}},
		{name: "a binary runs directly", app: `{"script":"prog","instances":2}`, command: []string{"$DIR/prog"}, mode: "fork"},
		{name: "interpreter none, not executable", app: `{"script":"worker.js","interpreter":"none"}`, err: ErrInvalid, errHas: []string{"runs directly (interpreter none) but is not executable"}},
		{name: "cmd alias of script", app: `{"cmd":"worker.js"}`, command: []string{"$NODE", "$DIR/worker.js"}},

		// cwd
		{name: "cwd relative to the file", app: `{"script":"main.js","cwd":"sub"}`, command: []string{"$NODE", "$DIR/sub/main.js"}, settings: map[string]string{"SOCKD_CWD": "$DIR/sub"}},
		{name: "cwd missing", app: `{"script":"server.js","cwd":"nope"}`, err: ErrInvalid, errHas: []string{"cwd $DIR/nope is not a directory"}},
		{name: "cwd with a tilde", app: `{"script":"server.js","cwd":"~/app"}`, err: ErrInvalid, errHas: []string{"PM2 does not expand ~ either"}},

		// readiness, timeouts, limits
		{name: "wait_ready", app: `{"script":"server.js","wait_ready":true,"listen_timeout":"8000"}`, settings: map[string]string{"SOCKD_READY": "node-ipc", "SOCKD_READY_TIMEOUT": "8s"}},
		{name: "waitReady camelCase", app: `{"script":"server.js","waitReady":true}`, settings: map[string]string{"SOCKD_READY": "node-ipc", "SOCKD_READY_TIMEOUT": ""}},
		{name: "listen_timeout without wait_ready", app: `{"script":"server.js","listen_timeout":5000,"env":{"PORT":3000}}`, settings: map[string]string{"SOCKD_READY": "node-listen", "SOCKD_READY_TIMEOUT": ""}},
		{name: "no port: ready after min_uptime", app: `{"script":"worker.js","instances":2}`, settings: map[string]string{"SOCKD_READY": "after:1s", "SOCKD_LISTEN": "none"}},
		{name: "ts-node listens", app: `{"script":"app.ts","interpreter":"ts-node","env":{"PORT":3000}}`, settings: map[string]string{"SOCKD_READY": "node-listen"}},
		{name: "wait_ready not a boolean", app: `{"script":"server.js","wait_ready":"yes"}`, err: ErrInvalid, errHas: []string{`wait_ready is a string: want true or false`}},
		{name: "kill_timeout", app: `{"script":"server.js","killTimeout":8000}`, settings: map[string]string{"SOCKD_STOP_TIMEOUT": "8s", "SOCKD_STOP_SIGNAL": "INT"}},
		{name: "kill_timeout 1600.5", app: `{"script":"server.js","kill_timeout":1600.5}`, settings: map[string]string{"SOCKD_STOP_TIMEOUT": "1.6005s"}},
		{name: "kill_timeout negative", app: `{"script":"server.js","kill_timeout":-1}`, err: ErrInvalid, errHas: []string{"kill_timeout -1: want milliseconds"}},
		{name: "kill_timeout not a number", app: `{"script":"server.js","kill_timeout":"soon"}`, err: ErrInvalid, errHas: []string{"kill_timeout is a string: want a number"}},
		{name: "max_memory_restart 1G", app: `{"script":"server.js","max_memory_restart":"1G"}`, settings: map[string]string{"SOCKD_WORKER_MAX_MEMORY": "1G"}},
		{name: "max_memory_restart 512K", app: `{"script":"server.js","maxMemoryRestart":"512K"}`, settings: map[string]string{"SOCKD_WORKER_MAX_MEMORY": "512K"}},
		{name: "max_memory_restart bytes", app: `{"script":"server.js","max_memory_restart":1500}`, settings: map[string]string{"SOCKD_WORKER_MAX_MEMORY": "1500"}},
		{name: "max_memory_restart numeric string", app: `{"script":"server.js","max_memory_restart":"2097152"}`, settings: map[string]string{"SOCKD_WORKER_MAX_MEMORY": "2M"}},
		{name: "max_memory_restart 1.5G", app: `{"script":"server.js","max_memory_restart":"1.5G"}`, err: ErrInvalid, errHas: []string{`max_memory_restart "1.5G": want bytes, or NUMBER with K, M or G`}},
		{name: "max_memory_restart 200MB", app: `{"script":"server.js","max_memory_restart":"200MB"}`, err: ErrInvalid, errHas: []string{`"200MB"`}},
		{name: "min_uptime ms", app: `{"script":"server.js","min_uptime":500,"env":{"PORT":3000}}`, settings: map[string]string{"SOCKD_READY": "node-listen", "SOCKD_RESTART_LIMIT": "16/8s"}},
		{name: "min_uptime 1m, max_restarts 3", app: `{"script":"server.js","min_uptime":"1m","max_restarts":3,"env":{"PORT":3000}}`, settings: map[string]string{"SOCKD_READY": "node-listen", "SOCKD_RESTART_LIMIT": "3/3m"}},
		{name: "min_uptime 500 without a port", app: `{"script":"server.js","min_uptime":500}`, settings: map[string]string{"SOCKD_READY": "after:500ms"}},
		{name: "max_restarts 0", app: `{"script":"server.js","max_restarts":0}`, settings: map[string]string{"SOCKD_RESTART_LIMIT": "0/1s"}},
		{name: "min_uptime too small", app: `{"script":"server.js","min_uptime":"50"}`, err: ErrInvalid, errHas: []string{"min_uptime 50: want 100 milliseconds or more"}},
		{name: "min_uptime past a Go duration", app: `{"script":"server.js","min_uptime":"3000000h"}`, err: ErrInvalid, errHas: []string{`min_uptime "3000000h": want milliseconds`}},
		{name: "max_restarts negative", app: `{"script":"server.js","max_restarts":-1}`, err: ErrInvalid, errHas: []string{"max_restarts -1"}},

		// cron_restart
		{name: "cron every 30 minutes", app: `{"script":"server.js","cron_restart":"*/30 * * * *"}`, settings: map[string]string{"SOCKD_WORKER_MAX_AGE": "30m+-3m"}, warn: []string{"becomes --worker-max-age 30m+-3m"}},
		{name: "cron weekly", app: `{"script":"server.js","cron":"0 0 * * 0"}`, settings: map[string]string{"SOCKD_WORKER_MAX_AGE": "168h+-16h48m"}, warn: []string{"cron_restart"}},
		{name: "cron weekdays", app: `{"script":"server.js","cron_restart":"0 3 * * 1-5"}`, err: ErrInvalid, errHas: []string{`cron_restart "0 3 * * 1-5": sockd has no cron`, "systemd timer"}},
		{name: "cron 0 disables", app: `{"script":"server.js","cron_restart":0}`, settings: map[string]string{"SOCKD_WORKER_MAX_AGE": ""}},

		// names, instance var, user
		{name: "name from the script", app: `{"script":"server.js"}`, settings: map[string]string{"SOCKD_NAME": "server"}},
		{name: "append_env_to_name", envName: "production", app: `{"name":"api","script":"server.js","append_env_to_name":true,"env_production":{}}`, settings: map[string]string{"SOCKD_NAME": "api-production"}},
		{name: "instance_var", app: `{"script":"server.js","instance_var":"WORKER_ID"}`, settings: map[string]string{"SOCKD_INSTANCE_VAR": "WORKER_ID,pm_id"}},
		{name: "instance_var not a name", app: `{"script":"server.js","instance_var":"A B"}`, err: ErrInvalid, errHas: []string{`instance_var "A B"`}},
		{name: "uid and gid", app: `{"script":"server.js","uid":"app","gid":1001}`, settings: map[string]string{"SOCKD_USER": "app:1001"}},
		{name: "user alias", app: `{"script":"server.js","user":"www-data"}`, settings: map[string]string{"SOCKD_USER": "www-data"}},
		{name: "gid alone", app: `{"script":"server.js","gid":"app"}`, err: ErrInvalid, errHas: []string{`gid "app" without uid`}},

		// env, port
		{name: "port field", app: `{"script":"server.js","port":3000,"env":{"PORT":1}}`, env: map[string]string{"PORT": "3000"}, settings: map[string]string{"SOCKD_LISTEN": "http=tcp://:3000"}},
		{name: "env_production beats port", envName: "production", app: `{"script":"server.js","port":3000,"env_production":{"PORT":"8080"}}`, env: map[string]string{"PORT": "8080"}},
		{name: "PORT not a number", app: `{"script":"server.js","env":{"PORT":"http"}}`, err: ErrInvalid, errHas: []string{`PORT "http": want a port number, 1 to 65535`}},
		{name: "PORT out of range", app: `{"script":"server.js","env":{"PORT":70000}}`, err: ErrInvalid, errHas: []string{`PORT "70000"`}},
		{name: "env values", app: `{"script":"server.js","env":{"S":"x","N":3000,"F":0.1,"B":true,"Z":null,"O":{"k":["v"]},"E":1e-7}}`,
			env: map[string]string{"S": "x", "N": "3000", "F": "0.1", "B": "true", "Z": "null", "O": `{"k":["v"]}`, "E": "1e-7"}},
		{name: "env a string", app: `{"script":"server.js","env":"NODE_ENV=production"}`, err: ErrInvalid, errHas: []string{"env is a string: want an object of variables"}},
		{name: "env name with =", app: `{"script":"server.js","env":{"A=B":"c"}}`, err: ErrInvalid, errHas: []string{`variable "A=B"`}},
		{name: "SOCKD_ variables are settings", app: `{"script":"server.js","instances":2,"env":{"SOCKD_WORKERS":"5","SOCKD_RELOAD_BATCH":"1","X":"y"}}`,
			env: map[string]string{"X": "y"}, settings: map[string]string{"SOCKD_WORKERS": "5", "SOCKD_RELOAD_BATCH": "1"}},

		// refused
		{name: "autorestart false", app: `{"script":"server.js","autorestart":false}`, err: ErrInvalid, errHas: []string{"autorestart is false"}},
		{name: "stop_exit_codes", app: `{"script":"server.js","stop_exit_codes":[0]}`, err: ErrInvalid, errHas: []string{"stop_exit_codes"}},
		{name: "stop_exit_codes empty", app: `{"script":"server.js","stop_exit_codes":[]}`},
		{name: "shutdown_with_message", app: `{"script":"server.js","shutdown_with_message":true}`, err: ErrInvalid, errHas: []string{"shutdown_with_message"}},
		{name: "increment_var", app: `{"script":"server.js","increment_var":"PORT"}`, err: ErrInvalid, errHas: []string{`increment_var "PORT"`}},

		// warnings
		{name: "defaults are not worth a warning", app: `{"script":"server.js","watch":false,"autorestart":true,"vizion":true,"source_map_support":true,"restart_delay":0,"namespace":"default"}`},
		{name: "ignored and unknown fields", app: `{"script":"server.js","watch":["src"],"restart_delay":3000,"wait_redy":true,"log":"/x","vizion":false}`,
			warn: []string{"ignored, sockd does not do them: log_file, restart_delay, vizion, watch", `unknown fields, ignored (typos?): "wait_redy"`}, noWarn: []string{"autorestart"}},

		// whole files
		{name: "pm2 key", top: `{"pm2":[{"script":"server.js","name":"p"}]}`, settings: map[string]string{"SOCKD_NAME": "p"}},
		{name: "unknown top-level keys and static", top: `{"apps":[{"script":"server.js"}],"static":[{"port":8080}],"extra":1}`,
			fileWarn: []string{`unknown top-level keys, ignored: "extra"`, "static: PM2's static file servers are not supported"}},
		{name: "two apps of one name", top: `{"apps":[{"script":"server.js"},{"script":"server.js"}]}`, err: ErrInvalid, errHas: []string{`app "server": two apps have this name (apps[0] and apps[1])`}},
		{name: "an app that is not an object", top: `{"apps":[{"script":"server.js"},"worker.js"]}`, err: ErrInvalid, errHas: []string{"apps[1] is a string"}},
		{name: "exports a number", top: `42`, err: ErrNoApps, errHas: []string{"the file exports a number"}},
		{name: "deploy env is the lowest", envName: "production", top: `{"apps":[{"script":"server.js","env":{"A":"env","B":"env"},"env_production":{"B":"prod"}}],"deploy":{"production":{"env":{"A":"deploy","C":"deploy"}}}}`,
			env: map[string]string{"A": "env", "B": "prod", "C": "deploy"}},
		{name: "env name only deploy knows", envName: "staging", top: `{"apps":[{"script":"server.js"}],"deploy":{"staging":{"env":{"C":"d"}}}}`,
			env: map[string]string{"C": "d"}, warn: []string{"no env_staging"}},
	}

	environ, bin := testEnv(t)
	dir := t.TempDir()
	for name, content := range map[string]string{"server.js": "//\n", "worker.js": "//\n", "sub/main.js": "//\n", "app.ts": "//\n"} {
		writeTestFile(t, filepath.Join(dir, name), content, 0o644)
	}
	prog, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "prog"), string(prog), 0o755)
	node := nodePath(t)
	expand := func(s string) string { return strings.NewReplacer("$NODE", node, "$DIR", dir, "$BIN", bin).Replace(s) }

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := c.top
			if text == "" {
				text = `{"apps":[` + c.app + `]}`
			}
			path := writeTestFile(t, filepath.Join(dir, "eco"+strings.Repeat("x", i)+".json"), expand(text), 0o644)
			defer os.Remove(path)
			f, err := Load(context.Background(), Options{Path: path, EnvName: c.envName, CPUs: c.cpus, Environ: environ})
			var a *App
			if err == nil {
				a, err = f.App("")
			}
			if c.err != nil {
				for i := range c.errHas {
					c.errHas[i] = expand(c.errHas[i])
				}
				checkErr(t, err, c.err, c.errHas...)
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			checkApp(t, a, fileCase{command: c.command, mode: c.mode, settings: c.settings, env: c.env, warn: c.warn}, expand)
			for _, w := range c.noWarn {
				if strings.Contains(a.Warning(), w) {
					t.Errorf("warning %q names %q", a.Warning(), w)
				}
			}
			fw := f.Warning()
			if c.fileWarn == nil && fw != "" {
				t.Errorf("file warning %q, want none", fw)
			}
			for _, w := range c.fileWarn {
				if !strings.Contains(fw, w) {
					t.Errorf("file warning %q lacks %q", fw, w)
				}
			}
		})
	}
}

// TestCamelCaseAliases: every field PM2 knows is also known under the
// camelCase name PM2 derives, and under its listed aliases.
func TestCamelCaseAliases(t *testing.T) {
	for k := range fields {
		for _, s := range spellings(k) {
			if canonical[s] != k {
				t.Errorf("%s: spelling %s maps to %q", k, s, canonical[s])
			}
		}
	}
	for in, want := range map[string]string{"max_memory_restart": "maxMemoryRestart", "exp_backoff_restart_delay": "expBackoffRestartDelay", "v8": "v8", "node_args": "nodeArgs", "a_b_cd": "abCd"} {
		if got := camel(in); got != want {
			t.Errorf("camel(%s) = %s, want %s", in, got, want)
		}
	}
	if got := reflect.ValueOf(spellings("node_args")).Interface(); !reflect.DeepEqual(got, []string{"node_args", "interpreterArgs", "interpreter_args", "nodeArgs"}) {
		t.Errorf("spellings(node_args) = %q", got)
	}
}

// An app without a name is named as PM2 names it (checked against PM2
// 7.0.4's Common.renderApplicationName).
func TestDefaultName(t *testing.T) {
	for script, want := range map[string]string{
		"server.js": "server", "./bin/www": "www", "dist/app.min.js": "app.min",
		"node dist/server.js --x": "server", "npm run start": "npm run start", "python3 -m http.server 8000": "python3 -m http",
	} {
		if got := defaultName(script); got != want {
			t.Errorf("defaultName(%q) = %q, want %q", script, got, want)
		}
	}
}
