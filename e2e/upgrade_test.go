package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSockdUpgradeUnderSystemd: `sockd upgrade --wait` under the shipped
// unit (NotifyAccess=main, WatchdogSec= shortened to 2s), under load.
// systemd takes the new sockd as the main pid, the new sockd keeps the
// watchdog fed (no restart for three watchdog periods), reload and stop
// work on it as on any sockd, and not one request fails.
func TestSockdUpgradeUnderSystemd(t *testing.T) {
	sb := installed(t, e2eDropIn("WatchdogSec=2s\n"))
	sb.MustRun(t, "systemctl", "start", "sockd.socket")
	sb.once(t, addr)
	st := sb.waitServing(t, "", 1, 3)
	l := sb.startLoad(t, "-addr", addr, "-keepalive", "3", "-fresh", "3", "-sporadic", "3", "-pause", "1ms", "-idle-max", "300ms")
	if out, err := sb.Run(t, "/usr/local/bin/sockd", "upgrade", "--wait"); err != nil {
		l.stop(t)
		t.Fatalf("sockd upgrade --wait: %v %s\n%s", err, out, sb.MustRun(t, "journalctl", "-u", "sockd.service", "--no-pager", "-n", "40"))
	}
	after := sb.waitServing(t, "", 2, 3)
	if after.PID == st.PID {
		t.Fatalf("the same sockd (pid %d) serves after the upgrade", st.PID)
	}
	// Once the old sockd is gone the new one makes itself systemd's child:
	// for a moment a helper of its own is the main pid
	// (handoff.AdoptMainPID). systemd is watched once that is over.
	WaitFor(t, 10*time.Second, func() (bool, string) {
		for _, e := range sb.journal(t, "-u", "sockd.service") {
			if e.Field("SOCKD_EVENT") == "upgrade_mainpid" {
				if err := e.Field("SOCKD_ERROR"); err != "" {
					t.Fatalf("the new sockd could not become systemd's child: %s", err)
				}
				return true, ""
			}
		}
		return false, "the new sockd did not log that it became systemd's child (upgrade_mainpid)"
	})
	if main := sb.mainPID(t, "sockd.service"); main != after.PID {
		t.Fatalf("systemd's MainPID is %d after the upgrade, the new sockd is %d", main, after.PID)
	}
	// Three watchdog periods: the new sockd pings, systemd does not
	// restart it.
	pings := map[string]bool{}
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		p := sb.props(t, "sockd.service", "MainPID", "NRestarts", "ActiveState", "WatchdogTimestampMonotonic")
		if p["MainPID"] != strconv.Itoa(after.PID) || p["NRestarts"] != "0" || p["ActiveState"] != "active" {
			l.stop(t)
			t.Fatalf("after the upgrade systemd says %v; want MainPID %d, no restart, active", p, after.PID)
		}
		pings[p["WatchdogTimestampMonotonic"]] = true
		<-time.After(200 * time.Millisecond) // pacing the polls of a 6 s observation, not a synchronisation
	}
	if len(pings) < 4 {
		t.Errorf("only %d distinct watchdog timestamps in 6s after the upgrade (WatchdogSec=2s)", len(pings))
	}
	if alive := sb.running(t, sb.procs(t, append([]int{st.PID}, workerPIDs(st)...)...)); len(alive) > 0 {
		t.Errorf("old sockd or its workers still running after the upgrade: %+v", alive)
	}
	if out, err := sb.Run(t, "systemctl", "reload", "sockd.service"); err != nil {
		t.Fatalf("systemctl reload after the upgrade: %v %s", err, out)
	}
	if q := sb.once(t, addr); q.Generation != 3 {
		t.Errorf("after upgrade + reload, answered by generation %d, want 3", q.Generation)
	}
	r := l.stop(t)
	t.Logf("load across the upgrade and a reload: %s", summary(r))
	if r.Summary.Failed > 0 {
		t.Errorf("%d of %d requests failed:\n%s", r.Summary.Failed, r.Summary.Requests, describeFailures(r, 20))
	}
	var refused []string
	for _, e := range sb.journal(t, "-u", "sockd.service", "_PID=1") {
		if m := e.Field("MESSAGE"); strings.Contains(m, "reception only permitted for main PID") {
			refused = append(refused, m)
		}
	}
	if len(refused) > 0 {
		t.Errorf("systemd refused notifications around the upgrade:\n%s", strings.Join(refused, "\n"))
	}
	final := sb.waitServing(t, "", 3, 3)
	sb.MustRun(t, "systemctl", "stop", "sockd.service")
	p := sb.props(t, "sockd.service", "ActiveState", "Result", "ExecMainStatus")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Errorf("after stop: %v\n%s", p, sb.MustRun(t, "journalctl", "-u", "sockd.service", "--no-pager", "-n", "60", "-o", "short-precise"))
	}
	if alive := sb.running(t, sb.procs(t, append([]int{final.PID}, workerPIDs(final)...)...)); len(alive) > 0 {
		t.Errorf("processes left after stop: %+v", alive)
	}
}
