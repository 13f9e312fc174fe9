package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/cpus"
	"github.com/sockd/sockd/internal/nodeshim"
	"github.com/sockd/sockd/pool"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// Flags in every spelling the flag package takes, then the command; a
// flag on the command line wins over its variable; the rest come from
// SOCKD_<FLAG>.
func TestParse(t *testing.T) {
	r, err := Parse([]string{"--workers", "3", "-stop-timeout=5s", "--reuseport", "--listen", "a=tcp://127.0.0.1:0", "--", "/bin/server", "--port", "1"},
		env("SOCKD_WORKERS=9", "SOCKD_LISTEN=b=tcp://127.0.0.1:0 c=unix:///tmp/c.sock", "SOCKD_STOP_SIGNAL=INT", "SOCKD_WORKER_MAX_REQUESTS=1000+-100"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Workers != 3 || r.StopTimeout != 5*time.Second || !r.ReusePort || r.StopSignal != unix.SIGINT {
		t.Fatalf("parsed %+v", r)
	}
	if len(r.Listen) != 1 || r.Listen[0] != "a=tcp://127.0.0.1:0" {
		t.Fatalf("--listen on the command line must replace SOCKD_LISTEN: %q", r.Listen)
	}
	if r.MaxRequests != (pool.Jitter{N: 1000, J: 100}) {
		t.Fatalf("SOCKD_WORKER_MAX_REQUESTS: %+v", r.MaxRequests)
	}
	if strings.Join(r.Command, " ") != "/bin/server --port 1" {
		t.Fatalf("command %q", r.Command)
	}
	r, err = Parse([]string{"/bin/server", "-x"}, env("SOCKD_LISTEN=b=tcp://127.0.0.1:0 c=unix:///tmp/c.sock"))
	if err != nil || len(r.Command) != 2 || len(r.Listen) != 2 {
		t.Fatalf("command without --: %q, listen %q, %v", r.Command, r.Listen, err)
	}
}

// The defaults, as --help prints them.
func TestDefaults(t *testing.T) {
	r, err := Parse(nil, env())
	if err != nil {
		t.Fatal(err)
	}
	if r.Workers != int64(cpus.Usable()) || r.ReadyTimeout != pool.DefaultReadyTimeout || r.StopSignal != unix.SIGTERM ||
		r.RestartLimit != pool.DefaultRestartLimit || r.Cgroups != "auto" || r.LogFormat != "text" || r.LogLevel != "info" || r.Ready != (pool.ReadyRule{}) {
		t.Fatalf("defaults %+v", r)
	}
	if r, _ := Parse(nil, env("SOCKD_WORKERS=max")); r.Workers != int64(cpus.Usable()) {
		t.Fatalf("SOCKD_WORKERS=max: %d", r.Workers)
	}
}

// Every bad value is one line naming the flag or the variable, of kind
// ErrUsage.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--workers", "0"}, nil, "--workers 0: want 1 to 1024, max, or max-N"},
		{[]string{"--workers", "1025"}, nil, "--workers 1025"},
		{nil, []string{"SOCKD_WORKERS=lots"}, `SOCKD_WORKERS="lots": want 1 to 1024, max, or max-N`},
		{[]string{"--frob"}, nil, "flag provided but not defined: --frob"},
		{[]string{"--stop-timeout"}, nil, "flag needs an argument: --stop-timeout DURATION"},
		{[]string{"--stop-timeout", "0s"}, nil, "--stop-timeout 0s: must be positive"},
		{[]string{"--reload-timeout", "-1s"}, nil, "--reload-timeout -1s: must not be negative"},
		{[]string{"--ready-timeout", "soon"}, nil, "want a duration"},
		{[]string{"--ready", "soon"}, nil, "want notify, node-ipc, node-listen or after:DURATION"},
		{[]string{"--restart-limit", "ten"}, nil, "N/DURATION"},
		{[]string{"--stop-signal", "NOPE"}, nil, "--stop-signal NOPE"},
		{[]string{"--worker-max-memory", "0"}, nil, "--worker-max-memory 0: want more than 0"},
		{[]string{"--worker-max-memory", "lots"}, nil, "want bytes"},
		{[]string{"--worker-max-requests", "0"}, nil, "want more than 0"},
		{[]string{"--worker-max-age", "1h±2h"}, nil, "--worker-max-age"},
		{[]string{"--cgroups", "maybe"}, nil, "--cgroups maybe: want auto, yes or no"},
		{[]string{"--worker-cpu-weight", "20000"}, nil, "--worker-cpu-weight 20000: want 1 to 10000"},
		{[]string{"--log-format", "xml"}, nil, "--log-format xml: want text or json"},
		{[]string{"--log-level", "loud"}, nil, "--log-level loud"},
		{[]string{"--listen", "tcp://nope"}, nil, "want HOST:PORT"},
		{nil, []string{"SOCKD_LISTEN=a=tcp://127.0.0.1:0 sctp://x:1"}, "SOCKD_LISTEN"},
		{[]string{"--metrics", "http://x"}, nil, "--metrics"},
		{[]string{"--reuseport=maybe"}, nil, "--reuseport maybe: want true or false"},
		{[]string{"--cgroups", "no", "--worker-pids-max", "10"}, nil, "need cgroups"},
	}
	for _, c := range cases {
		_, err := Parse(c.args, env(c.env...))
		if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q %q: %v, want one line with %q", c.args, c.env, err, c.want)
		}
	}
	if _, err := Parse([]string{"--help"}, env()); !errors.Is(err, ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

// --help lists every setting with its variable's spelling rule, and the
// values of the settings that take a list (node-ipc among --ready's).
func TestUsageListsEverySetting(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	out := b.String()
	for _, s := range Settings() {
		if !strings.Contains(out, "--"+s.Name) {
			t.Errorf("--help lacks --%s", s.Name)
		}
		for _, v := range s.Values {
			if !strings.Contains(out, strings.Split(v, ":")[0]) {
				t.Errorf("--help lacks %s's value %s", s.Name, v)
			}
		}
		if s.Default != "" {
			if err := s.value(&Run{}).Set(s.Default); err != nil {
				t.Errorf("--%s's default %q does not parse: %v", s.Name, s.Default, err)
			}
		}
	}
	if !strings.Contains(out, "SOCKD_STOP_TIMEOUT") || !strings.Contains(out, "node-ipc") {
		t.Errorf("--help:\n%s", out)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "512K": 512 << 10, "512M": 512 << 20, "2G": 2 << 30, "1GiB": 1 << 30, "10B": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "M", "-1M", "1.5G", "9999999999T", "12X"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

// Whatever the arguments and the environment say, Parse returns a
// configuration or one line, and never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"--workers 3", "--workers=max --reuseport", "--ready after:1s -- /bin/x", "--listen", "-h", "--worker-max-memory 9999999999T", "--stop-signal 65", "---x", "- -"} {
		f.Add(s, "SOCKD_WORKERS=2")
	}
	f.Fuzz(func(t *testing.T, args, envs string) {
		r, err := Parse(strings.Fields(args), env(strings.Fields(envs)...))
		switch {
		case errors.Is(err, ErrHelp):
		case err != nil:
			if strings.Contains(err.Error(), "\n") || !errors.Is(err, ErrUsage) {
				t.Fatalf("error %q", err)
			}
		case r.Workers < 1 || r.Workers > pool.MaxWorkers:
			t.Fatalf("workers %d accepted", r.Workers)
		}
	})
}

func TestSplitCommand(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/app/bin/server --config /etc/app/app.conf": "/srv/app/bin/server|--config|/etc/app/app.conf",
		"node app.js --title 'two words'":                "node|app.js|--title|two words",
		`a "b \" \$x c" d\ e`:                            `a|b " $x c|d e`,
		"  spaced   out  ":                               "spaced|out",
		`x ''`:                                           "x|",
		`"a"'b'c`:                                        "abc",
	} {
		got, err := SplitCommand(in)
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, strings.Join(got, "|"), err, want)
		}
	}
	for _, bad := range []string{"a 'b", `a "b`} {
		if _, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q) accepted", bad)
		}
	}
}

// Load: env files over the environment, the command from SOCKD_COMMAND,
// the command checked before anything starts.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/app.env"
	os.WriteFile(f, []byte("SOCKD_WORKERS=3\nAPP_COLOR=green\nSOCKD_COMMAND=/bin/sh -c 'exec sleep 1'\n"), 0o644)
	r, err := Load(Source{Args: []string{"--env-file", f}, Environ: []string{"APP_COLOR=blue", "PATH=/usr/bin:/bin", "SOCKD_WORKERS=2"}, Self: "/usr/bin/sockd"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Workers != 3 || strings.Join(r.Command, "|") != "/bin/sh|-c|exec sleep 1" || r.Name != "sh" || lookup(r.Env)("APP_COLOR") != "green" {
		t.Fatalf("loaded %+v", r)
	}
	demo, err := Load(Source{Environ: []string{"PATH=/bin"}, Self: "/usr/bin/sockd"})
	if err != nil || !demo.Demo() || demo.Name != "sockd-demo" {
		t.Fatalf("demo: %+v, %v", demo, err)
	}
	for _, c := range []struct {
		src  Source
		want string
	}{
		{Source{Args: []string{"--env-file", dir + "/missing.env"}}, "--env-file: open"},
		{Source{Args: []string{"--", "/nonexistent/app"}}, "/nonexistent/app"},
		{Source{Environ: []string{"SOCKD_COMMAND=/bin/sh -c 'x"}}, "SOCKD_COMMAND: unterminated '"},
		{Source{Args: []string{"--cwd", f}}, "--cwd " + f + ": not a directory"},
		{Source{Args: []string{"--listen", "x=tcp://127.0.0.1:0", "--listen", "x=tcp://127.0.0.1:0"}}, `a second listener named "x"`},
		// A relative command is the workers' --cwd's, where they run it.
		{Source{Args: []string{"--cwd", "/", "--", "./app"}}, `worker command "./app" in /: stat /app`},
	} {
		if _, err := Load(c.src); err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.src, err, c.want)
		}
	}
	// Two listeners named after one address get names of their own.
	two, err := Load(Source{Args: []string{"--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0", "--listen", "b=unix:///tmp/b.sock"}, Environ: []string{"PATH=/bin"}, Self: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if sp := two.Specs(); len(sp) != 3 || sp[0].Name != "tcp-127.0.0.1-0" || sp[1].Name != "tcp-127.0.0.1-0-2" || sp[2].Name != "b" {
		t.Errorf("names of two listeners on one address: %+v", sp)
	}
	app := filepath.Join(dir, "bin", "app")
	os.MkdirAll(filepath.Dir(app), 0o755)
	os.WriteFile(app, []byte("#!/bin/sh\n"), 0o755)
	if r, err := Load(Source{Args: []string{"--cwd", dir, "--", "bin/app"}, Environ: []string{"PATH=/bin"}, Self: "x"}); err != nil || r.Command[0] != "bin/app" {
		t.Errorf("a command relative to --cwd: %+v, %v", r, err)
	}
	// --warmup with --pm2: the file's wait_ready is the ready it needs,
	// and a --ready notify given beside it is refused once the file is read.
	eco := dir + "/ecosystem.json"
	os.WriteFile(eco, []byte(`{"apps": [{"name": "api", "script": "/bin/true", "wait_ready": true}]}`), 0o644)
	r, err = Load(Source{Args: []string{"--pm2", eco, "--warmup", "/warm", "--warmup-requests", "7"}, Environ: []string{"PATH=/bin"}, Self: "x"})
	if err != nil || r.Pool().Warmup != (nodeshim.Warmup{Path: "/warm", Requests: 7}) || !r.Ready.NodeIPC {
		t.Fatalf("--pm2 with --warmup: %+v, %v", r, err)
	}
	if _, err := Load(Source{Args: []string{"--pm2", eco, "--warmup", "/warm", "--ready", "notify"}, Environ: []string{"PATH=/bin"}, Self: "x"}); err == nil ||
		!errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--warmup /warm: needs --ready node-ipc or node-listen") {
		t.Errorf("--pm2 with --warmup and --ready notify: %v", err)
	}
	// A node app without env.PORT: ready after min_uptime, unless sockd
	// listens for it (--listen): then once it listens there.
	os.WriteFile(dir+"/server.js", []byte("//\n"), 0o644)
	noPort := dir + "/noport.json"
	os.WriteFile(noPort, []byte(`{"apps": [{"name": "api", "script": "server.js"}]}`), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "after:1s"}, {[]string{"--listen", "http=tcp://127.0.0.1:0"}, "node-listen"}, {[]string{"--listen", "none"}, "after:1s"}} {
		r, err := Load(Source{Args: append([]string{"--pm2", noPort}, c.args...), Environ: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, Self: "x"})
		if err != nil || r.Ready.String() != c.want {
			t.Errorf("--pm2 of an app without a port, %v: ready %v, %v; want %s", c.args, r, err, c.want)
		}
	}
	os.WriteFile(f, []byte("SOCKD_WORKERS=lots\n"), 0o644)
	if _, err := Load(Source{Args: []string{"--env-file", f}, Self: "x"}); err == nil || !strings.Contains(err.Error(), `SOCKD_WORKERS="lots"`) {
		t.Errorf("a bad setting in the env file: %v", err)
	}
}

// What a reload changed, secrets without their values; what it cannot
// change.
func TestDiff(t *testing.T) {
	old, _ := Load(Source{Args: []string{"--workers", "2", "--", "/bin/sh", "-c", "x"}, Environ: []string{"APP_COLOR=blue", "DB_PASSWORD=a", "API_KEY=k", "GONE=1", "MAINPID=7"}})
	r, _ := Load(Source{Args: []string{"--workers", "3", "--reuseport", "--", "/bin/sh", "-c", "y"}, Environ: []string{"APP_COLOR=green", "DB_PASSWORD=b", "API_KEY=k", "NEW=1", "MAINPID=8"}})
	var got []string
	for _, c := range r.Diff(old) {
		got = append(got, c.String())
	}
	want := []string{`--workers "2" → "3"`, `--reuseport "false" → "true"`, `command "/bin/sh -c x" → "/bin/sh -c y"`,
		`APP_COLOR "blue" → "green"`, "DB_PASSWORD changed", `GONE "1" removed`, `NEW "1" added`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rn := r.RestartNeeded(old); strings.Join(rn, " ") != "--reuseport" {
		t.Fatalf("restart needed for %q", rn)
	}
	if r.Revision() == old.Revision() || len(r.Revision()) != 12 {
		t.Fatalf("revisions %s %s", r.Revision(), old.Revision())
	}
	same, _ := Load(Source{Args: []string{"--workers", "2", "--", "/bin/sh", "-c", "x"}, Environ: []string{"GONE=1", "APP_COLOR=blue", "API_KEY=k", "DB_PASSWORD=a", "MAINPID=9"}})
	if same.Revision() != old.Revision() || len(same.Diff(old)) != 0 {
		t.Fatalf("same configuration: %s vs %s, diff %v", same.Revision(), old.Revision(), same.Diff(old))
	}
}

// A reload client's environment, but a process's own variables stay
// sockd's.
func TestReloadEnviron(t *testing.T) {
	env := ReloadEnviron([]string{"MAINPID=1", "JOURNAL_STREAM=8:9", "A=old"}, []string{"A=new", "MAINPID=2", "B=1", "JOURNAL_STREAM=1:2"})
	l := lookup(env)
	if l("A") != "new" || l("B") != "1" || l("MAINPID") != "1" || l("JOURNAL_STREAM") != "8:9" {
		t.Fatalf("%q", env)
	}
}
