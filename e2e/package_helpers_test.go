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
	"sync"
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

// buildPackages runs scripts/package --out DIR for each set of
// arguments, all at once (each mostly links a sockd: one core each), and
// returns what they printed.
func buildPackages(t *testing.T, dir string, runs ...[]string) string {
	t.Helper()
	outs := make([]string, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	begin := time.Now()
	for i, args := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = scriptsPackage(t, append([]string{"--out", dir}, args...)...)
		}()
	}
	wg.Wait()
	for i, args := range runs {
		if errs[i] != nil {
			t.Fatalf("scripts/package %q: %v\n%s", args, errs[i], outs[i])
		}
		t.Logf("scripts/package %q:\n%s", args, strings.TrimSpace(outs[i]))
	}
	t.Logf("scripts/package: %d runs in %v", len(runs), time.Since(begin).Round(time.Millisecond))
	return strings.Join(outs, "")
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

// pkgServing waits until the sockd at control serves generation gen (0:
// any) with all its workers ready.
func (sb *sockdSandbox) pkgServing(t *testing.T, control string, gen, workers int) pool.Status {
	t.Helper()
	var s pool.Status
	WaitFor(t, 20*time.Second, func() (bool, string) {
		var err error
		if s, err = sb.pkgStatus(t, control); err != nil {
			return false, err.Error()
		}
		return s.State == pool.StateRunning && (gen == 0 || s.Generation == gen) && s.Ready == workers && len(s.Workers) == workers,
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
		-o -path /var/cache/man -o -path /var/lib/apt -o -path /var/cache/apt -o -path /var/lib/containers \) -prune -o -print`)
	paths := strings.Split(strings.TrimSpace(out), "\n")
	slices.Sort(paths)
	return slices.Compact(paths) // /etc/systemd/system is listed twice
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

// pkgUnits are the sockds TestDebianPackage runs: unit, address, control
// socket, workers.
var pkgUnits = []struct {
	unit, addr, control string
	workers             int
}{
	{"sockd.service", pkgAddr, "", 3},
	{"sockd@shop.service", shopAddr, shopControl, 2},
}

// handOverUnderLoad installs deb (sockd version) with dpkg -i under load on
// every sockd and checks that each handed over to the new binary: 0 failed
// requests, no restart, the unit's main process the new sockd (a new
// process, systemd's child again, the old one gone with its workers; or,
// should the hand-off ever re-execute in place, the same pid running the
// new file), serving a new generation of workers with their command line
// intact. It returns dpkg's output.
func (sb *sockdSandbox) handOverUnderLoad(t *testing.T, deb, version string) (dpkgOutput string) {
	t.Helper()
	old := map[string]mainProc{}
	gen := map[string]int{}
	var oldPIDs []int
	var loads []*loadRun
	for _, u := range pkgUnits {
		old[u.unit] = sb.mainProc(t, u.unit)
		st := sb.pkgServing(t, u.control, 0, u.workers)
		gen[u.unit] = st.Generation
		oldPIDs = append(append(oldPIDs, st.PID), workerPIDs(st)...)
		loads = append(loads, sb.startLoad(t, "-addr", u.addr, "-keepalive", "2", "-fresh", "2", "-sporadic", "2", "-pause", "1ms", "-idle-max", "200ms"))
	}
	oldProcs := sb.procs(t, oldPIDs...)
	begin := time.Now()
	out, err := sb.dpkg(t, "-i", deb)
	t.Logf("dpkg -i %s (%v):\n%s", filepath.Base(deb), time.Since(begin).Round(time.Millisecond), strings.TrimSpace(out))
	if err != nil {
		for _, l := range loads {
			l.stop(t)
		}
		t.Fatalf("dpkg -i: %v", err)
	}
	for _, u := range pkgUnits {
		o := old[u.unit]
		if want := fmt.Sprintf("sockd: %s (pid %d) handed over to sockd %s", u.unit, o.PID, version); !strings.Contains(out, want) {
			t.Errorf("dpkg's output does not say %q", want)
		}
		var m mainProc
		WaitFor(t, 15*time.Second, func() (bool, string) { // a new sockd is systemd's child again at once (README, "Binary upgrade")
			m = sb.mainProc(t, u.unit)
			return m.Exe == "/usr/bin/sockd" && m.PPID == 1, fmt.Sprintf("%s: %+v", u.unit, m)
		})
		if m.Version != "sockd "+version {
			t.Errorf("%s after dpkg -i runs %+v, want /usr/bin/sockd, version %s", u.unit, m, version)
		}
		how := "a new process"
		if m.PID == o.PID {
			how = "the same process, re-executed"
		}
		t.Logf("%s: MainPID %d -> %d (%s), %s", u.unit, o.PID, m.PID, how, m.Version)
		if p := sb.props(t, u.unit, "NRestarts", "ActiveState", "SubState"); p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" {
			t.Errorf("%s after dpkg -i: %v, want active/running and no restart", u.unit, p)
		}
		st := sb.pkgServing(t, u.control, gen[u.unit]+1, u.workers)
		if st.PID != m.PID {
			t.Errorf("%s: the sockd answering on its control socket is %d, its MainPID %d", u.unit, st.PID, m.PID)
		}
		for pid, args := range sb.cmdlines(t, workerPIDs(st)) {
			if strings.Join(args, " ") != workerCommand {
				t.Errorf("%s: worker %d runs %q, want %q", u.unit, pid, args, workerCommand)
			}
		}
		if m.PID == o.PID {
			delete(oldProcs, o.PID)
		}
	}
	WaitFor(t, 15*time.Second, func() (bool, string) {
		alive := sb.running(t, oldProcs)
		return len(alive) == 0, fmt.Sprintf("old sockds or workers still running: %+v", alive)
	})
	for i, l := range loads {
		r := l.stop(t)
		t.Logf("%s, load across dpkg -i: %s", pkgUnits[i].unit, summary(r))
		if r.Summary.Failed > 0 {
			t.Errorf("%s: %d of %d requests failed:\n%s", pkgUnits[i].unit, r.Summary.Failed, r.Summary.Requests, describeFailures(r, 20))
		}
	}
	return out
}

// hasPostinstWarning: the postinst's warnings (logger -t sockd.postinst)
// include one containing s.
func hasPostinstWarning(entries []JournalEntry, s string) bool {
	return slices.ContainsFunc(entries, func(e JournalEntry) bool { return strings.Contains(e.Field("MESSAGE"), s) })
}
