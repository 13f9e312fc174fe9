package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// Fault injection under load: a seeded random schedule of faults while
// clients send requests the whole time; after every step the invariants
// must hold within a bound. The seed is printed: SOCKDTEST_CHAOS_SEED=N
// replays a run, SOCKDTEST_CHAOS_STEPS=N makes it longer (default 12),
// e.g.
//
//	SOCKDTEST_CHAOS_STEPS=300 go test -race -run TestFaultInjection -v ./cmd/sockd
//
// The faults: SIGKILL of a worker, SIGSTOP and later SIGCONT of one, a
// storm of SIGHUPs, an upgrade (a new sockd takes over), SIGKILL of the
// guard. (SIGKILL of sockd itself, which systemd answers by starting it
// again from its fd store, is e2e's TestFaultInjectionUnderSystemd.)
//
// The invariants: the pool is back to full size, ready, on one generation
// and never had more than a reload's two generations at once; no process
// a worker started is left without its worker, no child of sockd is a
// zombie; sockd's descriptors are as many as before; the guard runs; and
// no request failed but those in flight on a worker at the moment it was
// SIGKILLed (reset or closed, never refused or timed out).
func TestFaultInjectionUnderLoad(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOCKDTEST_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	steps := 12
	if s := os.Getenv("SOCKDTEST_CHAOS_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("chaos seed %d, %d steps (replay: SOCKDTEST_CHAOS_SEED=%d SOCKDTEST_CHAOS_STEPS=%d)", seed, steps, seed, steps)
	defer func() {
		if t.Failed() {
			t.Logf("replay: SOCKDTEST_CHAOS_SEED=%d SOCKDTEST_CHAOS_STEPS=%d go test -run TestFaultInjectionUnderLoad ./cmd/sockd", seed, steps)
		}
	}()

	const workers = 3
	args := []string{"--workers", strconv.Itoa(workers), "--listen", "http=tcp://127.0.0.1:0", "--restart-limit", "1000/60s", "--ready-timeout", "20s"}
	reuseport := rng.IntN(2) == 1
	if reuseport {
		args = append(args, "--reuseport")
	}
	t.Logf("reuseport: %v", reuseport)
	d := startInstalled(t, installCopy(t), args...)
	c := &chaos{t: t, d: d, rng: rng, workers: workers, baseFDs: map[int]int{}, baseWhat: map[int][]string{}, sockds: map[int]bool{}}
	c.settle("start", nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.run = load.Start(ctx, load.Config{Addr: d.mustStatus().Listeners[0].Address, Method: "POST", Body: []byte("ping"),
		KeepAlive: 2, Fresh: 2, Sporadic: 2, IdleMax: 50 * time.Millisecond, Timeout: 10 * time.Second, Careful: true})
	select {
	case <-c.run.Answered():
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to the load")
	}
	// Each fault returns what the status shows once it took effect.
	faults := []struct {
		name string
		do   func() func(pool.Status) bool
	}{
		{"kill a worker", c.killWorker},
		{"stop and continue a worker", c.stopWorker},
		{"SIGHUP storm", c.hupStorm},
		{"upgrade", c.upgrade},
		{"kill the guard", c.killGuard},
	}
	counts := map[string]int{}
	for i := 0; i < steps && !t.Failed(); i++ {
		f := faults[rng.IntN(len(faults))]
		counts[f.name]++
		took := f.do()
		c.settle(fmt.Sprintf("step %d (%s)", i+1, f.name), took)
	}
	cancel()
	res := c.run.Wait()
	c.judge(res)
	var failed []string
	byKind := map[load.Kind]int{}
	for _, r := range res.Failures() {
		byKind[r.Kind]++
	}
	for k, n := range byKind {
		failed = append(failed, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(failed)
	t.Logf("chaos: %d steps %v; %d workers SIGKILLed; %d requests, %d failed (%s), all in flight on a SIGKILLed worker",
		steps, counts, len(c.kills), len(res.Records), len(res.Failures()), strings.Join(failed, ", "))
}

type chaos struct {
	t        *testing.T
	d        *daemonProc
	rng      *rand.Rand
	workers  int
	run      *load.Run
	kills    []kill           // workers SIGKILLed
	baseFDs  map[int]int      // sockd pid -> its descriptors when settled
	baseWhat map[int][]string // and what they were
	sockds   map[int]bool     // every sockd pid so far
}

func (c *chaos) status() pool.Status {
	c.t.Helper()
	var s pool.Status
	waitFor(c.t, 10*time.Second, "sockd's status", func() bool {
		var err error
		s, err = c.d.status()
		return err == nil
	})
	return s
}

func (c *chaos) worker() int {
	ws := c.status().Workers
	return ws[c.rng.IntN(len(ws))].PID
}

// kill is when a worker was SIGKILLed and when sockd was first seen to
// have reaped it, on the load's clock: its connections close somewhere
// in between (a killed process closes its descriptors only once it runs
// its exit, after its memory is torn down: on a loaded machine, a while).
type kill struct{ at, reaped time.Duration }

func (c *chaos) killWorker() func(pool.Status) bool {
	pid := c.worker()
	i := len(c.kills)
	c.kills = append(c.kills, kill{at: c.run.Since(), reaped: -1})
	syscall.Kill(pid, syscall.SIGKILL)
	return func(s pool.Status) bool {
		gone := !slices.ContainsFunc(s.Workers, func(w pool.WorkerStatus) bool { return w.PID == pid })
		if gone && c.kills[i].reaped < 0 {
			c.kills[i].reaped = c.run.Since()
		}
		return gone
	}
}

func (c *chaos) stopWorker() func(pool.Status) bool {
	pid := c.worker()
	syscall.Kill(pid, syscall.SIGSTOP)
	// How long the fault lasts, not a synchronisation.
	time.Sleep(time.Duration(20+c.rng.IntN(200)) * time.Millisecond)
	syscall.Kill(pid, syscall.SIGCONT)
	return nil
}

func (c *chaos) hupStorm() func(pool.Status) bool {
	s := c.status()
	for n := 2 + c.rng.IntN(4); n > 0; n-- {
		syscall.Kill(s.PID, syscall.SIGHUP)
	}
	return func(now pool.Status) bool { return now.Generation > s.Generation }
}

func (c *chaos) upgrade() func(pool.Status) bool {
	old := c.status().PID
	var out strings.Builder
	if code := sockd([]string{"upgrade", "--wait", "--control", c.d.control}, io.Discard, &out); code != 0 {
		c.t.Fatalf("upgrade --wait: exit %d: %s", code, out.String())
	}
	// The sockd this test started stays, as the process a shell started
	// would (internal/keeper): it keeps the sockd in charge; the later
	// ones exit after their hand-over.
	first := c.d.cmd.Process.Pid
	return func(s pool.Status) bool {
		if s.PID == old {
			return false
		}
		st, _, err := procfs.Stat(first)
		return err == nil && st != 'Z' && (old == first || !procfs.Alive(old))
	}
}

func (c *chaos) killGuard() func(pool.Status) bool {
	s := c.status()
	if s.GuardPID == 0 {
		c.t.Fatal("no guard")
	}
	syscall.Kill(s.GuardPID, syscall.SIGKILL)
	return func(now pool.Status) bool { return now.GuardPID != 0 && now.GuardPID != s.GuardPID }
}

// settle waits until the fault took effect (took, if not nil) and the
// pool is whole again, and checks the invariants.
func (c *chaos) settle(step string, took func(pool.Status) bool) {
	t := c.t
	t.Helper()
	var s pool.Status
	maxGens := 0
	waitFor(t, 60*time.Second, step+": the pool whole, ready and on one generation", func() bool {
		var err error
		if s, err = c.d.status(); err != nil {
			return false
		}
		gens := map[int]bool{}
		ready := 0
		for _, w := range s.Workers {
			gens[w.Generation] = true
			if w.State == "ready" {
				ready++
			}
		}
		maxGens = max(maxGens, len(gens))
		return (took == nil || took(s)) && s.State == pool.StateRunning && s.Reload == nil && s.Ready == c.workers && ready == c.workers &&
			len(s.Workers) == c.workers && len(gens) == 1
	})
	if maxGens > 2 {
		t.Errorf("%s: %d generations alive at once", step, maxGens)
	}
	c.sockds[s.PID] = true
	if st, _, err := procfs.Stat(s.GuardPID); s.GuardPID == 0 || err != nil || st == 'Z' {
		t.Errorf("%s: guard %d not running (%c %v)", step, s.GuardPID, st, err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		now, err := c.d.status()
		if err != nil {
			continue
		}
		live := map[int]bool{}
		for _, w := range now.Workers {
			live[w.PID] = true
		}
		left, zombies := c.strays(now.PID, live)
		if len(left)+len(zombies) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: left by workers that are gone: %s; zombie children of sockd %d: %s; workers %v",
				step, describe(left), now.PID, describe(zombies), now.Workers)
		}
	}
	// The descriptors of a settled sockd, not counting its listening
	// sockets (with --reuseport, steering adds a socket to each group
	// when a new worker finds none free: never closed, bounded per group)
	// nor its control socket's connections (the server closes one after
	// it wrote its answer, so the status call just made may still be
	// open).
	fds := func() (int, []string) {
		sockets := 0
		if st, err := c.d.status(); err == nil {
			for _, l := range st.Listeners {
				sockets += len(l.SockdFDs)
			}
		}
		control := unixSocketsAt(t, c.d.control)
		var least []string
		for range 5 {
			l, err := procfs.FDs(s.PID)
			if err != nil {
				continue
			}
			var what []string
			for _, fd := range l {
				target, _ := procfs.FDTarget(s.PID, fd)
				if !control[target] {
					what = append(what, fmt.Sprintf("%d:%s", fd, target))
				}
			}
			if least == nil || len(what) < len(least) {
				least = what
			}
		}
		return len(least) - sockets, least
	}
	base, ok := c.baseFDs[s.PID]
	if !ok {
		c.baseFDs[s.PID], c.baseWhat[s.PID] = fds()
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, what := fds(); n != base; n, what = fds() {
		if time.Now().After(deadline) {
			t.Errorf("%s: sockd %d holds %d descriptors, %d when it first settled\nnow:  %v\nthen: %v", step, s.PID, n, base, what, c.baseWhat[s.PID])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// strays lists the processes marked as started by a worker of any sockd
// of this test (SOCKD_WORKER_ID=<sockd pid>-…) that are not a current
// worker, and the zombie children of the current sockd.
func (c *chaos) strays(sockd int, live map[int]bool) (left, zombies []int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ppid, err := procfs.Stat(pid)
		if err != nil {
			continue
		}
		if st == 'Z' {
			if ppid == sockd {
				zombies = append(zombies, pid)
			}
			continue
		}
		if live[pid] {
			continue
		}
		for p := range c.sockds {
			if procfs.EnvHas(pid, fmt.Sprintf("%s=%d-", pool.WorkerIDVar, p)) {
				left = append(left, pid)
			}
		}
	}
	return left, zombies
}

// judge checks that every failed request was in flight on a worker while
// it was being SIGKILLed: it began before the worker was reaped and ended
// at the kill or after, and the connection was reset or closed (never
// refused, timed out, or answered badly).
func (c *chaos) judge(res *load.Result) {
	const slack = 50 * time.Millisecond // the kill and its effect on the client
	perKill := map[int]int{}
	for _, r := range res.Failures() {
		i := slices.IndexFunc(c.kills, func(k kill) bool { return r.Start <= max(k.at, k.reaped)+slack && r.End() >= k.at-slack })
		switch {
		case r.Kind != load.Reset && r.Kind != load.Closed && r.Kind != load.Truncated:
			c.t.Errorf("a request failed %s, which no SIGKILL explains: %+v", r.Kind, r)
		case i < 0:
			c.t.Errorf("a request failed while no worker was SIGKILLed: %+v (kills at %v)", r, c.kills)
		default:
			perKill[i]++
		}
	}
	// Each client has at most one request in flight.
	clients := res.Config.KeepAlive + res.Config.Fresh + res.Config.Sporadic
	for i, n := range perKill {
		if n > clients {
			c.t.Errorf("%d requests failed at the kill at %v, more than the %d clients had in flight", n, c.kills[i], clients)
		}
	}
}

// describe names processes: pid, state, parent, command line.
func describe(pids []int) string {
	var out []string
	for _, pid := range pids {
		st, ppid, _ := procfs.Stat(pid)
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		mark := ""
		for _, kv := range strings.Split(string(env), "\x00") {
			if strings.HasPrefix(kv, pool.WorkerIDVar+"=") {
				mark = kv
			}
		}
		out = append(out, fmt.Sprintf("%d (%c, parent %d, %s, %q)", pid, st, ppid, mark, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return strings.Join(out, "; ")
}

// unixSocketsAt returns the unix sockets bound to path, a listener's and
// those it accepted (they share its address), as /proc/PID/fd names them
// ("socket:[inode]"), from /proc/net/unix.
func unixSocketsAt(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == path {
			at["socket:["+f[6]+"]"] = true
		}
	}
	return at
}
