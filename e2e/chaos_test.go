package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/pool"
)

// TestFaultInjectionUnderSystemd is cmd/sockd's fault injection under
// systemd, where sockd itself can be killed: a seeded random schedule of
// worker SIGKILLs, SIGHUP storms (systemctl kill -s HUP), SIGKILLs of
// sockd (systemd starts it again, the socket unit keeps the sockets and
// their queued connections) and of its guard, under load. After every
// step, by what systemd shows: the unit active, its cgroup holding sockd,
// its guard and its workers and nothing else, no zombie left to sockd,
// sockd's descriptors as many as when it first settled; every failed
// request was in flight on a worker when it (or sockd, taking its workers
// along) was SIGKILLed. SOCKDTEST_CHAOS_SEED replays a run,
// SOCKDTEST_CHAOS_STEPS makes it longer (default 8).
func TestFaultInjectionUnderSystemd(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOCKDTEST_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	steps := 8
	if s := os.Getenv("SOCKDTEST_CHAOS_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	t.Logf("chaos seed %d, %d steps (replay: SOCKDTEST_CHAOS_SEED=%d SOCKDTEST_CHAOS_STEPS=%d)", seed, steps, seed, steps)
	rng := rand.New(rand.NewPCG(seed, 2))

	sb := installed(t, e2eDropIn(""))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	sb.waitServing(t, "", 1, 3)
	c := &sdChaos{t: t, sb: sb, rng: rng, fds: map[int]int{}}
	c.settle("start", nil)
	const clients = 5
	l := sb.startLoad(t, "-addr", addr, "-keepalive", "2", "-fresh", "2", "-sporadic", "1", "-idle-max", "50ms")

	faults := []struct {
		name string
		do   func() func(pool.Status) bool
	}{
		{"kill a worker", c.killWorker},
		{"SIGHUP storm", c.hupStorm},
		{"kill sockd", c.killSockd},
		{"kill the guard", c.killGuard},
	}
	counts := map[string]int{}
	for i := 0; i < steps && !t.Failed(); i++ {
		f := faults[rng.IntN(len(faults))]
		counts[f.name]++
		took := f.do()
		c.settle(fmt.Sprintf("step %d (%s)", i+1, f.name), took)
	}
	r := l.stop(t)
	t.Logf("load: %s", summary(r))
	perKill := map[int]int{}
	const slack = 100 * time.Millisecond
	for _, f := range r.Failures {
		start, end := r.At(f.Start), r.At(f.End())
		i := slices.IndexFunc(c.kills, func(k [2]time.Time) bool {
			return !start.After(k[1].Add(slack)) && !end.Before(k[0].Add(-slack))
		})
		switch {
		case f.Kind != load.Reset && f.Kind != load.Closed && f.Kind != load.Truncated:
			t.Errorf("a request failed %s, which no SIGKILL explains: %+v", f.Kind, f)
		case i < 0:
			t.Errorf("a request failed while nothing was SIGKILLed: %+v (at %s)", f, start.Format("15:04:05.000"))
		default:
			perKill[i]++
		}
	}
	for i, n := range perKill {
		if n > clients {
			t.Errorf("%d requests failed at kill %d, more than the %d clients had in flight", n, i, clients)
		}
	}
	if t.Failed() {
		t.Logf("replay: SOCKDTEST_CHAOS_SEED=%d SOCKDTEST_CHAOS_STEPS=%d; failures:\n%s", seed, steps, describeFailures(r, 30))
	}
	var kinds []string
	for k, n := range r.Summary.ByKind {
		if n > 0 && load.Kind(k) != load.OK {
			kinds = append(kinds, fmt.Sprintf("%s %d", load.Kind(k), n))
		}
	}
	t.Logf("chaos under systemd: %d steps %v; %d SIGKILLs of workers or sockd; %d requests, %d failed (%s), all in flight on what was SIGKILLed",
		steps, counts, len(c.kills), r.Summary.Requests, r.Summary.Failed, strings.Join(kinds, ", "))
}

type sdChaos struct {
	t     *testing.T
	sb    *sockdSandbox
	rng   *rand.Rand
	kills [][2]time.Time // before and after a SIGKILL of a worker or sockd
	fds   map[int]int    // sockd pid -> descriptors when it first settled
}

// kill SIGKILLs pid, noting when.
func (c *sdChaos) kill(pid int) {
	before := time.Now()
	c.sb.MustRun(c.t, "kill", "-KILL", strconv.Itoa(pid))
	c.kills = append(c.kills, [2]time.Time{before, time.Now()})
}

func (c *sdChaos) killWorker() func(pool.Status) bool {
	s := c.sb.mustStatus(c.t, "")
	pid := s.Workers[c.rng.IntN(len(s.Workers))].PID
	c.kill(pid)
	return func(s pool.Status) bool {
		return !slices.ContainsFunc(s.Workers, func(w pool.WorkerStatus) bool { return w.PID == pid })
	}
}

func (c *sdChaos) hupStorm() func(pool.Status) bool {
	s := c.sb.mustStatus(c.t, "")
	for n := 2 + c.rng.IntN(3); n > 0; n-- {
		c.sb.MustRun(c.t, "systemctl", "kill", "-s", "HUP", "--kill-whom=main", "sockd.service")
	}
	return func(now pool.Status) bool { return now.Generation > s.Generation }
}

func (c *sdChaos) killSockd() func(pool.Status) bool {
	s := c.sb.mustStatus(c.t, "")
	restarts, _ := strconv.Atoi(c.sb.prop(c.t, "sockd.service", "NRestarts"))
	c.kill(s.PID)
	return func(now pool.Status) bool {
		n, _ := strconv.Atoi(c.sb.prop(c.t, "sockd.service", "NRestarts"))
		return now.PID != s.PID && n == restarts+1
	}
}

func (c *sdChaos) killGuard() func(pool.Status) bool {
	s := c.sb.mustStatus(c.t, "")
	c.sb.MustRun(c.t, "kill", "-KILL", strconv.Itoa(s.GuardPID))
	return func(now pool.Status) bool { return now.GuardPID != 0 && now.GuardPID != s.GuardPID }
}

// settle waits until the fault took effect and the service is whole,
// then checks the invariants.
func (c *sdChaos) settle(step string, took func(pool.Status) bool) {
	t, sb := c.t, c.sb
	t.Helper()
	var s pool.Status
	WaitFor(t, 60*time.Second, func() (bool, string) {
		var err error
		if s, err = sb.status(t, ""); err != nil {
			return false, err.Error()
		}
		gens := map[int]bool{}
		for _, w := range s.Workers {
			gens[w.Generation] = true
		}
		p := sb.props(t, "sockd.service", "MainPID", "ActiveState", "SubState")
		ok := (took == nil || took(s)) && s.State == pool.StateRunning && s.Reload == nil && s.Ready == 3 &&
			len(s.Workers) == 3 && len(gens) == 1 && p["ActiveState"] == "active" && p["SubState"] == "running" &&
			p["MainPID"] == strconv.Itoa(s.PID)
		return ok, fmt.Sprintf("%s: status %s, %d/%d ready, %d generations, unit %v", step, s.State, s.Ready, len(s.Workers), len(gens), p)
	})
	// The unit's cgroup (with every worker's cgroup below it) holds
	// sockd, its guard and its workers, nothing else; no zombie is left
	// to sockd.
	want := append([]int{s.PID, s.GuardPID}, workerPIDs(s)...)
	slices.Sort(want)
	WaitFor(t, 20*time.Second, func() (bool, string) {
		got := c.unitPIDs()
		zombies := c.zombiesOf(s.PID)
		return slices.Equal(got, want) && len(zombies) == 0,
			fmt.Sprintf("%s: the unit's cgroups hold %v, want sockd, its guard and its workers %v; zombie children of sockd %v", step, got, want, zombies)
	})
	n := c.fdCount(s.PID)
	base, ok := c.fds[s.PID]
	if !ok {
		c.fds[s.PID] = n
		return
	}
	WaitFor(t, 10*time.Second, func() (bool, string) {
		n = c.fdCount(s.PID)
		return n == base, fmt.Sprintf("%s: sockd %d holds %d descriptors, %d when it first settled", step, s.PID, n, base)
	})
}

// unitPIDs lists the processes of sockd.service's cgroup and every
// cgroup below it.
func (c *sdChaos) unitPIDs() []int {
	cg := c.sb.prop(c.t, "sockd.service", "ControlGroup")
	out := c.sb.MustRun(c.t, "sh", "-c", `for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
		if [ -r "$d$1/cgroup.procs" ]; then find "$d$1" -name cgroup.procs -exec cat {} +; exit 0; fi; done`, "sh", cg)
	var pids []int
	for _, f := range strings.Fields(out) {
		n, _ := strconv.Atoi(f)
		if !slices.Contains(pids, n) {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	return pids
}

// zombiesOf lists the zombie children of pid inside the sandbox.
func (c *sdChaos) zombiesOf(pid int) []int {
	out := c.sb.MustRun(c.t, "sh", "-c", `for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null && echo "${l%% *} ${l##*) }"; done; true`)
	var z []int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line) // pid state ppid pgrp …
		if len(f) < 3 || f[1] != "Z" || f[2] != strconv.Itoa(pid) {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		z = append(z, n)
	}
	return z
}

// fdCount is the smallest of a few readings of pid's descriptors (a
// status connection may be open for a moment).
func (c *sdChaos) fdCount(pid int) int {
	out := c.sb.MustRun(c.t, "sh", "-c", `for i in 1 2 3 4 5; do ls /proc/$1/fd | wc -l; done`, "sh", strconv.Itoa(pid))
	n := -1
	for _, f := range strings.Fields(out) {
		v, _ := strconv.Atoi(f)
		if n < 0 || v < n {
			n = v
		}
	}
	return n
}
