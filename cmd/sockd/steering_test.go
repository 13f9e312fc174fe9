package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/worker"
)

// Traffic steering with --reuseport (internal/steering), end to end:
// real sockd, real workers, real signals, connections from outside.

// steerWorkerArg as its first argument makes the test binary a worker
// (steerWorker).
const steerWorkerArg = "steer-worker"

// steerWorker serves the first inherited socket: one accept loop, each
// connection answered "slot gen pid ready" and closed. It starts serving
// at once but says READY=1 only after SOCKDTEST_READY_AFTER (a cold
// worker that would serve before it is ready), and once the file
// SOCKDTEST_READY_GATE names exists, if it names one; SIGUSR1 makes its accept
// loop burn the CPU for SOCKDTEST_SPIN before it accepts again (a blocked
// event loop); SIGTERM closes its socket and ends it once its
// connections are answered.
func steerWorker() {
	ls, err := worker.Listeners()
	if err != nil || len(ls) == 0 {
		fmt.Fprintln(os.Stderr, "steer worker: no socket:", err)
		os.Exit(1)
	}
	l := ls[0]
	readyAfter, _ := time.ParseDuration(os.Getenv("SOCKDTEST_READY_AFTER"))
	spin, _ := time.ParseDuration(os.Getenv("SOCKDTEST_SPIN"))
	var ready atomic.Bool
	time.AfterFunc(readyAfter, func() {
		// SOCKDTEST_READY_GATE: not ready before that file exists.
		for gate := os.Getenv("SOCKDTEST_READY_GATE"); gate != ""; <-time.After(10 * time.Millisecond) {
			if _, err := os.Stat(gate); err == nil {
				break
			}
		}
		ready.Store(true) // before READY=1: an answer saying false came before it
		worker.Ready()
	})
	usr1 := make(chan os.Signal, 4)
	signal.Notify(usr1, syscall.SIGUSR1)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() { <-term; l.Close() }()
	id := fmt.Sprintf("%d %d %d", worker.Slot(), worker.Generation(), os.Getpid())
	var wg sync.WaitGroup
	for {
		select {
		case <-usr1:
			for end := time.Now().Add(spin); time.Now().Before(end); {
			}
		default:
		}
		c, err := l.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func(c net.Conn, ready bool) {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			body := fmt.Sprintf("%s %v\n", id, ready)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		}(c, ready.Load())
	}
	wg.Wait()
	os.Exit(0)
}

// answer is one request's outcome.
type answer struct {
	at       time.Time // sent
	took     time.Duration
	err      error
	slot     int
	gen, pid int
	ready    bool
}

// openLoad sends one request on a new connection every 1/rate from a
// single pacing goroutine, each on its own goroutine (an open loop: a
// stalled answer does not hold the next request back), until stop is
// closed; then it waits for every answer (at most timeout each).
func openLoad(addr string, rate int, timeout time.Duration, stop <-chan struct{}) []answer {
	var mu sync.Mutex
	var out []answer
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			return out
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := ask1(addr, timeout)
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		}()
	}
}

func ask1(addr string, timeout time.Duration) answer {
	a := answer{at: time.Now()}
	defer func() { a.took = time.Since(a.at) }()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		a.err = err
		a.took = time.Since(a.at)
		return a
	}
	defer c.Close()
	c.SetDeadline(a.at.Add(timeout))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		a.err = err
		a.took = time.Since(a.at)
		return a
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		_, err = fmt.Sscanf(string(b), "%d %d %d %t", &a.slot, &a.gen, &a.pid, &a.ready)
	}
	a.err = err
	a.took = time.Since(a.at)
	return a
}

// tally counts the failed answers, those from a worker not ready yet,
// and the answers by generation.
func tally(got []answer) (early, failed int, gens map[int]int) {
	gens = map[int]int{}
	for _, a := range got {
		switch {
		case a.err != nil:
			failed++
		case !a.ready:
			early++
		}
		gens[a.gen]++
	}
	return early, failed, gens
}

// startSteered runs sockd --reuseport on the steer worker.
func startSteered(t *testing.T, env []string, args ...string) (*daemonProc, string) {
	t.Helper()
	msock := filepath.Join(t.TempDir(), "metrics.sock")
	args = append(append([]string{"--reuseport", "--listen", "tcp://127.0.0.1:0", "--metrics", "unix://" + msock}, args...), "--", os.Args[0], steerWorkerArg)
	d := startSockd(t, env, args...)
	s := d.mustStatus()
	return d, s.Listeners[0].Address
}

// steerMetric reads one of sockd's steering metrics (summed over labels
// matching filter).
func steerMetric(t *testing.T, d *daemonProc, name, filter string) float64 {
	t.Helper()
	var out bytes.Buffer
	msock := ""
	for i, a := range d.cmd.Args {
		if a == "--metrics" {
			msock = strings.TrimPrefix(d.cmd.Args[i+1], "unix://")
		}
	}
	c := &http.Client{Transport: &http.Transport{Dial: func(string, string) (net.Conn, error) { return net.Dial("unix", msock) }}}
	resp, err := c.Get("http://sockd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(&out, resp.Body)
	resp.Body.Close()
	sum := 0.0
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, filter) || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func workerPID(t *testing.T, d *daemonProc, slot int) int {
	t.Helper()
	w := slotOf(d.mustStatus(), slot)
	if w.PID == 0 {
		t.Fatalf("no worker in slot %d", slot)
	}
	return w.PID
}

// A worker that stops accepting while connections wait for it, stopped
// (SIGSTOP) or spinning on the CPU in its accept loop, loses its new
// connections within the detector's bound and gets them back once it
// accepts again; the others answer meanwhile.
func TestSteeringStalledWorker(t *testing.T) {
	for _, how := range []string{"SIGSTOP", "busy CPU"} {
		t.Run(how, func(t *testing.T) {
			d, addr := startSteered(t, []string{"SOCKDTEST_SPIN=3s"}, "--workers", "4")
			pid := workerPID(t, d, 1)
			stop := make(chan struct{})
			var got []answer
			done := make(chan struct{})
			go func() { got = openLoad(addr, 400, 10*time.Second, stop); close(done) }()
			if how == "SIGSTOP" {
				syscall.Kill(pid, syscall.SIGSTOP)
			} else {
				syscall.Kill(pid, syscall.SIGUSR1) // spins from its next accept on
			}
			stalled := time.Now()
			waitFor(t, 10*time.Second, "the stalled worker excluded", func() bool {
				return steerMetric(t, d, "sockd_steering_decisions_total", `reason="stalled"`) >= 1
			})
			// Three seconds of load while it stalls.
			<-time.After(time.Until(stalled.Add(3 * time.Second)))
			if how == "SIGSTOP" {
				syscall.Kill(pid, syscall.SIGCONT)
			}
			waitFor(t, 10*time.Second, "an answer from the stalled worker again", func() bool {
				a := ask1(addr, 5*time.Second)
				return a.err == nil && a.pid == pid
			})
			close(stop)
			<-done
			slow, failed := 0, 0
			for _, a := range got {
				switch {
				case a.err != nil:
					failed++
				case a.took > time.Second:
					slow++
				}
			}
			t.Logf("%s: %d requests, %d failed, %d waited more than 1 s", how, len(got), failed, slow)
			// Without steering a quarter of them (the stalled socket's
			// share) would wait for the whole stall.
			if failed > 0 || slow*100 > len(got)*5 {
				t.Fatalf("%d of %d requests failed, %d waited more than 1 s", failed, len(got), slow)
			}
		})
	}
}

// When every worker is busy, nobody is excluded: steering does not chase
// load around.
func TestSteeringSaturationExcludesNone(t *testing.T) {
	d, addr := startSteered(t, nil, "--workers", "3")
	var pids []int
	for i := range 3 {
		pids = append(pids, workerPID(t, d, i))
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- openLoad(addr, 200, 20*time.Second, stop) }()
	waitFor(t, 10*time.Second, "connections queued on every worker's socket", func() bool {
		return queuedEverywhere(t, d, 3)
	})
	// Until every queue had a connection, a stopped worker beside an
	// empty queue looked like one stall among healthy peers (the
	// connections reach the sockets one by one): only what happens
	// once all are busy counts.
	n0 := steerMetric(t, d, "sockd_steering_decisions_total", `reason="stalled"`)
	// A second of it: well over the detector's bound.
	<-time.After(time.Second)
	if n := steerMetric(t, d, "sockd_steering_decisions_total", `reason="stalled"`); n != n0 {
		t.Fatalf("%v stall exclusions while every worker was stopped", n-n0)
	}
	t.Logf("%v exclusions before every queue had a connection", n0)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	close(stop)
	for _, a := range <-done {
		if a.err != nil {
			t.Fatalf("a request failed: %v", a.err)
		}
	}
}

// queuedEverywhere: connections wait on each of the n workers' sockets.
func queuedEverywhere(t *testing.T, d *daemonProc, n int) bool {
	s := d.mustStatus()
	q := s.Listeners[0].QueueDepth
	waiting := 0
	for _, w := range s.Workers {
		if w.Socket < len(q) && q[w.Socket] > 0 {
			waiting++
		}
	}
	return waiting == n
}

// A worker answers no request before it said READY=1, across reloads
// under load, and no request fails.
func TestSteeringNoAnswerBeforeReady(t *testing.T) {
	d, addr := startSteered(t, []string{"SOCKDTEST_READY_AFTER=700ms"}, "--workers", "2")
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- openLoad(addr, 300, 10*time.Second, stop) }()
	for range 3 {
		var out bytes.Buffer
		if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
			t.Fatalf("reload: %d %s", code, out.String())
		}
	}
	close(stop)
	got := <-done
	early, failed, gens := tally(got)
	t.Logf("%d requests over 3 reloads: %d failed, %d answered before READY=1, by generation %v", len(got), failed, early, gens)
	if failed > 0 || early > 0 || gens[4] == 0 {
		t.Fatalf("%d failed, %d answered by workers not ready, by generation %v", failed, early, gens)
	}
}

// Slow start: after a reload the new worker's share of new connections
// rises over --slow-start while the old one serves the rest; the old one
// is asked to drain only once the ramp is over.
func TestSteeringSlowStart(t *testing.T) {
	const ramp = 4 * time.Second
	d, addr := startSteered(t, nil, "--workers", "1", "--slow-start", ramp.String())
	// The first worker ramps too (against nobody): let it end.
	waitFor(t, 3*ramp, "the first worker's ramp over", func() bool {
		w := slotOf(d.mustStatus(), 0)
		return !w.ReadyAt.IsZero() && time.Since(w.ReadyAt) > ramp
	})
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- openLoad(addr, 300, 10*time.Second, stop) }()
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
		t.Fatalf("reload: %d %s", code, out.String())
	}
	close(stop)
	got := <-done
	var first time.Time // the new generation's first answer: about when it was ready
	for _, a := range got {
		if a.err == nil && a.gen == 2 && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	share := func(from, to time.Duration) (float64, int) {
		n, g2 := 0, 0
		for _, a := range got {
			if a.err == nil && !a.at.Before(first.Add(from)) && a.at.Before(first.Add(to)) {
				n++
				if a.gen == 2 {
					g2++
				}
			}
		}
		return float64(g2) / float64(max(n, 1)), n
	}
	var curve []string
	for at := time.Duration(0); at < ramp+time.Second; at += 500 * time.Millisecond {
		f, n := share(at, at+500*time.Millisecond)
		curve = append(curve, fmt.Sprintf("%v:%.2f/%d", at, f, n))
	}
	t.Logf("the new worker's share by half second: %v", curve)
	early, n1 := share(0, time.Second)
	late, n2 := share(ramp-time.Second, ramp-100*time.Millisecond)
	t.Logf("new worker's share: %.2f of %d in the ramp's first second, %.2f of %d in its last", early, n1, late, n2)
	// Linear from 10 %: about 0.21 over the first quarter, 0.89 over the last.
	if n1 < 100 || n2 < 100 || early > 0.4 || late < 0.7 {
		t.Fatalf("the share does not follow the ramp: %.2f early, %.2f late", early, late)
	}
	for _, a := range got {
		if a.err != nil {
			t.Fatalf("a request failed: %v", a.err)
		}
	}
	if s := d.mustStatus(); s.Generation != 2 {
		t.Fatalf("after the reload: generation %d", s.Generation)
	}
}

// Slow start with a rolling reload (--reload-batch 1, which
// docs/reference.md recommends beside --slow-start on busy machines): the
// slots move one at a time, each batch's old worker leaves only once its
// successor's ramp is over, and the next batch starts only after that; the
// reload is over once the last ramp is. No request fails and none is
// answered by a worker that was not ready.
func TestSteeringSlowStartRollingReload(t *testing.T) {
	// Longer than a leaving worker's wait for its sockets to be quiet
	// (steering.DefaultQuiet), which alone would delay the next batch too.
	const ramp = 2500 * time.Millisecond
	d, addr := startSteered(t, nil, "--workers", "2", "--slow-start", ramp.String(), "--reload-batch", "1")
	waitFor(t, 4*ramp, "the first workers' ramps over", func() bool {
		s := d.mustStatus()
		for slot := range 2 {
			if w := slotOf(s, slot); w.ReadyAt.IsZero() || time.Since(w.ReadyAt) <= ramp {
				return false
			}
		}
		return true
	})
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- openLoad(addr, 200, 10*time.Second, stop) }()
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
		close(stop)
		<-done
		t.Fatalf("reload: %d %s", code, out.String())
	}
	over := time.Now()
	close(stop)
	got := <-done
	early, failed, gens := tally(got)
	t.Logf("%d requests: %d failed, %d answered before READY=1, by generation %v", len(got), failed, early, gens)
	if failed > 0 || early > 0 || gens[2] == 0 {
		t.Fatalf("%d failed, %d answered by workers not ready, by generation %v", failed, early, gens)
	}
	s := d.mustStatus()
	first, second := slotOf(s, 0), slotOf(s, 1)
	if second.StartedAt.Before(first.StartedAt) {
		first, second = second, first
	}
	if first.Generation != 2 || second.Generation != 2 || first.ReadyAt.IsZero() || second.ReadyAt.IsZero() {
		t.Fatalf("after the reload: %+v", s.Workers)
	}
	t.Logf("first batch ready at +0, second started at +%v, ready at +%v, reload over at +%v",
		second.StartedAt.Sub(first.ReadyAt), second.ReadyAt.Sub(first.ReadyAt), over.Sub(first.ReadyAt))
	if second.StartedAt.Before(first.ReadyAt.Add(ramp)) {
		t.Errorf("the second batch started %v after the first was ready, within the first one's ramp (%v)",
			second.StartedAt.Sub(first.ReadyAt), ramp)
	}
	if over.Before(second.ReadyAt.Add(ramp)) {
		t.Errorf("the reload was over %v after the second batch was ready, within its ramp (%v)", over.Sub(second.ReadyAt), ramp)
	}
}

// A binary upgrade keeps steering right: the new sockd's workers get
// sockets the old ones do not hold and no connection before they are
// ready (the old sockd steers until the new one is in charge); no request
// fails; afterwards the new sockd steers.
func TestSteeringAcrossUpgrade(t *testing.T) {
	bin := installCopy(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, []string{"SOCKDTEST_READY_AFTER=700ms"}, "run", "--control", ctl, "--stop-timeout", "5s",
		"--reuseport", "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--", os.Args[0], steerWorkerArg)
	cmd.Path, cmd.Args[0] = bin, bin
	d := launch(t, cmd, out, ctl)
	before := d.mustStatus()
	addr := before.Listeners[0].Address
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- openLoad(addr, 300, 10*time.Second, stop) }()
	var stderr bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", ctl}, io.Discard, &stderr); code != 0 {
		close(stop)
		<-done
		t.Fatalf("upgrade --wait: exit %d: %s", code, stderr.String())
	}
	waitFor(t, 20*time.Second, "the old workers gone", func() bool {
		for _, w := range before.Workers {
			if alive(w.PID) {
				return false
			}
		}
		return true
	})
	// Steering by the new sockd: a reload after the upgrade keeps every
	// answer from a ready worker too.
	var rout bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", ctl}, &rout, &rout); code != 0 {
		t.Fatalf("reload after the upgrade: %d %s", code, rout.String())
	}
	close(stop)
	got := <-done
	early, failed, gens := tally(got)
	after := d.mustStatus()
	t.Logf("%d requests across an upgrade and a reload: %d failed, %d answered before READY=1, by generation %v; sockd %d → %d", len(got), failed, early, gens, before.PID, after.PID)
	if after.PID == before.PID || failed > 0 || early > 0 || gens[3] == 0 {
		t.Fatalf("%d failed, %d answered by workers not ready, by generation %v", failed, early, gens)
	}
	// The new sockd's workers hold sockets of their own.
	seen := map[int]bool{}
	for _, w := range after.Workers {
		if w.Generation == after.Generation {
			if seen[w.Socket] {
				t.Fatalf("two workers on socket %d: %+v", w.Socket, after.Workers)
			}
			seen[w.Socket] = true
		}
	}
}

// alive: running, not a zombie.
func alive(pid int) bool { return procfs.Alive(pid) }

// A stalled worker (SIGSTOP) that a reload retires leaves the connections
// queued on its socket before steering excluded it; a serving worker is
// recycled at once so that its replacement, given that socket, answers
// them: none waits for some later reload or scale.
func TestSteeringRetiredStalledWorkerLeavesNoQueue(t *testing.T) {
	d, addr := startSteered(t, nil, "--workers", "4", "--stop-timeout", "1s")
	pid := workerPID(t, d, 1)
	stop := make(chan struct{})
	var got []answer
	done := make(chan struct{})
	go func() { got = openLoad(addr, 400, 20*time.Second, stop); close(done) }()
	syscall.Kill(pid, syscall.SIGSTOP)
	waitFor(t, 10*time.Second, "the stalled worker excluded", func() bool {
		return steerMetric(t, d, "sockd_steering_decisions_total", `reason="stalled"`) >= 1
	})
	var out bytes.Buffer
	if code := sockd([]string{"reload", "--wait", "--control", d.control}, &out, &out); code != 0 {
		t.Fatalf("reload: exit %d %s", code, out.String())
	}
	waitFor(t, 20*time.Second, "the stalled worker gone", func() bool {
		p, err := procfs.ReadProcess(pid)
		return err != nil || p.Gone()
	})
	// Stopped, it can neither drain nor stop: killed at the drain's end,
	// not after a stop signal's timeout more.
	if !strings.Contains(d.out.String(), "the leaving worker is stopped (SIGSTOP): it can neither drain nor stop; killing it") {
		t.Errorf("the stopped worker was not killed at the drain's end:\n%s", d.out)
	}
	waitFor(t, 20*time.Second, "a worker recycled to take its queue", func() bool {
		return strings.Contains(d.out.String(), "its replacement takes the connections worker "+strconv.Itoa(pid)+" left queued")
	})
	close(stop)
	<-done
	failed := 0
	for _, a := range got {
		if a.err != nil {
			failed++
		}
	}
	t.Logf("%d requests, %d failed", len(got), failed)
	// It never took its queue: the log must not say it did.
	if strings.Contains(d.out.String(), "event=steer_readmitted") {
		t.Errorf("a stopped worker logged as readmitted:\n%s", d.out)
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed (waited 20 s on the retired worker's socket)", failed, len(got))
	}
}
