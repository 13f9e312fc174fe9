package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const (
	pkgAddr  = "127.0.0.1:8080" // sockd.socket
	shopAddr = "127.0.0.1:8081" // sockd@shop.socket, by a drop-in
	// The instance's control socket, set by a file its env file names
	// (SOCKD_ENV_FILE): neither on its command line nor in its
	// environment, where the postinst cannot read it; it finds it by
	// asking the process (sockd upgrade --pid).
	shopControl     = "/run/sockd-shop/admin.sock"
	handmadeControl = "/run/handmade.sock"
	// The workers' command, with arguments: for sockd.service from a quoted
	// Environment= (as units/sockd.service and docs/systemd.md show it), for
	// the instance from its EnvironmentFile.
	workerCommand = "/usr/bin/sockd demo-worker --config /etc/sockd/hello.conf"
)

// TestDebianPackage installs the .deb in the systemd sandbox and lives
// through what a machine does with it: an install that policy-rc.d forbids
// to start anything, sockd.socket and an instance enabled by the admin,
// serving, a reload, an upgrade under load (every running sockd hands over
// to the new binary: 0 failed requests, no restart), an upgrade policy-rc.d
// forbids to touch the services, an upgrade to a broken binary (the old
// sockd keeps serving, dpkg succeeds), and a purge that leaves no process
// and no file.
func TestDebianPackage(t *testing.T) {
	bin := binaries(t)
	needTools(t, "dpkg-deb")
	arch := runtime.GOARCH
	pkgs := t.TempDir()
	broken := filepath.Join(pkgs, "brokensockd")
	build := exec.Command("go", "build", "-o", broken, "-ldflags", "-X main.real="+filepath.Join(bin, "sockd"), "./e2e/internal/brokensockd")
	build.Dir, build.Env = RepoRoot(t), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build brokensockd: %v\n%s", err, out)
	}
	deb := []string{"--arch", arch, "--format", "deb", "--no-lintian"}
	buildPackages(t, pkgs, append([]string{"--version", "0.1.0"}, deb...), append([]string{"--version", "0.1.1"}, deb...),
		append([]string{"--version", "0.1.2", "--binary", broken}, deb...))
	v010, v011, v012 := filepath.Join(pkgs, debName("0.1.0", arch)), filepath.Join(pkgs, debName("0.1.1", arch)), filepath.Join(pkgs, debName("0.1.2", arch))

	sb := &sockdSandbox{Sandbox: Start(t, bin, pkgs), bin: bin}
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(t0).Seconds(), what) }
	// man-db's trigger rebuilds its index after every dpkg run that touches
	// a man page (seconds); without this file it does nothing.
	sb.MustRun(t, "rm", "-f", "/var/lib/man-db/auto-update")
	const deny = "#!/bin/sh\n# policy-rc.d(8): no service may be touched\nexit 101\n"
	policy := func(on bool) { // the host's image may have one already: make it what the step needs
		if on {
			sb.WriteFile(t, "/usr/sbin/policy-rc.d", []byte(deny))
			sb.MustRun(t, "chmod", "755", "/usr/sbin/policy-rc.d")
		} else {
			sb.MustRun(t, "rm", "-f", "/usr/sbin/policy-rc.d")
		}
	}
	policy(false)
	phase("sandbox ready")
	before := sb.fileTree(t)
	phase("file tree listed")

	// Install while policy-rc.d forbids starting services: nothing starts,
	// nothing is enabled (it is not on any install, by design).
	policy(true)
	if out, err := sb.dpkg(t, "-i", v010); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", v010, err, out)
	}
	policy(false)
	phase("installed 0.1.0 (policy-rc.d denying)")
	for _, u := range []string{"sockd.socket", "sockd.service"} {
		if p := sb.props(t, u, "ActiveState", "UnitFileState", "LoadState"); p["ActiveState"] != "inactive" || p["UnitFileState"] != "disabled" || p["LoadState"] != "loaded" {
			t.Errorf("after install, %s: %v; want loaded, inactive, disabled", u, p)
		}
	}
	if procs := sb.sockdProcs(t); len(procs) > 0 {
		t.Errorf("sockd processes after install: %q", procs)
	}
	// The units as installed pass systemd's own check (a SOCKD_COMMAND
	// with spaces in an unquoted Environment= would not: "Invalid
	// environment assignment").
	if out, err := sb.Run(t, "sh", "-c", "systemd-analyze verify sockd.socket sockd.service sockd@verify.socket sockd@verify.service 2>&1"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
	}

	// The admin's configuration: sockd.service with 3 workers and a worker
	// command with arguments (a drop-in), an instance "shop" on its own port.
	sb.WriteFile(t, "/etc/sockd/hello.conf", []byte("greeting = hello\n"))
	sb.WriteFile(t, "/etc/systemd/system/sockd.service.d/50-admin.conf", []byte("[Service]\nEnvironment=SOCKD_WORKERS=3\nEnvironment=\"SOCKD_COMMAND="+workerCommand+"\"\n"))
	sb.WriteFile(t, "/etc/sockd/shop.env", []byte("SOCKD_WORKERS=2\nSOCKD_COMMAND="+workerCommand+"\nSOCKD_ENV_FILE=/etc/sockd/shop-more.env\n"))
	sb.WriteFile(t, "/etc/sockd/shop-more.env", []byte("SOCKD_CONTROL="+shopControl+"\n"))
	sb.WriteFile(t, "/etc/systemd/system/sockd@shop.socket.d/50-listen.conf", []byte("[Socket]\nListenStream=\nListenStream="+shopAddr+"\n"))
	sb.MustRun(t, "systemctl", "daemon-reload")
	sb.MustRun(t, "systemctl", "enable", "--now", "sockd.socket", "sockd@shop.socket")
	sb.once(t, pkgAddr) // the first connections start the services
	sb.once(t, shopAddr)
	st := sb.pkgServing(t, "", 1, 3)
	shop := sb.pkgServing(t, shopControl, 1, 2)
	for pid, args := range sb.cmdlines(t, append(workerPIDs(st), workerPIDs(shop)...)) {
		if strings.Join(args, " ") != workerCommand {
			t.Errorf("worker %d runs %q, want %q: SOCKD_COMMAND lost its arguments", pid, args, workerCommand)
		}
	}
	for _, u := range []string{"sockd.service", "sockd@shop.service"} {
		if m := sb.mainProc(t, u); m.Exe != "/usr/bin/sockd" || m.Version != "sockd 0.1.0" {
			t.Fatalf("%s runs %+v, want /usr/bin/sockd, version 0.1.0", u, m)
		}
	}
	sb.MustRun(t, "systemctl", "reload", "sockd.service")
	sb.pkgServing(t, "", 2, 3)
	phase("serving, reloaded")

	// A sockd of the admin's own unit, not named sockd (here a transient
	// one, outside systemd's notify protocol: it keeps its pid as the new
	// sockd's keeper).
	sb.MustRun(t, "systemd-run", "--unit=handmade", "--property=KillMode=mixed", "/usr/bin/sockd", "run", "--workers", "1",
		"--listen", "tcp://127.0.0.1:8090", "--control", handmadeControl)
	hm := sb.pkgServing(t, handmadeControl, 1, 1)

	// The upgrade, under load on both sockds.
	out := sb.handOverUnderLoad(t, v011, "0.1.1")
	phase("upgraded under load")
	if want := fmt.Sprintf("sockd: handmade.service (pid %d) handed over to sockd 0.1.1", hm.PID); !strings.Contains(out, want) {
		t.Errorf("dpkg's output does not say %q", want)
	}
	if st := sb.pkgServing(t, handmadeControl, 2, 1); st.PID == hm.PID || sb.MustRun(t, "readlink", fmt.Sprintf("/proc/%d/exe", st.PID)) != "/usr/bin/sockd\n" {
		t.Errorf("handmade.service after the upgrade: sockd pid %d (was %d), want a new one running /usr/bin/sockd", st.PID, hm.PID)
	}
	sb.MustRun(t, "systemctl", "stop", "handmade.service")
	WaitFor(t, 20*time.Second, func() (bool, string) {
		procs := sb.sockdProcs(t)
		n := 0
		for _, p := range procs {
			n += strings.Count(p, handmadeControl)
		}
		return n == 0, fmt.Sprintf("handmade's sockd still running: %q", procs)
	})

	// policy-rc.d forbids touching services: the package is upgraded (here
	// reinstalled), the running sockds are left as they are.
	policy(true)
	if out, err := sb.dpkg(t, "-i", v011); err != nil || !strings.Contains(out, "policy-rc.d forbids touching sockd.service") {
		t.Errorf("dpkg -i with policy-rc.d denying: %v\n%s", err, out)
	}
	policy(false)
	for _, u := range []string{"sockd.service", "sockd@shop.service"} {
		if m := sb.mainProc(t, u); m.Exe != "/usr/bin/sockd (deleted)" || m.Version != "sockd 0.1.1" {
			t.Errorf("%s after an upgrade policy-rc.d forbade: %+v, want the previous process, still running its replaced binary", u, m)
		}
	}

	phase("reinstalled (policy-rc.d denying)")

	// A broken new binary: the hand-off fails, the old sockd keeps serving,
	// and dpkg succeeds.
	keep := sb.mainProc(t, "sockd.service")
	l1 := sb.startLoad(t, "-addr", pkgAddr, "-keepalive", "2", "-fresh", "2", "-sporadic", "2", "-pause", "1ms", "-idle-max", "200ms")
	out, err := sb.dpkg(t, "-i", v012)
	t.Logf("dpkg -i %s:\n%s", filepath.Base(v012), strings.TrimSpace(out))
	if err != nil {
		t.Errorf("dpkg -i of the broken package failed: %v", err)
	}
	if !strings.Contains(out, "sockd.service (pid ") || !strings.Contains(out, "did not hand over to the new sockd, the previous one keeps serving") {
		t.Errorf("dpkg's output does not report the failed hand-off of sockd.service")
	}
	if st := sb.MustRun(t, "dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "sockd"); strings.TrimSpace(st) != "0.1.2-1 ii" {
		t.Errorf("dpkg-query says %q, want 0.1.2-1 installed and configured", st)
	}
	if m := sb.mainProc(t, "sockd.service"); m.PID != keep.PID || m.Version != "sockd 0.1.1" {
		t.Errorf("after a failed hand-off sockd.service runs %+v, want the previous sockd %+v", m, keep)
	}
	if n := sb.prop(t, "sockd.service", "NRestarts"); n != "0" {
		t.Errorf("NRestarts=%s after a failed hand-off", n)
	}
	if !hasEvent(sb.journal(t, "-u", "sockd.service"), "upgrade_failed") {
		t.Errorf("the old sockd did not log the failed upgrade (upgrade_failed)")
	}
	sb.once(t, pkgAddr)
	if r := l1.stop(t); r.Summary.Failed > 0 {
		t.Errorf("across the failed hand-off %d of %d requests failed:\n%s", r.Summary.Failed, r.Summary.Requests, describeFailures(r, 20))
	}

	if !hasPostinstWarning(sb.journal(t, "-t", "sockd.postinst"), "sockd.service (pid ") {
		t.Errorf("the postinst did not log the failed hand-off to the journal")
	}
	phase("broken upgrade done")

	// A downgrade (over the broken 0.1.2, with 0.1.1 running) hands over
	// as an upgrade does.
	sb.handOverUnderLoad(t, v010, "0.1.0")
	phase("downgraded under load")

	// Removed, then installed again: what the admin enabled listens again
	// (the prerm stopped it), and serves on the first connection.
	if out, err := sb.dpkg(t, "-r", "sockd"); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, out)
	}
	for _, u := range []string{"sockd.socket", "sockd@shop.socket"} {
		if p := sb.prop(t, u, "ActiveState"); p != "inactive" {
			t.Errorf("after dpkg -r, %s is %s", u, p)
		}
	}
	if out, err := sb.dpkg(t, "-i", v010); err != nil {
		t.Fatalf("dpkg -i after a remove: %v\n%s", err, out)
	}
	for _, u := range []string{"sockd.socket", "sockd@shop.socket"} {
		if p := sb.prop(t, u, "ActiveState"); p != "active" {
			t.Errorf("installed again after a remove, the enabled %s is %s, want active", u, p)
		}
	}
	sb.once(t, pkgAddr)
	sb.once(t, shopAddr)
	phase("removed and installed again")

	// scripts/install beside the package takes precedence (/usr/local);
	// scripts/uninstall, which the postinst's note points to, then gives
	// the services back to the package's binary: nothing stopped,
	// disabled or unconfigured (the admin's drop-ins stay: checked below).
	root := RepoRoot(t)
	sb.MustRun(t, filepath.Join(root, "scripts", "install"), "--binary", filepath.Join(sb.bin, "sockd"), "--no-enable")
	sb.MustRun(t, "systemctl", "restart", "sockd.service", "sockd@shop.service")
	for _, u := range []string{"sockd.service", "sockd@shop.service"} {
		if m := sb.mainProc(t, u); m.Exe != "/usr/local/bin/sockd" {
			t.Errorf("with scripts/install beside the package %s runs %+v, want /usr/local/bin/sockd", u, m)
		}
	}
	out = sb.MustRun(t, filepath.Join(root, "scripts", "uninstall"))
	t.Logf("scripts/uninstall beside the package:\n%s", strings.TrimSpace(out))
	for _, u := range []string{"sockd.service", "sockd@shop.service"} {
		if m := sb.mainProc(t, u); m.Exe != "/usr/bin/sockd" {
			t.Errorf("after scripts/uninstall %s runs %+v, want the package's /usr/bin/sockd", u, m)
		}
	}
	for _, u := range []string{"sockd.socket", "sockd@shop.socket"} {
		if p := sb.props(t, u, "ActiveState", "UnitFileState"); p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
			t.Errorf("after scripts/uninstall beside the package %s: %v, want active and enabled", u, p)
		}
	}
	sb.once(t, pkgAddr)
	sb.once(t, shopAddr)
	phase("scripts/install and scripts/uninstall beside the package")

	// Purge: every sockd stops, the package's files go, the admin's stay.
	out, err = sb.dpkg(t, "--purge", "sockd")
	t.Logf("dpkg --purge sockd:\n%s", strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("dpkg --purge: %v", err)
	}
	if procs := sb.sockdProcs(t); len(procs) > 0 {
		t.Errorf("sockd processes after the purge: %q", procs)
	}
	for _, u := range []string{"sockd.socket", "sockd.service", "sockd@shop.socket", "sockd@shop.service"} {
		if p := sb.props(t, u, "ActiveState", "LoadState"); p["ActiveState"] != "inactive" || p["LoadState"] != "not-found" {
			t.Errorf("after the purge %s: %v", u, p)
		}
	}
	for _, u := range pkgUnits { // stopped cleanly: sockd drained and exited, systemd killed nothing
		entries := sb.journal(t, "-u", u.unit)
		if last := entries[len(entries)-1]; !hasEvent(entries, "sockd_exit") || !strings.Contains(last.Field("MESSAGE"), "Stopped") {
			t.Errorf("%s: no clean stop in its journal (last: %q)", u.unit, last.Field("MESSAGE"))
		}
		for _, e := range entries {
			if m := e.Field("MESSAGE"); e.Field("_PID") == "1" && (strings.Contains(m, "Killing process") || strings.Contains(m, "Failed with result")) {
				t.Errorf("%s: systemd says %q", u.unit, m)
			}
		}
	}
	if out, _ := sb.Run(t, "sh", "-c", "ls /var/lib/dpkg/info/sockd.* 2>/dev/null; dpkg-query -W -f '${db:Status-Abbrev}' sockd 2>/dev/null; true"); strings.TrimSpace(out) != "" {
		t.Errorf("dpkg still has records of sockd after the purge: %q", out)
	}
	admin := []string{"/etc/sockd/hello.conf", "/etc/sockd/shop.env", "/etc/sockd/shop-more.env", "/etc/systemd/system/sockd.service.d/50-admin.conf", "/etc/systemd/system/sockd@shop.socket.d/50-listen.conf"}
	if _, err := sb.Run(t, append([]string{"ls"}, admin...)...); err != nil {
		t.Errorf("the purge removed the admin's own files: %v", err)
	}
	sb.MustRun(t, "rm", "-r", "/etc/sockd", "/etc/systemd/system/sockd.service.d", "/etc/systemd/system/sockd@shop.socket.d")
	added, removed := diffTrees(before, sb.fileTree(t))
	if len(added)+len(removed) > 0 {
		t.Errorf("the purge (and the removal of the admin's files) left the file system changed:\nadded %q\nremoved %q", added, removed)
	}
}
