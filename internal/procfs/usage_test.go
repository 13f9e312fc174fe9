package procfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/worker/workertest"
)

// waitFor waits on cond with a deadline of 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	workertest.Eventually(t, 10*time.Second, what, cond)
}

func TestAncestorsChildrenAndTreeUsage(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 100 & sleep 100 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, k := range Children(cmd.Process.Pid) {
			if p, err := os.FindProcess(k); err == nil {
				p.Kill()
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	}()
	sh := cmd.Process.Pid
	var kids []int
	waitFor(t, "sh's two children", func() bool { kids = Children(sh); return len(kids) == 2 })
	if a := Ancestors(kids[0], os.Getpid(), 8); len(a) != 1 || a[0] != sh {
		t.Fatalf("Ancestors(%d) up to this process = %v, want [%d]", kids[0], a, sh)
	}
	if a := Ancestors(kids[0], 0, 2); len(a) != 2 || a[0] != sh || a[1] != os.Getpid() {
		t.Fatalf("two ancestors of %d: %v", kids[0], a)
	}
	u, err := TreeUsage(sh, 100)
	if err != nil || u.Procs != 3 || u.RSS <= 0 {
		t.Fatalf("TreeUsage(sh) = %+v %v", u, err)
	}
	if u1, _ := TreeUsage(sh, 1); u1.Procs != 1 {
		t.Fatalf("TreeUsage with a limit of 1: %+v", u1)
	}
	if _, err := ProcUsage(1 << 30); err == nil {
		t.Fatal("usage of a pid that cannot exist")
	}
}

func TestFDsAndEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds, err := FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fd := range fds {
		if target, err := FDTarget(os.Getpid(), fd); err == nil && target == path {
			found = int(f.Fd()) == fd
		}
	}
	if !found {
		t.Fatalf("fd %d -> %s not in %v", f.Fd(), path, fds)
	}
	cmd := exec.Command("sleep", "100")
	cmd.Env = []string{"SOCKD_WORKER_ID=123-4", "OTHER=x"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	waitFor(t, "the child's exec", func() bool { return EnvHas(pid, "OTHER=") })
	for prefix, want := range map[string]bool{"SOCKD_WORKER_ID=123-": true, "SOCKD_WORKER_ID=123-4": true, "SOCKD_WORKER_ID=12-": false, "MISSING=": false} {
		if got := EnvHas(pid, prefix); got != want {
			t.Errorf("EnvHas(%q) = %v", prefix, got)
		}
	}
	if strings.Contains(path, "\x00") || EnvHas(1<<30, "X") {
		t.Fatal("environment of a pid that cannot exist")
	}
}

// Children finds the children of every thread: here ten, each forked by
// a goroutine locked to a thread of its own, and the list is exactly
// those ten.
func TestChildrenOfEveryThread(t *testing.T) {
	const n = 10
	cmds := make([]*exec.Cmd, n)
	started := make(chan error)
	release := make(chan struct{})
	for i := range cmds {
		go func() {
			runtime.LockOSThread() // the thread ends with the goroutine: its children go to another
			cmds[i] = exec.Command("sleep", "100")
			started <- cmds[i].Start()
			<-release
		}()
	}
	for range cmds {
		if err := <-started; err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		close(release)
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	var want []int
	for _, c := range cmds {
		want = append(want, c.Process.Pid)
	}
	slices.Sort(want)
	got := Children(os.Getpid())
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Children(self) = %v, want %v", got, want)
	}
	// Without the children files (a kernel without CONFIG_PROC_CHILDREN),
	// the scan of every process's parent finds the same.
	if !haveChildrenFiles() {
		t.Log("this kernel has no children files: the check above ran the scan too")
	}
	scanned := childrenByScan(os.Getpid())
	slices.Sort(scanned)
	if !slices.Equal(scanned, want) {
		t.Fatalf("childrenByScan(self) = %v, want %v", scanned, want)
	}
	// A few small allocations per thread (the file's name), none of the
	// directory listing's buffers.
	threads, _ := os.ReadDir("/proc/self/task")
	if a := testing.AllocsPerRun(20, func() { Children(os.Getpid()) }); a > float64(4*len(threads)+10) {
		t.Errorf("Children allocates %.0f times a call with %d threads; it runs on every SIGCHLD", a, len(threads))
	}
}

// A children file read in pieces smaller than a number yields the same
// numbers.
func TestAppendNumbersAcrossReads(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "children"), []byte("12 345 6789 4194304 "), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	for _, size := range []int{1, 2, 3, 4096} {
		got := appendNumbers(nil, d, "children", make([]byte, size))
		if !slices.Equal(got, []int{12, 345, 6789, 4194304}) {
			t.Fatalf("read %d bytes at a time: %v", size, got)
		}
	}
	if got := appendNumbers([]int{1}, d, "missing", make([]byte, 8)); !slices.Equal(got, []int{1}) {
		t.Fatalf("a missing file: %v", got)
	}
}

// A tree's CPU time keeps the time of a child that ended and was waited
// for: it does not fall when the child is gone.
func TestTreeUsageKeepsWaitedChildren(t *testing.T) {
	// The child spins until the test has seen its time, whatever the CPU.
	done := filepath.Join(t.TempDir(), "done")
	cmd := exec.Command("sh", "-c", `sh -c 'while [ ! -e "$DONE" ]; do :; done'; exec sleep 100`)
	cmd.Env = append(os.Environ(), "DONE="+done)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sh := cmd.Process.Pid
	var during Usage
	waitFor(t, "the busy child to have used 50 ms", func() bool {
		u, err := TreeUsage(sh, 100)
		if err == nil && u.Procs == 2 && u.CPU >= 50*time.Millisecond {
			during = u
			return true
		}
		return false
	})
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child gone and sh become sleep", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sh))
		return strings.TrimSpace(string(b)) == "sleep" && len(Children(sh)) == 0
	})
	after, err := TreeUsage(sh, 100)
	if err != nil || after.Procs != 1 || after.CPU < during.CPU || after.Waited < during.CPU-during.Waited-20*time.Millisecond {
		t.Fatalf("after the child ended: %+v (%v); while it ran: %+v", after, err, during)
	}
}
