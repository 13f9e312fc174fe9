package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary is also a worker: with CGROUP_TEST_HELPER=fork it
// starts a grandchild in a session of its own (a daemon that left), prints
// both pids and waits to be killed.
func TestMain(m *testing.M) {
	switch os.Getenv("CGROUP_TEST_HELPER") {
	case "fork":
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "CGROUP_TEST_HELPER=sleep")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Printf("%d %d\n", os.Getpid(), cmd.Process.Pid)
		select {}
	case "sleep":
		select {}
	}
	os.Exit(m.Run())
}

// kernelMount is the writable cgroup2 mount, or a skip (a failure under
// CI) where this test cannot run: not root, no cgroup2, not in its root.
func kernelMount(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("SOCKD_E2E_REQUIRE") == "1" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("cgroup kernel tests need root")
	}
	mount, err := findMount()
	if err != nil {
		skip("cgroup kernel tests: %v", err)
	}
	if own, err := ownCgroup(); err != nil || own != "/" {
		skip("cgroup kernel tests: this process is in %q, not the root of the cgroup2 hierarchy (%v)", own, err)
	}
	return mount
}

// startHelper starts the forking helper in g (clone3 CLONE_INTO_CGROUP,
// as sockd starts workers) and returns its pid and its grandchild's.
func startHelper(t *testing.T, g *Group) (*exec.Cmd, int, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CGROUP_TEST_HELPER=fork")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD(), Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var child, grand int
	if _, err := fmt.Fscan(out, &child, &grand); err != nil {
		t.Fatalf("helper: %v", err)
	}
	return cmd, child, grand
}

// The whole life of sockd's subtree on the real kernel, standalone as
// root: made below the root, sockd in its supervisor leaf, a worker
// cgroup entered at the fork, a daemon that left the worker's session
// still in it, rmdir refused while it is populated (EBUSY), cgroup.kill
// ending all of it, KillTree finding only this sockd's workers, and
// Close putting sockd back and leaving nothing.
func TestKernelTree(t *testing.T) {
	mount := kernelMount(t)
	tr, err := Setup(Options{Mount: mount, Own: "/"})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			tr.Close()
		}
	})
	if !tr.Created() || tr.Base != filepath.Join(mount, fmt.Sprintf("sockd-%d", os.Getpid())) {
		t.Fatalf("tree %+v", tr)
	}
	if own, _ := ownCgroup(); own != fmt.Sprintf("/sockd-%d/supervisor", os.Getpid()) {
		t.Fatalf("this process is in %q, want the supervisor leaf", own)
	}
	g, err := tr.NewGroup(tr.limits)
	if err != nil {
		t.Fatal(err)
	}
	cmd, child, grand := startHelper(t, g)
	g.CloseFD()
	if !g.Populated() {
		t.Fatal("the worker's cgroup is not populated")
	}
	pids, err := g.PIDs()
	if err != nil || len(pids) != 2 || !(pids[0] == child && pids[1] == grand || pids[1] == child && pids[0] == grand) {
		t.Fatalf("PIDs() = %v, %v; want the worker %d and its daemon %d", pids, err, child, grand)
	}
	if err := g.Remove(); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("rmdir of a populated cgroup: %v, want EBUSY", err)
	}
	other := filepath.Join(tr.Base, fmt.Sprintf("worker-%d-1", os.Getpid()+1)) // another sockd's, during an upgrade
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if n := KillTree(tr.Base, os.Getpid()); n != 1 {
		t.Fatalf("KillTree killed %d cgroups, want this sockd's one", n)
	}
	cmd.Wait()
	workertest.Eventually(t, 10*time.Second, "the worker's cgroup empty", func() bool { return !g.Populated() })
	if st, _, err := procfs.Stat(grand); err == nil && st != 'Z' && st != 'X' {
		t.Fatalf("the daemon %d outlived cgroup.kill (state %c)", grand, st)
	}
	if g.Kill() {
		t.Fatal("Kill of an empty cgroup reported a kill")
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("rmdir of the emptied cgroup: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v (left: %v)", err, ls(tr.Base))
	}
	closed = true
	if own, _ := ownCgroup(); own != "/" {
		t.Fatalf("after Close this process is in %q", own)
	}
	if _, err := os.Stat(tr.Base); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left behind: %v", tr.Base, err)
	}
}

// Limits with controllers the kernel's cgroup2 hierarchy lacks (a hybrid
// host binds them to v1): refused with the controllers named, nothing
// left behind; with the controller there, every worker gets the limit.
func TestKernelLimits(t *testing.T) {
	mount := kernelMount(t)
	have, _ := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	tr, err := Setup(Options{Mount: mount, Own: "/", Limits: Limits{PidsMax: 64}})
	if !strings.Contains(string(have), "pids") {
		if err == nil || !strings.Contains(err.Error(), "need the pids controller") {
			t.Fatalf("pids.max without the pids controller: %v", err)
		}
		if own, _ := ownCgroup(); own != "/" {
			t.Fatalf("a refused Setup left this process in %q", own)
		}
		if _, err := os.Stat(filepath.Join(mount, fmt.Sprintf("sockd-%d", os.Getpid()))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused Setup left its cgroup: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	g, err := tr.NewGroup(tr.limits)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if b, _ := os.ReadFile(filepath.Join(g.Path, "pids.max")); strings.TrimSpace(string(b)) != "64" {
		t.Fatalf("pids.max = %q", b)
	}
}

func ls(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// fakeTree is a directory that looks like a cgroup to this package, for
// the refusals a real tree here cannot be made to give.
func fakeTree(t *testing.T, controllers string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"cgroup.procs": "", "cgroup.controllers": controllers, "cgroup.subtree_control": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// refuse makes writes to files named name fail with err for the test.
func refuse(t *testing.T, name string, err error) {
	old := write
	write = func(path, v string) error {
		if filepath.Base(path) == name {
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		return old(path, v)
	}
	t.Cleanup(func() { write = old })
}

// The no-internal-processes rule: enabling controllers for the workers
// in a cgroup that still holds a process is refused with EBUSY; Setup
// says what it could not enable.
func TestFakeSubtreeControlBusy(t *testing.T) {
	base := fakeTree(t, "cpu memory pids")
	os.Mkdir(filepath.Join(base, "supervisor"), 0o755)
	refuse(t, "cgroup.subtree_control", unix.EBUSY)
	_, err := Setup(Options{Base: base, Limits: Limits{MemoryMax: 1 << 20}})
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "enable memory for the workers' cgroups") {
		t.Fatalf("Setup: %v", err)
	}
}

// A controller the tree does not offer is an error naming it; one that is
// offered is enabled for the workers.
func TestFakeControllerMissing(t *testing.T) {
	base := fakeTree(t, "cpu pids")
	_, err := Setup(Options{Base: base, Limits: Limits{MemoryMax: 1 << 20, PidsMax: 5}})
	if err == nil || !strings.Contains(err.Error(), "need the memory controller") || strings.Contains(err.Error(), "pids controller") {
		t.Fatalf("Setup: %v", err)
	}
	base = fakeTree(t, "cpu pids")
	tr, err := Setup(Options{Base: base, Limits: Limits{PidsMax: 5, CPUWeight: 50}})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "cgroup.subtree_control")); string(b) != "+pids +cpu" {
		t.Fatalf("subtree_control = %q", b)
	}
	g, err := tr.NewGroup(tr.limits)
	if err != nil {
		t.Fatal(err)
	}
	g.CloseFD()
	for file, want := range map[string]string{"pids.max": "5", "cpu.weight": "50"} {
		if b, _ := os.ReadFile(filepath.Join(g.Path, file)); string(b) != want {
			t.Errorf("%s = %q, want %q", file, b, want)
		}
	}
}

// A limit the kernel refuses for a new worker cgroup (memory.max when the
// controller went away): the cgroup is not left behind.
func TestFakeLimitRefused(t *testing.T) {
	base := fakeTree(t, "memory")
	tr, err := Setup(Options{Base: base, Limits: Limits{MemoryMax: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	refuse(t, "memory.max", unix.ENOENT)
	if _, err := tr.NewGroup(tr.limits); err == nil || !strings.Contains(err.Error(), "memory.max") {
		t.Fatalf("NewGroup: %v", err)
	}
	if got := ls(base); strings.Join(got, " ") != "cgroup.controllers cgroup.procs cgroup.subtree_control supervisor" {
		t.Fatalf("left in the tree: %v", got)
	}
}

// Without cgroup.kill (Linux before 5.14) Kill signals every process
// cgroup.procs lists.
func TestFakeKillWithoutCgroupKill(t *testing.T) {
	base := fakeTree(t, "")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CGROUP_TEST_HELPER=sleep")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	g := &Group{Path: base}
	os.WriteFile(filepath.Join(base, "cgroup.events"), []byte("populated 1\nfrozen 0\n"), 0o644)
	os.WriteFile(filepath.Join(base, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	refuse(t, "cgroup.kill", unix.ENOENT)
	if !g.Kill() {
		t.Fatal("Kill of a populated cgroup reported none")
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", err)
	}
}

// Which subtree sockd may take: a delegated one, or the root's child it
// makes; nothing else, and nothing read-only.
func TestPlan(t *testing.T) {
	mount := t.TempDir()
	os.MkdirAll(filepath.Join(mount, "system.slice", "app.service"), 0o755)
	os.WriteFile(filepath.Join(mount, "system.slice", "app.service", "cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(mount, "cgroup.procs"), nil, 0o644)
	if _, err := plan(Options{Mount: mount, Own: "/system.slice/app.service"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("undelegated: %v", err)
	}
	tr, err := plan(Options{Mount: mount, Own: "/system.slice/app.service", Delegated: true})
	if err != nil || tr.created || tr.Base != filepath.Join(mount, "system.slice/app.service") {
		t.Fatalf("delegated: %+v, %v", tr, err)
	}
	tr, err = plan(Options{Mount: mount, Own: "/"})
	if err != nil || !tr.created || tr.Base != filepath.Join(mount, fmt.Sprintf("sockd-%d", os.Getpid())) {
		t.Fatalf("root: %+v, %v", tr, err)
	}
	if os.Geteuid() != 0 { // root writes anything
		os.Chmod(filepath.Join(mount, "cgroup.procs"), 0o444)
		if _, err := plan(Options{Mount: mount, Own: "/"}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("read-only: %v", err)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/sys/fs/cgroup`: "/sys/fs/cgroup", `/a\040b`: "/a b", `/a\\b`: `/a\\b`, `/x\011`: "/x\t", `\0`: `\0`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// A sockd-PID left by an earlier sockd with this pid (a container's PID 1
// is always 1): empty, it is removed and made again; in use (a sockd with
// the same pid in another pid namespace), the next free name is taken and
// the other is left alone.
func TestKernelStaleTree(t *testing.T) {
	mount := kernelMount(t)
	base := filepath.Join(mount, fmt.Sprintf("sockd-%d", os.Getpid()))
	for _, d := range []string{base, filepath.Join(base, "supervisor"), filepath.Join(base, "worker-1-1"), filepath.Join(base, "worker-1-1", "app")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := Setup(Options{Mount: mount, Own: "/"})
	if err != nil {
		removeEmpty(base)
		t.Fatalf("Setup over an empty stale tree: %v", err)
	}
	var dirs []string
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if tr.Base != base || len(dirs) != 1 || dirs[0] != "supervisor" {
		t.Errorf("tree %s holding %v, want %s made again with its supervisor leaf alone", tr.Base, dirs, base)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}

	// In use: a process in it.
	busy := filepath.Join(base, "other")
	if err := os.MkdirAll(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	g := &Group{Path: busy}
	dir, err := os.Open(busy)
	if err != nil {
		t.Fatal(err)
	}
	g.dir = dir
	cmd, _, _ := startHelper(t, g)
	g.CloseFD()
	t.Cleanup(func() {
		g.Kill() // the helper and its daemon
		cmd.Wait()
		workertest.Eventually(t, 10*time.Second, "the helper's cgroup empty", func() bool { return removeEmpty(base) == nil })
	})
	tr, err = Setup(Options{Mount: mount, Own: "/"})
	if err != nil {
		t.Fatalf("Setup beside a tree in use: %v", err)
	}
	defer tr.Close()
	if tr.Base != base+".2" {
		t.Errorf("tree %s, want %s.2", tr.Base, base)
	}
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("the tree in use was touched: %v", err)
	}
}
