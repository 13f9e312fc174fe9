package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workerScript starts a daemon that leaves its process group and its
// parent (setsid -f), noting its pid, then execs the demo worker.
const workerScript = `#!/bin/sh
setsid -f sh -c 'echo $$ >> "$RUNTIME_DIRECTORY/daemons"; exec sleep 1000' </dev/null >/dev/null 2>&1
exec /usr/local/bin/sockd demo-worker
`

// Under the shipped unit (Delegate=yes) every worker, with the daemon it
// started, runs in a cgroup of its own below the service's; a crashed
// worker's cgroup is killed whole; after systemctl stop nothing is left.
func TestSockdCgroupsDelegated(t *testing.T) {
	files := e2eDropIn("Environment=SOCKD_COMMAND=/etc/sockd/worker.sh\n")
	files["/etc/sockd/worker.sh"] = workerScript
	sb := installed(t, files)
	sb.MustRun(t, "chmod", "755", "/etc/sockd/worker.sh")
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)
	service := sb.prop(t, "sockd.service", "ControlGroup")
	cgroupOf := func(pid int) string {
		out, err := sb.Run(t, "cat", fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			return ""
		}
		for _, line := range strings.Split(out, "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				return p
			}
		}
		return ""
	}
	daemons := func() []int {
		out, _ := sb.Run(t, "cat", "/run/sockd/daemons")
		var pids []int
		for _, f := range strings.Fields(out) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return pids
	}
	WaitFor(t, 10*time.Second, func() (bool, string) { return len(daemons()) == 3, fmt.Sprintf("daemons %v", daemons()) })
	if got := cgroupOf(st.PID); got != service+"/supervisor" {
		t.Fatalf("sockd runs in %q, want %s/supervisor", got, service)
	}
	seen := map[string]int{}
	for _, w := range st.Workers {
		cg := cgroupOf(w.PID)
		if !strings.HasPrefix(cg, service+"/worker-") {
			t.Fatalf("worker %d runs in %q, not a worker cgroup of %s", w.PID, cg, service)
		}
		seen[cg]++
	}
	if len(seen) != 3 {
		t.Fatalf("3 workers share cgroups: %v", seen)
	}
	byCgroup := map[string]int{}
	for _, d := range daemons() {
		byCgroup[cgroupOf(d)] = d
		if seen[cgroupOf(d)] != 1 {
			t.Fatalf("daemon %d runs in %q, not in its worker's cgroup (%v)", d, cgroupOf(d), seen)
		}
	}
	// A crashed worker's cgroup goes whole: the daemon it started too.
	victim := st.Workers[0]
	victimCgroup := cgroupOf(victim.PID)
	victimDaemon := byCgroup[victimCgroup]
	sb.MustRun(t, "kill", "-KILL", strconv.Itoa(victim.PID))
	WaitFor(t, 10*time.Second, func() (bool, string) {
		_, err := sb.Run(t, "test", "-e", fmt.Sprintf("/proc/%d", victimDaemon))
		_, cgErr := sb.Run(t, "test", "-d", "/sys/fs/cgroup/unified"+victimCgroup)
		return err != nil && cgErr != nil, "the crashed worker's daemon and cgroup still there"
	})
	st = sb.waitServing(t, "", 1, 3)
	if st.Restarts != 1 {
		t.Fatalf("after a crash: %+v", st)
	}
	sb.MustRun(t, "systemctl", "stop", "sockd.service")
	if r := sb.prop(t, "sockd.service", "Result"); r != "success" {
		t.Fatalf("stop: Result=%s", r)
	}
	for _, d := range daemons() {
		if _, err := sb.Run(t, "test", "-e", fmt.Sprintf("/proc/%d", d)); err == nil {
			t.Fatalf("daemon %d of a worker outlived systemctl stop", d)
		}
	}
	if out, err := sb.Run(t, "ls", "/sys/fs/cgroup/unified"+service); err == nil && strings.Contains(out, "worker-") {
		t.Fatalf("worker cgroups left after stop: %s", out)
	}
}

// Per-worker limits need cgroup v2 controllers. Where there are none (a
// host that binds them to cgroup v1, as this one does), sockd refuses
// them with one clear line and exit status 2, rather than ignoring them.
func TestSockdCgroupLimitsWithoutControllers(t *testing.T) {
	files := e2eDropIn("Environment=SOCKD_WORKER_MEMORY_MAX=64M\n")
	sb := installed(t, files)
	controllers, _ := sb.Run(t, "cat", "/sys/fs/cgroup/unified/system.slice/cgroup.controllers")
	if strings.Contains(controllers, "memory") {
		t.Skipf("this host has the v2 memory controller (%q): the refusal is not what happens here", strings.TrimSpace(controllers))
	}
	t.Logf("NO CGROUP V2 MEMORY CONTROLLER HERE (controllers: %q): a memory limit that kills a bloated worker cannot be tested; its refusal is", strings.TrimSpace(controllers))
	sb.Run(t, "systemctl", "start", "sockd.service")
	WaitFor(t, 10*time.Second, func() (bool, string) {
		p := sb.props(t, "sockd.service", "ExecMainStatus", "ActiveState")
		return p["ExecMainStatus"] == "2", fmt.Sprint(p)
	})
	found := false
	for _, e := range sb.journal(t, "-u", "sockd.service") {
		if strings.Contains(e.Field("MESSAGE"), "per-worker limits need the memory controller") {
			found = true
		}
	}
	if !found {
		t.Fatal("the journal does not say why the memory limit was refused")
	}
}
