package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/pool"
)

// needTools skips the test (fails it with SOCKD_E2E_REQUIRE=1) when a
// tool scripts/package or its checks need is missing; scripts/setup
// installs them all.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("package test: SKIPPING: %s is not installed (scripts/setup installs it)", tool)
			if os.Getenv(RequireEnv) == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	if runtime.GOOS != "linux" {
		t.Skip("package test: SKIPPING: needs Linux")
	}
}

// scriptsPackage runs scripts/package with args and returns its output.
func scriptsPackage(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(t), "scripts", "package"), args...)
	cmd.Dir = RepoRoot(t)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// buildPackages runs scripts/package --version V --out DIR for each
// version, with args, and returns what it printed.
func buildPackages(t *testing.T, dir string, versions []string, args ...string) string {
	t.Helper()
	var log strings.Builder
	for _, v := range versions {
		begin := time.Now()
		out, err := scriptsPackage(t, append([]string{"--version", v, "--out", dir}, args...)...)
		if err != nil {
			t.Fatalf("scripts/package --version %s %q: %v\n%s", v, args, err, out)
		}
		t.Logf("scripts/package --version %s %q in %v:\n%s", v, args, time.Since(begin).Round(time.Millisecond), strings.TrimSpace(out))
		log.WriteString(out)
	}
	return log.String()
}

// debName is the file name scripts/package gives a package.
func debName(version, arch string) string { return fmt.Sprintf("sockd_%s-1_%s.deb", version, arch) }

// pkgStatus is `sockd status --json` of the packaged sockd inside the
// sandbox (control "": sockd.service's).
func (sb *sockdSandbox) pkgStatus(t *testing.T, control string) (pool.Status, error) {
	t.Helper()
	args := []string{"/usr/bin/sockd", "status", "--json", "--timeout", "5s"}
	if control != "" {
		args = append(args, "--control", control)
	}
	var s pool.Status
	out, err := sb.Run(t, args...)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("sockd status --json: %v in %q", err, out)
	}
	return s, nil
}

// pkgServing waits until the sockd at control serves generation gen with
// all its workers ready.
func (sb *sockdSandbox) pkgServing(t *testing.T, control string, gen, workers int) pool.Status {
	t.Helper()
	var s pool.Status
	WaitFor(t, 20*time.Second, func() (bool, string) {
		var err error
		if s, err = sb.pkgStatus(t, control); err != nil {
			return false, err.Error()
		}
		return s.State == pool.StateRunning && s.Generation == gen && s.Ready == workers && len(s.Workers) == workers,
			fmt.Sprintf("state %s, generation %d, %d/%d ready", s.State, s.Generation, s.Ready, len(s.Workers))
	})
	return s
}

// mainProc is what the sandbox says of unit's main process: its pid, the
// file it runs (/proc/PID/exe), that file's `version`, and its parent.
type mainProc struct {
	PID, PPID int
	Exe       string
	Version   string
}

func (sb *sockdSandbox) mainProc(t *testing.T, unit string) mainProc {
	t.Helper()
	pid := sb.mainPID(t, unit)
	if pid == 0 {
		t.Fatalf("%s has no main process", unit)
	}
	out := sb.MustRun(t, "sh", "-c", `readlink /proc/$1/exe; /proc/$1/exe version; sed -n 's/^PPid:[[:space:]]*//p' /proc/$1/status`, "sh", strconv.Itoa(pid))
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) != 3 {
		t.Fatalf("%s, pid %d: %q", unit, pid, out)
	}
	ppid, _ := strconv.Atoi(f[2])
	return mainProc{PID: pid, PPID: ppid, Exe: f[0], Version: f[1]}
}

// cmdlines reads /proc/PID/cmdline of each pid inside the sandbox.
func (sb *sockdSandbox) cmdlines(t *testing.T, pids []int) map[int][]string {
	t.Helper()
	m := map[int][]string{}
	for _, pid := range pids {
		out, err := sb.Run(t, "cat", fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatalf("worker %d: %v", pid, err)
		}
		m[pid] = strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	}
	return m
}

// sockdProcs lists the processes inside the sandbox whose command line
// names sockd (sockd, its guard, the demo workers), zombies included.
func (sb *sockdSandbox) sockdProcs(t *testing.T) []string {
	t.Helper()
	var procs []string
	for _, line := range strings.Split(sb.MustRun(t, "ps", "-e", "-o", "pid=,stat=,args="), "\n") {
		if strings.Contains(line, "sockd") && !strings.Contains(line, "ps -e") {
			procs = append(procs, strings.TrimSpace(line))
		}
	}
	return procs
}

// fileTree lists every path under the directories packages write to (on
// the sandbox's root file system, and /etc/systemd/system, a tmpfs of its
// own there). Left out: what dpkg, the journal and man-db keep for
// themselves (their contents change with any package operation; the test
// checks dpkg's records of sockd apart), and trees that change under the
// sandbox while it runs, since the host's / is its overlay's lower layer:
// apt's lists and cache, podman's image store (scripts/package builds
// images), /root (the Go build cache).
func (sb *sockdSandbox) fileTree(t *testing.T) []string {
	t.Helper()
	out := sb.MustRun(t, "sh", "-c", `find /etc /usr /var /opt /srv /etc/systemd/system -xdev \( -path /var/lib/dpkg -o -path /var/log \
		-o -path /var/cache/man -o -path /var/lib/apt -o -path /var/cache/apt -o -path /var/lib/containers \) -prune -o -print | sort -u`)
	return strings.Split(strings.TrimSpace(out), "\n")
}

// diffTrees says which paths one listing has that the other lacks.
func diffTrees(before, after []string) (added, removed []string) {
	for _, p := range after {
		if _, found := slices.BinarySearch(before, p); !found {
			added = append(added, p)
		}
	}
	for _, p := range before {
		if _, found := slices.BinarySearch(after, p); !found {
			removed = append(removed, p)
		}
	}
	return added, removed
}

// dpkg runs dpkg with args inside and returns its output, stdout and
// stderr together (the maintainer scripts' messages).
func (sb *sockdSandbox) dpkg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return sb.Run(t, append([]string{"sh", "-c", `dpkg "$@" 2>&1`, "sh"}, args...)...)
}
