package pm2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// evalApp writes an ecosystem file whose one app carries what the file's
// code saw in env.SEEN, loads it, and returns that.
func evalApp(t *testing.T, o Options, code string) (map[string]any, error) {
	t.Helper()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "server.js"), "//\n", 0o644)
	o.Path = writeTestFile(t, filepath.Join(dir, "ecosystem.config.js"), code, 0o644)
	f, err := load(t, o)
	if err != nil {
		return nil, err
	}
	a, err := f.App("")
	if err != nil {
		t.Fatal(err)
	}
	var seen map[string]any
	if err := json.Unmarshal([]byte(a.Env["SEEN"]), &seen); err != nil {
		t.Fatalf("SEEN=%q: %v", a.Env["SEEN"], err)
	}
	return seen, nil
}

// fdsJS exports what the file's process has open: fd → link target.
const fdsJS = `
const fs = require('fs');
const fds = {};
for (const fd of fs.readdirSync('/proc/self/fd')) {
  try { fds[fd] = fs.readlinkSync('/proc/self/fd/' + fd); } catch (e) {}
}
module.exports = { apps: [{ script: 'server.js', env: { SEEN: { fds, cwd: process.cwd(), dirname: __dirname, env: process.env } } }] };
`

// inode names what an fd refers to as /proc/PID/fd shows it.
func inode(t *testing.T, fd int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// strayFD duplicates fd without close-on-exec, as a descriptor sockd
// inherited from systemd looks before sockd takes it.
func strayFD(t *testing.T, fd int) int {
	t.Helper()
	nfd, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(nfd) // Dup does not set it; clear it explicitly below
	if _, err := unix.FcntlInt(uintptr(nfd), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(nfd) })
	return nfd
}

// TestEvalSeesNoDescriptors: the file runs with stdin, stdout, stderr and
// node's own descriptors, none of sockd's: neither the ones it keeps
// close-on-exec nor strays it inherited without (a listening socket, a
// pipe).
func TestEvalSeesNoDescriptors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	strays := map[string]int{}
	for _, fd := range []int{int(lf.Fd()), int(r.Fd())} {
		s := strayFD(t, fd)
		strays[inode(t, s)] = s
	}
	cloexec := inode(t, int(w.Fd()))

	// The check can fail: a child started plainly does inherit them.
	out, err := exec.Command("/bin/sh", "-c", "ls -l /proc/$$/fd").Output()
	if err != nil {
		t.Fatal(err)
	}
	for name := range strays {
		if !strings.Contains(string(out), name) {
			t.Fatalf("a plain child does not see the stray %s: the test proves nothing\n%s", name, out)
		}
	}

	seen, err := evalApp(t, Options{}, fdsJS)
	if err != nil {
		t.Fatal(err)
	}
	fds := seen["fds"].(map[string]any)
	for fd, target := range fds {
		if _, stray := strays[target.(string)]; stray || target == cloexec {
			t.Errorf("the file sees fd %s → %s", fd, target)
		}
	}
	for _, std := range []string{"0", "1", "2"} {
		if _, ok := fds[std]; !ok {
			t.Errorf("fd %s is not open in the file's process: %v", std, fds)
		}
	}
}

// TestEvalEnvironment: the file sees Options.Environ without sockd's own
// variables, runs in Options.Dir, and __dirname is its own directory.
func TestEvalEnvironment(t *testing.T) {
	env, _ := testEnv(t)
	env = append(env, "APP_SECRET=s", "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b", "NOTIFY_SOCKET=/run/x", "NODE_CHANNEL_FD=3", "WATCHDOG_USEC=1")
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "server.js"), "//\n", 0o644)
	seen, err := evalApp(t, Options{Environ: env, Dir: dir}, fdsJS)
	if err != nil {
		t.Fatal(err)
	}
	got := seen["env"].(map[string]any)
	if got["APP_SECRET"] != "s" {
		t.Errorf("APP_SECRET = %v, want s", got["APP_SECRET"])
	}
	for _, k := range privateEnv {
		if v, ok := got[k]; ok {
			t.Errorf("the file sees %s=%v", k, v)
		}
	}
	if seen["cwd"] != dir {
		t.Errorf("process.cwd() = %v, want %s", seen["cwd"], dir)
	}
	if d := seen["dirname"].(string); d == dir || !strings.HasPrefix(d, os.TempDir()) {
		t.Errorf("__dirname = %s: want the file's directory", d)
	}
}

// waitGone waits until pid is neither running nor a zombie: reaped, its
// /proc entry gone. (A child node started is reparented when node is
// killed, and reaped by init.)
func waitGone(t *testing.T, pid int) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("process %d gone after %s", pid, time.Since(start)) }()
	workertest.Eventually(t, 10*time.Second, fmt.Sprintf("process %d gone", pid), func() bool {
		_, err := procfs.ReadProcess(pid)
		return errors.Is(err, fs.ErrNotExist)
	})
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the file did not write its pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestEvalTimeout: a file that never finishes is killed at the deadline,
// with what it started, and the error says so.
func TestEvalTimeout(t *testing.T) {
	env, _ := testEnv(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	env = append(env, "PIDFILE="+pidfile)
	start := time.Now()
	_, err := evalApp(t, Options{Environ: env, Timeout: 500 * time.Millisecond}, `
const cp = require('child_process');
const child = cp.spawn('sleep', ['300'], { stdio: 'ignore' });
require('fs').writeFileSync(process.env.PIDFILE, process.pid + ' ' + child.pid);
for (;;) {}
`)
	checkErr(t, err, ErrTimeout, "ecosystem.config.js: node did not finish evaluating the file within 500ms")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Load took %s after a 500ms timeout", d)
	}
	b, _ := os.ReadFile(pidfile)
	if len(strings.Fields(string(b))) != 2 {
		t.Fatalf("pid file %q: want node's and the child's pid", b)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		waitGone(t, pid)
	}
}

// TestEvalLeavesNothing: what the file starts and leaves running is ended
// once its exports are read, as the file itself is (PM2 reads
// module.exports as soon as require returns).
func TestEvalLeavesNothing(t *testing.T) {
	env, _ := testEnv(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	env = append(env, "PIDFILE="+pidfile)
	_, err := evalApp(t, Options{Environ: env}, `
const cp = require('child_process');
const child = cp.spawn('sleep', ['300'], { stdio: 'ignore' });
setInterval(() => {}, 1000);
require('fs').writeFileSync(process.env.PIDFILE, process.pid + ' ' + child.pid);
module.exports = { apps: [{ script: 'server.js', env: { SEEN: '{}' } }] };
`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidfile)
	if len(strings.Fields(string(b))) != 2 {
		t.Fatalf("pid file %q: want node's and the child's pid", b)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		waitGone(t, pid)
	}
}

// TestEvalEscapedChild: a child that leaves the process group and holds
// node's stdout cannot make Load wait for it, nor outlive it.
func TestEvalEscapedChild(t *testing.T) {
	env, _ := testEnv(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	env = append(env, "PIDFILE="+pidfile)
	start := time.Now()
	_, err := evalApp(t, Options{Environ: env}, `
const cp = require('child_process');
const child = cp.spawn('sleep', ['300'], { stdio: 'inherit', detached: true });
require('fs').writeFileSync(process.env.PIDFILE, String(child.pid));
module.exports = { apps: [{ script: 'server.js', env: { SEEN: '{}' } }] };
`)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Load took %s", d)
	}
	// It left the group, but not the mark in its environment: it is gone
	// too, or every reload would leave one more.
	pid := readPid(t, pidfile)
	if pid <= 0 {
		t.Fatal("no pid of the detached child")
	}
	waitGone(t, pid)
}

// TestEvalBounds: what the file prints is not its result, and what it
// exports is bounded.
func TestEvalBounds(t *testing.T) {
	code := `
process.stdout.write('x'.repeat(1 << 20));
console.log('{"kind":"object","config":{"apps":[{"script":"nope.js"}]}}');
console.error('noise');
module.exports = { apps: [{ script: 'server.js', env: { SEEN: JSON.stringify({ big: 'y'.repeat(2 << 20) }) } }] };
`
	seen, err := evalApp(t, Options{}, code)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen["big"].(string)) != 2<<20 {
		t.Errorf("the 2 MiB value came back with %d bytes", len(seen["big"].(string)))
	}
	_, err = evalApp(t, Options{MaxOutput: 1 << 20}, code)
	checkErr(t, err, ErrSyntax, "exports more than 1048576 bytes of JSON")
}

// TestEvalCancel: a cancelled context ends the evaluation and is returned
// as it is, not as a bad file.
func TestEvalCancel(t *testing.T) {
	env, _ := testEnv(t)
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	path := writeTestFile(t, filepath.Join(dir, "e.config.js"), "require('fs').writeFileSync(process.env.PIDFILE, String(process.pid)); for (;;) {}", 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Load(ctx, Options{Path: path, Environ: append(env, "PIDFILE="+pidfile)})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// writeFileSync creates the file, then writes: wait for its pid.
		if b, err := os.ReadFile(pidfile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the file never ran")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	var pe *Error
	if errors.As(err, &pe) {
		t.Errorf("cancellation reported as a bad file: %v", err)
	}
	waitGone(t, readPid(t, pidfile))
}

// TestEvalSwallowedError: a file that makes uncaught errors harmless and
// keeps node busy still ends with its error, not a timeout.
func TestEvalSwallowedError(t *testing.T) {
	_, err := evalApp(t, Options{Timeout: 5 * time.Second}, `
process.on('uncaughtException', () => {});
setInterval(() => {}, 1000);
throw new TypeError('bad config');
`)
	checkErr(t, err, ErrSyntax, "ecosystem.config.js:4: TypeError: bad config")
}

// TestEvalUnderReaper: in a subreaper whose reaper reaps every child it
// does not own, as sockd is, node is still Load's to wait for: its exit
// status is reported, not stolen.
func TestEvalUnderReaper(t *testing.T) {
	env, _ := testEnv(t)
	for i := 0; i < 3; i++ {
		cmd := exec.Command(os.Args[0], testdata(t, "bad/exit.config.js"), testdata(t, "apps/simple.config.js"), testdata(t, "bad/syntax.config.mjs"))
		cmd.Env = append(env, helperEnv+"=reaper")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], "node exited (exit status 3) before the file was read") ||
			!strings.HasSuffix(lines[1], "simple.config.js <nil>") || !strings.Contains(lines[2], "syntax.config.mjs:2: SyntaxError") {
			t.Fatalf("helper said:\n%s", out)
		}
	}
}
