package procfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
