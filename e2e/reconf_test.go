package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/pool"
)

// Issue 22 under systemd: the configuration of a sockd@ instance is its
// env file (and drop-ins); `systemctl reload` applies an edit to the
// next generation, or refuses it and changes nothing. The shipped units
// run `sockd reload --wait --update-env` as ExecReload=, which hands the
// environment systemd has just re-read to the running sockd.

const (
	webUnit    = "sockd@web.service"
	webAddr    = "127.0.0.1:8081"
	webControl = "/run/sockd-web/sockd.sock"
	webEnv     = "/etc/sockd/web.env"
	webDropIn  = "/etc/systemd/system/sockd@web.service.d/override.conf" // where `systemctl edit sockd@web.service` writes
)

// The env files of the test: the first configuration, the edit, and an
// invalid edit (SOCKD_WORKERS is not a number).
const (
	webEnvV1 = `# sockd@web.service
SOCKD_WORKERS=2
SOCKD_COMMAND=/usr/local/bin/sockd demo-worker --delay 1ms
APP_COLOR=blue
FEATURE_OLD=1
DB_PASSWORD=hunter2
`
	webEnvV2 = `# sockd@web.service, edited
SOCKD_WORKERS=3
SOCKD_COMMAND=/usr/local/bin/sockd demo-worker --delay 2ms
APP_COLOR=green
DB_PASSWORD=swordfish
`
	webEnvBad = `# sockd@web.service, edited wrongly
SOCKD_WORKERS=lots
SOCKD_COMMAND=/usr/local/bin/sockd demo-worker --delay 3ms
APP_COLOR=red
DB_PASSWORD=swordfish
`
)

// TestSockdReconfigureTemplate: with the shipped template units, an
// edited /etc/sockd/NAME.env (worker count 2 → 3, an app variable
// changed, one removed, a secret changed, the command's arguments
// changed) is applied by `systemctl reload` under load: new workers with
// the new command line and environment (read in /proc), 0 failed
// requests, the same sockd (MainPID, NRestarts=0), the change listed in
// sockd status and in the journal's config_applied entry, secrets
// without their values. An invalid edit fails `systemctl reload` with one
// line, shown by systemctl status (STATUS=), and leaves the workers,
// their number and their environment alone. A `systemctl edit`-style
// drop-in with Environment=, after daemon-reload, is applied the same way.
func TestSockdReconfigureTemplate(t *testing.T) {
	sb := installed(t, map[string]string{webEnv: webEnvV1}, "--instance", "web="+webAddr, "--now")
	first := sb.once(t, webAddr) // starts sockd@web.service
	st := sb.waitServing(t, webControl, 1, 2)
	mainPID := st.PID
	if first.Generation != 1 || mainPID != sb.mainPID(t, webUnit) {
		t.Fatalf("first answer %+v; sockd pid %d, MainPID %d", first, mainPID, sb.mainPID(t, webUnit))
	}
	gen1 := workerPIDs(st)
	sb.checkWorkers(t, gen1, "demo-worker --delay 1ms", map[string]string{"APP_COLOR": "blue", "FEATURE_OLD": "1", "DB_PASSWORD": "hunter2"})
	rev1 := sb.fullStatus(t, webControl).Config.Revision

	l := sb.startLoad(t, "-addr", webAddr, "-keepalive", "2", "-fresh", "2", "-sporadic", "2", "-pause", "1ms")
	// Should the test fail with the load running, end the load before
	// startLoad's cleanup waits for it (cleanups run last in, first out):
	// that waits for the loadclient inside the sandbox to close its output.
	t.Cleanup(func() { l.stdin.Close() })

	// The edit: systemctl reload applies it.
	sb.WriteFile(t, webEnv, []byte(webEnvV2))
	begin := time.Now()
	if out, err := sb.Run(t, "systemctl", "reload", webUnit); err != nil {
		l.stop(t)
		t.Fatalf("systemctl reload after the edit: %v %s\n%s", err, out, sb.MustRun(t, "journalctl", "-u", webUnit, "--no-pager", "-n", "40"))
	}
	t.Logf("systemctl reload (2 → 3 workers, new command line and variables) took %v", time.Since(begin).Round(time.Millisecond))
	if q := sb.once(t, webAddr); q.Generation != 2 {
		t.Errorf("after the reload returned, a new connection was answered by generation %d (pid %d), want 2", q.Generation, q.PID)
	}
	s2 := sb.fullStatus(t, webControl)
	gen2 := generationPIDs(s2.Status) // the old workers may still be draining
	if s2.Generation != 2 || s2.Size != 3 || s2.Ready != 3 || len(gen2) != 3 || s2.PID != mainPID {
		t.Fatalf("after the reload: generation %d, %d/%d ready, workers %v, sockd pid %d; want generation 2, 3/3, sockd %d",
			s2.Generation, s2.Ready, s2.Size, gen2, s2.PID, mainPID)
	}
	for _, p := range gen2 {
		if slices.Contains(gen1, p) {
			t.Errorf("worker %d of generation 1 still serves after the reload", p)
		}
	}
	sb.checkWorkers(t, gen2, "demo-worker --delay 2ms", map[string]string{"APP_COLOR": "green", "FEATURE_OLD": "", "DB_PASSWORD": "swordfish"})
	wantChanges := []string{
		`--workers "2" → "3"`,
		`command "/usr/local/bin/sockd demo-worker --delay 1ms" → "/usr/local/bin/sockd demo-worker --delay 2ms"`,
		`APP_COLOR "blue" → "green"`,
		`DB_PASSWORD changed`,
		`FEATURE_OLD "1" removed`,
	}
	c2 := s2.Config
	if !slices.Equal(c2.Changes, wantChanges) || c2.Revision == rev1 || c2.Revision != s2.Revision || c2.Refused != "" ||
		c2.Command != "/usr/local/bin/sockd demo-worker --delay 2ms" || c2.Settings["workers"] != "3" {
		t.Errorf("sockd status's config after the reload: %+v (pool revision %s, before %s); want changes %q", c2, s2.Revision, rev1, wantChanges)
	}
	sb.checkUnit(t, mainPID, "success", "3/3 workers ready, generation 2, 0 restarts")
	applied := sb.waitEvents(t, "config_applied", 1)
	var logged []string
	if err := json.Unmarshal([]byte(applied[0].Field("SOCKD_CHANGES")), &logged); err != nil || !slices.Equal(logged, wantChanges) ||
		applied[0].Field("SOCKD_REVISION") != c2.Revision || applied[0].Field("SOCKD_FROM_REVISION") != rev1 || applied[0].Field("PRIORITY") != "6" {
		t.Errorf("journal: config_applied entry %v (SOCKD_CHANGES %q: %v); want changes %q, revision %s from %s, PRIORITY=6",
			applied[0], applied[0].Field("SOCKD_CHANGES"), err, wantChanges, c2.Revision, rev1)
	}
	sb.waitGone(t, gen1)

	// An invalid edit: the reload fails with one line and nothing changes.
	sb.WriteFile(t, webEnv, []byte(webEnvBad))
	out, err := sb.Run(t, "systemctl", "reload", webUnit)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(err.Error(), "Job for "+webUnit+" failed") {
		t.Fatalf("systemctl reload after an invalid edit: %v %q; want a failed job, non-zero exit", err, out)
	}
	const why = `SOCKD_WORKERS="lots": want 1 to 1024, max, or max-N`
	sb.checkUnit(t, mainPID, "exit-code", "3/3 workers ready, generation 2, 0 restarts; last reload failed: invalid configuration: "+why)
	status, _ := sb.Run(t, "systemctl", "status", "--no-pager", "-l", "--lines=12", webUnit)
	t.Logf("systemctl status after the invalid edit:\n%s", status)
	for _, want := range []string{
		"ExecReload=/usr/local/bin/sockd reload --wait --update-env (code=exited, status=1/FAILURE)",
		`Status: "3/3 workers ready, generation 2, 0 restarts; last reload failed: invalid configuration: ` + why + `"`,
		"sockd: " + why, // ExecReload='s one line
		"Reload failed for " + webUnit,
	} {
		if !strings.Contains(status, want) {
			t.Errorf("systemctl status lacks %q", want)
		}
	}
	s3 := sb.fullStatus(t, webControl)
	if s3.Generation != 2 || s3.Size != 3 || s3.Ready != 3 || !slices.Equal(workerPIDs(s3.Status), gen2) || s3.Config.Revision != c2.Revision ||
		!slices.Equal(s3.Config.Changes, wantChanges) || s3.Config.Refused != why || s3.LastReload == nil || s3.LastReload.OK {
		t.Errorf("sockd status after the invalid edit: generation %d, %d/%d ready, workers %v (want %v), config %+v, last reload %+v",
			s3.Generation, s3.Ready, s3.Size, workerPIDs(s3.Status), gen2, s3.Config, s3.LastReload)
	}
	sb.checkWorkers(t, gen2, "demo-worker --delay 2ms", map[string]string{"APP_COLOR": "green", "FEATURE_OLD": "", "DB_PASSWORD": "swordfish"})
	refused := sb.waitEvents(t, "config_refused", 1)
	if e := refused[0]; e.Field("PRIORITY") != "3" || !strings.Contains(e.Field("SOCKD_ERROR"), why) {
		t.Errorf("journal: config_refused entry %v; want PRIORITY=3 and the reason", e)
	}
	sb.checkOneLine(t, why)

	// The edit fixed, plus a drop-in as `systemctl edit` writes it; after
	// daemon-reload, systemctl reload applies both.
	sb.WriteFile(t, webEnv, []byte(webEnvV2))
	sb.WriteFile(t, webDropIn, []byte("[Service]\nEnvironment=APP_REGION=eu-west SOCKD_STOP_TIMEOUT=20s\n"))
	sb.MustRun(t, "systemctl", "daemon-reload")
	sb.MustRun(t, "systemctl", "reload", webUnit)
	s4 := sb.fullStatus(t, webControl)
	gen3 := generationPIDs(s4.Status)
	wantDropIn := []string{`--stop-timeout "30s" → "20s"`, `APP_REGION "eu-west" added`}
	if s4.Generation != 3 || s4.Ready != 3 || len(gen3) != 3 || !slices.Equal(s4.Config.Changes, wantDropIn) || s4.Config.Refused != "" ||
		s4.Config.Settings["stop-timeout"] != "20s" || s4.Config.Revision != s4.Revision {
		t.Errorf("after the drop-in and systemctl reload: generation %d, %d ready, workers %v, config %+v; want generation 3, 3 ready, changes %q",
			s4.Generation, s4.Ready, gen3, s4.Config, wantDropIn)
	}
	sb.checkWorkers(t, gen3, "demo-worker --delay 2ms", map[string]string{"APP_COLOR": "green", "APP_REGION": "eu-west", "DB_PASSWORD": "swordfish"})
	sb.checkUnit(t, mainPID, "success", "3/3 workers ready, generation 3, 0 restarts")
	if status := sb.MustRun(t, "systemctl", "status", "--no-pager", "--lines=0", webUnit); !strings.Contains(status, "override.conf") {
		t.Errorf("systemctl status does not list the drop-in:\n%s", status)
	}
	sb.waitGone(t, gen2)

	r := l.stop(t)
	t.Logf("load: %s", summary(r))
	if r.Summary.Failed > 0 {
		t.Errorf("%d of %d requests failed across the reloads:\n%s", r.Summary.Failed, r.Summary.Requests, describeFailures(r, 20))
	}
	for g := int32(1); g <= 3; g++ {
		if r.Summary.Gens[g].Requests == 0 {
			t.Errorf("generation %d answered no request of the load", g)
		}
	}
	sb.checkNoSecrets(t, "hunter2", "swordfish")
}

// generationPIDs lists the workers of the serving generation (Workers
// also lists the old ones while they drain).
func generationPIDs(s pool.Status) []int {
	var pids []int
	for _, w := range s.Workers {
		if w.Generation == s.Generation {
			pids = append(pids, w.PID)
		}
	}
	slices.Sort(pids)
	return pids
}

// fullStatus is `sockd status --json` with the configuration in force.
func (sb *sockdSandbox) fullStatus(t *testing.T, control string) daemon.Status {
	t.Helper()
	out := sb.MustRun(t, "/usr/local/bin/sockd", "status", "--json", "--timeout", "5s", "--control", control)
	var s daemon.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("sockd status --json: %v in %q", err, out)
	}
	return s
}

// environ reads a process's environment inside the sandbox.
func (sb *sockdSandbox) environ(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := sb.MustRun(t, "cat", fmt.Sprintf("/proc/%d/environ", pid))
	m := map[string]string{}
	for _, kv := range strings.Split(out, "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// checkWorkers checks each worker's arguments (after the program) and
// variables in /proc; "" in vars means the variable must be absent.
func (sb *sockdSandbox) checkWorkers(t *testing.T, pids []int, args string, vars map[string]string) {
	t.Helper()
	for pid, argv := range sb.cmdlines(t, pids) {
		if got := strings.Join(argv[1:], " "); argv[0] != "/usr/local/bin/sockd" || got != args {
			t.Errorf("worker %d runs %q, want /usr/local/bin/sockd %s", pid, argv, args)
		}
		env := sb.environ(t, pid)
		for k, want := range vars {
			if got, ok := env[k]; got != want || ok != (want != "") {
				t.Errorf("worker %d: %s=%q (set: %v), want %q", pid, k, got, ok, want)
			}
		}
	}
}

// checkUnit checks that the unit runs on with the same sockd and was not
// restarted, and how its last reload went.
func (sb *sockdSandbox) checkUnit(t *testing.T, mainPID int, reloadResult, statusText string) {
	t.Helper()
	p := sb.props(t, webUnit, "MainPID", "NRestarts", "ActiveState", "SubState", "ReloadResult", "StatusText")
	if p["MainPID"] != strconv.Itoa(mainPID) || p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" ||
		p["ReloadResult"] != reloadResult || p["StatusText"] != statusText {
		t.Errorf("systemctl show %s: %v; want MainPID=%d, NRestarts=0, active/running, ReloadResult=%s, StatusText=%q",
			webUnit, p, mainPID, reloadResult, statusText)
	}
}

// waitEvents waits until the unit's journal has n entries of event, and
// returns them.
func (sb *sockdSandbox) waitEvents(t *testing.T, event string, n int) []JournalEntry {
	t.Helper()
	var got []JournalEntry
	WaitFor(t, 10*time.Second, func() (bool, string) {
		got = sb.journal(t, "-u", webUnit, "SOCKD_EVENT="+event)
		return len(got) == n, fmt.Sprintf("%d %s entries, want %d", len(got), event, n)
	})
	return got
}

// waitGone waits until none of pids runs (gone or reaped: no zombie).
func (sb *sockdSandbox) waitGone(t *testing.T, pids []int) {
	t.Helper()
	procs := sb.procs(t, pids...)
	WaitFor(t, 20*time.Second, func() (bool, string) {
		alive := sb.running(t, procs)
		return len(alive) == 0, fmt.Sprintf("still running: %+v", alive)
	})
}

// checkOneLine: the refused reload's client (ExecReload=) wrote exactly
// one line, the reason.
func (sb *sockdSandbox) checkOneLine(t *testing.T, why string) {
	t.Helper()
	var pid string
	for _, e := range sb.journal(t, "-u", webUnit, "_TRANSPORT=stdout") {
		if strings.Contains(e.Field("MESSAGE"), why) {
			pid = e.Field("_PID")
		}
	}
	var lines []string
	for _, e := range sb.journal(t, "-u", webUnit, "_TRANSPORT=stdout", "_PID="+pid) {
		lines = append(lines, e.Field("MESSAGE"))
	}
	if pid == "" || !slices.Equal(lines, []string{"sockd: " + why}) {
		t.Errorf("the refused reload's output (pid %q): %q; want the one line %q", pid, lines, "sockd: "+why)
	}
}

// checkNoSecrets: no journal entry (of any unit) shows a secret's value.
func (sb *sockdSandbox) checkNoSecrets(t *testing.T, values ...string) {
	t.Helper()
	all := sb.MustRun(t, "journalctl", "-o", "json", "--no-pager")
	for _, v := range values {
		if strings.Contains(all, v) {
			t.Errorf("the journal shows the secret value %q", v)
		}
	}
}
