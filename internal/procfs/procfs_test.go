package procfs_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/procfs"
)

// The test binary doubles as the processes these tests look at, with
// PROCFS_TEST_HELPER set:
//
//	wait   write "ready\n" to stdout, then wait for stdin to close
//	comm   the same, with a command name (the one in /proc/PID/stat) that
//	       contains ") " and fake fields
//	parent start a "wait" child, write its pid, wait for stdin to close
//	exit   exit 7 at once
func TestMain(m *testing.M) {
	switch os.Getenv("PROCFS_TEST_HELPER") {
	case "":
		os.Exit(m.Run())
	case "comm":
		// /proc/self/comm is the thread group leader's name, the one
		// /proc/PID/stat shows (at most 15 bytes).
		if err := os.WriteFile("/proc/self/comm", []byte(trickyComm), 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fallthrough
	case "wait":
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "parent":
		c := helperCmd("wait")
		c.Stdin = os.Stdin // ends when the test closes our stdin
		out, _ := c.StdoutPipe()
		if err := c.Start(); err != nil {
			os.Exit(2)
		}
		bufio.NewReader(out).ReadString('\n')
		fmt.Println(c.Process.Pid)
		io.Copy(io.Discard, os.Stdin)
		c.Wait()
		os.Exit(0)
	case "exit":
		os.Exit(7)
	}
	os.Exit(2)
}

// trickyComm would make a parser that looks for the first ')' read state
// 'R' and parent pid 1.
const trickyComm = "x) R 1 (y) Z 1"

func helperCmd(mode string) *exec.Cmd {
	c := exec.Command("/proc/self/exe")
	c.Env = append(os.Environ(), "PROCFS_TEST_HELPER="+mode, "GORACE=atexit_sleep_ms=0")
	c.Stderr = os.Stderr
	return c
}

// startHelper runs a helper until the end of the test and returns once it
// said "ready" (or, for mode parent, its child's pid).
func startHelper(t *testing.T, mode string) (*exec.Cmd, string) {
	t.Helper()
	c := helperCmd(mode)
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		c.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	return c, strings.TrimSpace(line)
}

// waitExited returns once pid has exited, without reaping it: it stays a
// zombie until its parent waits for it.
func waitExited(t *testing.T, pid int) {
	t.Helper()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			if err != nil {
				t.Fatalf("waitid %d: %v", pid, err)
			}
			return
		}
	}
}

func TestStatSelfAndRunningChild(t *testing.T) {
	// This thread is running while it reads its own stat (the process's
	// stat is its main thread's, which may be asleep).
	runtime.LockOSThread()
	state, ppid, err := procfs.Stat(unix.Gettid())
	runtime.UnlockOSThread()
	if err != nil || state != 'R' || ppid != os.Getppid() {
		t.Fatalf("Stat(this thread) = %c, %d, %v; want R, %d", state, ppid, err, os.Getppid())
	}
	c, _ := startHelper(t, "wait")
	// The helper is blocked reading its stdin, though a thread of its
	// runtime may be running for a moment: anything but a zombie or dead.
	state, ppid, err = procfs.Stat(c.Process.Pid)
	if err != nil || ppid != os.Getpid() || strings.ContainsRune("ZXx", rune(state)) {
		t.Fatalf("Stat(child) = %c, %d, %v; want a live child of %d", state, ppid, err, os.Getpid())
	}
	if !procfs.Alive(c.Process.Pid) || !procfs.Alive(os.Getpid()) {
		t.Fatal("a running process is not Alive")
	}
}

func TestStatCommandNameWithParentheses(t *testing.T) {
	c, _ := startHelper(t, "comm")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
	if err != nil || !strings.Contains(string(b), "("+trickyComm+")") {
		t.Fatalf("the helper did not rename itself: %q, %v", b, err)
	}
	state, ppid, err := procfs.Stat(c.Process.Pid)
	if err != nil || ppid != os.Getpid() || strings.ContainsRune("ZXx", rune(state)) {
		t.Fatalf("Stat = %c, %d, %v; want a live child of %d", state, ppid, err, os.Getpid())
	}
}

func TestZombieIsNotAlive(t *testing.T) {
	c := helperCmd("exit")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	waitExited(t, pid)
	// Exited, not yet waited for: a zombie, which kill(pid, 0) would
	// still find.
	state, ppid, err := procfs.Stat(pid)
	if err != nil || state != 'Z' || ppid != os.Getpid() {
		t.Fatalf("Stat(zombie) = %c, %d, %v; want Z, %d", state, ppid, err, os.Getpid())
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("kill(zombie, 0) = %v; the test assumes it succeeds", err)
	}
	if procfs.Alive(pid) {
		t.Fatal("a zombie is Alive")
	}
	if err := c.Wait(); err == nil || c.ProcessState.ExitCode() != 7 {
		t.Fatalf("helper: %v", err)
	}
	// Reaped: gone from /proc altogether.
	if _, _, err := procfs.Stat(pid); !os.IsNotExist(err) {
		t.Fatalf("Stat(reaped) = %v, want not found", err)
	}
	if procfs.Alive(pid) {
		t.Fatal("a reaped process is Alive")
	}
}

func TestNoSuchProcess(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	pid := max + 1 // never a process id
	if _, _, err := procfs.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("Stat(%d) = %v", pid, err)
	}
	if procfs.Alive(pid) {
		t.Errorf("Alive(%d)", pid)
	}
	if as := procfs.Ancestors(pid, 0, 8); as != nil {
		t.Errorf("Ancestors(%d) = %v", pid, as)
	}
	if _, err := procfs.FDs(pid); !os.IsNotExist(err) {
		t.Errorf("FDs(%d) = %v", pid, err)
	}
	if _, err := procfs.FDTarget(pid, 0); !os.IsNotExist(err) {
		t.Errorf("FDTarget(%d, 0) = %v", pid, err)
	}
}

func TestAncestors(t *testing.T) {
	parent, line := startHelper(t, "parent")
	child, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	self, mid := os.Getpid(), parent.Process.Pid
	// Up to init: the helper, this process, and then this process's own
	// ancestors.
	all := procfs.Ancestors(child, 0, 64)
	if len(all) < 2 || all[0] != mid || all[1] != self {
		t.Fatalf("Ancestors(%d) = %v; want [%d %d …]", child, all, mid, self)
	}
	if want := procfs.Ancestors(self, 0, 64); !slices.Equal(all[2:], want) {
		t.Errorf("Ancestors(%d) = %v, this process's = %v", child, all, want)
	}
	if slices.Contains(all, 1) || slices.Contains(all, 0) {
		t.Errorf("Ancestors(%d) = %v includes init", child, all)
	}
	for _, c := range []struct {
		stop, depth int
		want        []int
	}{
		{self, 64, []int{mid}}, // stops below stop
		{mid, 64, nil},         // stop is the parent
		{0, 1, []int{mid}},     // depth
		{0, 2, []int{mid, self}},
		{0, 0, nil},
	} {
		if got := procfs.Ancestors(child, c.stop, c.depth); !slices.Equal(got, c.want) {
			t.Errorf("Ancestors(%d, stop %d, depth %d) = %v, want %v", child, c.stop, c.depth, got, c.want)
		}
	}
	if got := procfs.Ancestors(1, 0, 8); got != nil {
		t.Errorf("Ancestors(1) = %v", got)
	}
}

func TestFDsAndTargets(t *testing.T) {
	self := os.Getpid()
	before := fdtest.Open(t)
	if !slices.IsSorted(before) || !slices.Contains(before, 0) {
		t.Fatalf("FDs(self) = %v", before)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := procfs.FDs(self)
	if err != nil || !slices.IsSorted(fds) {
		t.Fatalf("FDs = %v, %v", fds, err)
	}
	opened := []int{p[0], p[1], sock, int(f.Fd())}
	for _, fd := range append(before, opened...) {
		if !slices.Contains(fds, fd) {
			t.Errorf("FDs = %v, missing %d", fds, fd)
		}
	}
	// And one more, the descriptor of the listing itself, closed by now.
	var extra []int
	for _, fd := range fds {
		if !slices.Contains(before, fd) && !slices.Contains(opened, fd) {
			extra = append(extra, fd)
		}
	}
	if len(extra) != 1 {
		t.Fatalf("FDs = %v, %v before %v were opened", fds, before, opened)
	}
	if _, err := unix.FcntlInt(uintptr(extra[0]), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("FDs listed %d, open after the listing", extra[0])
	}
	checkTarget := func(fd int, want string) {
		t.Helper()
		if got, err := procfs.FDTarget(self, fd); err != nil || got != want {
			t.Errorf("FDTarget(%d) = %q, %v; want %q", fd, got, err, want)
		}
	}
	checkTarget(p[0], fmt.Sprintf("pipe:[%d]", fdtest.Inode(p[0])))
	checkTarget(sock, fmt.Sprintf("socket:[%d]", fdtest.Inode(sock)))
	checkTarget(int(f.Fd()), os.DevNull)
	unix.Close(p[0])
	unix.Close(p[1])
	unix.Close(sock)
	f.Close()
	fdtest.Check(t, before, "after closing what the test opened")
	if _, err := procfs.FDTarget(self, p[0]); !os.IsNotExist(err) {
		t.Errorf("FDTarget of a closed descriptor: %v", err)
	}
}

func TestFDsOfAnotherProcess(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	c := helperCmd("wait")
	c.ExtraFiles = []*os.File{w} // fd 3 in the helper
	in, _ := c.StdinPipe()
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer in.Close()
	bufio.NewReader(out).ReadString('\n')
	fds, err := procfs.FDs(c.Process.Pid)
	if err != nil || len(fds) < 4 || fds[0] != 0 || fds[3] != 3 {
		t.Fatalf("FDs(helper) = %v, %v", fds, err)
	}
	want := fmt.Sprintf("pipe:[%d]", fdtest.Inode(int(w.Fd())))
	if got, err := procfs.FDTarget(c.Process.Pid, 3); err != nil || got != want {
		t.Fatalf("FDTarget(helper, 3) = %q, %v; want %q", got, err, want)
	}
}
