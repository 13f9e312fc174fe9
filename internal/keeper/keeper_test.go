package keeper

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// The test binary plays the sockds: "first" starts a "successor" (marked
// as a new sockd is, by SOCKD_UPGRADE_FD) and an orphan-to-be that exits
// at once, then exits itself on SIGTERM without passing it on (the
// window where a handing-over sockd is gone before it could); the
// successor exits 7 on SIGTERM.
func TestMain(m *testing.M) {
	switch os.Getenv("KEEPER_TEST_ROLE") {
	case "first":
		first()
	case "successor":
		successor7()
	case "orphan":
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func first() {
	dir := os.Getenv("KEEPER_TEST_DIR")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	self, _ := os.Executable()
	succ := exec.Command(self)
	succ.Env = append(os.Environ(), "KEEPER_TEST_ROLE=successor", "SOCKD_UPGRADE_FD=3")
	orphan := exec.Command(self)
	orphan.Env = append(os.Environ(), "KEEPER_TEST_ROLE=orphan")
	if err := succ.Start(); err != nil {
		os.Exit(3)
	}
	if err := orphan.Start(); err != nil {
		os.Exit(3)
	}
	os.WriteFile(filepath.Join(dir, "orphan"), []byte(strconv.Itoa(orphan.Process.Pid)), 0o644)
	// Neither is waited for: both are reparented to the keeper.
	<-term
	os.Exit(0)
}

func successor7() {
	dir := os.Getenv("KEEPER_TEST_DIR")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	os.WriteFile(filepath.Join(dir, "successor.tmp"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	os.Rename(filepath.Join(dir, "successor.tmp"), filepath.Join(dir, "successor"))
	<-term
	os.Exit(7)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readPid(t *testing.T, path string) int {
	var pid int
	waitFor(t, path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(string(b))
		return err == nil
	})
	return pid
}

func gone(pid int) bool {
	st, _, err := procfs.Stat(pid)
	return err != nil || st == 'Z' || st == 'X'
}

func TestKeepAdoptsSuccessorPassesStopAndReaps(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	dir := t.TempDir()
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "KEEPER_TEST_ROLE=first", "KEEPER_TEST_DIR="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	first := Child{PID: cmd.Process.Pid, Exited: exited, Status: func() int { return cmd.ProcessState.ExitCode() }}

	succ := readPid(t, filepath.Join(dir, "successor"))
	orphan := readPid(t, filepath.Join(dir, "orphan"))
	sigs := make(chan os.Signal, 1)
	status := make(chan int, 1)
	go func() { status <- Keep(first, sigs, nil) }()

	// The orphan exits at once, a zombie "first" never reaps; it is
	// reparented here once "first" is gone.
	waitFor(t, "the orphan to exit", func() bool { st, _, _ := procfs.Stat(orphan); return st == 'Z' })
	sigs <- syscall.SIGTERM
	select {
	case code := <-status:
		if code != 7 {
			t.Fatalf("Keep returned %d, want the successor's status 7", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Keep did not return: successor %d state %s", succ, state(succ))
	}
	if !gone(succ) {
		t.Fatalf("successor %d still there: %s", succ, state(succ))
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", succ)); err == nil {
		t.Fatalf("successor %d left unreaped", succ)
	}
	// The orphan was reaped by Keep (not a zombie left here).
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); err == nil {
		t.Fatalf("orphan %d left unreaped: %s", orphan, state(orphan))
	}
}

func state(pid int) string {
	st, ppid, err := procfs.Stat(pid)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%c ppid %d", st, ppid)
}

func TestKeepReturnsStatusWithoutSuccessor(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	code := Keep(Child{PID: cmd.Process.Pid, Exited: exited, Status: func() int { return cmd.ProcessState.ExitCode() }}, nil, nil)
	if code != 5 {
		t.Fatalf("Keep returned %d, want 5", code)
	}
}
