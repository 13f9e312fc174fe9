package e2e

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
	"golang.org/x/sys/unix"
)

// These tests install sockd with scripts/install into a sandboxed systemd
// 252 (see README.md) and drive it the way an admin would: systemctl,
// sockd status, journalctl, kill. Each test boots its own sandbox.

const addr = "127.0.0.1:8080" // sockd.socket's ListenStream=

// TestSockdSocketActivation: the socket starts alone; the first connection
// activates sockd, whose workers (3, from a drop-in) answer; systemctl
// shows sockd as the main process with its STATUS= line and the workers in
// its cgroup; a crashed worker is replaced; everything is in the journal
// with priorities and SOCKD_* fields; `systemctl stop` is clean.
func TestSockdSocketActivation(t *testing.T) {
	sb := installed(t, e2eDropIn(""))

	if got := sb.prop(t, "sockd.socket", "UnitFileState"); got != "enabled" {
		t.Errorf("scripts/install left sockd.socket %q, want enabled", got)
	}
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	if p := sb.props(t, "sockd.socket", "ActiveState", "SubState", "Listen"); p["ActiveState"] != "active" || p["SubState"] != "listening" || p["Listen"] != addr+" (Stream)" {
		t.Fatalf("sockd.socket after start: %v", p)
	}
	if got := sb.prop(t, "sockd.service", "ActiveState"); got != "inactive" {
		t.Fatalf("sockd.service before the first connection: %q, want inactive", got)
	}

	first := sb.once(t, addr) // the first connection starts sockd.service
	st := sb.waitServing(t, "", 1, 3)
	workers := workerPIDs(st)
	t.Logf("first request: %+v; sockd pid %d, workers %v", first, st.PID, workers)
	if first.Generation != 1 || !slices.Contains(workers, first.PID) {
		t.Errorf("first answer from pid %d generation %d, want one of the workers %v of generation 1", first.PID, first.Generation, workers)
	}

	p := sb.props(t, "sockd.service", "ActiveState", "SubState", "MainPID", "StatusText", "NRestarts", "ControlGroup", "TriggeredBy", "NotifyAccess", "KillMode")
	mainPID, _ := strconv.Atoi(p["MainPID"])
	if p["ActiveState"] != "active" || p["SubState"] != "running" || mainPID != st.PID || p["NRestarts"] != "0" || p["TriggeredBy"] != "sockd.socket" ||
		p["NotifyAccess"] != "main" || p["KillMode"] != "mixed" {
		t.Errorf("systemctl show sockd.service: %v; want active/running, MainPID = sockd's pid %d, triggered by sockd.socket", p, st.PID)
	}
	const wantStatus = "3/3 workers ready, generation 1, 0 restarts"
	if p["StatusText"] != wantStatus || st.Summary != wantStatus {
		t.Errorf("StatusText %q, sockd status summary %q, want %q in both", p["StatusText"], st.Summary, wantStatus)
	}
	if exe := strings.TrimSpace(sb.MustRun(t, "readlink", fmt.Sprintf("/proc/%d/exe", mainPID))); exe != "/usr/local/bin/sockd" {
		t.Errorf("MainPID %d runs %q, want /usr/local/bin/sockd", mainPID, exe)
	}
	// sockd and every worker in the service's cgroup, nothing else; the
	// workers are sockd's children, and so is its guard; all run as the
	// dynamic user "sockd".
	want := append([]int{mainPID, st.GuardPID}, workers...)
	slices.Sort(want)
	if got := sb.cgroupPIDs(t, "sockd.service", p["ControlGroup"]); !slices.Equal(got, want) {
		t.Errorf("cgroup %s holds %v, want sockd and its workers %v", p["ControlGroup"], got, want)
	}
	procs := sb.procs(t, want...)
	for _, w := range workers {
		if procs[w].ppid != mainPID {
			t.Errorf("worker %d has parent %d, want sockd (%d)", w, procs[w].ppid, mainPID)
		}
	}
	psArgs := []string{"ps", "-o", "user=", "-p"}
	for _, pid := range want {
		psArgs = append(psArgs, strconv.Itoa(pid))
	}
	if users := strings.Fields(sb.MustRun(t, psArgs...)); len(users) != len(want) || slices.ContainsFunc(users, func(u string) bool { return u != "sockd" }) {
		t.Errorf("users of sockd and its workers: %v, want the dynamic user sockd for all %d", users, len(want))
	}
	status := sb.MustRun(t, "systemctl", "status", "--no-pager", "-l", "--lines=0", "sockd.service")
	t.Logf("systemctl status sockd.service:\n%s", status)
	for _, s := range []string{
		fmt.Sprintf("Main PID: %d (sockd)", mainPID),
		fmt.Sprintf("Status: %q", wantStatus),
		"TriggeredBy: ",
		fmt.Sprintf("%d /usr/local/bin/sockd run", mainPID),
	} {
		if !strings.Contains(status, s) {
			t.Errorf("systemctl status lacks %q", s)
		}
	}
	for _, w := range workers {
		if s := fmt.Sprintf("%d /usr/local/bin/sockd demo-worker", w); !strings.Contains(status, s) {
			t.Errorf("systemctl status lacks the worker line %q", s)
		}
	}

	// Every worker answers: the kernel spreads the connections of a burst.
	seen := map[int]bool{}
	WaitFor(t, 20*time.Second, func() (bool, string) {
		out, _ := sb.Run(t, filepath.Join(sb.bin, "loadclient"), "-addr", addr, "-duration", "300ms", "-fresh", "6", "-keepalive", "0", "-sporadic", "0")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var r load.Report
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			return false, err.Error()
		}
		if r.Summary.Failed > 0 {
			t.Errorf("burst: %s\n%s", summary(&r), describeFailures(&r, 10))
		}
		for pid := range r.Summary.PerPID {
			seen[int(pid)] = true
		}
		return len(seen) == len(workers), fmt.Sprintf("answers from %v, workers %v", seen, workers)
	})

	// A crashed worker is replaced, in the same cgroup, and STATUS= says so.
	victim := workers[1]
	sb.MustRun(t, "kill", "-KILL", strconv.Itoa(victim))
	WaitFor(t, 20*time.Second, func() (bool, string) {
		s, err := sb.status(t, "")
		if err != nil {
			return false, err.Error()
		}
		return s.Restarts == 1 && s.Ready == 3 && !slices.Contains(workerPIDs(s), victim), s.Summary
	})
	st = sb.mustStatus(t, "")
	workers = workerPIDs(st)
	if got := sb.prop(t, "sockd.service", "StatusText"); got != "3/3 workers ready, generation 1, 1 restarts" {
		t.Errorf("StatusText after a worker crash: %q", got)
	}

	// The journal: sockd's own entries, native, with priorities and fields,
	// and the workers' output.
	var entries []JournalEntry
	WaitFor(t, 10*time.Second, func() (bool, string) {
		entries = sb.journal(t, "-u", "sockd.service")
		n := 0
		for _, e := range entries {
			if e.Field("SOCKD_EVENT") == "worker_ready" {
				n++
			}
		}
		return n >= 4, fmt.Sprintf("%d worker_ready entries among %d", n, len(entries))
	})
	checkJournal(t, entries, mainPID, victim, workers)
	// journalctl -u UNIT SOCKD_WORKER=1: slot 1's lines, and only those.
	slot1 := sb.journal(t, "-u", "sockd.service", "SOCKD_WORKER=1", "SOCKD_STREAM=stdout")
	if len(slot1) == 0 {
		t.Errorf("journalctl -u sockd.service SOCKD_WORKER=1 SOCKD_STREAM=stdout: nothing")
	}
	for _, e := range slot1 {
		if e.Field("SOCKD_WORKER") != "1" {
			t.Errorf("journalctl SOCKD_WORKER=1 shows %q of SOCKD_WORKER=%s", e.Field("MESSAGE"), e.Field("SOCKD_WORKER"))
		}
	}
	// sockd logs under systemd: the same lines from sockd's ring, the
	// crashed worker's among them.
	logs, _ := sb.Run(t, "/usr/local/bin/sockd", "logs", "--worker", "1", "-n", "50")
	if want := fmt.Sprintf("[w1 g1] hello[%d]: ready: serving 1 listeners", victim); !strings.Contains(logs, want) {
		t.Errorf("sockd logs --worker 1 lacks %q:\n%s", want, logs)
	}

	// Across a reload: the new generation's lines carry SOCKD_GENERATION=2,
	// and the old workers' last lines (their drain, written as they stop)
	// arrive with generation 1.
	sb.MustRun(t, "systemctl", "reload", "sockd.service")
	WaitFor(t, 20*time.Second, func() (bool, string) {
		ready2, drained1 := map[string]bool{}, map[string]bool{}
		for _, e := range sb.journal(t, "-u", "sockd.service", "SOCKD_STREAM=stdout") {
			m, pid := e.Field("MESSAGE"), e.Field("SOCKD_WORKER_PID")
			if e.Field("SYSLOG_PID") != pid || e.Field("PRIORITY") != "6" || e.Field("SYSLOG_IDENTIFIER") != "sockd-demo" {
				t.Errorf("worker line after the reload: %v", e)
			}
			switch {
			case e.Field("SOCKD_GENERATION") == "2" && strings.HasSuffix(m, "]: ready: serving 1 listeners"):
				ready2[pid] = true
			case e.Field("SOCKD_GENERATION") == "1" && strings.Contains(m, ": drained in "):
				drained1[pid] = true
			}
		}
		return len(ready2) == 3 && len(drained1) == 3, fmt.Sprintf("generation 2 ready lines from %d workers, generation 1 drained lines from %d", len(ready2), len(drained1))
	})

	// systemctl stop: sockd drains its workers and exits 0; nothing is left.
	cgroup := p["ControlGroup"]
	before := sb.procs(t, append([]int{mainPID}, workers...)...)
	begin := time.Now()
	sb.MustRun(t, "systemctl", "stop", "sockd.service")
	t.Logf("systemctl stop sockd.service took %v", time.Since(begin).Round(time.Millisecond))
	p = sb.props(t, "sockd.service", "ActiveState", "SubState", "Result", "ExecMainCode", "ExecMainStatus", "MainPID")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainCode"] != "1" || p["ExecMainStatus"] != "0" || p["MainPID"] != "0" {
		t.Errorf("after systemctl stop: %v; want inactive, Result=success, ExecMainCode=1 (exited), ExecMainStatus=0", p)
	}
	if alive := sb.running(t, before); len(alive) > 0 {
		t.Errorf("processes still running after stop: %+v", alive)
	}
	if left := sb.cgroupPIDs(t, "sockd.service", cgroup); len(left) > 0 {
		t.Errorf("cgroup %s still holds %v after stop", cgroup, left)
	}
	entries = sb.journal(t, "-u", "sockd.service")
	exits := 0
	for _, e := range entries {
		if e.Field("SOCKD_EVENT") == "worker_exit" && e.Field("SOCKD_STATUS") == "exit status 0" && e.Field("PRIORITY") == "6" {
			exits++
		}
		if m := e.Field("MESSAGE"); e.Field("_PID") == "1" && (strings.Contains(m, "Killing") || strings.Contains(m, "timed out")) {
			t.Errorf("systemd had to kill: %q", m)
		}
	}
	if exits < 3 || !hasEvent(entries, "sockd_exit") {
		t.Errorf("journal after stop: %d workers drained with exit status 0 (want 3), sockd_exit logged: %v", exits, hasEvent(entries, "sockd_exit"))
	}

	// The socket stayed: the next connection starts a new sockd.
	again := sb.once(t, addr)
	if pid := sb.mainPID(t, "sockd.service"); pid == mainPID || pid == 0 || again.Generation != 1 {
		t.Errorf("after stop, a connection got %+v from MainPID %d; want a new sockd (not %d), generation 1", again, pid, mainPID)
	}
	sb.MustRun(t, "systemctl", "stop", "sockd.socket", "sockd.service")
	if p := sb.props(t, "sockd.service", "ActiveState", "Result"); p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after stopping socket and service: %v", p)
	}
}

func hasEvent(entries []JournalEntry, event string) bool {
	return slices.ContainsFunc(entries, func(e JournalEntry) bool { return e.Field("SOCKD_EVENT") == event })
}

// checkJournal checks sockd's journal entries after start-up and one
// worker crash (victim).
func checkJournal(t *testing.T, entries []JournalEntry, mainPID, victim int, workers []int) {
	t.Helper()
	main := strconv.Itoa(mainPID)
	events := map[string][]JournalEntry{}
	workerLines := map[string]string{}
	for _, e := range entries {
		if ev := e.Field("SOCKD_EVENT"); ev != "" {
			events[ev] = append(events[ev], e)
			if e.Field("_TRANSPORT") != "journal" || e.Field("SYSLOG_IDENTIFIER") != "sockd" || e.Field("_PID") != main {
				t.Errorf("sockd entry %q: _TRANSPORT=%s SYSLOG_IDENTIFIER=%s _PID=%s, want journal, sockd, %s",
					e.Field("MESSAGE"), e.Field("_TRANSPORT"), e.Field("SYSLOG_IDENTIFIER"), e.Field("_PID"), main)
			}
		}
		if e.Field("SOCKD_STREAM") != "" && strings.HasPrefix(e.Field("MESSAGE"), "hello[") {
			// A worker's line, relayed by sockd over the native protocol:
			// attributed to the app and the worker, stdout at priority 6
			// (the demo logs what it does on stdout, errors on stderr).
			pid := e.Field("SOCKD_WORKER_PID")
			if e.Field("_TRANSPORT") != "journal" || e.Field("_PID") != main || e.Field("SYSLOG_IDENTIFIER") != "sockd-demo" ||
				e.Field("SYSLOG_PID") != pid || e.Field("SOCKD_WORKER") == "" || e.Field("SOCKD_GENERATION") != "1" ||
				e.Field("SOCKD_STREAM") != "stdout" || e.Field("PRIORITY") != "6" || e.Field("SOCKD_EVENT") != "" {
				t.Errorf("worker line %q: _TRANSPORT=%s _PID=%s SYSLOG_IDENTIFIER=%s SYSLOG_PID=%s SOCKD_WORKER=%s SOCKD_GENERATION=%s SOCKD_STREAM=%s PRIORITY=%s; want journal, %s, sockd-demo (the app's name), %s, a slot, 1, stdout, 6",
					e.Field("MESSAGE"), e.Field("_TRANSPORT"), e.Field("_PID"), e.Field("SYSLOG_IDENTIFIER"), e.Field("SYSLOG_PID"),
					e.Field("SOCKD_WORKER"), e.Field("SOCKD_GENERATION"), e.Field("SOCKD_STREAM"), e.Field("PRIORITY"), main, pid)
			}
			workerLines[pid] += e.Field("MESSAGE") + "\n"
		}
	}
	for ev, prio := range map[string]string{"listener": "6", "pool_start": "6", "worker_start": "6", "worker_ready": "6", "pool_ready": "6", "worker_restart": "6"} {
		if len(events[ev]) == 0 {
			t.Errorf("no journal entry with SOCKD_EVENT=%s", ev)
		}
		for _, e := range events[ev] {
			if e.Field("PRIORITY") != prio {
				t.Errorf("SOCKD_EVENT=%s has PRIORITY=%s, want %s", ev, e.Field("PRIORITY"), prio)
			}
		}
	}
	if l := events["listener"]; len(l) > 0 && (l[0].Field("SOCKD_NAME") != "http" || l[0].Field("SOCKD_ADDRESS") != addr) {
		t.Errorf("listener entry: SOCKD_NAME=%q SOCKD_ADDRESS=%q, want http, %s", l[0].Field("SOCKD_NAME"), l[0].Field("SOCKD_ADDRESS"), addr)
	}
	ready := map[string]bool{}
	for _, e := range events["worker_ready"] {
		if e.Field("SOCKD_GENERATION") != "1" || e.Field("SOCKD_WORKER") == "" || !strings.HasPrefix(e.Field("MESSAGE"), "worker ready (generation=1 worker=") {
			t.Errorf("worker_ready entry: %v", e)
		}
		ready[e.Field("SOCKD_WORKER_PID")] = true
	}
	for _, w := range append([]int{victim}, workers...) {
		pid := strconv.Itoa(w)
		if !ready[pid] {
			t.Errorf("no worker_ready entry with SOCKD_WORKER_PID=%s", pid)
		}
		if want := fmt.Sprintf("hello[%d]: ready: serving 1 listeners", w); !strings.Contains(workerLines[pid], want) {
			t.Errorf("the worker's own output %q (SOCKD_WORKER_PID=%s) is not in the journal; its lines: %q", want, pid, workerLines[pid])
		}
	}
	crashed := false
	for _, e := range events["worker_exit"] {
		if e.Field("SOCKD_WORKER_PID") == strconv.Itoa(victim) {
			crashed = true
			if e.Field("PRIORITY") != "4" || e.Field("SOCKD_STATUS") != "killed by SIGKILL" || !strings.HasPrefix(e.Field("MESSAGE"), "worker crashed (generation=") {
				t.Errorf("crash entry: PRIORITY=%s SOCKD_STATUS=%q MESSAGE=%q, want 4, killed by SIGKILL, worker crashed",
					e.Field("PRIORITY"), e.Field("SOCKD_STATUS"), e.Field("MESSAGE"))
			}
		}
	}
	if !crashed {
		t.Errorf("no worker_exit entry for the killed worker %d", victim)
	}
	if t.Failed() {
		for _, e := range entries {
			b, _ := json.Marshal(e)
			t.Logf("journal: %s", b)
		}
	}
}

// TestSockdReloadUnderLoad: `systemctl reload` ten times in a row under a
// continuous load of new and keep-alive connections: no request fails, and
// every reload returns only once the new generation serves.
//
// With --slow-start (SOCKD_SLOW_START) each reload's workers start at a
// low CPU priority and get their normal one back once ready: the unit's
// LimitNICE=+0 lets sockd, an unprivileged dynamic user, do that.
func TestSockdReloadUnderLoad(t *testing.T) {
	sb := installed(t, e2eDropIn("Environment=SOCKD_SLOW_START=2s SOCKD_LOG_LEVEL=debug\n"))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)

	l := sb.startLoad(t, "-addr", addr, "-keepalive", "3", "-fresh", "3", "-sporadic", "3", "-pause", "1ms", "-idle-max", "300ms")
	const reloads = 10
	returned := make([]int64, reloads+2) // returned[g]: when the reload to generation g returned
	var took []string
	for g := 2; g <= reloads+1; g++ {
		begin := time.Now()
		if out, err := sb.Run(t, "systemctl", "reload", "sockd.service"); err != nil {
			l.stop(t)
			t.Fatalf("reload to generation %d: %v %s\n%s", g, err, out, sb.MustRun(t, "journalctl", "-u", "sockd.service", "--no-pager", "-n", "30"))
		}
		returned[g] = time.Now().UnixNano()
		took = append(took, time.Since(begin).Round(time.Millisecond).String())
		// Right after systemctl reload returns, a new connection is
		// answered by the new generation.
		if q := sb.once(t, addr); q.Generation != g {
			t.Errorf("reload to generation %d returned, yet the next new connection was answered by generation %d (pid %d)", g, q.Generation, q.PID)
		}
	}
	sb.waitServing(t, "", reloads+1, 3)
	r := l.stop(t)
	t.Logf("systemctl reload took %v", took)
	t.Logf("load: %s", summary(r))

	if r.Summary.Failed > 0 {
		t.Errorf("%d of %d requests failed during %d reloads:\n%s\nsockd's journal:\n%s", r.Summary.Failed, r.Summary.Requests, reloads, describeFailures(r, 30),
			sb.MustRun(t, "journalctl", "-u", "sockd.service", "--no-pager", "-o", "short-precise", "-n", "400"))
	}
	if r.Summary.OK < 500 {
		t.Errorf("only %d requests answered: not much of a load", r.Summary.OK)
	}
	for g := 1; g <= reloads+1; g++ {
		gs, ok := r.Summary.Gens[int32(g)]
		if !ok || gs.Requests == 0 {
			t.Errorf("generation %d answered no request of the load", g)
			continue
		}
		// A connection begun after the reload to g+1 returned must never be
		// answered by generation g or older.
		for later := g + 1; later <= reloads+1; later++ {
			if last := r.At(gs.LastConn).UnixNano(); last > returned[later] {
				t.Errorf("generation %d answered on a connection begun %v after the reload to generation %d had returned",
					g, time.Duration(last-returned[later]), later)
			}
		}
	}
	sb.checkLowStart(t, "sockd.service", sb.niceGranted(t, st.PID), reloads+1, 3)

	// Where sockd may restore the priority (here: root, CAP_SYS_NICE), it
	// does so under the units' seccomp filter for RestrictRealtime=yes
	// (which must let the lower priority and back through).
	sb.MustRun(t, "systemd-run", "--unit=lowprobe", "-p", "Type=notify", "-p", "RuntimeDirectory=lowprobe", "-p", "RestrictRealtime=yes",
		"-p", "NoNewPrivileges=yes", "/usr/local/bin/sockd", "run", "--workers", "2", "--listen", "tcp://127.0.0.1:9193",
		"--control", "/run/lowprobe/sockd.sock", "--slow-start", "5s", "--log-level", "debug")
	sb.waitServing(t, "/run/lowprobe/sockd.sock", 1, 2)
	for range 2 {
		sb.MustRun(t, "/usr/local/bin/sockd", "reload", "--wait", "--control", "/run/lowprobe/sockd.sock")
	}
	sb.checkLowStart(t, "lowprobe.service", true, 3, 2)
	p := sb.props(t, "sockd.service", "MainPID", "NRestarts", "ActiveState", "SubState", "ReloadResult", "StatusText")
	want := fmt.Sprintf("3/3 workers ready, generation %d, 0 restarts", reloads+1)
	if p["MainPID"] != strconv.Itoa(st.PID) || p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" ||
		p["ReloadResult"] != "success" || p["StatusText"] != want {
		t.Errorf("after %d reloads: %v; want the same MainPID %d, no restart, active/running, ReloadResult=success, StatusText %q", reloads, p, st.PID, want)
	}
}

// TestSockdBadDeploy: a reload whose new workers fail (HELLO_CONFIG says
// "broken") fails `systemctl reload` with the reason; the old generation
// keeps serving without a failed request, and systemctl status says why.
// Fixing the configuration makes the next reload succeed.
func TestSockdBadDeploy(t *testing.T) {
	sb := installed(t, e2eDropIn(""))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)
	old := workerPIDs(st)
	l := sb.startLoad(t, "-addr", addr, "-keepalive", "1", "-fresh", "1", "-sporadic", "1", "-pause", "1ms")

	sb.WriteFile(t, "/etc/sockd/hello.conf", []byte("greeting = hello\nbroken\n"))
	out, err := sb.Run(t, "systemctl", "reload", "sockd.service")
	var exit *exec.ExitError
	if err == nil || !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("systemctl reload with a broken deploy: err %v, output %q; want exit status 1", err, out)
	}
	if !strings.Contains(err.Error(), "Job for sockd.service failed") {
		t.Errorf("systemctl reload said %v; want it to report the failed job", err)
	}
	const reason = "reload to generation 2 failed: worker "
	const why = "exited before it was ready (exit status 1); generation 1 still serving"

	// The old generation serves on, untouched.
	if q := sb.once(t, addr); q.Generation != 1 || !slices.Contains(old, q.PID) {
		t.Errorf("after the failed reload: answer %+v, want generation 1 from %v", q, old)
	}
	s := sb.waitServing(t, "", 1, 3)
	if !slices.Equal(workerPIDs(s), old) || s.LastReload == nil || s.LastReload.OK || s.LastReload.Generation != 2 {
		t.Errorf("sockd status after the failed reload: workers %v (want %v), last reload %+v", workerPIDs(s), old, s.LastReload)
	}
	p := sb.props(t, "sockd.service", "ActiveState", "SubState", "MainPID", "NRestarts", "ReloadResult", "StatusText")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["MainPID"] != strconv.Itoa(st.PID) || p["NRestarts"] != "0" || p["ReloadResult"] != "exit-code" ||
		!strings.Contains(p["StatusText"], "; last reload failed: worker ") || !strings.Contains(p["StatusText"], "exited before it was ready (exit status 1)") {
		t.Errorf("systemctl show after the failed reload: %v", p)
	}
	status, _ := sb.Run(t, "systemctl", "status", "--no-pager", "-l", "--lines=20", "sockd.service")
	t.Logf("systemctl status after the failed reload:\n%s", status)
	for _, s := range []string{
		"ExecReload=/usr/local/bin/sockd reload --wait --update-env (code=exited, status=1/FAILURE)",
		"Status: \"3/3 workers ready, generation 1, 0 restarts; last reload failed: worker ",
		"sockd: " + reason, why, // the reason, from sockd reload --wait
		"hello: config /etc/sockd/hello.conf is broken: refusing to start", // from the new workers
		"Reload failed for sockd.service",
	} {
		if !strings.Contains(status, s) {
			t.Errorf("systemctl status lacks %q", s)
		}
	}
	var failed []JournalEntry
	for _, e := range sb.journal(t, "-u", "sockd.service") {
		if e.Field("SOCKD_EVENT") == "reload_failed" {
			failed = append(failed, e)
		}
	}
	if len(failed) != 1 || failed[0].Field("PRIORITY") != "3" || failed[0].Field("SOCKD_GENERATION") != "2" ||
		failed[0].Field("SOCKD_SERVING") != "1" || !strings.Contains(failed[0].Field("SOCKD_REASON"), "exited before it was ready") {
		t.Errorf("journal: reload_failed entries %v; want one with PRIORITY=3 (err), SOCKD_GENERATION=2, SOCKD_SERVING=1, SOCKD_REASON", failed)
	}

	// Fixed: the next reload goes through (generation 3: 2 was the failed one).
	sb.WriteFile(t, "/etc/sockd/hello.conf", []byte("greeting = hello again\n"))
	sb.MustRun(t, "systemctl", "reload", "sockd.service")
	if q := sb.once(t, addr); q.Generation != 3 {
		t.Errorf("after the fixed reload: generation %d, want 3", q.Generation)
	}
	p = sb.props(t, "sockd.service", "ReloadResult", "StatusText")
	if p["ReloadResult"] != "success" || p["StatusText"] != "3/3 workers ready, generation 3, 0 restarts" {
		t.Errorf("after the fixed reload: %v", p)
	}
	r := l.stop(t)
	t.Logf("load: %s", summary(r))
	if r.Summary.Failed > 0 {
		t.Errorf("%d requests failed across the failed and the good reload:\n%s", r.Summary.Failed, describeFailures(r, 20))
	}
}

// TestSockdKill9: SIGKILL to sockd takes its workers along (parent-death
// signal), systemd restarts sockd (Restart=on-failure, RestartSec=1s), and
// connections that arrive meanwhile wait in the socket's queue and are
// answered by the new sockd. Only requests in flight on the killed workers
// fail.
func TestSockdKill9(t *testing.T) {
	sb := installed(t, e2eDropIn(""))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)
	oldMain := st.PID
	old := sb.procs(t, append([]int{oldMain, st.GuardPID}, workerPIDs(st)...)...)
	if len(old) != 5 {
		t.Fatalf("/proc of sockd, its guard and its workers: %+v", old)
	}
	const clients = 5
	l := sb.startLoad(t, "-addr", addr, "-keepalive", "2", "-fresh", "2", "-sporadic", "1", "-pause", "1ms", "-slow", "200ms")

	sb.MustRun(t, "kill", "-KILL", strconv.Itoa(oldMain))
	killed := time.Now()
	// No worker outlives sockd, nor does its guard: each is gone from
	// /proc, or a zombie, or its pid belongs to a newer process.
	WaitFor(t, 5*time.Second, func() (bool, string) {
		alive := sb.running(t, old)
		return len(alive) == 0, fmt.Sprintf("still running: %+v", alive)
	})
	dead := time.Now()
	t.Logf("sockd, its guard and its workers gone %v after kill -9", dead.Sub(killed).Round(time.Millisecond))
	// New connections now, while no sockd runs (systemd waits RestartSec=1s):
	// they must wait in the socket's queue and be answered after the restart.
	type probe struct {
		q   answer
		err error
	}
	probes := make(chan probe, 3)
	for i := 0; i < cap(probes); i++ {
		go func() {
			q, err := sb.tryOnce(t, addr)
			probes <- probe{q, err}
		}()
	}
	var newMain int
	WaitFor(t, 20*time.Second, func() (bool, string) {
		p := sb.props(t, "sockd.service", "MainPID", "ActiveState", "SubState", "NRestarts")
		newMain, _ = strconv.Atoi(p["MainPID"])
		return newMain != 0 && newMain != oldMain && p["ActiveState"] == "active" && p["SubState"] == "running", fmt.Sprint(p)
	})
	up := time.Now()
	t.Logf("new sockd %d active %v after kill -9", newMain, up.Sub(killed).Round(time.Millisecond))
	st = sb.waitServing(t, "", 1, 3)
	if nr := sb.prop(t, "sockd.service", "NRestarts"); nr != "1" || st.PID != newMain {
		t.Errorf("NRestarts %s (want 1), sockd status pid %d (want MainPID %d)", nr, st.PID, newMain)
	}
	want := append([]int{newMain, st.GuardPID}, workerPIDs(st)...)
	slices.Sort(want)
	if got := sb.cgroupPIDs(t, "sockd.service", ""); !slices.Equal(got, want) {
		t.Errorf("cgroup holds %v after the restart, want only the new sockd, its guard and its workers %v", got, want)
	}
	// When the new sockd started, from systemd's monotonic timestamp (the
	// sandbox shares the host's CLOCK_MONOTONIC): a probe made before it
	// must have waited in the socket's queue; one made after (a loaded
	// machine delays the probes) proves nothing either way.
	startMono, _ := strconv.ParseInt(sb.prop(t, "sockd.service", "ExecMainStartTimestampMonotonic"), 10, 64)
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	started := time.Now().Add(-time.Duration(ts.Nano() - startMono*1000))
	for i := 0; i < cap(probes); i++ {
		p := <-probes
		if p.err != nil {
			t.Errorf("connection made while sockd was down: %v", p.err)
			continue
		}
		waited := p.q.Waited
		if _, isOld := old[p.q.PID]; isOld || p.q.ConnAt.Before(started) && waited < 200*time.Millisecond {
			t.Errorf("probe %+v: want a connection made while sockd was down (before %s) answered by a new worker after waiting", p.q, started.Format("15:04:05.000"))
		}
		t.Logf("connection made %v after sockd was seen gone waited %v in the socket's queue, answered by new worker %d",
			p.q.ConnAt.Sub(dead).Round(time.Millisecond), waited.Round(time.Millisecond), p.q.PID)
	}
	r := l.stop(t)
	t.Logf("load: %s", summary(r))

	// Failures: only requests on connections begun before the old workers
	// were seen gone, at most one per client (it reconnects), and only
	// resets, never a refused or timed-out connection.
	if r.Summary.Failed > clients {
		t.Errorf("%d requests failed, more than the %d clients could have had in flight:\n%s", r.Summary.Failed, clients, describeFailures(r, 30))
	}
	for _, f := range r.Failures {
		if !r.At(f.Conn).Before(dead) || (f.Kind != load.Reset && f.Kind != load.Closed && f.Kind != load.Truncated) {
			t.Errorf("failure not explained by the kill (connection begun %v after the old workers were gone): %+v",
				r.At(f.Conn).Sub(dead), f)
		}
	}
	if r.Summary.Failed > 0 {
		t.Logf("failed requests (in flight on the killed workers):\n%s", describeFailures(r, 10))
	}
	// Requests whose connection was made while no sockd ran waited in the
	// socket's queue and were answered by the new workers.
	queued := 0
	for _, q := range r.Slow {
		if at := r.At(q.Conn); q.Kind == load.OK && !at.Before(dead) && at.Before(up) {
			queued++
			if _, isOld := old[int(q.PID)]; isOld || q.Gen != 1 {
				t.Errorf("queued request answered by pid %d generation %d, want a new worker", q.PID, q.Gen)
			}
		}
	}
	t.Logf("and %d requests of the load", queued)

	var msgs []string
	for _, e := range sb.journal(t, "-u", "sockd.service", "_PID=1") {
		msgs = append(msgs, e.Field("MESSAGE"))
	}
	journal := strings.Join(msgs, "\n")
	for _, s := range []string{"Main process exited, code=killed, status=9/KILL", "Scheduled restart job, restart counter is at 1."} {
		if !strings.Contains(journal, s) {
			t.Errorf("systemd's journal for sockd.service lacks %q:\n%s", s, journal)
		}
	}
}

// TestSockdWatchdog: sockd pings systemd's watchdog while it is healthy; a
// sockd that stops (SIGSTOP) is killed and restarted by systemd
// (WatchdogSec=, shortened to 2s in a drop-in). Its workers serve on while
// sockd is stopped: sockd is not in the data path.
func TestSockdWatchdog(t *testing.T) {
	sb := installed(t, e2eDropIn("WatchdogSec=2s\n"))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)
	oldMain := st.PID
	old := sb.procs(t, append([]int{oldMain}, workerPIDs(st)...)...)
	if got := sb.prop(t, "sockd.service", "WatchdogUSec"); got != "2s" {
		t.Fatalf("WatchdogUSec = %q, want 2s from the drop-in", got)
	}

	// Healthy: the last-ping timestamp keeps moving.
	pings := map[string]bool{}
	WaitFor(t, 10*time.Second, func() (bool, string) {
		pings[sb.prop(t, "sockd.service", "WatchdogTimestampMonotonic")] = true
		delete(pings, "0")
		return len(pings) >= 3, fmt.Sprintf("%d distinct WatchdogTimestamp values", len(pings))
	})

	sb.MustRun(t, "kill", "-STOP", strconv.Itoa(oldMain))
	stopped := time.Now()
	if q := sb.once(t, addr); q.Generation != 1 || old[q.PID].pid == 0 {
		t.Errorf("while sockd is stopped, answer %+v; want one from its workers", q)
	}
	var newMain int
	WaitFor(t, 20*time.Second, func() (bool, string) {
		p := sb.props(t, "sockd.service", "MainPID", "ActiveState", "SubState", "NRestarts")
		newMain, _ = strconv.Atoi(p["MainPID"])
		return newMain != 0 && newMain != oldMain && p["ActiveState"] == "active" && p["SubState"] == "running" && p["NRestarts"] == "1", fmt.Sprint(p)
	})
	after := time.Since(stopped)
	t.Logf("stopped sockd replaced after %v", after.Round(time.Millisecond))
	if after < time.Second {
		t.Errorf("sockd was replaced %v after SIGSTOP, faster than the watchdog (2s, pinged every 2s/3) allows", after)
	}
	sb.waitServing(t, "", 1, 3)
	if alive := sb.running(t, old); len(alive) > 0 {
		t.Errorf("old sockd or workers still running after the watchdog restart: %+v", alive)
	}
	var msgs []string
	for _, e := range sb.journal(t, "-u", "sockd.service", "_PID=1") {
		msgs = append(msgs, e.Field("MESSAGE"))
	}
	journal := strings.Join(msgs, "\n")
	for _, s := range []string{"Watchdog timeout (limit 2s)!", "Failed with result 'watchdog'."} {
		if !strings.Contains(journal, s) {
			t.Errorf("systemd's journal for sockd.service lacks %q:\n%s", s, journal)
		}
	}
}

// TestSockdTemplateInstances: two instances of sockd@ on two ports, set up
// with scripts/install --instance, configured by their env files, reloaded
// independently; sockd.service next to them does not disturb them.
func TestSockdTemplateInstances(t *testing.T) {
	sb := installed(t, map[string]string{
		"/etc/sockd/b.env": "SOCKD_WORKERS=3\n",
	}, "--instance", "a=127.0.0.1:8081", "--instance", "b=127.0.0.1:8082", "--now")
	const ctlA, ctlB = "/run/sockd-a/sockd.sock", "/run/sockd-b/sockd.sock"
	for unit, want := range map[string]string{"sockd@a.socket": "127.0.0.1:8081 (Stream)", "sockd@b.socket": "127.0.0.1:8082 (Stream)"} {
		if p := sb.props(t, unit, "ActiveState", "Listen", "UnitFileState"); p["ActiveState"] != "active" || p["Listen"] != want || p["UnitFileState"] != "enabled" {
			t.Errorf("%s: %v, want active, enabled, listening on %s", unit, p, want)
		}
	}
	if q := sb.once(t, "127.0.0.1:8081"); q.Generation != 1 {
		t.Errorf("instance a: %+v", q)
	}
	if q := sb.once(t, "127.0.0.1:8082"); q.Generation != 1 {
		t.Errorf("instance b: %+v", q)
	}
	a := sb.waitServing(t, ctlA, 1, 2) // the example env file's SOCKD_WORKERS=2
	b := sb.waitServing(t, ctlB, 1, 3) // b.env says 3
	if a.PID != sb.mainPID(t, "sockd@a.service") || b.PID != sb.mainPID(t, "sockd@b.service") {
		t.Errorf("instances' sockd pids %d, %d are not their units' MainPIDs", a.PID, b.PID)
	}
	if users := strings.Fields(sb.MustRun(t, "ps", "-o", "user=", "-p", fmt.Sprintf("%d,%d", a.PID, b.PID))); !slices.Equal(users, []string{"sockd-a", "sockd-b"}) &&
		!slices.Equal(users, []string{"sockd-b", "sockd-a"}) {
		t.Errorf("instances run as %v, want the dynamic users sockd-a and sockd-b", users)
	}

	// Reload a: b is untouched.
	sb.MustRun(t, "systemctl", "reload", "sockd@a.service")
	if q := sb.once(t, "127.0.0.1:8081"); q.Generation != 2 {
		t.Errorf("instance a after its reload: generation %d, want 2", q.Generation)
	}
	b2 := sb.waitServing(t, ctlB, 1, 3)
	if b2.PID != b.PID || !slices.Equal(workerPIDs(b2), workerPIDs(b)) {
		t.Errorf("reloading a touched b: workers %v → %v", workerPIDs(b), workerPIDs(b2))
	}
	// Reload b twice: a stays at generation 2 with the same workers.
	a2 := sb.waitServing(t, ctlA, 2, 2)
	sb.MustRun(t, "systemctl", "reload", "sockd@b.service")
	sb.MustRun(t, "systemctl", "reload", "sockd@b.service")
	if q := sb.once(t, "127.0.0.1:8082"); q.Generation != 3 {
		t.Errorf("instance b after two reloads: generation %d, want 3", q.Generation)
	}
	if a3 := sb.waitServing(t, ctlA, 2, 2); !slices.Equal(workerPIDs(a3), workerPIDs(a2)) {
		t.Errorf("reloading b touched a: workers %v → %v", workerPIDs(a2), workerPIDs(a3))
	}

	// The plain sockd.service beside them: starting and stopping it leaves
	// the instances' control sockets (and so their reloads) alone.
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	sb.waitServing(t, "", 1, 2)
	sb.MustRun(t, "systemctl", "stop", "sockd.service")
	sb.MustRun(t, "systemctl", "reload", "sockd@a.service")
	sb.waitServing(t, ctlA, 3, 2)

	for unit, want := range map[string]int{"sockd@a.service": 2, "sockd@b.service": 2} {
		n := 0
		for _, e := range sb.journal(t, "-u", unit) {
			if e.Field("SOCKD_EVENT") == "reload_done" {
				n++
			}
		}
		if n != want {
			t.Errorf("journalctl -u %s: %d reload_done entries, want %d", unit, n, want)
		}
	}
}

// TestSockdInstallScript: scripts/install refuses without root, builds a
// static binary and rewrites the units for another prefix when staging into
// a directory, is idempotent on a live system, and scripts/uninstall
// removes it all (twice in a row).
func TestSockdInstallScript(t *testing.T) {
	bin := binaries(t)
	root := RepoRoot(t)

	// Staging with a build, on the host: touches nothing but the directory.
	stage := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "scripts", "install"), "--root", stage, "--prefix", "/opt/sockd", "--instance", "shop=127.0.0.1:8081")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/install --root: %v\n%s", err, out)
	}
	t.Logf("scripts/install --root %s --prefix /opt/sockd:\n%s", stage, out)
	built := filepath.Join(stage, "opt/sockd/bin/sockd")
	if v, err := exec.Command(built, "version").Output(); err != nil || !strings.HasPrefix(string(v), "sockd ") {
		t.Errorf("%s version: %q %v", built, v, err)
	}
	if static, err := isStatic(built); err != nil || !static {
		t.Errorf("%s is not a static binary (err %v)", built, err)
	}
	unit, _ := os.ReadFile(filepath.Join(stage, "etc/systemd/system/sockd.service"))
	if !strings.Contains(string(unit), "\nExecStart=/opt/sockd/bin/sockd run\n") || strings.Contains(string(unit), "/usr/local/bin/sockd") {
		t.Errorf("staged sockd.service does not run /opt/sockd/bin/sockd:\n%s", unit)
	}
	for _, f := range []string{"etc/systemd/system/sockets.target.wants/sockd.socket", "etc/systemd/system/sockets.target.wants/sockd@shop.socket",
		"etc/sockd/shop.env", "etc/systemd/system/sockd@shop.socket.d/50-listen.conf", "opt/sockd/share/sockd/example.env"} {
		if _, err := os.Lstat(filepath.Join(stage, f)); err != nil {
			t.Errorf("staged tree lacks %s: %v", f, err)
		}
	}
	cmd = exec.Command(filepath.Join(root, "scripts", "uninstall"), "--root", stage, "--prefix", "/opt/sockd", "--purge")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("scripts/uninstall --root: %v\n%s", err, out)
	}
	if files := filesUnder(t, stage); len(files) > 0 {
		t.Errorf("scripts/uninstall --purge left %v in the staged tree", files)
	}

	// Live, in the sandbox.
	sb := &sockdSandbox{Sandbox: Start(t, bin), bin: bin}
	install := []string{filepath.Join(root, "scripts", "install"), "--binary", filepath.Join(bin, "sockd")}
	out2, err := sb.Run(t, append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, install...)...)
	if err == nil || !strings.Contains(err.Error(), "must run as root") {
		t.Errorf("scripts/install as nobody: %v %s; want a refusal that says it must run as root", err, out2)
	}
	first := sb.MustRun(t, install...)
	second := sb.MustRun(t, install...)
	if strings.Contains(second, "installed ") || strings.Count(second, "unchanged ") != 6 {
		t.Errorf("second scripts/install changed files:\n%s", second)
	}
	t.Logf("first install:\n%ssecond install:\n%s", first, second)
	if p := sb.props(t, "sockd.socket", "UnitFileState", "ActiveState", "FragmentPath"); p["UnitFileState"] != "enabled" || p["ActiveState"] != "inactive" ||
		p["FragmentPath"] != "/usr/local/lib/systemd/system/sockd.socket" {
		t.Errorf("after install: sockd.socket %v; want enabled (not started) from /usr/local/lib/systemd/system", p)
	}
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	for i := 0; i < 2; i++ {
		sb.MustRun(t, filepath.Join(root, "scripts", "uninstall"))
	}
	if out := sb.MustRun(t, "systemctl", "list-units", "--all", "--plain", "--no-legend", "sockd*"); strings.TrimSpace(out) != "" {
		t.Errorf("units left after uninstall:\n%s", out)
	}
	if out, err := sb.Run(t, "ls", "/usr/local/bin/sockd", "/usr/local/lib/systemd/system/sockd.service", "/etc/systemd/system/sockets.target.wants/sockd.socket"); err == nil {
		t.Errorf("files left after uninstall: %s", out)
	}
}

func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return files
}

// isStatic: an ELF file without a program interpreter (PT_INTERP) and
// without dynamic section is statically linked.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return false, nil
		}
	}
	return true, nil
}

// niceGranted reports whether systemd gave sockd (pid) the RLIMIT_NICE
// that sockd.service's LimitNICE=+0 asks for (systemctl show says 20):
// this machine's root lacks CAP_SYS_RESOURCE, so systemd settles for the
// hard limit it has, 0.
func (sb *sockdSandbox) niceGranted(t *testing.T, pid int) bool {
	t.Helper()
	if got := sb.prop(t, "sockd.service", "LimitNICE"); got != "20" {
		t.Errorf("systemctl show -p LimitNICE sockd.service = %q, want 20 (the unit's LimitNICE=+0)", got)
	}
	limits := sb.MustRun(t, "cat", fmt.Sprintf("/proc/%d/limits", pid))
	for _, line := range strings.Split(limits, "\n") {
		if rest, ok := strings.CutPrefix(line, "Max nice priority"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				cur, _ := strconv.Atoi(f[0])
				if cur < 20 {
					t.Logf("this machine did not let systemd raise sockd's RLIMIT_NICE to 20 (%s): checking the fallback", strings.TrimSpace(line))
				}
				return cur >= 20
			}
		}
	}
	t.Fatalf("no nice limit in /proc/%d/limits:\n%s", pid, limits)
	return false
}

// checkLowStart checks, in unit's journal, that the workers of
// generations 2 to last (n each) started at a low CPU priority and
// were given their priority back and the first generation's did not;
// or, where sockd may not restore them (granted false), that sockd said
// so once, naming RLIMIT_NICE, and started none low.
func (sb *sockdSandbox) checkLowStart(t *testing.T, unit string, granted bool, last, n int) {
	t.Helper()
	// (The journal may lag a moment behind sockd.)
	WaitFor(t, 10*time.Second, func() (bool, string) {
		restored := map[string]int{} // generation → workers given their priority back
		unavailable := 0
		for _, e := range sb.journal(t, "-u", unit) {
			switch e.Field("SOCKD_EVENT") {
			case "low_start_unavailable":
				unavailable++
				if granted || !strings.Contains(e.Field("SOCKD_REASON"), "RLIMIT_NICE") {
					t.Fatalf("sockd could not start workers low: %s: %s%s", e.Field("MESSAGE"), e.Field("SOCKD_REASON"), e.Field("SOCKD_ERROR"))
				}
			case "worker_priority_restored":
				if k, _ := strconv.Atoi(e.Field("SOCKD_THREADS")); k > 0 && e.Field("SOCKD_ERROR") == "" {
					restored[e.Field("SOCKD_GENERATION")]++
				}
			}
		}
		if !granted {
			if len(restored) > 0 {
				t.Fatalf("workers were started low though sockd may not restore them: %v", restored)
			}
			return unavailable == 1, fmt.Sprintf("%d low_start_unavailable warnings, want exactly 1", unavailable)
		}
		if restored["1"] != 0 {
			t.Fatalf("generation 1 (nobody served beside it) started %d workers low", restored["1"])
		}
		for g := 2; g <= last; g++ {
			if k := restored[strconv.Itoa(g)]; k != n {
				return false, fmt.Sprintf("generation %d: %d workers started low and were given their priority back, want %d (all: %v)", g, k, n, restored)
			}
		}
		return true, ""
	})
}
