package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// containModes are the two ways sockd finds what a worker started: each
// worker's cgroup, and (with --cgroups no) the SOCKD_WORKER_ID the
// processes inherit, with sockd as their subreaper.
func containModes(t *testing.T) []string {
	modes := []string{"no"}
	t.Helper()
	if err := cgroup.Probe(); err == nil {
		modes = append(modes, "yes")
	} else {
		t.Logf("CGROUPS NOT USABLE HERE, only the subreaper path is tested: %v", err)
	}
	return modes
}

// daemonsOf reads the pids the workers' daemons wrote.
func daemonsOf(file string) []int {
	b, _ := os.ReadFile(file)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitDaemons waits until the file lists n pids and returns those after
// the first skip, which must all run.
func waitDaemons(t *testing.T, file string, n, skip int) []int {
	t.Helper()
	var pids []int
	waitFor(t, 20*time.Second, fmt.Sprintf("%d daemons started by workers", n), func() bool {
		pids = daemonsOf(file)
		return len(pids) >= n
	})
	pids = pids[skip:]
	for _, pid := range pids {
		if !procfs.Alive(pid) {
			t.Fatalf("daemon %d is not running", pid)
		}
	}
	return pids
}

func waitGone(t *testing.T, what string, pids []int) {
	t.Helper()
	for _, pid := range pids {
		waitFor(t, 20*time.Second, fmt.Sprintf("%s %d gone", what, pid), func() bool { return !procfs.Alive(pid) })
	}
}

// marked lists the live processes that carry a SOCKD_WORKER_ID of sockd pid.
func marked(sockd int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && procfs.Alive(pid) && procfs.EnvHas(pid, fmt.Sprintf("%s=%d-", pool.WorkerIDVar, sockd)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// A worker (a shell script) that starts two daemons with setsid -f, which
// leave its process group and its parent, then execs the demo worker.
const daemonScript = `for i in 1 2; do setsid -f sh -c 'echo $$ >> "$DAEMONS"; exec sleep 1000' </dev/null >/dev/null 2>&1; done; exec "$0" demo-worker`

// What a worker started with setsid is gone when a reload retires the
// worker, when sockd stops cleanly, and when sockd is killed with SIGKILL.
func TestSetsidDaemonsDieWithTheirWorker(t *testing.T) {
	for _, mode := range containModes(t) {
		t.Run("cgroups="+mode, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "daemons")
			d := startSockd(t, []string{"DAEMONS=" + file}, "--cgroups", mode, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--",
				"/bin/sh", "-c", daemonScript, os.Args[0])
			first := waitDaemons(t, file, 4, 0)
			if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("reload: exit %d", code)
			}
			waitGone(t, "daemon of a retired worker", first)
			second := waitDaemons(t, file, 8, 4)
			sockdPID := d.cmd.Process.Pid
			d.cmd.Process.Signal(syscall.SIGTERM)
			if err := d.cmd.Wait(); err != nil {
				t.Fatalf("sockd after SIGTERM: %v", err)
			}
			waitGone(t, "daemon after a clean stop", second)
			if left := marked(sockdPID); len(left) > 0 {
				t.Fatalf("processes of sockd's workers left after a clean stop: %v", left)
			}
		})
		t.Run("cgroups="+mode+"/kill-9", func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "daemons")
			d := startSockd(t, []string{"DAEMONS=" + file}, "--cgroups", mode, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--",
				"/bin/sh", "-c", daemonScript, os.Args[0])
			daemons := waitDaemons(t, file, 4, 0)
			workers := d.mustStatus().Workers
			d.cmd.Process.Kill()
			d.cmd.Wait()
			waitGone(t, "daemon after sockd was killed", daemons)
			for _, w := range workers {
				waitGone(t, "worker", []int{w.PID})
			}
		})
	}
}

// A worker that prints its nice value, then starts two daemons with
// setsid -f (out of its tree: their parent exits) and execs the demo
// worker.
const lowDaemonScript = `nice >> "$NICES"; for i in 1 2; do setsid -f sh -c 'echo $$ >> "$DAEMONS"; exec sleep 1000' </dev/null >/dev/null 2>&1; done; exec "$0" demo-worker`

// With --slow-start a reload's workers start ten nice levels down, and
// so does what they fork before they are ready. A daemon that left the
// worker's tree gets sockd's priority back with the worker: it is found
// the way signals find it (the worker's cgroup, or the orphans sockd
// adopted), not left at the low priority for its whole life.
func TestLowStartRestoresEscapedDaemons(t *testing.T) {
	self := lowStartTestable(t)
	for _, mode := range containModes(t) {
		t.Run("cgroups="+mode, func(t *testing.T) {
			dir := t.TempDir()
			file, nices := filepath.Join(dir, "daemons"), filepath.Join(dir, "nices")
			d := startSockd(t, []string{"DAEMONS=" + file, "NICES=" + nices}, "--cgroups", mode, "--workers", "2",
				"--slow-start", "1s", "--listen", "tcp://127.0.0.1:0", "--", "/bin/sh", "-c", lowDaemonScript, os.Args[0])
			waitDaemons(t, file, 4, 0)
			if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("reload: exit %d", code)
			}
			second := waitDaemons(t, file, 8, 4)
			// The second generation did start low (else the test tells
			// nothing): each worker printed its nice value before it
			// forked its daemons.
			b, _ := os.ReadFile(nices)
			want := fmt.Sprintf("%d %d %d %d", self.Nice, self.Nice, self.Nice+10, self.Nice+10)
			if got := strings.Join(strings.Fields(string(b)), " "); got != want {
				t.Fatalf("nice values of the workers' shells: %q, want %q (the reload's pair low)", got, want)
			}
			// At once: the daemons were forked before the worker was
			// ready, so raise's first pass finds them.
			for _, pid := range second {
				if msg := otherPriority(t, pid, self); msg != "" {
					t.Errorf("daemon once its worker is ready: %s", msg)
				}
			}
		})
	}
}

// lowStartTestable returns the test's own scheduling attributes, or skips
// the test when it runs where nothing can be started lower.
func lowStartTestable(t *testing.T) *unix.SchedAttr {
	t.Helper()
	self, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if self.Policy != unix.SCHED_NORMAL && self.Policy != unix.SCHED_BATCH || self.Nice > 9 {
		t.Skipf("the test runs at policy %d, nice %d: nothing to lower", self.Policy, self.Nice)
	}
	return self
}

// otherPriority returns a thread of pid that does not run at want's
// policy and nice value, as a message, or "".
func otherPriority(t *testing.T, pid int, want *unix.SchedAttr) string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatal(err)
		}
		if a.Policy != want.Policy || a.Nice != want.Nice {
			return fmt.Sprintf("thread %d of %d: policy %d nice %d, want %d and %d (sockd's)", tid, pid, a.Policy, a.Nice, want.Policy, want.Nice)
		}
	}
	return ""
}

// A Node worker that spawns a detached child (its own session, unref'd),
// as Node apps start helpers: gone with the worker, and with sockd.
func TestNodeDetachedChildDiesWithItsWorker(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/setup installs Debian's nodejs)")
	}
	script := filepath.Join(t.TempDir(), "detached.js")
	os.WriteFile(script, []byte(`
const { spawn } = require('child_process');
const fs = require('fs');
const c = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
c.unref();
fs.appendFileSync(process.env.DAEMONS, c.pid + '\n');
const s = require('http').createServer((q, r) => r.end('ok')).listen({ fd: 3 });
process.on('SIGTERM', () => s.close());
`), 0o644)
	for _, mode := range containModes(t) {
		t.Run("cgroups="+mode, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "daemons")
			d := startSockd(t, []string{"DAEMONS=" + file}, "--cgroups", mode, "--workers", "2", "--ready", "after:300ms",
				"--listen", "tcp://127.0.0.1:0", "--", node, script)
			first := waitDaemons(t, file, 2, 0)
			if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("reload: exit %d", code)
			}
			waitGone(t, "detached child of a retired worker", first)
			second := waitDaemons(t, file, 4, 2)
			d.cmd.Process.Kill()
			d.cmd.Wait()
			waitGone(t, "detached child after sockd was killed", second)
		})
	}
}

// sockd as PID 1 of its own pid namespace, as a container's entrypoint:
// the zombies of processes its workers orphan are reaped, and SIGTERM
// stops it cleanly (exit 0) with its workers drained.
func TestPID1ReapsOrphansAndStopsCleanly(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1)")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "orphans")
	ctl := filepath.Join(dir, "ctl.sock")
	// Five short-lived orphans (setsid -f: their parent exits at once),
	// then the demo worker.
	script := `for i in 1 2 3 4 5; do setsid -f sh -c 'echo $$ >> "$ORPHANS"; exit 0' </dev/null; done; exec "$0" demo-worker`
	cmd, out := sockdCmd(t, []string{"ORPHANS=" + file}, "run", "--control", ctl, "--workers", "2", "--listen", "tcp://127.0.0.1:0",
		"--stop-timeout", "5s", "--", "/bin/sh", "-c", script, os.Args[0])
	cmd.Args = append([]string{unshare, "--pid", "--fork", "--mount-proc", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = unshare
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// sockd's pid as the host sees it: unshare's child. (Never signal the
	// pid its status names: that is 1, in its namespace.)
	var init int
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			if init > 1 {
				syscall.Kill(init, syscall.SIGKILL)
			}
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	waitFor(t, 10*time.Second, "sockd's host pid", func() bool {
		if kids := procfs.Children(cmd.Process.Pid); len(kids) == 1 {
			init = kids[0]
		}
		return init > 1
	})
	d := &daemonProc{cmd: cmd, out: out, control: ctl, t: t}
	waitFor(t, 20*time.Second, "sockd ready", func() bool {
		s, err := d.status()
		return err == nil && s.State == pool.StateRunning
	})
	if s := d.mustStatus(); s.PID != 1 {
		t.Fatalf("sockd is pid %d in its namespace, want 1", s.PID)
	}
	waitFor(t, 20*time.Second, "10 orphans started", func() bool { return len(daemonsOf(file)) == 10 })
	waitFor(t, 10*time.Second, "no zombie child of sockd", func() bool {
		for _, pid := range procfs.Children(init) {
			if state, _, err := procfs.Stat(pid); err == nil && state == 'Z' {
				return false
			}
		}
		return true
	})
	workers := len(d.mustStatus().Workers)
	syscall.Kill(init, syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sockd as PID 1 after SIGTERM: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "all workers stopped") || workers != 2 {
		t.Fatalf("no clean stop with %d workers:\n%s", workers, out)
	}
}

// --user: the workers run as nobody, READY=1 still reaches sockd, and
// reload and upgrade work; without root, --user is refused.
func TestWorkersRunAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := worldExecutableCopy(t)
	d := startInstalled(t, bin, "--user", "nobody", "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	check := func(when string) {
		t.Helper()
		for _, w := range d.mustStatus().Workers {
			if w.State != pool.Ready {
				continue // a retired one, draining: it may be gone any moment
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.PID))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534"} {
				if !strings.Contains(string(b), want) {
					t.Fatalf("%s: worker %d:\n%s\nwant %q", when, w.PID, b, want)
				}
			}
		}
	}
	check("at start")
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("reload: exit %d", code)
	}
	check("after a reload")
	old := d.mustStatus().PID
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("upgrade: exit %d", code)
	}
	waitFor(t, 20*time.Second, "the upgraded sockd ready", func() bool {
		s, err := d.status()
		return err == nil && s.PID != old && s.Ready == 2
	})
	check("after an upgrade")
	// Not root: refused before anything is bound.
	cmd, out := sockdCmd(t, nil, "run", "--user", "nobody", "--control", filepath.Join(t.TempDir(), "c.sock"), "--listen", "tcp://127.0.0.1:0")
	cmd.Path = bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitUsage || !strings.Contains(out.String(), "must run as root") {
		t.Fatalf("--user without root: exit %d, %s", code, out)
	}
	// A command the user may not run: refused before anything is forked.
	private := filepath.Join(t.TempDir(), "server")
	os.WriteFile(private, []byte("#!/bin/sh\n"), 0o700)
	var stderr bytes.Buffer
	if code := sockd([]string{"run", "--user", "nobody", "--control", filepath.Join(t.TempDir(), "c.sock"), "--listen", "tcp://127.0.0.1:0", "--", private}, io.Discard, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "user nobody cannot") {
		t.Fatalf("--user with a command nobody may run: exit %d, %s", code, stderr.String())
	}
}

// status --check is a health probe (a container's exec probe): exit 0
// while a worker is ready, 1 while none is, 5 when no sockd answers.
func TestStatusCheck(t *testing.T) {
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	var out, errOut bytes.Buffer
	if code := sockd([]string{"status", "--check", "--control", d.control}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "1/1 workers ready") {
		t.Fatalf("check of a serving sockd: exit %d, %q %q", code, out.String(), errOut.String())
	}
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, output := sockdCmd(t, nil, "run", "--control", ctl, "--workers", "1", "--listen", "tcp://127.0.0.1:0", "--ready-timeout", "1m", "--", "/bin/sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	waitFor(t, 20*time.Second, "sockd answering", func() bool {
		return sockd([]string{"status", "--control", ctl}, io.Discard, io.Discard) == 0
	})
	errOut.Reset()
	if code := sockd([]string{"status", "--check", "--control", ctl}, io.Discard, &errOut); code != exitFailed || !strings.Contains(errOut.String(), "not serving: 0/1 workers ready") {
		t.Fatalf("check with no worker ready: exit %d, %q\n%s", code, errOut.String(), output)
	}
	if code := sockd([]string{"status", "--check", "--control", filepath.Join(t.TempDir(), "none.sock")}, io.Discard, io.Discard); code != exitUnreachable {
		t.Fatalf("check without sockd: exit %d", code)
	}
}

// Only the workers' user can reach the workers' NOTIFY_SOCKET: a process
// of another user cannot even send a datagram to it (a flood of them
// would cost sockd a core), while the workers' own READY=1 gets through.
func TestNotifySocketRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	notifier, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("systemd-notify is not installed")
	}
	d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	w := d.mustStatus().Workers[0]
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", w.PID))
	var sock string
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "NOTIFY_SOCKET="); ok {
			sock = v
		}
	}
	if !strings.HasPrefix(sock, "/") {
		t.Fatalf("the workers' NOTIFY_SOCKET is %q, not a path", sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("notify socket's directory: %v %v", fi.Mode(), err)
	}
	cmd := exec.Command(notifier, "--ready")
	cmd.Env = []string{"NOTIFY_SOCKET=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ermission denied") {
		t.Fatalf("systemd-notify as uid 65534: %v %s", err, out)
	}
}

// A non-root user with no runtime directory (a container's runAsUser)
// gets a control socket under $TMPDIR/sockd-UID, as tmux does, which
// `sockd status` of the same user finds; a directory of that name that
// someone else made is refused, with the reason.
func TestControlSocketWithoutARuntimeDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as nobody")
	}
	bin := worldExecutableCopy(t)
	// Temporary directories nobody can reach (t.TempDir's parent is
	// root's alone).
	sharedTmp := func() string {
		dir, err := os.MkdirTemp("", "sockd-tmpdir-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o1777)
		return dir
	}
	tmp := sharedTmp()
	asNobody := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + tmp, "SOCKDTEST_MAIN=1", "GORACE=atexit_sleep_ms=0"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGTERM}
		return cmd
	}
	run := asNobody("run", "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	var out syncBuffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Signal(syscall.SIGTERM); run.Wait() }()
	sock := filepath.Join(tmp, "sockd-65534", "sockd.sock")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sockd's output:\n%s", out.String())
		}
	})
	waitFor(t, 20*time.Second, "sockd status as the same user", func() bool {
		return asNobody("status", "--check").Run() == nil
	})
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("control socket %s: %v", sock, err)
	}
	run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		t.Fatalf("sockd: %v\n%s", err, out.String())
	}

	// Someone else's directory in its place.
	other := sharedTmp()
	os.Mkdir(filepath.Join(other, "sockd-65534"), 0o777)
	bad := asNobody("run", "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	bad.Env[1] = "TMPDIR=" + other
	b, err := bad.CombinedOutput()
	if code := bad.ProcessState.ExitCode(); err == nil || code != exitUsage || !strings.Contains(string(b), "is not a directory of this user's") {
		t.Fatalf("a control directory made by root: exit %d, %s", code, b)
	}
}

// As PID 1 of a pid namespace whose /proc is the host's (unshare --pid
// without --mount-proc), sockd would reap nothing and find none of its
// workers' children: it refuses to start, exit 2, one line.
func TestRefusesAnotherNamespacesProc(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1)")
	}
	cmd, out := sockdCmd(t, nil, "run", "--listen", "none", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--", "/bin/sleep", "60")
	cmd.Args = append([]string{unshare, "--pid", "--fork", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = unshare
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(out.String(), "/proc is another pid namespace's") ||
		strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
		t.Fatalf("sockd under the host's /proc: %v\n%s", err, out)
	}
}
