package reaper_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/reaper"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary becomes a child subreaper (New) for all of its tests;
// nothing else in this package forks.

// orphans starts, through r, a shell that starts n processes which wait
// for a line on a pipe and exits at once, so they are reparented to this
// process. It returns their pids and the pipe's write end: closing it ends
// them all at the same moment.
func orphans(t *testing.T, r *reaper.Reaper, n int) ([]int, *os.File) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// A background job's stdin is /dev/null unless redirected: the pipe
	// goes in as fd 3.
	script := strings.Repeat("sh -c 'read x; exit 3' <&3 3<&- >/dev/null & echo $!\n", n)
	cmd := exec.Command("sh", "-c", script)
	cmd.ExtraFiles = []*os.File{pr}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(func() (int, error) { err := cmd.Start(); return pidOf(cmd), err }); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("shell printed %q", sc.Text())
		}
		pids = append(pids, pid)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	r.Release(cmd.Process.Pid)
	if len(pids) != n {
		t.Fatalf("started %d processes, want %d", len(pids), n)
	}
	t.Cleanup(func() {
		pw.Close()
		for _, pid := range pids {
			if procfs.Alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return pids, pw
}

func pidOf(cmd *exec.Cmd) int {
	if cmd.Process == nil {
		return 0
	}
	return cmd.Process.Pid
}

// run runs r until the test ends, and waits for it to return: a Run
// left over from one test could otherwise reap the next test's child
// (it does not know that test's owned set).
func run(t *testing.T, r *reaper.Reaper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// gone: no process, not even a zombie, has the pid.
func gone(pid int) bool {
	_, _, err := procfs.Stat(pid)
	return err != nil
}

func TestAdoptedOrphansAreReapedWhenTheyExit(t *testing.T) {
	r, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)

	pids, pw := orphans(t, r, 5)
	workertest.Eventually(t, 10*time.Second, "the orphans reparented to the test process", func() bool {
		for _, pid := range pids {
			if _, ppid, err := procfs.Stat(pid); err != nil || ppid != os.Getpid() {
				return false
			}
		}
		return true
	})
	adopted := r.Adopted()
	for _, pid := range pids {
		if !slices.Contains(adopted, pid) {
			t.Fatalf("Adopted() = %v lacks orphan %d", adopted, pid)
		}
	}
	// All five exit at once: their SIGCHLDs merge, and still each is reaped.
	pw.Close()
	workertest.Eventually(t, 10*time.Second, "every orphan reaped (no zombie left)", func() bool {
		for _, pid := range pids {
			if !gone(pid) {
				return false
			}
		}
		return true
	})
}

func TestOwnedChildrenAreLeftToTheirOwner(t *testing.T) {
	r, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)

	cmd := exec.Command("sh", "-c", "exit 7")
	pid, err := r.Start(func() (int, error) { err := cmd.Start(); return pidOf(cmd), err })
	if err != nil {
		t.Fatal(err)
	}
	workertest.Eventually(t, 10*time.Second, "the owned child exited", func() bool {
		st, _, err := procfs.Stat(pid)
		return err == nil && st == 'Z'
	})
	if n := r.Reap(); n != 0 {
		t.Fatalf("Reap reaped %d processes; the only child is owned", n)
	}
	if slices.Contains(r.Adopted(), pid) {
		t.Fatalf("Adopted() lists owned child %d", pid)
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("the owner's wait: %v, want exit status 7 (the reaper must not take it)", err)
	}
	r.Release(pid)
}

func TestKillAdoptedEndsOrphansAndTheirChildren(t *testing.T) {
	r, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	pids, _ := orphans(t, r, 3)
	workertest.Eventually(t, 10*time.Second, "the orphans adopted", func() bool { return len(r.Adopted()) == 3 })
	n, err := r.KillAdopted(nil, time.Now().Add(10*time.Second))
	if err != nil || n < 3 {
		t.Fatalf("KillAdopted = %d, %v; want at least 3 killed", n, err)
	}
	// No Run loop here: what died after KillAdopted's last pass is reaped
	// by hand.
	workertest.Eventually(t, 10*time.Second, "the killed orphans gone", func() bool {
		r.Reap()
		for _, pid := range pids {
			if !gone(pid) {
				return false
			}
		}
		return true
	})
}
