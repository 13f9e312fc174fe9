package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker/workertest"
)

// installCopy puts a copy of this test binary (which is also sockd) where a
// test can replace it, as a deploy replaces /usr/local/bin/sockd.
func installCopy(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "sockd")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceBinary swaps the file at path atomically (rename), leaving the
// running process's inode alone.
func replaceBinary(t *testing.T, path string, content []byte) {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startInstalled(t *testing.T, bin string, args ...string) *daemonProc {
	t.Helper()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, append([]string{"run", "--control", ctl, "--stop-timeout", "5s"}, args...)...)
	cmd.Path = bin
	cmd.Args[0] = bin
	return launch(t, cmd, out, ctl)
}

// socketInodes maps each listening socket of pid to how many descriptors
// of pid refer to it.
func socketInodes(t *testing.T, pid int) map[string]int {
	t.Helper()
	fds, err := procfs.FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, fd := range fds {
		target, err := procfs.FDTarget(pid, fd)
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		if v, err := unix.GetsockoptInt(pidfdDup(t, pid, fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			m[target]++
		}
	}
	return m
}

// pidfdDup gets a copy of another process's descriptor (pidfd_getfd(2)),
// closed at the end of the test.
func pidfdDup(t *testing.T, pid, fd int) int {
	t.Helper()
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	d, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return -1
	}
	t.Cleanup(func() { unix.Close(d) })
	return d
}

// withoutCloexec lists the descriptors past stdio of pid that would leak
// into a child it execs.
func withoutCloexec(t *testing.T, pid int) []string {
	t.Helper()
	fds, _ := procfs.FDs(pid)
	var leaks []string
	for _, fd := range fds {
		if fd < 3 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if flags&unix.O_CLOEXEC == 0 {
					target, _ := procfs.FDTarget(pid, fd)
					leaks = append(leaks, fmt.Sprintf("%d → %s", fd, target))
				}
			}
		}
	}
	return leaks
}

func TestUpgradeUnderLoadLosesNothing(t *testing.T) {
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) { testUpgradeUnderLoad(t, mode == "reuseport") })
	}
}

func testUpgradeUnderLoad(t *testing.T, reuseport bool) {
	bin := installCopy(t)
	args := []string{"--workers", "2", "--listen", "http=tcp://127.0.0.1:0"}
	if reuseport {
		args = append(args, "--reuseport")
	}
	d := startInstalled(t, bin, args...)
	before := d.mustStatus()
	// A status connection may still be open for a moment: take the
	// smallest of a few readings.
	oldFDs, _ := procfs.FDs(before.PID)
	for i := 0; i < 10; i++ {
		if fds, _ := procfs.FDs(before.PID); len(fds) < len(oldFDs) {
			oldFDs = fds
		}
	}
	oldTargets := fdTargets(before.PID, oldFDs)
	oldSockets := socketInodes(t, before.PID)
	oldLeaks := withoutCloexec(t, before.PID)
	// The listener (one socket, or one per slot) and the control socket.
	if want := map[bool]int{false: 1, true: 2}[reuseport] + 1; len(oldSockets) != want {
		t.Fatalf("old sockd holds %d listening sockets, want %d", len(oldSockets), want)
	}
	load := workertest.StartLoad(workertest.LoadConfig{URL: d.url(), KeepAlive: 4, NewConns: 4, Sporadic: 2})
	load.WaitOK(t, 200, 20*time.Second)
	var stderr bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr); code != 0 {
		load.Stop()
		t.Fatalf("upgrade --wait: exit %d: %s", code, stderr.String())
	}
	// Outside systemd the old sockd's process stays, as the process the
	// shell started: it drains its workers, lets go of every socket and
	// keeps the new sockd (internal/keeper), its child.
	waitFor(t, 20*time.Second, "the old sockd down to a keeper", func() bool {
		kids := procfs.Children(before.PID)
		return len(socketInodes(t, before.PID)) == 0 && len(kids) == 1 && kids[0] == d.mustStatus().PID
	})
	load.WaitOK(t, 200, 20*time.Second)
	stats := load.Stop()
	after := d.mustStatus()
	t.Logf("upgrade under load: %s; sockd pid %d → %d", stats, before.PID, after.PID)
	if stats.Errors != 0 {
		t.Fatalf("%d requests failed across the upgrade: %v", stats.Errors, stats.Samples)
	}
	if after.PID == before.PID || after.Generation != before.Generation+1 || after.Listeners[0].Address != before.Listeners[0].Address {
		t.Fatalf("after upgrade: %+v", after)
	}
	for _, w := range before.Workers {
		if procfs.Alive(w.PID) {
			t.Errorf("old worker %d still running", w.PID)
		}
	}
	// The very same sockets, each held once, received close-on-exec, and
	// nothing more than the old sockd had; with --reuseport (steering)
	// also one more socket for each new worker that could not take a
	// socket the old workers did not hold.
	got := socketInodes(t, after.PID)
	extra := len(got) - len(oldSockets)
	for s, n := range oldSockets {
		if got[s] != n {
			t.Errorf("new sockd's listening sockets %v, old sockd's %v", got, oldSockets)
		}
	}
	if max := map[bool]int{false: 0, true: 2}[reuseport]; extra < 0 || extra > max {
		t.Errorf("new sockd's listening sockets %v, old sockd's %v: %d more, want at most %d", got, oldSockets, extra, max)
	}
	// (Descriptors sockd inherited from whoever started the old one are
	// passed on by exec, as to any process; they are not sockd's.)
	inherited := map[string]bool{}
	for _, l := range oldLeaks {
		inherited[l] = true
	}
	for _, l := range withoutCloexec(t, after.PID) {
		if !inherited[l] {
			t.Errorf("new sockd holds a descriptor without close-on-exec: %s", l)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		newFDs, _ := procfs.FDs(after.PID)
		// No more than the old one (whose reading may include a passing
		// control connection); the listening sockets were compared above.
		if len(newFDs) <= len(oldFDs)+extra {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new sockd holds %d descriptors, the old one %d:\nnew %v\nold %v", len(newFDs), len(oldFDs),
				fdTargets(after.PID, newFDs), oldTargets)
		}
		<-time.After(5 * time.Millisecond) // polling with a deadline
	}
	// And the new sockd reloads and answers as usual.
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("reload after upgrade: exit %d", code)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(d.url())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if g := resp.Header.Get("X-Sockd-Generation"); g != "3" {
		t.Fatalf("generation %q after upgrade + reload, want 3", g)
	}
	// SIGTERM to the process the shell started stops the service: the
	// keeper passes it on and exits with the new sockd's status.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if st, err := d.cmd.Process.Wait(); err != nil || !st.Success() {
		t.Fatalf("the kept process after SIGTERM: %v %v", st, err)
	}
	waitFor(t, 10*time.Second, "the new sockd gone", func() bool { return !procfs.Alive(after.PID) })
	// Worker output across the upgrade: the old sockd relayed its workers'
	// last lines (their drain) and the new one its own workers', each
	// attributed to its generation.
	// The process that exited wrote them to a pipe that the test's
	// copier may not have emptied yet.
	lines := []string{`\[w0 g1\] hello\[\d+\]: drained in `, `\[w0 g2\] hello\[\d+\]: ready: `, `\[w0 g3\] hello\[\d+\]: drained in `}
	relayed := func() bool {
		for _, re := range lines {
			if !regexp.MustCompile(re).MatchString(d.out.String()) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !relayed() && time.Now().Before(deadline); <-time.After(20 * time.Millisecond) {
	}
	for _, re := range lines {
		if !regexp.MustCompile(re).MatchString(d.out.String()) {
			t.Errorf("sockd's output lacks a line matching %s", re)
		}
	}
}

// fakeSystemd is a NOTIFY_SOCKET that records who said what.
type fakeSystemd struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []sdMessage
}

type sdMessage struct {
	pid  int
	text string
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	f := &fakeSystemd{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := c.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	f.conn = c
	t.Cleanup(func() { c.Close() })
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			pid := 0
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for i := range msgs {
					if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
						pid = int(cred.Pid)
					}
					if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
						for _, fd := range fds { // BARRIER=1: closing it answers
							unix.Close(fd)
						}
					}
				}
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, sdMessage{pid: pid, text: string(buf[:n])})
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *fakeSystemd) messages() []sdMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sdMessage(nil), f.msgs...)
}

// An upgrade moves the main pid to the new sockd, which then pings the
// watchdog; the old one stops talking to systemd. Started like systemd
// starts a service with WatchdogSec=: WATCHDOG_USEC, and WATCHDOG_PID
// naming the service's main process (set by the shell before it execs
// sockd). The upgrade is asked for with SIGUSR2.
func TestUpgradeMovesMainPIDAndWatchdog(t *testing.T) {
	sd := newFakeSystemd(t)
	bin := installCopy(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, []string{"NOTIFY_SOCKET=" + sd.path, "WATCHDOG_USEC=300000"},
		"-c", `export WATCHDOG_PID=$$; exec "$0" "$@"`, bin,
		"run", "--control", ctl, "--workers", "1", "--listen", "tcp://127.0.0.1:0")
	cmd.Path, cmd.Args[0] = "/bin/sh", "/bin/sh"
	d := launch(t, cmd, out, ctl)
	old := d.mustStatus().PID
	pings := func(pid int, msgs []sdMessage) int {
		n := 0
		for _, m := range msgs {
			if m.pid == pid && strings.Contains(m.text, "WATCHDOG=1") {
				n++
			}
		}
		return n
	}
	waitFor(t, 5*time.Second, "the old sockd pinging the watchdog", func() bool { return pings(old, sd.messages()) >= 2 })
	d.cmd.Process.Signal(syscall.SIGUSR2)
	var newPID int
	waitFor(t, 20*time.Second, "MAINPID= from the old sockd", func() bool {
		for _, m := range sd.messages() {
			if v, ok := strings.CutPrefix(m.text, "MAINPID="); ok && m.pid == old {
				fmt.Sscan(v, &newPID)
			}
		}
		return newPID != 0
	})
	waitFor(t, 10*time.Second, "READY=1 and watchdog pings from the new sockd", func() bool {
		msgs := sd.messages()
		ready := false
		for _, m := range msgs {
			ready = ready || m.pid == newPID && strings.Contains(m.text, "READY=1")
		}
		return ready && pings(newPID, msgs) >= 3
	})
	// Nothing from the old sockd after it handed the main pid over.
	msgs := sd.messages()
	for i, m := range msgs {
		if m.pid == old && strings.HasPrefix(m.text, "MAINPID=") {
			for _, later := range msgs[i+1:] {
				if later.pid == old {
					t.Fatalf("old sockd told systemd %q after it handed over", later.text)
				}
			}
		}
	}
	if st, err := d.cmd.Process.Wait(); err != nil || !st.Success() {
		t.Fatalf("old sockd: %v %v", st, err)
	}
	// Once the old sockd is gone, the new one becomes systemd's child
	// again: MAINPID= a helper, which says MAINPID= the new sockd, then
	// BARRIER=1.
	waitFor(t, 10*time.Second, "the main pid handed to a helper and back", func() bool {
		helper := 0
		for _, m := range sd.messages() {
			if v, ok := strings.CutPrefix(m.text, "MAINPID="); ok && m.pid == newPID {
				fmt.Sscan(v, &helper)
			}
			if helper != 0 && m.pid == helper && m.text == fmt.Sprintf("MAINPID=%d", newPID) {
				return true
			}
		}
		return false
	})
}

// With --slow-start the new sockd of an upgrade starts its worker as a
// reload does while the old sockd's worker serves: ten nice levels down
// until it is ready, then at sockd's priority. Once the new sockd is in
// charge, a worker that starts with nobody serving starts as usual.
func TestUpgradeStartsTheNewWorkersLow(t *testing.T) {
	self := lowStartTestable(t)
	bin := installCopy(t)
	nices := filepath.Join(t.TempDir(), "nices")
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, []string{"NICES=" + nices}, "run", "--control", ctl, "--stop-timeout", "5s", "--workers", "1",
		"--slow-start", "1s", "--listen", "tcp://127.0.0.1:0", "--", "/bin/sh", "-c", `nice >> "$NICES"; exec "$0" demo-worker`, bin)
	cmd.Path, cmd.Args[0] = bin, bin
	d := launch(t, cmd, out, ctl)
	before := d.mustStatus()
	var stderr bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, stderr.String())
	}
	after := d.mustStatus()
	if after.PID == before.PID || len(after.Workers) != 1 {
		t.Fatalf("after the upgrade: %+v", after)
	}
	// Every thread, once raise's second pass is over.
	var msg string
	defer func() {
		if t.Failed() && msg != "" {
			t.Logf("last seen: %s", msg)
		}
	}()
	waitFor(t, 10*time.Second, "every thread of the new sockd's ready worker at sockd's priority", func() bool {
		msg = otherPriority(t, after.Workers[0].PID, self)
		return msg == ""
	})
	// Its only worker crashes: the replacement starts beside nobody.
	if err := syscall.Kill(after.Workers[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, 20*time.Second, "the crashed worker's replacement started", func() bool {
		b, _ := os.ReadFile(nices)
		got = strings.Join(strings.Fields(string(b)), " ")
		return len(strings.Fields(got)) >= 3
	})
	// Each worker's shell printed its nice value before it exec'd the
	// worker: the old sockd's at sockd's, the new sockd's, started beside
	// it, low, and the replacement at sockd's again.
	if want := fmt.Sprintf("%d %d %d", self.Nice, self.Nice+10, self.Nice); got != want {
		t.Fatalf("nice values of the workers' shells: %q, want %q", got, want)
	}
}

// A new sockd that fails takes nothing of the old one's with it: the
// control socket and the unix socket files stay, and the old sockd keeps
// serving on them.
func TestFailedUpgradeLeavesTheOldSockdsFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hello.conf")
	os.WriteFile(conf, []byte("ok\n"), 0o644)
	sock := filepath.Join(dir, "app.sock")
	bin := installCopy(t)
	ctl := filepath.Join(dir, "ctl.sock")
	cmd, out := sockdCmd(t, []string{"HELLO_CONFIG=" + conf}, "run", "--control", ctl, "--workers", "2",
		"--listen", "http=tcp://127.0.0.1:0", "--listen", "app=unix://"+sock, "--reload-timeout", "1s")
	cmd.Path, cmd.Args[0] = bin, bin
	d := launch(t, cmd, out, ctl)
	before := d.mustStatus()
	// The new sockd's workers will fail: same binary, but the config they
	// read is broken now.
	os.WriteFile(conf, []byte("broken\n"), 0o644)
	var stderr bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", ctl}, io.Discard, &stderr); code != exitFailed {
		t.Fatalf("upgrade with failing workers: exit %d, %s", code, stderr.String())
	}
	t.Logf("upgrade failed as it should: %s", strings.TrimSpace(stderr.String()))
	waitFor(t, 20*time.Second, "the new sockd gone", func() bool {
		s, err := d.status()
		return err == nil && s.PID == before.PID && countSockd(t, before.PID) == 0
	})
	for _, p := range []string{ctl, sock} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after a failed upgrade: %v", err)
		}
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("old sockd's unix listener after a failed upgrade: %v", err)
	}
	c.Close()
	if s := d.mustStatus(); s.Generation != before.Generation || s.Ready != 2 {
		t.Fatalf("after a failed upgrade: %+v", s)
	}
}

// countSockd counts the sockd processes that are children of pid (a new
// sockd of an upgrade), not counting workers and the guard.
func countSockd(t *testing.T, pid int) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procfs.Stat(child); err == nil && ppid == pid && procfs.Alive(child) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
			if args := strings.Split(string(b), "\x00"); len(args) > 1 && args[1] == "run" {
				n++
			}
		}
	}
	return n
}

func TestBrokenUpgradeKeepsOldSockdServing(t *testing.T) {
	bin := installCopy(t)
	d := startInstalled(t, bin, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--reload-timeout", "1s")
	before := d.mustStatus()
	for _, c := range []struct{ script, want string }{
		{"#!/bin/sh\necho 'sockd: broken build' >&2\nexit 1\n", "exited before it was ready"},
		{"#!/bin/sh\nexec sleep 60\n", "not ready in time"},
	} {
		replaceBinary(t, bin, []byte(c.script))
		var stderr bytes.Buffer
		code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr)
		if code != exitFailed || !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "old sockd keeps serving") {
			t.Fatalf("upgrade to a broken binary: exit %d, %q", code, stderr.String())
		}
		s := d.mustStatus()
		if s.PID != before.PID || s.Generation != before.Generation || s.Ready != 2 {
			t.Fatalf("after a failed upgrade: %+v", s)
		}
		if g := getGen(t, d.url()); g != "1" {
			t.Fatalf("generation %q serves after a failed upgrade", g)
		}
	}
	if procfs.Alive(before.PID) != true {
		t.Fatal("old sockd died")
	}
}

func fdTargets(pid int, fds []int) []string {
	var ts []string
	for _, fd := range fds {
		target, _ := procfs.FDTarget(pid, fd)
		ts = append(ts, fmt.Sprintf("%d:%s", fd, target))
	}
	return ts
}

// SIGTERM while `upgrade --wait` waits for a new sockd that is not ready
// yet: sockd stops (the new one is killed) and the client gets its answer.
// It hung: the loop had ended, and the control server waited for the
// upgrade request, which waited for the loop.
func TestStopDuringUpgrade(t *testing.T) {
	bin := installCopy(t)
	d := startInstalled(t, bin, "--workers", "1", "--listen", "tcp://127.0.0.1:0", "--reload-timeout", "60s")
	before := d.mustStatus()
	replaceBinary(t, bin, []byte("#!/bin/sh\nexec sleep 60\n"))
	res := make(chan int, 1)
	var stderr syncBuffer
	go func() { res <- sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr) }()
	var newSockd int
	waitFor(t, 20*time.Second, "the new sockd started", func() bool {
		for _, pid := range procfs.Children(before.PID) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(b), "sleep\x00") {
				newSockd = pid
				return true
			}
		}
		return false
	})
	d.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sockd stopped during an upgrade: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sockd did not stop within 30 s of SIGTERM during an upgrade")
	}
	select {
	case code := <-res:
		if code == exitOK {
			t.Fatalf("upgrade --wait succeeded although sockd stopped: %s", stderr.String())
		}
		t.Logf("upgrade --wait: exit %d, %s", code, strings.TrimSpace(stderr.String()))
	case <-time.After(30 * time.Second):
		t.Fatal("upgrade --wait got no answer")
	}
	waitFor(t, 10*time.Second, "the never-ready new sockd gone", func() bool {
		_, _, err := procfs.Stat(newSockd)
		return err != nil
	})
}

// As a container's PID 1 (a fresh pid namespace, as podman or docker
// make one) sockd upgrades without ending the container: the old PID 1
// stays, keeping the new sockd, and through two upgrades under load no
// request fails; SIGTERM to PID 1 (docker stop) then stops everything and
// PID 1 exits 0. A stop that races an upgrade stops everything too.
func TestUpgradeAsPID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1)")
	}
	start := func(t *testing.T) (*daemonProc, int) {
		ctl := filepath.Join(t.TempDir(), "ctl.sock")
		cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--stop-timeout", "5s")
		cmd.Args = append([]string{unshare, "--pid", "--fork", "--mount-proc", cmd.Path}, cmd.Args[1:]...)
		cmd.Path = unshare
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var init int
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				if init > 1 {
					syscall.Kill(init, syscall.SIGKILL) // ends the namespace
				}
				cmd.Process.Kill()
				cmd.Wait()
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
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
		return d, init
	}

	t.Run("upgrades", func(t *testing.T) {
		d, init := start(t)
		load := workertest.StartLoad(workertest.LoadConfig{URL: d.url(), KeepAlive: 4, NewConns: 4, Sporadic: 2})
		load.WaitOK(t, 200, 20*time.Second)
		pids := map[int]bool{}
		for i := 0; i < 2; i++ {
			var stderr bytes.Buffer
			if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &stderr); code != 0 {
				load.Stop()
				t.Fatalf("upgrade %d: exit %d: %s", i+1, code, stderr.String())
			}
			waitFor(t, 20*time.Second, "a single sockd below PID 1", func() bool {
				s := d.mustStatus()
				return s.PID != 1 && !pids[s.PID] && len(procfs.Children(init)) == 1
			})
			pids[d.mustStatus().PID] = true
			load.WaitOK(t, 200, 20*time.Second)
		}
		stats := load.Stop()
		t.Logf("two upgrades as PID 1 under load: %s", stats)
		if stats.Errors != 0 {
			t.Fatalf("%d requests failed across the upgrades: %v", stats.Errors, stats.Samples)
		}
		if st, _, err := procfs.Stat(init); err != nil || st == 'Z' {
			t.Fatalf("PID 1 (host pid %d) gone after the upgrades: %v", init, err)
		}
		syscall.Kill(init, syscall.SIGTERM) // docker stop
		exited := make(chan error, 1)
		go func() { exited <- d.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("the container after SIGTERM to PID 1: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("SIGTERM to PID 1 did not end the container: processes below it %v", procfs.Children(init))
		}
	})

	t.Run("stop racing an upgrade", func(t *testing.T) {
		d, init := start(t)
		done := make(chan int, 1)
		go func() { done <- sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, io.Discard) }()
		syscall.Kill(init, syscall.SIGTERM)
		<-done // whatever it says: abandoned, or done just before the stop
		exited := make(chan error, 1)
		go func() { exited <- d.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("the container: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("SIGTERM to PID 1 during an upgrade did not end the container")
		}
	})
}

// After a hand-over, the process the shell started keeps it for the new
// sockd, whose old workers may take long to drain: a SIGTERM meanwhile
// reaches the new sockd at once, not once the old generation is gone.
func TestSignalsReachTheNewSockdWhileTheOldDrains(t *testing.T) {
	d := startSockd(t, nil, "--stop-timeout", "60s", "--workers", "1", "--listen", "none", "--ready", "after:100ms",
		"--", "sh", "-c", `trap "" TERM; echo "deaf to TERM"; while :; do sleep 1; done`)
	waitFor(t, 20*time.Second, "the worker ready, deaf to SIGTERM", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 1 && strings.Contains(d.out.String(), "deaf to TERM")
	})
	oldWorker := d.mustStatus().Workers[0].PID
	var errb bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
	}
	s := d.mustStatus()
	if s.PID == d.cmd.Process.Pid {
		t.Fatal("upgrade --wait returned before the new sockd was in charge")
	}
	newWorker := slotOf(s, 0).PID
	defer syscall.Kill(newWorker, syscall.SIGKILL) // it ignores SIGTERM: no 60 s wait at the end
	defer syscall.Kill(oldWorker, syscall.SIGKILL)
	d.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 20*time.Second, "the new sockd told to stop", func() bool {
		return strings.Contains(d.out.String(), "signal received: event=signal signal=terminated")
	})
	if !procfs.Alive(oldWorker) {
		t.Fatal("the old generation was gone before the new sockd heard of the SIGTERM")
	}
}

// With --metrics, sockd upgrade hands the metrics socket over with the
// others (the new sockd could not bind its address while the old one
// holds it): the new sockd answers the scrapes from then on, and a unix
// socket's path outlives the old sockd, until the new one stops.
func TestUpgradeWithMetrics(t *testing.T) {
	for _, scheme := range []string{"tcp", "unix"} {
		t.Run(scheme, func(t *testing.T) {
			addr := "tcp://127.0.0.1:0"
			path := filepath.Join(t.TempDir(), "metrics.sock")
			if scheme == "unix" {
				addr = "unix://" + path
			}
			d := startSockd(t, nil, "--workers", "1", "--listen", "tcp://127.0.0.1:0", "--metrics", addr)
			m := regexp.MustCompile(`serving metrics: address=(\S+)`).FindStringSubmatch(d.out.String())
			if m == nil {
				t.Fatalf("no metrics address in:\n%s", d.out)
			}
			c := &http.Client{Timeout: 10 * time.Second}
			url := "http://" + m[1] + "/metrics"
			if scheme == "unix" {
				c.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", path)
				}}
				url = "http://sockd/metrics"
			}
			startOf := func() string {
				t.Helper()
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("scrape: %v", err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				line := regexp.MustCompile(`(?m)^sockd_start_time_seconds (\S+)$`).FindSubmatch(b)
				if resp.StatusCode != 200 || line == nil {
					t.Fatalf("scrape: %s\n%s", resp.Status, b)
				}
				return string(line[1])
			}
			before := startOf()
			var errb bytes.Buffer
			if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
				t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
			}
			// Every scrape from now on is the new sockd's; the old one,
			// which also stops serving them, finishes its drain.
			waitFor(t, 20*time.Second, "the old sockd done", func() bool {
				return strings.Contains(d.out.String(), "handed_off=true")
			})
			for range 5 {
				if startOf() == before {
					t.Fatal("a scrape after the upgrade answered by the old sockd")
				}
			}
			if scheme == "unix" {
				pid := d.mustStatus().PID
				syscall.Kill(pid, syscall.SIGTERM)
				waitFor(t, 20*time.Second, "the new sockd gone", func() bool { return !procfs.Alive(pid) })
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Fatalf("the metrics socket is left after the stop: %v", err)
				}
			}
		})
	}
}

// sockd upgrade --wait while a reload runs waits for the reload, then
// upgrades (the package's postinst runs it while a reload may be under
// way); sockd answers the attempts meanwhile as busy, and the client asks
// again.
func TestUpgradeWaitsForARunningReload(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "ready")
	os.WriteFile(gate, nil, 0o644)
	d, _ := startSteered(t, []string{"SOCKDTEST_READY_GATE=" + gate}, "--workers", "1")
	old := d.mustStatus()
	os.Remove(gate) // the reload's worker waits for it
	if code := sockd([]string{"reload", "--control", d.control}, io.Discard, io.Discard); code != 0 {
		t.Fatal("reload failed")
	}
	up, out := sockdCmd(t, nil, "upgrade", "--wait", "--control", d.control)
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "an upgrade refused as busy while the reload runs", func() bool {
		return steerMetric(t, d, "sockd_upgrades_total", `result="refused"`) >= 1
	})
	if s := d.mustStatus(); s.PID != old.PID || s.State != pool.StateReloading {
		t.Fatalf("while the reload waits: %+v", s)
	}
	os.WriteFile(gate, nil, 0o644)
	if err := up.Wait(); err != nil {
		t.Fatalf("upgrade --wait: %v: %s", err, out)
	}
	if s := d.mustStatus(); s.PID == old.PID || s.Generation != old.Generation+2 {
		t.Fatalf("after the upgrade: pid %d (old %d), generation %d, want %d", s.PID, old.PID, s.Generation, old.Generation+2)
	}
}

// Two upgrades under a keeper (a terminal's or PID 1's process): the
// second new sockd dies while the one before it drains its workers. The
// process the shell started exits with that failure, not 0, so that an
// orchestrator restarts the service.
func TestKeptProcessExitsWithALateSuccessorsFailure(t *testing.T) {
	d := startSockd(t, nil, "--stop-timeout", "3s", "--workers", "1", "--listen", "none", "--ready", "after:100ms",
		"--", "sh", "-c", `trap "" TERM; echo "deaf to TERM"; while :; do sleep 1; done`)
	waitFor(t, 20*time.Second, "the worker ready, deaf to SIGTERM", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 1 && strings.Contains(d.out.String(), "deaf to TERM")
	})
	upgrade := func() int {
		t.Helper()
		var errb bytes.Buffer
		if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
			t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
		}
		return d.mustStatus().PID
	}
	b := upgrade()
	// b's old workers take their 3 s to go; the keeper keeps b.
	waitFor(t, 20*time.Second, "the first old generation gone", func() bool {
		return strings.Count(d.out.String(), "handed_off=true") == 1
	})
	c := upgrade()
	if c == b {
		t.Fatal("the second upgrade did not change the pid")
	}
	// c dies while b still drains (its worker ignores SIGTERM for 3 s).
	syscall.Kill(c, syscall.SIGKILL)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+9 {
			t.Fatalf("the kept process exited with %v, want 137 (the new sockd was SIGKILLed)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the kept process did not exit")
	}
}

// TestClientByPID: --pid finds a sockd's control socket wherever an env
// file put it, past the app's unix listener (shared with the workers)
// and sockd's unix metrics socket, and after an upgrade outside systemd,
// where the pid is the keeper's, the control socket of the sockd in
// charge. The Debian postinst hands a unit's sockd over this way.
func TestClientByPID(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	ctl := filepath.Join(dir, "my ctl.sock")
	if err := os.WriteFile(envFile, []byte("SOCKD_CONTROL="+ctl+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := sockdCmd(t, nil, "run", "--env-file", envFile, "--stop-timeout", "5s", "--workers", "2",
		"--listen", "unix://"+filepath.Join(dir, "app.sock"), "--metrics", "unix://"+filepath.Join(dir, "metrics.sock"))
	d := launch(t, cmd, out, ctl)
	pid := strconv.Itoa(cmd.Process.Pid)
	run := func(args ...string) (int, string) {
		var o, e bytes.Buffer
		code := sockd(args, &o, &e)
		return code, o.String() + e.String()
	}
	if code, o := run("status", "--pid", pid); code != 0 || !strings.HasPrefix(o, "sockd pid "+pid+": running") {
		t.Fatalf("status --pid: exit %d:\n%s", code, o)
	}
	if code, o := run("upgrade", "--wait", "--pid", pid); code != 0 {
		t.Fatalf("upgrade --wait --pid: exit %d:\n%s", code, o)
	}
	s := d.mustStatus()
	if s.PID == cmd.Process.Pid {
		t.Fatalf("status after the upgrade still names pid %d", s.PID)
	}
	if code, o := run("status", "--pid", pid); code != 0 || !strings.HasPrefix(o, fmt.Sprintf("sockd pid %d: running", s.PID)) {
		t.Fatalf("status --pid of the keeper: exit %d:\n%s", code, o)
	}
	// A SOCKD_CONTROL in the environment (an admin's, sudo -E) is the
	// default that --pid overrides.
	t.Setenv("SOCKD_CONTROL", filepath.Join(dir, "elsewhere.sock"))
	if code, o := run("status", "--pid", pid); code != 0 {
		t.Fatalf("status --pid with SOCKD_CONTROL set: exit %d:\n%s", code, o)
	}
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "--pid", strconv.Itoa(sleep.Process.Pid)}, 1, "not a sockd"},
		{[]string{"status", "--pid", "4194303"}, 5, "no such process"},
		{[]string{"reload", "--pid", "0x"}, 2, "invalid value"},
		{[]string{"status", "--pid", "-3"}, 2, "want a process id"},
		{[]string{"status", "--pid", pid, "--control", ctl}, 2, "not both"},
	} {
		if code, o := run(c.args...); code != c.code || !strings.Contains(o, c.want) || strings.Count(strings.TrimSpace(o), "\n") != 0 {
			t.Errorf("sockd %v: exit %d (want %d), want one line with %q:\n%s", c.args, code, c.code, c.want, o)
		}
	}

	// Another user may not read which program root's sockd runs: it is
	// told so, not that the process is no sockd.
	if os.Geteuid() == 0 {
		nobody := exec.Command(worldExecutableCopy(t), "status", "--pid", pid)
		nobody.Env = []string{"PATH=/usr/bin:/bin", "SOCKDTEST_MAIN=1", "GORACE=atexit_sleep_ms=0"}
		nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		o, err := nobody.CombinedOutput()
		if err == nil || !strings.Contains(string(o), "cannot read which program it runs") || !strings.Contains(string(o), "run as its user or root") {
			t.Errorf("status --pid as nobody: %v:\n%s", err, o)
		}
	}

	// Stopped through the keeper: the cgroup subtree the first sockd made
	// and handed over goes too (the keeper left it, the new sockd removed
	// it), so that a later sockd with this pid (a container's PID 1) can
	// make its own.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the keeper exited: %v", err)
	}
	if m := regexp.MustCompile(`workers get cgroups of their own: base=(\S+)`).FindStringSubmatch(out.String()); m != nil {
		if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the cgroup subtree %s outlived the sockds that had it: %v", m[1], err)
		}
	}
}

// A --metrics address changed since the start (in the env file) takes
// effect with an upgrade: the new sockd serves the new address, and the old
// unix socket's path is gone once it is in charge. An address it cannot
// bind while the old sockd holds its sockets keeps the old one, with a
// warning, and the upgrade goes through.
func TestUpgradeMovesTheMetricsAddress(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	first, second := filepath.Join(dir, "m1.sock"), filepath.Join(dir, "m2.sock")
	write := func(metrics string) {
		t.Helper()
		if err := os.WriteFile(envFile, []byte("SOCKD_WORKERS=1\nSOCKD_METRICS="+metrics+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	scrape := func(path string) (string, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		resp, err := c.Get("http://sockd/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		line := regexp.MustCompile(`(?m)^sockd_start_time_seconds (\S+)$`).FindSubmatch(b)
		if resp.StatusCode != 200 || line == nil {
			return "", fmt.Errorf("scrape: %s\n%s", resp.Status, b)
		}
		return string(line[1]), nil
	}
	write("unix://" + first)
	d := startSockd(t, nil, "--env-file", envFile, "--listen", "tcp://127.0.0.1:0")
	before, err := scrape(first)
	if err != nil {
		t.Fatal(err)
	}
	write("unix://" + second)
	var errb bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
	}
	after, err := scrape(second)
	if err != nil || after == before {
		t.Fatalf("the new address after the upgrade: start time %q (before %q), %v", after, before, err)
	}
	waitFor(t, 20*time.Second, "the old metrics socket's path gone", func() bool {
		_, err := os.Lstat(first)
		return os.IsNotExist(err)
	})

	// An address in use by someone else: the upgrade keeps the old one.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	write("tcp://" + busy.Addr().String())
	errb.Reset()
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("second upgrade --wait: exit %d: %s", code, errb.String())
	}
	third, err := scrape(second)
	if err != nil || third == after {
		t.Fatalf("the kept address after the second upgrade: start time %q (before %q), %v", third, after, err)
	}
	if !strings.Contains(d.out.String(), "the metrics address changed, and the new one cannot be used") {
		t.Fatalf("no warning in:\n%s", d.out)
	}
}
