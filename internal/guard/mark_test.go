package guard

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// waitFor waits on cond with a deadline of 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	workertest.Eventually(t, 10*time.Second, what, cond)
}

// group starts `sleep` as the leader of a process group of its own, with
// env.
func group(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "100")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// ignores reads pid's SigIgn mask for sig.
func ignores(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

func gone(cmd *exec.Cmd) func() bool {
	return func() bool { s, _, _ := procfs.Stat(cmd.Process.Pid); return s == 'Z' }
}

// When sockd's end of the pipe closes (sockd exited, however), the guard
// kills the process groups still listed and the processes that carry the
// mark, and only those; then it exits and is reaped.
func TestGuardKillsWhatIsListed(t *testing.T) {
	g, err := Start("/proc/self/exe", Options{Mark: "SOCKD_WORKER_ID=777-"})
	if err != nil {
		t.Fatal(err)
	}
	listed, removed, marked, bystander := group(t), group(t), group(t, "SOCKD_WORKER_ID=777-3"), group(t, "SOCKD_WORKER_ID=778-1")
	for _, c := range []*exec.Cmd{listed, removed} {
		if err := g.Add(c.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Remove(removed.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// The signals a terminal or a service manager sends to sockd's whole
	// group do not end the guard (once it runs: before, it is any new
	// process).
	waitFor(t, "the guard ignoring signals", func() bool { return ignores(g.PID(), syscall.SIGTERM) })
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.Signal(40)} {
		syscall.Kill(g.PID(), sig)
	}
	if !procfs.Alive(g.PID()) {
		t.Fatal("the guard died of a signal")
	}
	if s, _, _ := procfs.Stat(g.PID()); s == 'T' {
		t.Fatal("the guard was stopped by SIGTTIN")
	}
	pid := g.PID()
	g.mu.Lock()
	g.closing = true // sockd gone: end-of-file, no clean goodbye
	g.w.Close()
	g.mu.Unlock()
	waitFor(t, "the listed group killed", gone(listed))
	waitFor(t, "the marked process killed", gone(marked))
	for _, c := range []*exec.Cmd{removed, bystander} {
		if !procfs.Alive(c.Process.Pid) {
			t.Fatalf("the guard killed %d, which was not its to kill", c.Process.Pid)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if procfs.Alive(pid) {
		t.Fatal("the guard is still running")
	}
}

// A guard someone kills is reaped (no zombie) and replaced by one that
// knows the whole list: when sockd is gone, the new guard kills the
// groups listed before the old one died.
func TestKilledGuardIsReplaced(t *testing.T) {
	g, err := Start("/proc/self/exe", Options{Mark: "SOCKD_WORKER_ID=779-"})
	if err != nil {
		t.Fatal(err)
	}
	listed, marked := group(t), group(t, "SOCKD_WORKER_ID=779-1")
	if err := g.Add(listed.Process.Pid); err != nil {
		t.Fatal(err)
	}
	old := g.PID()
	syscall.Kill(old, syscall.SIGKILL)
	waitFor(t, "a new guard", func() bool { return g.PID() != old })
	waitFor(t, "the old guard reaped", func() bool {
		_, _, err := procfs.Stat(old)
		return err != nil
	})
	waitFor(t, "the new guard ignoring signals", func() bool { return ignores(g.PID(), syscall.SIGTERM) })
	pid := g.PID()
	g.mu.Lock()
	g.closing = true // sockd gone
	g.w.Close()
	g.mu.Unlock()
	waitFor(t, "the listed group killed by the new guard", gone(listed))
	waitFor(t, "the marked process killed by the new guard", gone(marked))
	g.Close()
	if _, _, err := procfs.Stat(pid); err == nil {
		t.Fatal("the new guard is still there")
	}
}
