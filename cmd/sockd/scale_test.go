package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// sockd scale, SIGTTIN and SIGTTOU change the number of workers at run
// time; the size is kept across a reload and a binary upgrade, and shows
// in status and STATUS=.
func TestScaleCommandSignalsReloadAndUpgrade(t *testing.T) {
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"--workers", "2", "--listen", "tcp://127.0.0.1:0"}
			if mode == "reuseport" {
				args = append(args, "--reuseport")
			}
			d := startInstalled(t, installCopy(t), args...)
			scale := func(arg string, wantOut string) {
				t.Helper()
				var out, errOut bytes.Buffer
				if code := sockd([]string{"scale", "--wait", "--control", d.control, arg}, &out, &errOut); code != 0 || strings.TrimSpace(out.String()) != wantOut {
					t.Fatalf("sockd scale %s: exit %d, %q %q", arg, code, out.String(), errOut.String())
				}
			}
			size := func(n int, what string) {
				t.Helper()
				waitFor(t, 20*time.Second, what, func() bool {
					s, err := d.status()
					return err == nil && s.Size == n && s.Ready == n && s.Current == n && len(s.Workers) == n && s.State == pool.StateRunning
				})
			}
			scale("4", "4")
			size(4, "4 workers after sockd scale 4")
			scale("-3", "1")
			size(1, "1 worker after sockd scale -3")
			scale("+1", "2")
			d.cmd.Process.Signal(syscall.SIGTTIN)
			size(3, "3 workers after SIGTTIN")
			// The size is 3 before and after these two: wait until sockd has
			// scaled twice, or the wait for 3 could pass before either
			// signal was handled.
			since := lastEvent(d.mustStatus())
			d.cmd.Process.Signal(syscall.SIGTTIN)
			d.cmd.Process.Signal(syscall.SIGTTOU)
			waitFor(t, 20*time.Second, "two scale events after SIGTTIN and SIGTTOU", func() bool {
				s, err := d.status()
				return err == nil && countEvents(s, pool.EventScale, since) == 2
			})
			size(3, "3 workers after SIGTTIN and SIGTTOU")
			if s := d.mustStatus(); !strings.HasPrefix(s.Summary, "3/3 workers ready") {
				t.Fatalf("summary %q", s.Summary)
			}
			if code := sockd([]string{"reload", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("reload: exit %d", code)
			}
			size(3, "3 workers after a reload")
			if s := d.mustStatus(); s.Generation != 2 {
				t.Fatalf("after the reload: %+v", s)
			}
			old := d.mustStatus().PID
			oldSockets := len(d.mustStatus().Listeners[0].SockdFDs)
			if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("upgrade: exit %d", code)
			}
			waitFor(t, 20*time.Second, "the new sockd in charge", func() bool {
				s, err := d.status()
				return err == nil && s.PID != old
			})
			size(3, "3 workers after the upgrade")
			if mode == "reuseport" {
				// The old sockd's (at least the 4 it was grown to; steering
				// gives a worker a socket that left service at least a
				// second ago, so quick scaling grows the groups more), and
				// at most one more for each of the new sockd's workers.
				if s := d.mustStatus(); oldSockets < 4 || len(s.Listeners[0].SockdFDs) < oldSockets || len(s.Listeners[0].SockdFDs) > oldSockets+3 {
					t.Fatalf("the upgraded sockd holds %d reuseport sockets, the old one %d (want at least 4)", len(s.Listeners[0].SockdFDs), oldSockets)
				}
			}
			// Bad sizes are refused with the reason, and change nothing.
			// A size that is never right: one message, exit 2.
			for _, bad := range []string{"0", "2000", "+2000", "abc", "1.5"} {
				var errOut bytes.Buffer
				if code := sockd([]string{"scale", "--control", d.control, bad}, io.Discard, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "want N from 1 to 1024, or +K or -K") {
					t.Fatalf("sockd scale %s: exit %d, %q", bad, code, errOut.String())
				}
			}
			// One that is wrong for this pool now: sockd says why, exit 1.
			var errOut bytes.Buffer
			if code := sockd([]string{"scale", "--control", d.control, "-3"}, io.Discard, &errOut); code != exitFailed || !strings.Contains(errOut.String(), "want 1 to 1024 (now 3)") {
				t.Fatalf("sockd scale -3: exit %d, %q", code, errOut.String())
			}
			if code := sockd([]string{"scale", "--control", d.control}, io.Discard, io.Discard); code != exitUsage {
				t.Fatalf("sockd scale without a number: exit %d", code)
			}
			size(3, "3 workers after refused requests")
		})
	}
}

// No signal sockd does not use stops it, freezes it or kills it: it (and
// its guard) keeps answering with the same workers. SIGQUIT is a clean
// stop, like SIGTERM.
func TestUnusedSignalsLeaveSockdRunning(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	before := d.mustStatus()
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGTSTP, syscall.SIGPIPE, syscall.SIGWINCH, syscall.SIGALRM,
		syscall.SIGURG, syscall.SIGCONT, syscall.SIGVTALRM, syscall.SIGXCPU, syscall.SIGPWR, syscall.Signal(34), syscall.Signal(64)} {
		if err := syscall.Kill(d.cmd.Process.Pid, sig); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(before.GuardPID, sig)
		s, err := d.status()
		if err != nil || s.State != pool.StateRunning || s.GuardPID != before.GuardPID || pids(s) != pids(before) {
			t.Fatalf("after %s: %v %+v", sig, err, s)
		}
	}
	if state, _, _ := procfs.Stat(before.GuardPID); state == 'T' {
		t.Fatal("the guard is stopped")
	}
	// What sockd ignores, its workers do not: they get every signal's
	// default action, as systemd would give them.
	for _, w := range before.Workers {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.PID))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
				mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if mask&(1<<(34-1)) != 0 {
					t.Fatalf("worker %d ignores signal 34 (SigIgn %s)", w.PID, strings.TrimSpace(v))
				}
			}
		}
	}
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGQUIT)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("sockd after SIGQUIT: %v", err)
	}
}

func pids(s pool.Status) string {
	var b strings.Builder
	for _, w := range s.Workers {
		b.WriteString(" " + strconv.Itoa(w.PID))
	}
	return b.String()
}

// lastEvent is the time of the newest event in s.
func lastEvent(s pool.Status) time.Time {
	var t time.Time
	for _, e := range s.Events {
		if e.Time.After(t) {
			t = e.Time
		}
	}
	return t
}

// countEvents counts the events of a kind in s newer than since.
func countEvents(s pool.Status, kind string, since time.Time) int {
	n := 0
	for _, e := range s.Events {
		if e.Kind == kind && e.Time.After(since) {
			n++
		}
	}
	return n
}

// sockd signal run by a worker (whose environment has SOCKD_WORKER and
// SOCKD_GENERATION, its own slot and generation) reaches every worker:
// those variables do not narrow a client command; --worker does.
func TestClientIgnoresAWorkersIdentity(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	waitFor(t, 20*time.Second, "2 ready", func() bool { s, err := d.status(); return err == nil && s.Ready == 2 })
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "2"}, {[]string{"--worker", "1"}, "1"}} {
		args := append([]string{"signal", "--control", d.control}, c.args...)
		cmd, out := sockdCmd(t, []string{"SOCKD_WORKER=0", "SOCKD_GENERATION=1"}, append(args, "CONT")...)
		if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != c.want {
			t.Fatalf("sockd %s with a worker's SOCKD_WORKER=0: %v, %q; want %s", strings.Join(args, " "), err, out.String(), c.want)
		}
	}
	// A selector that picks no slot or generation is refused (it used to
	// pick every worker), by the client and by sockd.
	for _, sel := range [][]string{{"--worker", "-1"}, {"--generation", "0"}, {"--generation=-2"}} {
		var b bytes.Buffer
		if code := sockd(append(append([]string{"signal", "--control", d.control}, sel...), "CONT"), &b, &b); code != exitUsage || !strings.Contains(b.String(), "want") {
			t.Fatalf("sockd signal %v: exit %d, %s", sel, code, b.String())
		}
	}
	c, err := net.Dial("unix", d.control)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"command":"signal","signal":"CONT","slot":-5}`+"\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, `"ok":false`) || !strings.Contains(line, "slot -5: want 0 or more") {
		t.Fatalf("a request for slot -5: %s", line)
	}
}

// sockd scale --wait to fewer workers returns once the retired ones are
// gone, not as soon as they were told to stop: here each takes 1 s to
// drain after SIGTERM.
func TestScaleDownWaitsForTheRetired(t *testing.T) {
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"--workers", "3", "--listen", "tcp://127.0.0.1:0", "--ready", "after:100ms"}
			if mode == "reuseport" {
				args = append(args, "--reuseport")
			}
			args = append(args, "--", "/bin/sh", "-c", `trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done`)
			d := startSockd(t, nil, args...)
			waitFor(t, 20*time.Second, "3 workers ready", func() bool { return d.mustStatus().Ready == 3 })
			var pids []int
			for _, w := range d.mustStatus().Workers {
				if w.Slot > 0 {
					pids = append(pids, w.PID)
				}
			}
			var out bytes.Buffer
			if code := sockd([]string{"scale", "--wait", "--control", d.control, "1"}, &out, &out); code != 0 {
				t.Fatalf("scale --wait 1: exit %d %s", code, out.String())
			}
			for _, pid := range pids {
				if p, err := procfs.ReadProcess(pid); err == nil && !p.Gone() {
					t.Errorf("scale --wait 1 returned while retired worker %d still runs (state %c)", pid, p.State)
				}
			}
			if s := d.mustStatus(); s.Current != 1 || len(s.Workers) != 1 {
				t.Fatalf("after scale --wait 1: current %d, %d workers", s.Current, len(s.Workers))
			}
		})
	}
}

// A scale --wait cut short because sockd stops (here it gives up: its
// worker is never ready) says so, not "context canceled".
func TestScaleWaitWhenSockdStops(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	run, out := sockdCmd(t, nil, "run", "--control", ctl, "--workers", "1", "--listen", "none", "--ready-timeout", "1s", "--", "/bin/sleep", "1000")
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Kill(); run.Wait() }()
	waitFor(t, 20*time.Second, "sockd answering", func() bool {
		return sockd([]string{"status", "--control", ctl}, io.Discard, io.Discard) == 0
	})
	var b bytes.Buffer
	code := sockd([]string{"scale", "--wait", "--control", ctl, "3"}, &b, &b)
	if code == 0 || !strings.Contains(b.String(), "sockd stopped before the workers were there") {
		t.Fatalf("scale --wait while sockd gives up: exit %d: %s\nsockd:\n%s", code, b.String(), out)
	}
	if err := run.Wait(); run.ProcessState.ExitCode() != exitWorkers {
		t.Fatalf("sockd run: %v, want exit %d", err, exitWorkers)
	}
}
