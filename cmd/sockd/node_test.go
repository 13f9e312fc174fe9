package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
)

// The apps of examples/node-apps are written as their frameworks' docs
// and PM2's show them: listen(PORT), process.send('ready') once
// listening, server.close() on SIGINT. Nothing in them knows sockd.
func nodeApps(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../examples/node-apps")
	if err != nil {
		t.Fatal(err)
	}
	missing := ""
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err != nil {
		missing = "the npm packages of examples/node-apps (scripts/setup runs npm ci there)"
	}
	if missing != "" {
		if os.Getenv("CI") == "true" || os.Getenv("SOCKD_E2E_REQUIRE") == "1" {
			t.Fatalf("%s missing", missing)
		}
		t.Skipf("SKIPPING: %s missing", missing)
	}
	return dir
}

// freePort is a port the kernel just handed out and took back: the apps
// take a port number, as real ones do (PORT), so the test cannot use :0
// for them.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// instances reads the NODE_APP_INSTANCE of each worker of the serving
// generation, once they are all ready and the old ones gone.
func instances(t *testing.T, d *daemonProc) []string {
	t.Helper()
	var got []string
	waitFor(t, 20*time.Second, "the serving generation alone", func() bool {
		s := d.mustStatus()
		got = got[:0]
		for _, w := range s.Workers {
			env, err := readEnviron(w.PID)
			if w.Generation != s.Generation || w.State != "ready" || err != nil {
				return false
			}
			got = append(got, env["NODE_APP_INSTANCE"])
		}
		return len(got) == s.Size
	})
	sort.Strings(got)
	return got
}

// Unchanged Node apps (plain http, Express, Fastify, Koa) under sockd, in
// both sharing modes: their listen(PORT) takes sockd's socket without
// shrinking its backlog, every worker knows its NODE_APP_INSTANCE, and
// reloads under wrk's 32 keep-alive connections lose nothing though the
// apps drain with Node's own server.close() on SIGINT.
func TestUnchangedNodeApps(t *testing.T) {
	dir := nodeApps(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("wrk is missing (scripts/setup installs it)")
		}
		t.Skip("SKIPPING: wrk is not installed")
	}
	cases := []struct {
		app     string
		mode    string
		reloads int
	}{
		{"express-app.js", "shared", 10},
		{"express-app.js", "reuseport", 10},
		{"http-app.js", "shared", 3},
		{"fastify-app.js", "reuseport", 3},
		{"koa-app.js", "shared", 3},
		{"express-app.js", "reuseport-warmup", 3},
	}
	for _, c := range cases {
		t.Run(c.app+"/"+c.mode, func(t *testing.T) {
			port := freePort(t)
			args := []string{"--workers", "2", "--listen", fmt.Sprintf("http=tcp://127.0.0.1:%d", port),
				"--ready", "node-ipc", "--stop-signal", "INT", "--cwd", dir}
			if strings.HasPrefix(c.mode, "reuseport") {
				args = append(args, "--reuseport")
			}
			if c.mode == "reuseport-warmup" {
				args = append(args, "--slow-start", "1s", "--warmup", "/?warm=1", "--warmup-requests", "20")
			}
			d := startSockd(t, []string{"PORT=" + strconv.Itoa(port)}, append(args, "--", "node", c.app)...)
			s := d.mustStatus()
			for i, limit := range s.Listeners[0].QueueLimit {
				if want := somaxconn(t); limit != want {
					t.Fatalf("socket %d's backlog is %d after the workers listened, want sockd's %d", i, limit, want)
				}
			}
			for _, w := range s.Workers {
				if fd, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", w.PID)); err != nil || !strings.HasPrefix(fd, "socket:") {
					t.Fatalf("worker %d's fd 3: %q, %v", w.PID, fd, err)
				}
			}
			if got := instances(t, d); strings.Join(got, ",") != "0,1" {
				t.Fatalf("NODE_APP_INSTANCE of the workers: %q", got)
			}
			run, err := load.StartWrk(wrk, fmt.Sprintf("http://127.0.0.1:%d/", port), load.WrkOptions{Conns: 32, Threads: 2, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer run.Kill()
			for i := 0; i < c.reloads; i++ {
				var out bytes.Buffer
				if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
					t.Fatalf("reload %d: exit %d %s", i+1, code, out.String())
				}
			}
			res, err := run.Stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d reloads: %s", c.reloads, res)
			if res.Failed() > 0 || res.Requests < 100 {
				t.Fatalf("wrk over %d reloads: %s\n%s", c.reloads, res, res.Output)
			}
			if got := instances(t, d); strings.Join(got, ",") != "0,1" {
				t.Fatalf("NODE_APP_INSTANCE after the reloads: %q", got)
			}
			if c.mode == "reuseport-warmup" {
				// Every worker of every generation was warmed up before it
				// was ready: one line each in its output.
				for g := 1; g <= 1+c.reloads; g++ {
					for w := 0; w < 2; w++ {
						want := fmt.Sprintf("[w%d g%d err] sockd: warm-up: 20 requests for /?warm=1 answered in", w, g)
						waitFor(t, 10*time.Second, want, func() bool { return strings.Contains(d.out.String(), want) })
					}
				}
			}
		})
	}
}

func somaxconn(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// The same kind of app from an unchanged ecosystem.config.js, instances
// 'max': one worker per CPU sockd may use, the port from env.PORT bound
// by sockd before the first worker, the app's env and cwd, PM2's
// defaults (SIGINT); an edited file is read again by a reload.
func TestEcosystemFile(t *testing.T) {
	dir := nodeApps(t)
	port := freePort(t)
	eco := filepath.Join(t.TempDir(), "ecosystem.config.js")
	write := func(color string) {
		os.WriteFile(eco, []byte(fmt.Sprintf(`module.exports = {
  apps: [{
    name: "shop",
    script: "express-app.js",
    cwd: %q,
    instances: "max",
    exec_mode: "cluster",
    wait_ready: true,
    listen_timeout: 10000,
    env: { PORT: %d, APP_COLOR: %q },
  }, {
    name: "mailer",
    script: "http-app.js",
    cwd: %q,
  }],
};
`, dir, port, color, dir)), 0o644)
	}
	write("blue")
	d := startSockd(t, nil, "--pm2", eco+":shop")
	s := d.fullStatus()
	if len(s.Workers) != s.Size || s.Size < 1 || s.Listeners[0].Address != fmt.Sprintf("0.0.0.0:%d", port) && !strings.HasSuffix(s.Listeners[0].Address, fmt.Sprintf(":%d", port)) {
		t.Fatalf("from the ecosystem file: %+v", s)
	}
	if s.ReadyRule != "node-ipc" || s.Config.Settings["stop-signal"] != "INT" || s.Config.Settings["name"] != "shop" {
		t.Fatalf("PM2's ways: ready %s, settings %v", s.ReadyRule, s.Config.Settings)
	}
	for _, w := range s.Workers {
		// PM2's own variables too: apps test pm_id to tell they run under
		// PM2 (and send 'ready' only then) or are the first.
		if env := environOf(t, w.PID); env["APP_COLOR"] != "blue" || env["NODE_APP_INSTANCE"] != strconv.Itoa(w.Slot) ||
			env["pm_id"] != strconv.Itoa(w.Slot) || env["name"] != "shop" {
			t.Fatalf("worker %d: APP_COLOR=%q NODE_APP_INSTANCE=%q pm_id=%q name=%q", w.Slot, env["APP_COLOR"], env["NODE_APP_INSTANCE"], env["pm_id"], env["name"])
		}
	}
	getGen(t, fmt.Sprintf("http://127.0.0.1:%d/", port))

	write("green")
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
		t.Fatalf("reload: exit %d %s", code, out.String())
	}
	waitFor(t, 20*time.Second, "workers of the edited file", func() bool {
		for _, w := range d.mustStatus().Workers {
			if env, err := readEnviron(w.PID); err != nil || env["APP_COLOR"] != "green" {
				return false
			}
		}
		return true
	})
}

// A broken ecosystem file: one line, exit 2, nothing started.
func TestEcosystemFileErrors(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"syntax.config.js":   "module.exports = { apps: [ {name: 'a', script: 'x.js', } ",
		"empty.config.js":    "module.exports = { apps: [] }",
		"two.config.js":      "module.exports = { apps: [{name: 'a', script: 'a.js'}, {name: 'b', script: 'b.js'}] }",
		"noscript.config.js": "module.exports = { apps: [{name: 'a', script: 'missing.js'}] }",
	}
	for name, body := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "a.js"), nil, 0o644)
	ctl := filepath.Join(dir, "ctl.sock")
	for _, c := range []struct{ ref, want string }{
		{"syntax.config.js", "syntax.config.js:1"},
		{"empty.config.js", "no app"},
		{"two.config.js", `"a", "b"`},
		{"two.config.js:c", `"c"`},
		{"noscript.config.js", "missing.js"},
		{"none.config.js", "none.config.js"},
	} {
		var out bytes.Buffer
		code := sockd([]string{"run", "--control", ctl, "--pm2", filepath.Join(dir, c.ref)}, io.Discard, &out)
		msg := strings.TrimSpace(out.String())
		if code != exitUsage || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("--pm2 %s: exit %d, %q; want exit 2 and one line with %q", c.ref, code, msg, c.want)
		}
		if _, err := os.Stat(ctl); err == nil {
			t.Fatalf("--pm2 %s: the control socket was made", c.ref)
		}
	}
}

// sockd pm2 turns an ecosystem file into env files and socket drop-ins
// that sockd itself reads back as the same app.
func TestPM2Command(t *testing.T) {
	dir := nodeApps(t)
	root := t.TempDir()
	eco := filepath.Join(t.TempDir(), "ecosystem.config.js")
	os.WriteFile(eco, []byte(fmt.Sprintf(`module.exports = { apps: [
  { name: "shop", script: "express-app.js", cwd: %q, instances: 2, env: { PORT: 3000, DB_PASSWORD: "s3cret" } },
  { name: "mailer", script: "http-app.js", cwd: %q, watch: true },
] }`, dir, dir)), 0o644)
	var out bytes.Buffer
	if code := sockd([]string{"pm2", "--root", root, eco}, &out, &out); code != 0 {
		t.Fatalf("sockd pm2: exit %d\n%s", code, out.String())
	}
	// The paths it wrote, below --root.
	for _, want := range []string{"created   " + root + "/etc/sockd/shop.env", "created   " + root + "/etc/systemd/system/sockd@shop.socket.d/50-listen.conf",
		"created   " + root + "/etc/sockd/mailer.env", "sockd@shop.socket sockd@mailer.service", "watch"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/sockd@shop.socket.d/50-listen.conf")); !strings.Contains(string(b), "ListenStream=3000") {
		t.Errorf("socket drop-in:\n%s", b)
	}
	envFile := filepath.Join(root, "etc/sockd/shop.env")
	if fi, err := os.Stat(envFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("env file mode %v, %v; want 0600 (it holds secrets)", fi, err)
	}
	r, err := config.Load(config.Source{Args: []string{"--env-file", envFile}, Environ: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "shop" || r.Workers != 2 || r.Dir != dir || filepath.Base(r.Command[len(r.Command)-1]) != "express-app.js" ||
		r.Ready.String() != "node-listen" || lookupEnv(r.Env, "DB_PASSWORD") != "s3cret" {
		t.Fatalf("the env file loads as %+v", r)
	}
	// Run again: unchanged; a differing file is left alone without --force.
	out.Reset()
	os.WriteFile(envFile, []byte("EDITED=1\n"), 0o600)
	if code := sockd([]string{"pm2", "--root", root, eco}, &out, &out); code == 0 || !strings.Contains(out.String(), "shop.env") {
		t.Fatalf("a changed file was not refused: exit %d %s", code, out.String())
	}
	if b, _ := os.ReadFile(envFile); string(b) != "EDITED=1\n" {
		t.Fatal("the edited file was overwritten")
	}
}

func lookupEnv(env []string, k string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}

// sockd signal and sockd send reach the workers, not sockd: a message a
// Node worker gets with process.on('message') (PM2's packet with
// --topic), a signal to one slot.
func TestSignalAndSend(t *testing.T) {
	nodeApps(t)
	out := t.TempDir()
	port := freePort(t)
	script, _ := filepath.Abs("testdata/messages.js")
	d := startSockd(t, []string{"OUT_DIR=" + out, "PORT=" + strconv.Itoa(port)}, "--workers", "2", "--ready", "node-listen",
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--", "node", script)
	run := func(args ...string) string {
		t.Helper()
		var b bytes.Buffer
		if code := sockd(append(args, "--control", d.control), &b, &b); code != 0 {
			t.Fatalf("sockd %q: exit %d %s", args, code, b.String())
		}
		return strings.TrimSpace(b.String())
	}
	if n := run("send", "--topic", "config", `{"flush":true}`); n != "2" {
		t.Fatalf("send reached %s workers", n)
	}
	// Messages to one worker arrive in the order they were sent.
	want1 := `{"type":"process:msg","topic":"config","data":{"flush":true}}` + "\n"
	for i := range 40 {
		if n := run("send", "--worker", "1", fmt.Sprintf(`"ping %d"`, i)); n != "1" {
			t.Fatalf("send --worker 1 reached %s", n)
		}
		want1 += fmt.Sprintf(`"ping %d"`, i) + "\n"
	}
	var got0, got1 []byte
	want0 := `{"type":"process:msg","topic":"config","data":{"flush":true}}` + "\n"
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); <-time.After(20 * time.Millisecond) {
		got0, _ = os.ReadFile(filepath.Join(out, "worker-0.messages"))
		got1, _ = os.ReadFile(filepath.Join(out, "worker-1.messages"))
		if string(got0) == want0 && len(got1) >= len(want1) {
			break
		}
	}
	if string(got0) != want0 || string(got1) != want1 {
		t.Fatalf("messages written within 10s: worker 0 %q, worker 1 %q; want %q and %q", got0, got1, want0, want1)
	}
	if n := run("signal", "--worker", "1", "USR2"); n != "1" {
		t.Fatalf("signal reached %s", n)
	}
	waitFor(t, 10*time.Second, "slot 1 signalled", func() bool {
		b, _ := os.ReadFile(filepath.Join(out, "worker-1.signals"))
		return string(b) == "USR2\n"
	})
	if _, err := os.Stat(filepath.Join(out, "worker-0.signals")); err == nil {
		t.Fatal("slot 0 got the signal too")
	}
	if s := d.mustStatus(); s.State != "running" || s.Ready != 2 {
		t.Fatalf("sockd after the signal: %+v", s)
	}
	var b bytes.Buffer
	if code := sockd([]string{"signal", "--worker", "9", "USR2", "--control", d.control}, &b, &b); code != exitFailed || !strings.Contains(b.String(), "no such worker") {
		t.Fatalf("signal to slot 9: exit %d %s", code, b.String())
	}
	b.Reset()
	if code := sockd([]string{"send", "{bad", "--control", d.control}, &b, &b); code != exitUsage {
		t.Fatalf("send of bad JSON: exit %d %s", code, b.String())
	}
}

// A SIGTERM while sockd is still reading its configuration (here an
// ecosystem file that takes seconds to evaluate) is handled once sockd
// is set up: a clean stop, exit 0, no files left, instead of a death by
// the signal halfway.
func TestStopWhileStarting(t *testing.T) {
	dir := nodeApps(t)
	work := t.TempDir()
	eco := filepath.Join(work, "slow.config.js")
	os.WriteFile(eco, []byte(fmt.Sprintf(`const t = Date.now(); while (Date.now() - t < 3000) {}
module.exports = { apps: [{ name: "slow", script: "http-app.js", cwd: %q }] };
`, dir)), 0o644)
	ctl := filepath.Join(work, "ctl.sock")
	cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--listen", "tcp://127.0.0.1:0", "--pm2", eco)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, 20*time.Second, "node evaluating the ecosystem file", func() bool {
		for _, pid := range procfs.Children(cmd.Process.Pid) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "node" {
				return true
			}
		}
		return false
	})
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("sockd after a SIGTERM during its start: %v\n%s", err, out)
	}
	if _, err := os.Stat(ctl); !os.IsNotExist(err) {
		t.Fatalf("the control socket is left: %v", err)
	}
	if !strings.Contains(out.String(), "signal=terminated") {
		t.Fatalf("no word of the signal:\n%s", out)
	}
}

// A PM2 app that listens on no port (a queue consumer, a cron-like
// worker) is ready once it has run min_uptime, as PM2 counts it online:
// it is not left waiting for a listen() on a socket sockd never holds.
func TestPM2AppWithoutAPort(t *testing.T) {
	nodeApps(t) // node is there
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "consumer.js"), []byte("setInterval(() => {}, 1000);\n"), 0o644)
	eco := filepath.Join(dir, "ecosystem.config.js")
	os.WriteFile(eco, []byte(`module.exports = { apps: [{ name: "consumer", script: "consumer.js", instances: 2, exec_mode: "cluster" }] };`+"\n"), 0o644)
	d := startSockd(t, nil, "--pm2", eco)
	waitFor(t, 20*time.Second, "both workers ready", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 2 && s.Restarts == 0
	})
	if s := d.mustStatus(); s.ReadyRule != "after:1s" || len(s.Listeners) != 0 {
		t.Fatalf("ready rule %s, listeners %+v", s.ReadyRule, s.Listeners)
	}
}

// --ready node-listen waits for the app to listen on sockd's sockets: the
// app's own process.send('ready') (a PM2 habit) does not make it ready, or
// an app that says so before it listens (or that listens elsewhere) would
// retire the workers that serve.
func TestNodeListenIgnoresTheAppsOwnReady(t *testing.T) {
	nodeApps(t)
	app := filepath.Join(t.TempDir(), "early.js")
	os.WriteFile(app, []byte("process.send && process.send('ready');\nsetInterval(() => {}, 1000);\n"), 0o644)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--workers", "1", "--listen", "tcp://127.0.0.1:0",
		"--ready", "node-listen", "--ready-timeout", "2s", "--", "node", app)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitFor(t, 20*time.Second, "the ready timeout", func() bool { return strings.Contains(out.String(), "event=worker_ready_timeout") })
	if strings.Contains(out.String(), "event=worker_ready ") {
		t.Fatalf("the app's own ready made the worker ready:\n%s", out)
	}
}

// TestNodeAppWithoutAStopHandler: the Express hello world has no handler
// for SIGTERM, sockd's default stop signal; Node's default is to die at
// once, in the middle of its requests. sockd's preload closes its servers
// with the careful drain instead, and reloads lose nothing.
func TestNodeAppWithoutAStopHandler(t *testing.T) {
	nodeApps(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("no wrk")
	}
	app := filepath.Join(t.TempDir(), "bare.js")
	os.WriteFile(app, []byte("require('http').createServer((q, r) => setTimeout(() => r.end('ok'), 20)).listen(process.env.PORT);\n"), 0o644)
	port := freePort(t)
	d := startSockd(t, []string{"PORT=" + strconv.Itoa(port)}, "--workers", "2", "--listen", fmt.Sprintf("http=tcp://127.0.0.1:%d", port),
		"--ready", "node-listen", "--", "node", app)
	run, err := load.StartWrk(wrk, fmt.Sprintf("http://127.0.0.1:%d/", port), load.WrkOptions{Conns: 16, Threads: 2, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer run.Kill()
	for i := 0; i < 3; i++ {
		var out bytes.Buffer
		if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
			t.Fatalf("reload %d: exit %d %s", i+1, code, out.String())
		}
	}
	res, err := run.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3 reloads: %s", res)
	if res.Failed() > 0 || res.Requests < 100 {
		t.Fatalf("wrk over 3 reloads of an app without a SIGTERM handler: %s\n%s", res, res.Output)
	}
	if strings.Contains(d.out.String(), "killed by SIGTERM") {
		t.Errorf("a worker died of SIGTERM:\n%s", d.out)
	}
}

// README's PM2 table, the row for `pm2 start app.js -i max`, as it stands
// there (PORT and app.js filled in): an app that listens on its port runs on
// every CPU and answers.
func TestReadmePM2ClusterRow(t *testing.T) {
	nodeApps(t)
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?m)^\\| `pm2 start app.js -i max` \\| `sockd run ([^`]*)`").FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md has no PM2 row for `pm2 start app.js -i max`")
	}
	port := freePort(t)
	app := filepath.Join(t.TempDir(), "app.js")
	os.WriteFile(app, []byte(fmt.Sprintf("require('http').createServer((q, r) => r.end('pid=' + process.pid)).listen(%d);\n", port)), 0o644)
	args := strings.Fields(strings.ReplaceAll(string(m[1]), "PORT", strconv.Itoa(port)))
	for i, a := range args {
		if a == "app.js" {
			args[i] = app
		}
	}
	d := startSockd(t, nil, args...)
	waitFor(t, 30*time.Second, "a worker per CPU, ready", func() bool { s := d.mustStatus(); return s.Size >= 1 && s.Ready == s.Size })
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "pid=") {
		t.Fatalf("answer %q", body)
	}
}
