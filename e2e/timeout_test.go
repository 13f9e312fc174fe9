package e2e

import (
	"strings"
	"testing"
	"time"
)

// A start and a rolling reload that take longer than the unit's
// TimeoutStartSec= (3s here) are not ended by systemd: sockd extends the
// timeout while it works (EXTEND_TIMEOUT_USEC=), and bounds the work
// itself. systemctl reports sockd's outcome, not a timeout.
func TestStartAndReloadOutlastTimeoutStartSec(t *testing.T) {
	sb := installed(t, nil)
	began := time.Now()
	sb.MustRun(t, "systemd-run", "--unit=slow", "-p", "Type=notify", "-p", "TimeoutStartSec=3s", "-p", "RuntimeDirectory=slow",
		"-p", "ExecReload=/usr/local/bin/sockd reload --wait",
		"/usr/local/bin/sockd", "run", "--workers", "2", "--listen", "none", "--ready", "after:5s",
		"--reload-batch", "1", "--reload-soak", "2s", "--", "/bin/sleep", "1000")
	p := sb.props(t, "slow.service", "ActiveState", "SubState", "NRestarts", "Result")
	if p["ActiveState"] != "active" || p["NRestarts"] != "0" || p["Result"] != "success" {
		t.Fatalf("after a 5-s start with TimeoutStartSec=3s: %v", p)
	}
	if took := time.Since(began); took < 5*time.Second {
		t.Fatalf("systemd-run returned after %v, before the workers were ready", took)
	}
	began = time.Now()
	if out, err := sb.Run(t, "systemctl", "reload", "slow.service"); err != nil {
		t.Fatalf("systemctl reload: %v\n%s\n%s", err, out, sb.MustRun(t, "journalctl", "-u", "slow.service", "-o", "cat"))
	}
	took := time.Since(began)
	p = sb.props(t, "slow.service", "ActiveState", "ReloadResult", "StatusText")
	if p["ActiveState"] != "active" || p["ReloadResult"] != "success" || !strings.Contains(p["StatusText"], "2/2 workers ready, generation 2") {
		t.Fatalf("after a rolling reload of %v: %v", took, p)
	}
	if took < 10*time.Second {
		t.Fatalf("the reload took %v: shorter than the 3s timeout's point", took)
	}
	t.Logf("start over 5s and a reload of %v, both past TimeoutStartSec=3s", took.Round(100*time.Millisecond))
}
