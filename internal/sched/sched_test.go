package sched

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary re-executes itself as a helper: SCHED_TEST_HELPER=tree
// goes low on its main thread, starts a child of its own from that
// thread (which inherits the low priority), says "up" and waits for
// stdin to close; =leaf just waits; =probe prints what CanRestore
// predicts and what the kernel does when it tries: go low, then back.
func TestMain(m *testing.M) {
	switch os.Getenv("SCHED_TEST_HELPER") {
	case "tree":
		runtime.LockOSThread()
		self, err := Self()
		if err == nil {
			err = LowThread(self)
		}
		if err != nil {
			fmt.Println("low:", err)
			os.Exit(1)
		}
		// The leaf is single-threaded, so that its threads are the
		// same when the test counts them and when it restores them (a
		// Go leaf's runtime could still be starting threads).
		leaf := exec.Command("cat")
		leaf.Stdin = os.Stdin
		if err := leaf.Start(); err != nil {
			fmt.Println("leaf:", err)
			os.Exit(1)
		}
		fmt.Println("up", leaf.Process.Pid)
		io.Copy(io.Discard, os.Stdin)
		leaf.Wait()
		os.Exit(0)
	case "probe":
		runtime.LockOSThread()
		self, err := Self()
		if err != nil {
			fmt.Println("self:", err)
			os.Exit(1)
		}
		ok, why := CanRestore(self, true)
		if err := LowThread(self); err != nil {
			fmt.Println("low:", err)
			os.Exit(1)
		}
		err = SetThread(self)
		fmt.Printf("predicted=%v kernel=%v why=%q err=%v\n", ok, err == nil, why, err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// threads lists the tasks of pid.
func threads(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		tids = append(tids, tid)
	}
	return tids
}

func prio(t *testing.T, tid int) Attr {
	t.Helper()
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	return Attr{Policy: a.Policy, Nice: a.Nice}
}

// A process tree started low gets every thread's priority back, the
// child's too; the ones that were not low stay as they were.
func TestRestoreTree(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SCHED_TEST_HELPER=tree")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "up ") {
		t.Fatalf("helper said %q, %v", line, err)
	}
	leaf, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "up ")))
	// The helper's main thread went low and forked the leaf from it;
	// Go's other threads started before that keep the normal priority.
	low := Low(self)
	if low.Nice != self.Nice+Lower && low.Nice != 19 {
		t.Fatalf("Low(%+v) = %+v: want %d nice levels down", self, low, Lower)
	}
	if p := prio(t, cmd.Process.Pid); p != low {
		t.Fatalf("helper's main thread: %+v, want %+v", p, low)
	}
	if p := prio(t, leaf); p != low {
		t.Fatalf("leaf: %+v, want %+v (inherited)", p, low)
	}
	lows, counted, others := map[int]int{}, map[int]int{}, 0
	for _, pid := range []int{cmd.Process.Pid, leaf} {
		counted[pid] = len(threads(t, pid))
		for _, tid := range threads(t, pid) {
			if prio(t, tid) == low {
				lows[pid]++
			} else {
				others++
			}
		}
	}
	if others == 0 {
		t.Fatal("every thread of the helper is low: the test cannot tell Restore leaves the others alone")
	}
	// A root is walked down, not up: the leaf alone leaves its parent low.
	n, err := Restore(self, nil, leaf)
	if err != nil {
		t.Fatal(err)
	}
	if n != lows[leaf] {
		t.Errorf("Restore of the leaf changed %d threads; it had %d low", n, lows[leaf])
	}
	if p := prio(t, cmd.Process.Pid); p != low {
		t.Fatalf("helper's main thread after Restore of its child: %+v, want %+v", p, low)
	}
	// Several roots, one of them inside another's tree.
	seen := map[int]bool{}
	n, err = Restore(self, seen, leaf, cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The helper's Go runtime may have started a thread (low, if its
	// main thread made it) since the count.
	if born := len(threads(t, cmd.Process.Pid)) - counted[cmd.Process.Pid]; n < lows[cmd.Process.Pid] || n > lows[cmd.Process.Pid]+born {
		t.Errorf("Restore changed %d threads; %d were low, %d started since", n, lows[cmd.Process.Pid], born)
	}
	for _, pid := range []int{cmd.Process.Pid, leaf} {
		for _, tid := range threads(t, pid) {
			a, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				t.Fatal(err)
			}
			if a.Policy != self.Policy || a.Nice != self.Nice {
				t.Errorf("pid %d thread %d: policy %d nice %d after Restore, want %d and %d", pid, tid, a.Policy, a.Nice, self.Policy, self.Nice)
			}
		}
	}
	// Nothing low is left: a second call changes nothing.
	if n, err := Restore(self, nil, cmd.Process.Pid); n != 0 || err != nil {
		t.Errorf("second Restore: %d, %v", n, err)
	}
	// A thread the app puts at the low priority itself after Restore saw
	// it keeps it in a later call with the same set (not with a new one).
	tid := threads(t, cmd.Process.Pid)[0]
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.Nice, a.Flags = low.Nice, 0
	if err := unix.SchedSetAttr(tid, a, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := Restore(self, seen, cmd.Process.Pid, leaf); n != 0 || err != nil || prio(t, tid) != low {
		t.Errorf("Restore with the threads it saw: %d, %v; thread %d at %+v, want left at %+v", n, err, tid, prio(t, tid), low)
	}
	if n, err := Restore(self, nil, cmd.Process.Pid); n != 1 || err != nil {
		t.Errorf("Restore with a new set: %d, %v; want the thread restored", n, err)
	}
}

// A process that is gone is no error.
func TestRestoreGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if n, err := Restore(Attr{}, nil, cmd.Process.Pid); n != 0 || err != nil {
		t.Fatalf("Restore of a reaped pid: %d, %v", n, err)
	}
}

// CanRestore's prediction is checked against the kernel: as root (with
// CAP_SYS_NICE), as an unprivileged user (RLIMIT_NICE 0: the kernel
// refuses), and as that user with RLIMIT_NICE 20 (allowed).
func TestCanRestoreAgreesWithKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the probe as another user")
	}
	for _, tool := range []string{"setpriv", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " (util-linux) is not installed")
		}
	}
	// A copy of the test binary that user nobody may run.
	dir, err := os.MkdirTemp("", "sched-probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "probe")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"}
	for _, c := range []struct {
		name string
		argv []string
		want bool
	}{
		{"root", []string{bin}, true},
		{"nobody", append(append([]string{"prlimit", "--nice=0", "--"}, nobody...), bin), false},
		{"nobody with RLIMIT_NICE 20", append(append([]string{"prlimit", "--nice=20", "--"}, nobody...), bin), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Env = append(os.Environ(), "SCHED_TEST_HELPER=probe")
			cmd.Dir = dir
			done := make(chan struct{})
			time.AfterFunc(30*time.Second, func() {
				select {
				case <-done:
				default:
					cmd.Process.Kill()
				}
			})
			out, err := cmd.CombinedOutput()
			close(done)
			if err != nil && strings.Contains(string(out), "failed to set the NICE resource limit") {
				t.Skipf("this machine does not let root raise RLIMIT_NICE: %s", out)
			}
			if err != nil {
				t.Fatalf("%v: %v\n%s", c.argv, err, out)
			}
			s := string(out)
			if !strings.Contains(s, fmt.Sprintf("predicted=%v kernel=%v", c.want, c.want)) {
				t.Fatalf("want prediction and kernel both %v, got %s", c.want, s)
			}
		})
	}
}
