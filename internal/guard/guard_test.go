package guard_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/guard"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary is the guard (started as /proc/self/exe with argv[0]
// sockd-guard, so guard.Main comes first) and, with GUARD_TEST_HELPER set,
// the processes it guards:
//
//	sleep  wait for stdin to close, then exit 0
//	owner  play sockd: start a guard and a "sleep" helper in a process
//	       group of its own (on owner's stdin), put the group on the
//	       guard's list, write "SLEEPER_PID GUARD_PID", wait for stdin
//	       to close
func TestMain(m *testing.M) {
	guard.Main()
	switch os.Getenv("GUARD_TEST_HELPER") {
	case "":
		os.Exit(m.Run())
	case "sleep":
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "owner":
		os.Exit(owner())
	}
	os.Exit(2)
}

func owner() int {
	g, err := guard.Start("/proc/self/exe", guard.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	c := helperCmd("sleep", 0)
	c.Stdin = os.Stdin
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := g.Add(c.Process.Pid); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Println(c.Process.Pid, g.PID())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// helperCmd prepares a helper in process group pgid (0: a new group of
// its own).
func helperCmd(mode string, pgid int) *exec.Cmd {
	c := exec.Command("/proc/self/exe")
	c.Env = append(os.Environ(), "GUARD_TEST_HELPER="+mode, "GORACE=atexit_sleep_ms=0")
	c.Stderr = os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
	return c
}

// group is a process group of "sleep" helpers, all children of the test,
// reading the same pipe.
type group struct {
	pgid  int
	procs []*exec.Cmd
	stdin *os.File // the write end: closing it ends the helpers
}

func startGroup(t *testing.T, size int) *group {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g := &group{stdin: w}
	for i := 0; i < size; i++ {
		c := helperCmd("sleep", g.pgid)
		c.Stdin = r
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			g.pgid = c.Process.Pid
		}
		g.procs = append(g.procs, c)
	}
	t.Cleanup(func() { g.end() })
	return g
}

// end closes the helpers' stdin and reaps them; their states say whether
// they had been killed.
func (g *group) end() []*os.ProcessState {
	g.stdin.Close()
	var states []*os.ProcessState
	for _, c := range g.procs {
		if c.ProcessState == nil {
			c.Wait()
		}
		states = append(states, c.ProcessState)
	}
	return states
}

func killedBy(st *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

func startGuard(t *testing.T) *guard.Guard {
	t.Helper()
	g, err := guard.Start("/proc/self/exe", guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// neverAGroup is a process group id above any pid_max, so that the guard
// killing it can hurt no one.
func neverAGroup(i int) int { return 1<<30 + i }

func TestEndOfPipeKillsExactlyTheListedGroups(t *testing.T) {
	checkFDs := fdtest.Track(t, "guard started and closed")
	g := startGuard(t)
	if pgid, err := unix.Getpgid(g.PID()); err != nil || pgid != g.PID() {
		t.Errorf("guard's process group %d, %v; want its own", pgid, err)
	}
	a, b, c, d := startGroup(t, 2), startGroup(t, 2), startGroup(t, 1), startGroup(t, 1)
	for _, step := range []struct {
		op   func(int) error
		pgid int
	}{
		{g.Add, a.pgid}, {g.Add, b.pgid}, {g.Add, c.pgid}, {g.Add, neverAGroup(1)},
		{g.Remove, b.pgid}, {g.Remove, d.pgid}, // d was never listed
		{g.Add, b.pgid}, {g.Remove, b.pgid}, // listed again, and off again
	} {
		if err := step.op(step.pgid); err != nil {
			t.Fatal(err)
		}
	}
	// Close returns once the guard has seen the end of the pipe, killed
	// the groups still listed and exited.
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := procfs.Stat(g.PID()); !os.IsNotExist(err) {
		t.Errorf("guard %d not reaped by Close: %v", g.PID(), err)
	}
	for name, grp := range map[string]*group{"a": a, "c": c} {
		for i, st := range grp.end() {
			if !killedBy(st, syscall.SIGKILL) {
				t.Errorf("group %s, process %d: %s; want killed by SIGKILL", name, i, st)
			}
		}
	}
	// The others were not signalled: they exit 0 once their stdin closes.
	for name, grp := range map[string]*group{"b (removed)": b, "d (never listed)": d} {
		for i, st := range grp.end() {
			if !st.Exited() || st.ExitCode() != 0 {
				t.Errorf("group %s, process %d: %s; want exit status 0", name, i, st)
			}
		}
	}
	checkFDs()
}

// sigIgnored reports whether every one of sigs is ignored by pid, from the
// SigIgn mask in /proc/PID/status.
func sigIgnored(pid int, sigs ...syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false
			}
			for _, s := range sigs {
				if mask&(1<<(s-1)) == 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}

func TestGuardIgnoresTerminalAndServiceSignals(t *testing.T) {
	g := startGuard(t)
	victim := startGroup(t, 1)
	if err := g.Add(victim.pgid); err != nil {
		t.Fatal(err)
	}
	sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE}
	// Until the guard's runtime has started, these signals would kill it.
	workertest.Eventually(t, 10*time.Second, "guard ignores the signals", func() bool { return sigIgnored(g.PID(), sigs...) })
	for _, s := range sigs {
		if err := unix.Kill(g.PID(), s); err != nil {
			t.Fatal(err)
		}
		// As a terminal's ^C or a service manager would: to the group.
		if err := unix.Kill(-g.PID(), s); err != nil {
			t.Fatal(err)
		}
	}
	// Still running, still keeping its list: Close finds it exiting 0
	// after it killed the group, not killed by a signal.
	if err := g.Close(); err != nil {
		t.Fatalf("Close after signals: %v", err)
	}
	if st := victim.end()[0]; !killedBy(st, syscall.SIGKILL) {
		t.Fatalf("listed group: %s; want killed by SIGKILL", st)
	}
}

// A write to a guard someone killed fails at once (no wait for a
// deadline); the guard is reaped and a new one takes over, to which the
// next writes go.
func TestWriteToDeadGuardFailsAtOnce(t *testing.T) {
	checkFDs := fdtest.Track(t, "dead guard closed")
	g := startGuard(t)
	old := g.PID()
	if err := unix.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var err error
	for err == nil && g.PID() == old && time.Since(start) < 10*time.Second {
		err = g.Add(neverAGroup(1))
	}
	if g.PID() == old && (err == nil || !errors.Is(err, syscall.EPIPE) && !strings.Contains(err.Error(), "not running")) {
		t.Fatalf("Add to a dead guard: %v, want EPIPE or not running", err)
	}
	until(t, "a new guard", func() bool { return g.PID() != old })
	until(t, "the old guard reaped", func() bool { _, _, err := procfs.Stat(old); return os.IsNotExist(err) })
	if err := g.Add(neverAGroup(2)); err != nil {
		t.Fatalf("Add to the new guard: %v", err)
	}
	pid := g.PID()
	if err := g.Close(); err != nil {
		t.Fatalf("Close of the new guard: %v", err)
	}
	if _, _, err := procfs.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("guard %d not reaped by Close: %v", pid, err)
	}
	checkFDs()
}

// A stuck guard never blocks the caller longer than the write deadline,
// and is replaced by one that reads.
func TestStuckGuardDoesNotBlockTheCaller(t *testing.T) {
	g := startGuard(t)
	old := g.PID()
	if err := unix.Kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The pipe fills up (64 KiB) and the write that does not fit gives up
	// at its deadline. The same group again and again: the list the new
	// guard is told stays short, as sockd's is (2048 groups at most; a
	// list of 16,000 made the new guard's own start-up time out on a
	// loaded machine, and it was killed in turn).
	var err error
	n := 0
	for ; err == nil && n < 100000; n++ {
		if n%2 == 0 {
			err = g.Add(neverAGroup(0))
		} else {
			err = g.Remove(neverAGroup(0))
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d writes to a stopped guard: %v, want a deadline error", n, err)
	}
	until(t, "a new guard", func() bool { return g.PID() != old })
	until(t, "the stuck guard reaped", func() bool { _, _, err := procfs.Stat(old); return os.IsNotExist(err) })
	if err := g.Add(neverAGroup(0)); err != nil {
		t.Fatalf("Add to the new guard: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestStartFailureLeavesNothingOpen(t *testing.T) {
	checkFDs := fdtest.Track(t, "failed Start")
	if _, err := guard.Start("/nonexistent/sockd", guard.Options{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/sockd") {
		t.Fatalf("Start of a missing binary: %v", err)
	}
	checkFDs()
}

// waitReparented waits for pid, a process that became this one's child
// when its parent died (this process being a child subreaper), and
// returns how it ended.
func waitReparented(t *testing.T, pid int, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	var ws syscall.WaitStatus
	workertest.Eventually(t, timeout, fmt.Sprintf("process %d ends", pid), func() bool {
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != nil && err != syscall.EINTR {
			t.Fatalf("wait4 %d: %v", pid, err)
		}
		return got == pid
	})
	return ws
}

func TestGuardOfKilledOwnerKillsItsGroups(t *testing.T) {
	// Orphans of this test's descendants become its own children, so the
	// test can see how they ended.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	o := helperCmd("owner", 0)
	// The sleeper reads the owner's stdin too: it stays open (and the
	// sleeper alive) until the test ends, whatever happens to the owner.
	// (Not a StdinPipe: Wait would close that when the owner is gone.)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	o.Stdin = r
	out, err := o.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	err = o.Start()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	var sleeper, guardPID int
	if _, err := fmt.Fscan(bufio.NewReader(out), &sleeper, &guardPID); err != nil {
		o.Process.Kill()
		o.Wait()
		t.Fatalf("owner: %v", err)
	}
	// sockd killed the hard way: its guard sees the end of the pipe.
	o.Process.Kill()
	o.Wait()
	if ws := waitReparented(t, sleeper, 10*time.Second); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("worker of a killed owner: %v; want killed by SIGKILL", ws)
	}
	if ws := waitReparented(t, guardPID, 10*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("guard of a killed owner: %v; want exit status 0", ws)
	}
}

// until waits on cond with a deadline of 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	workertest.Eventually(t, 10*time.Second, what, cond)
}
