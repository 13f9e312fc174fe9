package pm2

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sockd/sockd/e2e"
)

// TestSystemdReadsEnvFile hands the environment files Generate writes to
// a real systemd (the project's sandbox, 252 as on Debian 12): every
// setting and every variable reaches the process as the app has it,
// whatever it holds (quotes, $, backslashes, newlines, blanks), found
// through the template's EnvironmentFile=/etc/sockd/%i.env under the
// instance name Instance gives an app named with a space. It also shows
// what today's units do with SOCKD_COMMAND (ExecStart=… $SOCKD_COMMAND
// splits it at blanks): a plain command arrives whole, one with quoted
// arguments only through SplitCommand.
func TestSystemdReadsEnvFile(t *testing.T) {
	dir, root := t.TempDir(), t.TempDir()
	writeTestFile(t, filepath.Join(dir, "server.js"), "//\n", 0o644)
	vars := map[string]string{}
	for i, v := range envValues {
		vars[envKey(i)] = v
	}
	tricky := map[string]any{"name": "tricky app", "script": "server.js", "args": argvCases[2], "env": vars, "instances": "max"}
	plain := map[string]any{"name": "plain", "script": "server.js", "args": "--port 3000 --mode=fast", "env": map[string]any{"NODE_ENV": "production", "PORT": 3000}}
	text, err := json.Marshal(map[string]any{"apps": []any{tricky, plain}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := load(t, Options{Path: writeTestFile(t, filepath.Join(dir, "ecosystem.json"), string(text), 0o644)})
	if err != nil {
		t.Fatal(err)
	}
	g, err := Generate(f, GenerateOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}

	sb := e2e.Start(t, root)
	sb.WriteFile(t, "/run/dump.sh", []byte("env -0 >\"$OUT.env\"\nprintf '%s\\0' \"$@\" >\"$OUT.argv\"\n"))
	sb.WriteFile(t, "/run/systemd/system/dump@.service", []byte(`[Service]
Type=oneshot
EnvironmentFile=`+root+`/etc/sockd/%i.env
Environment=OUT=/run/out-%i
ExecStart=/bin/sh /run/dump.sh $SOCKD_COMMAND
`))
	sb.MustRun(t, "systemctl", "daemon-reload")
	apps, err := f.Apps()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		inst := Instance(a.Name)
		if !contains(g.Units, "sockd@"+inst+".service") && !contains(g.Units, "sockd@"+inst+".socket") {
			t.Fatalf("no unit for %s in %q", inst, g.Units)
		}
		if _, err := sb.Run(t, "systemctl", "start", "dump@"+inst+".service"); err != nil {
			log, _ := sb.Run(t, "journalctl", "--no-pager", "-n", "20", "-u", "dump@"+inst+".service")
			t.Fatalf("%v\n%s", err, log)
		}
		got := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(sb.MustRun(t, "cat", "/run/out-"+inst+".env"), "\x00"), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
		want := a.Settings()
		for k, v := range a.Env {
			want[k] = v
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: systemd gives %s=%q, the app has %q", a.Name, k, got[k], v)
			}
		}
		argv, err := SplitCommand(got["SOCKD_COMMAND"])
		if err != nil || !reflect.DeepEqual(argv, a.Command()) {
			t.Errorf("%s: SplitCommand(SOCKD_COMMAND from systemd) = %q, %v; want %q", a.Name, argv, err, a.Command())
		}
		split := strings.Split(strings.TrimSuffix(sb.MustRun(t, "cat", "/run/out-"+inst+".argv"), "\x00"), "\x00")
		if a.Name == "plain" && !reflect.DeepEqual(split, a.Command()) {
			t.Errorf("plain: ExecStart=… $SOCKD_COMMAND gives %q, want %q", split, a.Command())
		}
		if a.Name != "plain" {
			t.Logf("%s: ExecStart=… $SOCKD_COMMAND gives %q: quoted arguments need sockd to split SOCKD_COMMAND itself", a.Name, split)
		}
	}
}
