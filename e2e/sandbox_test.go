package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSandboxSmoke boots the sandbox, checks systemd, a transient service and
// journald inside, then tears it down and checks that nothing is left on the
// host and that the host's /tmp survived.
func TestSandboxSmoke(t *testing.T) {
	marker := hostTmpMarker(t)
	data := t.TempDir() // under the host's /tmp: lands inside the sandbox's private /tmp
	if err := os.WriteFile(filepath.Join(data, "hello.txt"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	sb := Start(t, data)

	state, _ := sb.Run(t, "systemctl", "is-system-running") // exits 1 when degraded
	if s := strings.TrimSpace(state); s != "running" && s != "degraded" {
		t.Fatalf("systemctl is-system-running = %q, want running or degraded", s)
	}
	failed, err := sb.Run(t, "systemctl", "list-units", "--failed", "--plain", "--no-legend")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("system state %q; failed units: %q", strings.TrimSpace(state), strings.TrimSpace(failed))

	// Isolation as seen from inside.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cat", "/proc/1/comm"}, "systemd"},
		{[]string{"findmnt", "-no", "FSTYPE", "-M", "/"}, "overlay"},
		{[]string{"findmnt", "-no", "FSTYPE", "-M", "/tmp"}, "tmpfs"},
		{[]string{"findmnt", "-no", "FSTYPE", "-M", "/run"}, "tmpfs"},
		{[]string{"hostname"}, "sockd-sandbox"},
		{[]string{"ls", "/sys/class/net"}, "lo"},
		{[]string{"systemd-detect-virt", "--container"}, "container-other"},
		{[]string{"cat", filepath.Join(data, "hello.txt")}, "hello from the host"},
	} {
		if got := strings.TrimSpace(sb.MustRun(t, c.args...)); got != c.want {
			t.Errorf("%q inside = %q, want %q", c.args, got, c.want)
		}
	}
	sb.MustRun(t, "test", "-f", filepath.Join(sb.RepoRoot, "go.mod"))
	if _, err := sb.Run(t, "touch", filepath.Join(sb.RepoRoot, ".e2e-write-probe")); err == nil {
		t.Errorf("repository %s is writable inside the sandbox, want read-only", sb.RepoRoot)
	}

	// A transient service.
	sb.MustRun(t, "systemd-run", "--unit=smoke", "-p", "Type=exec", "sleep", "1000")
	mainPID := strings.TrimSpace(sb.MustRun(t, "systemctl", "show", "-p", "MainPID", "--value", "smoke"))
	if n, err := strconv.Atoi(mainPID); err != nil || n <= 1 {
		t.Fatalf("smoke MainPID = %q", mainPID)
	}
	sb.MustRun(t, "kill", "-0", mainPID)
	if comm := strings.TrimSpace(sb.MustRun(t, "cat", "/proc/"+mainPID+"/comm")); comm != "sleep" {
		t.Errorf("MainPID %s inside is %q, want sleep", mainPID, comm)
	}
	hostSleep := hostPIDOf(t, sb.PID, mainPID)
	if cg := sb.MustRun(t, "cat", "/proc/"+mainPID+"/cgroup"); !strings.Contains(cg, ":name=systemd:/system.slice/smoke.service\n") {
		t.Errorf("smoke cgroups:\n%s\nwant name=systemd:/system.slice/smoke.service", cg)
	}

	// journald.
	tag := fmt.Sprintf("sockd-smoke-%d", time.Now().UnixNano())
	msg := "hello journal from " + tag
	sb.MustRun(t, "logger", "-t", tag, msg)
	sb.MustRun(t, "systemd-cat", "-t", tag, "echo", msg+" via systemd-cat")
	WaitFor(t, 10*time.Second, func() (bool, string) {
		entries, err := sb.Journal(t, "-t", tag)
		if err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for _, e := range entries {
			seen[e.Field("MESSAGE")] = true
		}
		return seen[msg] && seen[msg+" via systemd-cat"], fmt.Sprintf("%d entries for %s: %v", len(entries), tag, seen)
	})

	// Teardown, then check the host.
	pid1, cgroups := sb.PID, sb.Cgroups
	if len(cgroups) == 0 {
		t.Errorf("sandbox recorded no cgroups")
	}
	begin := time.Now()
	if err := sb.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("teardown took %v", time.Since(begin).Round(time.Millisecond))
	for _, pid := range []int{pid1, hostSleep} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("host pid %d still exists after teardown (err %v)", pid, err)
		}
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s still exists after teardown (err %v)", cg, err)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil {
		t.Error(err)
	} else if strings.Contains(string(mi), sb.StateDir) {
		t.Errorf("host still has mounts under %s", sb.StateDir)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("host /tmp marker %s gone after the sandbox ran: %v", marker, err)
	}
	if err := sb.Stop(); err != nil { // idempotent
		t.Errorf("second Stop: %v", err)
	}
}

// TestSandboxServiceManager checks the systemd features sockd's e2e tests
// rely on: sd_notify from a service (Type=notify), socket units passing
// listeners (LISTEN_FDS/LISTEN_FDNAMES) and the file descriptor store
// (FileDescriptorStoreMax=, kept across restart, dropped on stop).
func TestSandboxServiceManager(t *testing.T) {
	SkipUnlessCapable(t)
	bin := t.TempDir()
	helper := filepath.Join(bin, "notifyhelper")
	build := exec.Command("go", "build", "-o", helper, "./e2e/internal/notifyhelper")
	build.Dir = RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build notifyhelper: %v\n%s", err, out)
	}

	sb := Start(t, bin)

	// Type=notify with systemd-notify(1) from a shell: needs NotifyAccess=all,
	// since the notification comes from a child of the main process.
	sb.MustRun(t, "systemd-run", "--unit=notify-sh", "-p", "Type=notify", "-p", "NotifyAccess=all",
		"sh", "-c", "systemd-notify --ready --status=shell-ready; exec sleep 1000")
	if got := show(t, sb, "notify-sh", "ActiveState", "StatusText"); got != "active|shell-ready" {
		t.Errorf("notify-sh ActiveState|StatusText = %q", got)
	}

	// Socket activation + fd store with the helper.
	sb.WriteFile(t, "/run/systemd/system/echo.socket", []byte(`[Socket]
ListenStream=127.0.0.1:7070
FileDescriptorName=web
`))
	sb.WriteFile(t, "/run/systemd/system/echo.service", []byte(`[Service]
Type=notify
FileDescriptorStoreMax=4
ExecStart=`+helper+`
`))
	sb.MustRun(t, "systemctl", "daemon-reload")
	sb.MustRun(t, "systemctl", "start", "echo.socket")
	if got := show(t, sb, "echo.service", "ActiveState"); got != "inactive" {
		t.Errorf("echo.service before first connection: %q, want inactive", got)
	}
	first := dialInside(t, sb, "127.0.0.1:7070") // activates echo.service
	if !strings.HasSuffix(first, " fds=web") {
		t.Errorf("first connection got %q, want fds=web", first)
	}
	WaitFor(t, 10*time.Second, func() (bool, string) {
		got := show(t, sb, "echo.service", "ActiveState", "NFileDescriptorStore")
		return got == "active|1", got
	})
	cg := sb.MustRun(t, "sh", "-c", "cat /proc/$(systemctl show -p MainPID --value echo.service)/cgroup")
	t.Logf("cgroups of a service's main process:\n%s", cg)

	sb.MustRun(t, "systemctl", "restart", "echo.service")
	if got := dialInside(t, sb, "127.0.0.1:7070"); !strings.HasSuffix(got, " fds=web:stored") {
		t.Errorf("after restart got %q, want fds=web:stored (fd store kept across restart)", got)
	}

	sb.MustRun(t, "systemctl", "stop", "echo.service")
	sb.MustRun(t, "systemctl", "start", "echo.service")
	if got := dialInside(t, sb, "127.0.0.1:7070"); !strings.HasSuffix(got, " fds=web") {
		t.Errorf("after stop+start got %q, want fds=web (fd store flushed on stop)", got)
	}

	// The sandbox's loopback is not the host's.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:7070", 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("127.0.0.1:7070 inside the sandbox is reachable from the host")
	}
}

// show returns systemctl show -p ... --value for unit, joined with "|".
func show(t *testing.T, sb *Sandbox, unit string, props ...string) string {
	t.Helper()
	args := []string{"systemctl", "show", unit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	// systemctl show prints properties in its own order; map them back.
	out := sb.MustRun(t, args...)
	vals := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vals[k] = v
		}
	}
	got := make([]string, len(props))
	for i, p := range props {
		got[i] = vals[p]
	}
	return strings.Join(got, "|")
}

// dialInside connects to addr from inside the sandbox and returns the first line.
func dialInside(t *testing.T, sb *Sandbox, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out := sb.MustRun(t, "bash", "-c", `exec 3<>/dev/tcp/`+host+`/`+port+` && head -n 1 <&3`)
	return strings.TrimSpace(out)
}

// hostTmpMarker creates a file in the host's /tmp that must survive the sandbox.
func hostTmpMarker(t *testing.T) string {
	t.Helper()
	f, err := os.CreateTemp("/tmp", "sockd-e2e-host-marker-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name()
}

// hostPIDOf maps a pid inside the sandbox to its host pid (children of the
// sandbox's PID 1 only).
func hostPIDOf(t *testing.T, pid1 int, inner string) int {
	t.Helper()
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid1, pid1))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Fields(string(kids)) {
		status, err := os.ReadFile("/proc/" + k + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "NSpid:" && f[2] == inner {
				n, _ := strconv.Atoi(k)
				return n
			}
		}
	}
	t.Fatalf("no child of host pid %d has pid %s in the sandbox", pid1, inner)
	return 0
}
