package pm2

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func generate(t *testing.T, path, envName string, o GenerateOptions) (*File, *Generated, error) {
	t.Helper()
	f, err := load(t, Options{Path: path, EnvName: envName})
	if err != nil {
		t.Fatal(err)
	}
	g, err := Generate(f, o)
	return f, g, err
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseEnvFile(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func statuses(g *Generated) map[string]string {
	m := map[string]string{}
	for _, f := range g.Files {
		m[f.Path] = f.Status
	}
	return m
}

// TestGenerate: the whole file becomes env files and socket drop-ins;
// each env file reads back, by systemd's rules, as the app's settings and
// environment.
func TestGenerate(t *testing.T) {
	root := t.TempDir()
	f, g, err := generate(t, testdata(t, "apps/multi.config.js"), "production", GenerateOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/etc/sockd/web.env": "created", "/etc/systemd/system/sockd@web.socket.d/50-listen.conf": "created",
		"/etc/sockd/consumer.env": "created", "/etc/sockd/nightly.env": "created",
	}
	if got := statuses(g); !reflect.DeepEqual(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	if want := []string{"sockd@web.socket", "sockd@consumer.service", "sockd@nightly.service"}; !reflect.DeepEqual(g.Units, want) {
		t.Errorf("units %q, want %q", g.Units, want)
	}
	// The testdata directory is root's: each app gets a dynamic user, to
	// which it is read-only, and is told so.
	if w := strings.Join(g.Warnings, "\n"); len(g.Warnings) != 5 || !strings.Contains(w, `app "web": no env_production`) || !strings.Contains(w, `app "nightly": cron_restart`) ||
		strings.Count(w, "runs as the dynamic user of sockd@") != 3 || !strings.Contains(w, `app "consumer" runs as the dynamic user of sockd@consumer, to which `) {
		t.Errorf("warnings %q", g.Warnings)
	}
	apps, err := f.Apps()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		path := filepath.Join(root, "etc/sockd", a.Name+".env")
		got := readEnvFile(t, path)
		want := a.Settings()
		for k, v := range a.processEnv() {
			want[k] = v
		}
		if got["name"] != a.Name {
			t.Errorf("%s: name=%q, want the app's name %q, as PM2 sets it", path, got["name"], a.Name)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s reads back as\n%v\nwant\n%v", path, got, want)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600: it holds the app's secrets", path, st.Mode(), err)
		}
	}
	sock, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/sockd@web.socket.d/50-listen.conf"))
	if err != nil || !strings.HasSuffix(string(sock), "[Socket]\nListenStream=\nListenStream=4000\n") {
		t.Errorf("socket drop-in %q, %v", sock, err)
	}
	if consumer := readEnvFile(t, filepath.Join(root, "etc/sockd/consumer.env")); consumer["SOCKD_LISTEN"] != NoListen {
		t.Errorf("consumer: SOCKD_LISTEN=%q, want %q", consumer["SOCKD_LISTEN"], NoListen)
	}
	verifyUnits(t, root, g.Units)

	// Again: nothing changes.
	if _, g, err = generate(t, testdata(t, "apps/multi.config.js"), "production", GenerateOptions{Root: root}); err != nil {
		t.Fatal(err)
	}
	for p, s := range statuses(g) {
		if s != "unchanged" {
			t.Errorf("second run: %s %s", p, s)
		}
	}
}

// TestGenerateKeepsEdits: a file that differs is not overwritten without
// Overwrite, and then nothing at all is written.
func TestGenerateKeepsEdits(t *testing.T) {
	root := t.TempDir()
	path := testdata(t, "apps/multi.config.js")
	if _, _, err := generate(t, path, "production", GenerateOptions{Root: root}); err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(root, "etc/sockd/consumer.env")
	writeTestFile(t, edited, "SOCKD_WORKERS=9\n", 0o600)
	dropIn := filepath.Join(root, "etc/systemd/system/sockd@web.socket.d/50-listen.conf")
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	_, _, err := generate(t, path, "production", GenerateOptions{Root: root})
	checkErr(t, err, ErrExists, "not overwriting files that differ (nothing was written; pass --force to replace them): /etc/sockd/consumer.env")
	if b, _ := os.ReadFile(edited); string(b) != "SOCKD_WORKERS=9\n" {
		t.Errorf("the edited file was changed: %q", b)
	}
	if _, err := os.Stat(dropIn); err == nil {
		t.Errorf("%s was written although Generate failed", dropIn)
	}

	_, g, err := generate(t, path, "production", GenerateOptions{Root: root, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	got := statuses(g)
	if got["/etc/sockd/consumer.env"] != "replaced" || got["/etc/systemd/system/sockd@web.socket.d/50-listen.conf"] != "created" || got["/etc/sockd/web.env"] != "unchanged" {
		t.Errorf("statuses %v", got)
	}
	if readEnvFile(t, edited)["SOCKD_WORKERS"] != "4" {
		t.Errorf("consumer.env was not replaced")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(root, "etc/sockd/.*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}
}

func TestGenerateSomeApps(t *testing.T) {
	root := t.TempDir()
	_, g, err := generate(t, testdata(t, "apps/multi.config.js"), "", GenerateOptions{Root: root, Apps: []string{"consumer"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(g); !reflect.DeepEqual(got, map[string]string{"/etc/sockd/consumer.env": "created"}) {
		t.Errorf("files %v", got)
	}
	_, _, err = generate(t, testdata(t, "apps/multi.config.js"), "", GenerateOptions{Root: root, Apps: []string{"nope"}})
	checkErr(t, err, ErrUnknownApp, `no app named "nope"`)
}

// TestGenerateServiceDropIn: what PM2 gave an app that the template does
// not: its user, its writable directory, a valid dynamic user, and PATH
// for an interpreter outside systemd's.
func TestGenerateServiceDropIn(t *testing.T) {
	env, bin := testEnv(t)
	dir := t.TempDir()
	for _, sub := range []string{"owned", "mine"} {
		writeTestFile(t, filepath.Join(dir, sub, "server.js"), "//\n", 0o644)
	}
	if err := os.Chown(filepath.Join(dir, "owned"), 4242, 4242); err != nil { // no such user: named by number
		t.Fatal(err)
	}
	eco := writeTestFile(t, filepath.Join(dir, "ecosystem.config.js"), `module.exports = { apps: [
  { name: 'owned', script: 'server.js', cwd: 'owned' },
  { name: 'by-uid', script: 'server.js', cwd: 'mine', uid: 'daemon', gid: 'daemon', env: { PORT: 8081 } },
  { name: 'my api v2', script: 'server.js', cwd: 'mine' },
  { name: 'api.v2', script: 'server.js', cwd: 'mine' },
  { name: 'a-rather-long-application-name', script: 'server.js', cwd: 'mine' },
  { name: 'py', script: 'server.js', cwd: 'mine', interpreter: 'python3' },
  { name: 'plain', script: 'server.js', cwd: 'mine' },
] };`, 0o644)
	f, err := load(t, Options{Path: eco, Environ: env})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	g, err := Generate(f, GenerateOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	dropIn := func(inst string) string {
		b, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", "sockd@"+inst+".service.d", DropIn))
		if os.IsNotExist(err) {
			return ""
		} else if err != nil {
			t.Fatal(err)
		}
		_, body, _ := strings.Cut(string(b), "[Service]\n")
		return body
	}
	for inst, want := range map[string]string{
		"owned":                          "DynamicUser=no\nUser=4242\nReadWritePaths=" + filepath.Join(dir, "owned") + "\n",
		"by-uid":                         "DynamicUser=no\nUser=daemon\nGroup=daemon\nReadWritePaths=" + filepath.Join(dir, "mine") + "\n",
		"my-api-v2":                      "",
		"a-rather-long-application-name": "User=" + dynamicUser("a-rather-long-application-name") + "\n",
		"api.v2":                         "User=" + dynamicUser("api.v2") + "\n",
		"plain":                          "",
	} {
		if got := dropIn(inst); got != want {
			t.Errorf("sockd@%s.service drop-in:\n%s\nwant\n%s", inst, got, want)
		}
	}
	if env := readEnvFile(t, filepath.Join(root, "etc/sockd/by-uid.env")); env["SOCKD_USER"] != "" {
		t.Errorf("SOCKD_USER=%s in the env file: sockd is not root under the unit; User= is in the drop-in", env["SOCKD_USER"])
	}
	if env := readEnvFile(t, filepath.Join(root, "etc/sockd/py.env")); env["PATH"] != bin+":"+systemdPath {
		t.Errorf("py: PATH=%q, want the interpreter's directory first", env["PATH"])
	}
	if env := readEnvFile(t, filepath.Join(root, "etc/sockd/my-api-v2.env")); env["SOCKD_NAME"] != "my api v2" {
		t.Errorf("SOCKD_NAME=%q", env["SOCKD_NAME"])
	}
	if !contains(g.Units, "sockd@my-api-v2.service") || !contains(g.Units, "sockd@by-uid.socket") {
		t.Errorf("units %q", g.Units)
	}
	verifyUnits(t, root, g.Units)
}

// TestGenerateRefusesWhatSystemdDrops: systemd ignores a variable whose
// name is not letters, digits and _; silently losing it would surprise.
func TestGenerateRefusesWhatSystemdDrops(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "server.js"), "//\n", 0o644)
	eco := writeTestFile(t, filepath.Join(dir, "e.json"), `{"apps":[{"name":"x","script":"server.js","env":{"my-var":"1"}}]}`, 0o644)
	f, err := load(t, Options{Path: eco})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Generate(f, GenerateOptions{Root: t.TempDir()})
	checkErr(t, err, ErrInvalid, `app "x": variable "my-var": systemd's EnvironmentFile= takes only names`)
}

func TestInstance(t *testing.T) {
	for in, want := range map[string]string{"api": "api", "my-api": "my-api", "api.v2": "api.v2", "a:b_c": "a:b_c", "my api": "my-api",
		".hidden": "hidden", "a/b": "a-b", "é": "", "café au lait": "caf-au-lait", "a - b": "a---b", "--x": "x", "node server.js --port 3": "node-server.js---port-3"} {
		if got := Instance(in); got != want {
			t.Errorf("Instance(%q) = %s, want %s", in, got, want)
		}
	}
	if u := dynamicUser("a-rather-long-application-name"); !strictUserName(u) || u == dynamicUser("a-rather-long-application-nam") {
		t.Errorf("dynamicUser: %s", u)
	}
}

// verifyUnits has systemd-analyze verify load the template units with the
// generated drop-ins below root: a bad setting, a bad instance or user
// name is reported there. Only the missing sysinit.target of a bare root
// is expected.
func verifyUnits(t *testing.T, root string, units []string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze is not installed (apt-get install systemd)")
	}
	for _, u := range []string{"sockd@.service", "sockd@.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "units", u))
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(root, UnitDir, u), string(b), 0o644)
	}
	writeTestFile(t, filepath.Join(root, "usr/local/bin/sockd"), "#!/bin/sh\n", 0o755)
	var all []string
	for _, u := range units {
		base := strings.TrimSuffix(strings.TrimSuffix(u, ".socket"), ".service")
		all = append(all, base+".service", base+".socket")
	}
	out, _ := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root}, all...)...).CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" || strings.Contains(line, "Unit sysinit.target not found") {
			continue
		}
		// The template's User=sockd-%i, parsed before the drop-in that
		// replaces it with a valid name.
		if name, ok := strings.CutPrefix(line, "Accepting user/group name 'sockd-"); ok {
			inst, _, _ := strings.Cut(name, "'")
			b, _ := os.ReadFile(filepath.Join(root, UnitDir, "sockd@"+inst+".service.d", DropIn))
			if strings.Contains(string(b), "\nUser=") {
				continue
			}
		}
		t.Errorf("systemd-analyze verify: %s", line)
	}
}

// TestDropInForHome: an app, script or interpreter under a home directory
// needs ProtectHome=read-only (the template hides /home).
func TestDropInForHome(t *testing.T) {
	for _, a := range []*App{
		{Name: "h", Cwd: "/home/alice/app", Script: "/home/alice/app/server.js", Interpreter: "/usr/bin/node"},
		{Name: "n", Cwd: "/srv/app", Script: "/srv/app/server.js", Interpreter: "/root/.nvm/versions/node/v20/bin/node"},
	} {
		if d := serviceDropIn(a, a.Name); !strings.HasSuffix(d, "[Service]\nProtectHome=read-only\n") {
			t.Errorf("%s: drop-in %q", a.Name, d)
		}
	}
	if d := serviceDropIn(&App{Name: "s", Cwd: "/srv/app", Script: "/srv/app/s.js", Interpreter: "/usr/bin/node"}, "s"); d != "" {
		t.Errorf("drop-in %q for an app needing none", d)
	}
}
