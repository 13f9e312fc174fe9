package pm2

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var jsonSeeds = []string{
	`{"apps":[{"name":"api","script":"server.js","instances":"max","env":{"PORT":3000},"env_production":{"PORT":"8080"}}]}`,
	`[{"script":"server.js","args":"--a=\"b c\" 'd'","node_args":["--x"],"cron_restart":"0 3 * * *","max_memory_restart":"1G"}]`,
	`{"apps":{"script":"server.js","exec_mode":"fork","instances":2,"port":80,"wait_ready":true,"kill_timeout":"100"}}`,
	`{"script":"server.js","min_uptime":"2s","max_restarts":3,"instance_var":"ID","uid":"app","gid":1}`,
	`{"apps":[{"script":"server.js","env":{"A\n":"x","B":{"c":[1,2.5e30]},"C":null}}],"deploy":{"production":{"env":{"D":1}}}}`,
	`{"apps":[{"name":"a\u0000b","script":"server.js"},{"name":"a","script":"server.js"}]}`,
	`{"apps":[]}`, `{}`, `[]`, `null`, `"x"`, `{"apps":[1]}`, `{"pm2":[{"script":"nope.js","cwd":"../.."}]}`,
	`{"apps":[{"script":"server.js","interpreter":"none","watch":true,"wait_redy":1,"autorestart":false}]}`,
}

// FuzzParseJSON: no input panics or hangs the JSON path; every error is
// a one-line *Error; every app that resolves has one-line warnings and an
// environment file that reads back as its settings and environment.
func FuzzParseJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s), "production", 4)
	}
	if b, err := os.ReadFile("testdata/apps/docs.json"); err == nil {
		f.Add(b, "", 0)
	}
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "server.js"), []byte("//\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	o, err := Options{Path: filepath.Join(dir, "fuzz.json"), Node: "/usr/bin/node", Environ: []string{"PATH=/usr/bin:/bin"}}.withDefaults()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, envName string, cpus int) {
		o := o
		o.EnvName, o.CPUs = envName, cpus%1000
		oneLine := func(what string, err error) {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("%s: %T %v is not a *Error", what, err, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("%s: error is not one line: %q", what, err)
			}
		}
		v, err := decodeJSON(data)
		if err != nil {
			return
		}
		file, err := parse(v, o)
		if err != nil {
			oneLine("parse", err)
			return
		}
		if strings.ContainsAny(file.Warning(), "\r\n") {
			t.Fatalf("file warning is not one line: %q", file.Warning())
		}
		for _, name := range file.Names() {
			a, err := file.App(name)
			if err != nil {
				oneLine("App", err)
				continue
			}
			if strings.ContainsAny(a.Warning(), "\r\n") {
				t.Fatalf("warning is not one line: %q", a.Warning())
			}
			s := a.Settings()
			argv, err := SplitCommand(s["SOCKD_COMMAND"])
			if err != nil || !reflect.DeepEqual(argv, a.Command()) {
				t.Fatalf("SOCKD_COMMAND %q reads as %q (%v), want %q", s["SOCKD_COMMAND"], argv, err, a.Command())
			}
			env, err := envFile(file, a, Instance(a.Name), false)
			if err != nil {
				oneLine("envFile", &Error{Kind: ErrInvalid, Msg: err.Error()})
				continue
			}
			got, err := parseEnvFile(string(env))
			if err != nil {
				t.Fatalf("env file does not parse: %v\n%s", err, env)
			}
			want := s
			for k, v := range a.processEnv() {
				want[k] = v
			}
			if _, set := a.Env["PATH"]; !set {
				delete(got, "PATH") // added for an interpreter outside systemd's PATH
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("env file reads back as\n%q\nwant\n%q\n%s", got, want, env)
			}
		}
	})
}

// TestJSONLikeNode: a .json file reads the same whether Go parses it or
// node evaluates it as PM2 does.
func TestJSONLikeNode(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "server.js"), "//\n", 0o644)
	env, _ := testEnv(t)
	for i, s := range append(jsonSeeds, `{"apps":[{"script":"server.js","env":{"N":1e21,"M":0.0000001,"I":12345678901234567890,"S":"\u00e9\ud83d\ude00","O":{"x":"<a&b>\u2028\u0001\"","n":[1e30,-0.0,5e-7,1e400]}}}]}`) {
		path := writeTestFile(t, filepath.Join(dir, "f.json"), s, 0o644)
		o, err := Options{Path: path, Environ: env, EnvName: "production"}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		goTree, err := decodeJSON([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		nodeTree, err := evalNode(context.Background(), &o, evalExpression)
		if err != nil {
			t.Fatalf("seed %d: node: %v", i, err)
		}
		gf, gerr := parse(goTree, o)
		nf, nerr := parse(nodeTree, o)
		if (gerr == nil) != (nerr == nil) || gerr != nil && gerr.Error() != nerr.Error() {
			t.Errorf("seed %d: Go: %v, node: %v", i, gerr, nerr)
			continue
		}
		if gerr != nil {
			continue
		}
		for _, name := range gf.Names() {
			ga, gerr := gf.App(name)
			na, nerr := nf.App(name)
			if (gerr == nil) != (nerr == nil) || gerr != nil && gerr.Error() != nerr.Error() {
				t.Errorf("seed %d, app %q: Go: %v, node: %v", i, name, gerr, nerr)
				continue
			}
			if gerr == nil && (!reflect.DeepEqual(ga.Settings(), na.Settings()) || !reflect.DeepEqual(ga.Env, na.Env)) {
				t.Errorf("seed %d, app %q:\nGo   %v %v\nnode %v %v", i, name, ga.Settings(), ga.Env, na.Settings(), na.Env)
			}
		}
	}
}
