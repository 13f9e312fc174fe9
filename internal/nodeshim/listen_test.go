package nodeshim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/worker/workertest"
)

const readyTimeout = 30 * time.Second

// Unchanged apps of every framework, listening on PORT as their docs show,
// run two to a socket that sockd holds: each gets sockd's socket, every
// request is answered by one of them, both take connections, and the
// socket's backlog stays sockd's.
func TestFrameworksShareSockdSocket(t *testing.T) {
	dir := apps(t)
	for _, app := range []string{"http-app.js", "express-app.js", "express4-app.js", "fastify-app.js", "koa-app.js"} {
		for _, addr := range []string{"tcp://127.0.0.1:0", "tcp://[::]:0"} {
			t.Run(strings.TrimSuffix(app, ".js")+"/"+addr, func(t *testing.T) {
				set := bind(t, "web="+addr)
				fd := set[0].FD(0)
				before := backlog(t, fd)
				env := []string{"PORT=" + strconv.Itoa(port(t, set[0]))}
				var pids []int
				for range 2 {
					p := start(t, spec{cmd: []string{"node", app}, dir: dir, set: set, ipc: true, env: env})
					p.waitMsg(`"ready"`, readyTimeout)
					pids = append(pids, p.pid)
					// The fd 3 it listens on is sockd's socket.
					if got, want := inodeOf(t, p.pid, 3), fdtest.Inode(fd); got != want {
						t.Fatalf("pid %d's fd 3 is socket %d, not sockd's %d", p.pid, got, want)
					}
				}
				seen := map[int]int{}
				workertest.Eventually(t, 20*time.Second, fmt.Sprintf("both %v to answer (answers so far %v)", pids, seen), func() bool {
					for range 20 {
						pid, _, err := get("tcp", "127.0.0.1:"+strconv.Itoa(port(t, set[0])), "/")
						if err != nil {
							t.Fatalf("request failed: %v", err)
						}
						if pid != pids[0] && pid != pids[1] {
							t.Fatalf("answered by pid %d, not one of %v", pid, pids)
						}
						seen[pid]++
					}
					return len(seen) == 2
				})
				if after := backlog(t, fd); after != before {
					t.Fatalf("backlog %d before the apps listened, %d after", before, after)
				}
				t.Logf("%s on %s: answers per pid %v, backlog %d", app, set[0].Addr, seen, before)
			})
		}
	}
}

// inodeOf is the inode of the socket that process pid has as fd.
func inodeOf(t testing.TB, pid, fd int) uint64 {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		t.Fatalf("pid %d fd %d: %v", pid, fd, err)
	}
	var ino uint64
	if _, err := fmt.Sscanf(link, "socket:[%d]", &ino); err != nil {
		t.Fatalf("pid %d fd %d is %s, not a socket", pid, fd, link)
	}
	return ino
}

// Without the preload Node calls listen(2) again with its own backlog:
// the check above would see it (this is what the preload prevents).
func TestBacklogShrinksWithoutPreload(t *testing.T) {
	set := bind(t, "web=tcp://127.0.0.1:0")
	fd := set[0].FD(0)
	before := backlog(t, fd)
	p := start(t, spec{cmd: []string{"node", "-e", `
		require('http').createServer((q, r) => r.end('pid=' + process.pid)).listen({fd: 3}, () => process.send('ready'));`},
		set: set, ipc: true, noPreload: true})
	p.waitMsg(`"ready"`, readyTimeout)
	if after := backlog(t, fd); after != 511 || before == 511 {
		t.Fatalf("backlog %d before, %d after a plain listen({fd: 3}); want Node's 511 after", before, after)
	}
}

// Every form of listen() that names a socket sockd holds gets that socket
// (the same fd, sockd's backlog); the others bind as without sockd.
func TestListenForms(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.sock")
	set := bind(t,
		"a=tcp://127.0.0.1:0", // listen(PORT): no host
		"b=tcp://[::]:0",      // listen(String(PORT), '0.0.0.0', cb)
		"c=tcp://127.0.0.1:0", // listen({port, host: '::'})
		"d=tcp://127.0.0.1:0", // listen(PORT, 'localhost', cb): a name, looked up
		"e=unix://"+sock,      // listen(path)
		"f=tcp://127.0.0.1:0", // https
		"g=tcp://127.0.0.1:0", // net.Server, listen(port, host, backlog, cb)
		"h=tcp://[::1]:0",     // listen(PORT, '127.0.0.1'): no clash with ::1, binds itself
	)
	env := []string{"SOCK=" + sock}
	for i, l := range set {
		if l.Network != "unix" {
			env = append(env, fmt.Sprintf("PORT_%c=%d", 'A'+i, port(t, l)))
		}
	}
	key, cert := selfSigned(t, dir)
	env = append(env, "KEY="+key, "CERT="+cert, "FREE_SOCK="+filepath.Join(dir, "free.sock"))
	script := filepath.Join(dir, "forms.js")
	os.WriteFile(script, []byte(`
const http = require('http'), https = require('https'), net = require('net'), fs = require('fs');
const E = process.env, out = {};
const h = () => http.createServer((q, r) => r.end('pid=' + process.pid + ' ' + q.url));
const servers = {
  a: h(), b: h(), c: h(), d: h(), e: h(), g: net.createServer((c) => c.once('data', () => { const b = 'pid=' + process.pid; c.end('HTTP/1.1 200 OK\r\nContent-Length: ' + b.length + '\r\nConnection: close\r\n\r\n' + b); })),
  f: https.createServer({key: fs.readFileSync(E.KEY), cert: fs.readFileSync(E.CERT)}, (q, r) => r.end('pid=' + process.pid)),
  h: h(), free: h(), zero: h(),
};
let n = Object.keys(servers).length;
const done = (name) => () => {
  const s = servers[name];
  out[name] = {fd: s._handle.fd, address: s.address()};
  if (--n === 0) process.send(out);
};
servers.a.listen(E.PORT_A, done('a'));
servers.b.listen(String(E.PORT_B), '0.0.0.0', done('b'));
servers.c.listen({port: Number(E.PORT_C), host: '::'}, done('c'));
servers.d.listen(Number(E.PORT_D), 'localhost', done('d'));
servers.e.listen(E.SOCK, done('e'));
servers.f.listen(Number(E.PORT_F), done('f'));
servers.g.listen(Number(E.PORT_G), '127.0.0.1', 10, done('g'));
servers.h.listen(Number(E.PORT_H), '127.0.0.1', done('h'));
servers.free.listen(E.FREE_SOCK, done('free'));
servers.zero.listen(0, '127.0.0.1', done('zero'));
`), 0o644)
	p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env})
	var got map[string]struct {
		FD      int
		Address json.RawMessage
	}
	select {
	case m := <-p.msgs:
		if err := json.Unmarshal([]byte(m), &got); err != nil {
			t.Fatalf("message %s: %v", m, err)
		}
	case <-p.done:
		t.Fatalf("exited: %v\n%s", p.err, p.out)
	case <-time.After(readyTimeout):
		t.Fatalf("no report\n%s", p.out)
	}
	for i, l := range set[:7] {
		name := l.Name
		if got[name].FD != 3+i {
			t.Errorf("server %s listens on fd %d, want sockd's fd %d (%s); address %s", name, got[name].FD, 3+i, l.Addr, got[name].Address)
		}
		if b := backlog(t, l.FD(0)); b != somaxconn() {
			t.Errorf("server %s: backlog %d, want sockd's %d", name, b, somaxconn())
		}
	}
	for _, name := range []string{"h", "free", "zero"} {
		if got[name].FD < 3+len(set) {
			t.Errorf("server %s listens on fd %d, one of sockd's: it should have bound its own socket", name, got[name].FD)
		}
	}
	// Each answers on sockd's socket.
	for i, l := range set[:7] {
		network, addr := "tcp", l.Addr
		if l.Network == "unix" {
			network = "unix"
		}
		if l.Name == "f" {
			continue // TLS: checked below
		}
		pid, _, err := get(network, addr, "/")
		if err != nil || pid != p.pid {
			t.Errorf("listener %d (%s): pid %d, %v", i, addr, pid, err)
		}
	}
	if pid := tlsPID(t, set[5].Addr); pid != p.pid {
		t.Errorf("https on sockd's socket answered by pid %d", pid)
	}
}

// A process that is not sockd's worker leaves sockd's sockets alone, and a
// listen that collides with one fails as it would without sockd, with one
// line that says why.
func TestNotTheWorker(t *testing.T) {
	dir := apps(t)
	set := bind(t, "web=tcp://127.0.0.1:0")
	env := []string{"PORT=" + strconv.Itoa(port(t, set[0]))}

	t.Run("LISTEN_PID names another process", func(t *testing.T) {
		p := start(t, spec{cmd: []string{"node", "http-app.js"}, dir: dir, set: set, env: env, listenPID: "1"})
		if code := p.wait(readyTimeout); code == 0 {
			t.Fatalf("exit 0; want the EADDRINUSE crash")
		}
		out := p.out.String()
		hint := hintLine(out)
		if !strings.Contains(out, "EADDRINUSE") || !strings.Contains(hint, "not to this process") {
			t.Fatalf("no clear hint; output:\n%s", out)
		}
		t.Logf("hint: %s", hint)
	})

	t.Run("a node process the worker starts", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "parent.js")
		os.WriteFile(script, []byte(`
const { spawn } = require('child_process');
require('http').createServer((q, r) => r.end('pid=' + process.pid)).listen(process.env.PORT, () => {
  // The child inherits NODE_OPTIONS, LISTEN_FDS and the rest, and gets fd 3 too.
  const c = spawn(process.execPath, ['-e', "require('net').createServer().listen(process.env.PORT)"],
    {stdio: ['ignore', 'inherit', 'inherit', 3]});
  c.on('exit', (code) => { console.log('child exit ' + code); process.send('ready'); });
});`), 0o644)
		p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env})
		p.waitMsg(`"ready"`, readyTimeout)
		// console.log writes to a pipe asynchronously: the line may come
		// after the IPC message sent after it.
		p.waitOutput("child exit ", readyTimeout)
		if !strings.Contains(p.out.String(), "child exit 1") || !strings.Contains(hintLine(p.out.String()), "belong to the Node process "+strconv.Itoa(p.pid)) {
			t.Fatalf("the child should fail with EADDRINUSE and a hint naming its parent:\n%s", p.out)
		}
		if pid, _, err := get("tcp", set[0].Addr, "/"); err != nil || pid != p.pid {
			t.Fatalf("sockd's socket answered by %d, %v; want the worker %d", pid, err, p.pid)
		}
	})

	t.Run("a shell script starts node", func(t *testing.T) {
		p := start(t, spec{cmd: []string{"sh", "-c", "echo starting; node http-app.js; echo done"}, dir: dir, set: set, ipc: true, env: env})
		p.waitMsg(`"ready"`, readyTimeout)
		pid, _, err := get("tcp", set[0].Addr, "/")
		if err != nil || pid == p.pid || pid == 0 {
			t.Fatalf("answered by %d (%v); want node, a child of the shell %d", pid, err, p.pid)
		}
	})

	t.Run("listen again after close", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "again.js")
		os.WriteFile(script, []byte(`
const https = require('https'), http = require('http');
const s = https.createServer();
s.listen(process.env.PORT, () => {
  s.close(); // the fd is closed now; the drain (and 'close') may come later
  require('net').createServer().listen(0); // takes the lowest free fd: 3
  http.createServer().listen(process.env.PORT);
});`), 0o644)
		p := start(t, spec{cmd: []string{"node", script}, set: set, env: env})
		if code := p.wait(readyTimeout); code == 0 {
			t.Fatalf("exit 0; want EADDRINUSE")
		}
		if hint := hintLine(p.out.String()); !strings.Contains(hint, "which this process closed") {
			t.Fatalf("hint %q; output:\n%s", hint, p.out)
		}
	})

	t.Run("a second server on the same port", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "twice.js")
		os.WriteFile(script, []byte(`
const http = require('http');
http.createServer().listen(process.env.PORT, () => http.createServer().listen(process.env.PORT));`), 0o644)
		p := start(t, spec{cmd: []string{"node", script}, set: set, env: env})
		if code := p.wait(readyTimeout); code == 0 {
			t.Fatalf("exit 0; want EADDRINUSE")
		}
		if hint := hintLine(p.out.String()); !strings.Contains(hint, "another server of this process already listens on it") {
			t.Fatalf("hint %q; output:\n%s", hint, p.out)
		}
	})
}

func hintLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "sockd: ") {
			return l
		}
	}
	return ""
}

// `npm start` as the worker: npm (Node too) hands sockd's sockets and the
// IPC channel on to the script it runs, so the app serves on sockd's
// socket and its process.send('ready') reaches sockd; SIGINT to the
// worker's process group (as sockd sends it) drains the app and ends all.
func TestNpmStart(t *testing.T) {
	dir := apps(t)
	set := bind(t, "web=tcp://127.0.0.1:0")
	fd := set[0].FD(0)
	before := backlog(t, fd)
	p := start(t, spec{cmd: []string{"npm", "start"}, dir: dir, set: set, ipc: true,
		env: []string{"PORT=" + strconv.Itoa(port(t, set[0]))}})
	p.waitMsg(`"ready"`, readyTimeout)
	pid, _, err := get("tcp", set[0].Addr, "/")
	if err != nil || pid == 0 || pid == p.pid {
		t.Fatalf("answered by %d (%v); want the app npm started, not npm (%d)", pid, err, p.pid)
	}
	if got := inodeOf(t, pid, 3); got != fdtest.Inode(fd) {
		t.Fatalf("the app's fd 3 is socket %d, not sockd's", got)
	}
	if after := backlog(t, fd); after != before {
		t.Fatalf("backlog %d before, %d after", before, after)
	}
	if err := unix.Kill(-p.pid, unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	p.wait(readyTimeout)
	workertest.Eventually(t, readyTimeout, "npm's process group to end", p.groupGone)
}

// A listen on one address (127.0.0.1, localhost: Fastify's default) that
// takes sockd's socket on every address says so, once, with what to give
// sockd instead; a listen with no host says nothing.
func TestListenWiderThanAsked(t *testing.T) {
	dir := t.TempDir()
	set := bind(t, "web=tcp://[::]:0", "plain=tcp://[::]:0")
	env := []string{fmt.Sprintf("PORT_W=%d", port(t, set[0])), fmt.Sprintf("PORT_P=%d", port(t, set[1]))}
	script := filepath.Join(dir, "loopback.js")
	os.WriteFile(script, []byte(`
const http = require('http'), E = process.env;
const h = () => http.createServer((q, r) => r.end('pid=' + process.pid));
let n = 2;
const done = () => { if (--n === 0) process.send('listening'); };
h().listen(Number(E.PORT_W), '127.0.0.1', done);
h().listen(Number(E.PORT_P), done);
`), 0o644)
	p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env})
	select {
	case <-p.msgs:
	case <-p.done:
		t.Fatalf("exited: %v\n%s", p.err, p.out)
	case <-time.After(readyTimeout):
		t.Fatalf("no report\n%s", p.out)
	}
	want := fmt.Sprintf("sockd: listen on 127.0.0.1:%d took sockd's socket web, which listens on every address ([::]:%d): to serve on 127.0.0.1 only, give sockd that address (--listen web=tcp://127.0.0.1:%d", port(t, set[0]), port(t, set[0]), port(t, set[0]))
	// stderr comes through a pipe the test reads on its own: the line may
	// reach it after the IPC message.
	deadline := time.Now().Add(readyTimeout)
	for !strings.Contains(p.out.String(), want) && time.Now().Before(deadline) {
		<-time.After(10 * time.Millisecond)
	}
	out := p.out.String()
	if strings.Count(out, want) != 1 || strings.Count(out, "listens on every address") != 1 {
		t.Fatalf("output:\n%s\nwant once: %s", out, want)
	}
}

// Two workers of one app that listen on a fixed port sockd does not hold
// (a metrics port beside PORT): the second cannot bind it, and dies with
// one line saying why and what to give sockd.
func TestForeignPortInUse(t *testing.T) {
	dir := t.TempDir()
	set := bind(t, "web=tcp://127.0.0.1:0")
	free := bind(t, "free=tcp://127.0.0.1:0") // a port nobody else takes while the test runs
	metrics := port(t, free[0])
	free.Close()
	script := filepath.Join(dir, "metrics.js")
	os.WriteFile(script, []byte(`
const http = require('http');
http.createServer((q, r) => r.end('m')).listen(Number(process.env.METRICS_PORT), () => process.send('listening'));
`), 0o644)
	env := []string{fmt.Sprintf("METRICS_PORT=%d", metrics)}
	first := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env})
	select {
	case <-first.msgs:
	case <-first.done:
		t.Fatalf("the first worker exited: %v\n%s", first.err, first.out)
	case <-time.After(readyTimeout):
		t.Fatalf("the first worker does not listen\n%s", first.out)
	}
	second := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env})
	select {
	case <-second.done:
	case <-time.After(readyTimeout):
		t.Fatalf("the second worker did not die of EADDRINUSE\n%s", second.out)
	}
	want := fmt.Sprintf("sockd: listen EADDRINUSE on port %d: not one of sockd's sockets", metrics)
	if out := second.out.String(); strings.Count(out, want) != 1 || !strings.Contains(out, fmt.Sprintf("--listen NAME=tcp://:%d", metrics)) {
		t.Fatalf("the second worker's output:\n%s\nwant once: %s", out, want)
	}
}

// An app that removes its socket file before listen(path) and again on
// exit, as many do, leaves sockd's socket file alone: every form of unlink
// and rm of it (by its path, or another path to the same file) is skipped
// with one line, while a file of the app's own is removed as asked.
func TestUnixSocketFileKept(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.sock")
	set := bind(t, "web=unix://"+sock)
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(dir, "own.sock")
	if err := os.WriteFile(own, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "unlink.js")
	os.WriteFile(script, []byte(`
const http = require('http'), fs = require('fs'), fsp = require('fs/promises');
const E = process.env, p = E.SOCK;
if (fs.existsSync(p)) fs.unlinkSync(p);
fs.rmSync(E.ALIAS + '/app.sock', {force: true});
fs.unlinkSync(E.OWN);
fs.unlink(p, (err) => {
  if (err) throw err;
  fs.rm(p, {force: true}, (err) => {
    if (err) throw err;
    fsp.unlink(p).then(() => fsp.rm(new URL('file://' + p))).then(() => {
      const s = http.createServer((q, r) => r.end('pid=' + process.pid));
      s.listen(p, () => process.send('listening'));
    });
  });
});
process.on('SIGTERM', () => { fs.unlinkSync(p); process.exit(0); });
`), 0o644)
	p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true,
		env: []string{"SOCK=" + sock, "ALIAS=" + alias, "OWN=" + own}})
	p.waitMsg(`"listening"`, readyTimeout)
	if pid, _, err := get("unix", sock, "/"); err != nil || pid != p.pid {
		t.Fatalf("GET over %s: pid %d, %v; want %d", sock, pid, err, p.pid)
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("the app's own file %s: %v, want it removed", own, err)
	}
	p.signal(unix.SIGTERM)
	if code := p.wait(readyTimeout); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.out)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("sockd's socket file after the app's unlinks: %v, %v", fi, err)
	}
	if n := strings.Count(p.out.String(), "kept "+sock+": it is sockd's listening socket web"); n != 1 {
		t.Errorf("%d lines say the file was kept, want 1; output:\n%s", n, p.out)
	}
}

// A worker that listens only on a port sockd does not hold gets one line
// saying that sockd's clients reach none of its servers; one that also
// takes sockd's socket (the other port is an admin port) gets none.
func TestListenOnlyElsewhereIsSaid(t *testing.T) {
	dir := t.TempDir()
	set := bind(t, "web=tcp://127.0.0.1:0")
	script := filepath.Join(dir, "elsewhere.js")
	os.WriteFile(script, []byte(`
const http = require('http'), h = () => http.createServer((q, r) => r.end('x'));
h().listen(Number(process.env.OTHER_PORT), '127.0.0.1', () => {
  if (process.env.ALSO_PORT) h().listen(Number(process.env.ALSO_PORT));
  setTimeout(() => process.send('done'), 600);
});
`), 0o644)
	free := bind(t, "free=tcp://127.0.0.1:0", "free2=tcp://127.0.0.1:0") // ports nobody else takes while the test runs
	other, other2 := strconv.Itoa(port(t, free[0])), strconv.Itoa(port(t, free[1]))
	free.Close()
	want := "listening on port " + other + ", which is not one of sockd's sockets (sockd holds port " + strconv.Itoa(port(t, set[0])) + ")"
	alone := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: []string{"SOCKD_NODE_FOREIGN_MS=200", "OTHER_PORT=" + other}})
	alone.waitMsg(`"done"`, readyTimeout)
	if n := strings.Count(alone.out.String(), want); n != 1 {
		t.Fatalf("%d lines say so, want 1:\n%s", n, alone.out)
	}
	alone.signal(unix.SIGKILL)
	alone.wait(readyTimeout)
	both := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: []string{"SOCKD_NODE_FOREIGN_MS=200", "OTHER_PORT=" + other2, "ALSO_PORT=" + strconv.Itoa(port(t, set[0]))}})
	both.waitMsg(`"done"`, readyTimeout)
	if strings.Contains(both.out.String(), "not one of sockd's sockets") {
		t.Fatalf("a worker that serves sockd's socket too was told it does not:\n%s", both.out)
	}
}
