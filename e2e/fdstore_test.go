package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A sockd that binds its own socket (no .socket unit) puts it into
// systemd's fd store: after kill -9 and Restart=, the new sockd gets the
// very same socket back, and connections made while no sockd ran wait in
// its queue instead of being refused.
func TestSockdFDStoreKeepsSelfBoundSocket(t *testing.T) {
	sb := installed(t, nil)
	const storeAddr = "127.0.0.1:9191"
	sb.MustRun(t, "systemd-run", "--unit=selfbound", "-p", "Type=notify", "-p", "Restart=always", "-p", "RestartSec=1s",
		"-p", "FileDescriptorStoreMax=32", "-p", "RuntimeDirectory=selfbound", "-p", "KillMode=mixed",
		"/usr/local/bin/sockd", "run", "--workers", "2", "--reuseport", "--listen", "http=tcp://"+storeAddr)
	ctl := "/run/selfbound/sockd.sock"
	st := sb.waitServing(t, ctl, 1, 2)
	WaitFor(t, 10*time.Second, func() (bool, string) {
		n := sb.prop(t, "selfbound.service", "NFileDescriptorStore")
		return n == "2", "NFileDescriptorStore=" + n
	})
	inode := func(pid, fd int) string {
		out, err := sb.Run(t, "readlink", fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err != nil {
			t.Fatalf("readlink: %v %s", err, out)
		}
		return strings.TrimSpace(out)
	}
	before := []string{inode(st.PID, st.Listeners[0].SockdFDs[0]), inode(st.PID, st.Listeners[0].SockdFDs[1])}
	sb.MustRun(t, "kill", "-KILL", strconv.Itoa(st.PID))
	// A connection made while no sockd runs (RestartSec=1s) waits in the
	// stored socket's queue.
	q, err := sb.tryOnce(t, storeAddr)
	if err != nil {
		t.Fatalf("connection during the restart: %v", err)
	}
	t.Logf("request made during the restart waited %v", q.Waited.Round(time.Millisecond))
	after := sb.waitServing(t, ctl, 1, 2)
	if after.PID == st.PID || len(after.Listeners) != 1 || len(after.Listeners[0].SockdFDs) != 2 {
		t.Fatalf("after restart: %+v", after)
	}
	got := []string{inode(after.PID, after.Listeners[0].SockdFDs[0]), inode(after.PID, after.Listeners[0].SockdFDs[1])}
	if strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("sockets after restart %v, before %v: not the stored ones", got, before)
	}
	if n := sb.prop(t, "selfbound.service", "NFileDescriptorStore"); n != "2" {
		t.Fatalf("NFileDescriptorStore=%s after restart: stored twice or lost", n)
	}
	// systemd 252 keeps the fd store across `systemctl restart` too (it
	// drops it on stop): the same sockets again.
	sb.MustRun(t, "systemctl", "restart", "selfbound.service")
	again := sb.waitServing(t, ctl, 1, 2)
	got = []string{inode(again.PID, again.Listeners[0].SockdFDs[0]), inode(again.PID, again.Listeners[0].SockdFDs[1])}
	if again.PID == after.PID || strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("after systemctl restart: pid %d, sockets %v; before %v", again.PID, got, before)
	}
	// sockd scale: the sockets steering adds as the new workers start go
	// into the store too, every one of them.
	grown := len(again.Listeners[0].SockdFDs) + 2
	sb.MustRun(t, "/usr/local/bin/sockd", "scale", "--wait", "--control", ctl, strconv.Itoa(grown))
	scaled := sb.waitServing(t, ctl, again.Generation, grown)
	WaitFor(t, 10*time.Second, func() (bool, string) {
		n := sb.prop(t, "selfbound.service", "NFileDescriptorStore")
		return n == strconv.Itoa(len(scaled.Listeners[0].SockdFDs)), fmt.Sprintf("NFileDescriptorStore=%s after scale %d, the group has %d sockets", n, grown, len(scaled.Listeners[0].SockdFDs))
	})
	sb.MustRun(t, "/usr/local/bin/sockd", "scale", "--wait", "--control", ctl, "2")
	// sockd upgrade: the new sockd's workers get sockets of their own in
	// the group while the old ones drain theirs; those go into the store
	// too, once it is in charge.
	sb.MustRun(t, "/usr/local/bin/sockd", "upgrade", "--wait", "--control", ctl)
	up := sb.waitServing(t, ctl, again.Generation+1, 2)
	WaitFor(t, 10*time.Second, func() (bool, string) {
		n := sb.prop(t, "selfbound.service", "NFileDescriptorStore")
		return n == strconv.Itoa(len(up.Listeners[0].SockdFDs)), fmt.Sprintf("NFileDescriptorStore=%s, the group has %d sockets", n, len(up.Listeners[0].SockdFDs))
	})
	t.Logf("after the upgrade: %d sockets in the group, all stored", len(up.Listeners[0].SockdFDs))
}

// A --listen changed while sockd's own socket sits in the fd store takes
// effect with `systemctl restart`, as the reload's refusal says: the new
// address is bound, the stored socket is dropped from the store (and its
// address freed), and a listener removed from the configuration goes too.
func TestStoredListenerFollowsTheConfiguration(t *testing.T) {
	sb := installed(t, nil)
	env := "/run/moved.env"
	write := func(listen string) {
		sb.WriteFile(t, env, []byte("SOCKD_LISTEN="+listen+"\nSOCKD_WORKERS=2\n"))
	}
	write("http=tcp://127.0.0.1:9291")
	sb.MustRun(t, "systemd-run", "--unit=moved", "-p", "Type=notify", "-p", "FileDescriptorStoreMax=8", "-p", "RuntimeDirectory=moved",
		"-p", "KillMode=mixed", "-p", "EnvironmentFile="+env, "/usr/local/bin/sockd", "run")
	ctl := "/run/moved/sockd.sock"
	st := sb.waitServing(t, ctl, 1, 2)
	stored := func(want string) {
		t.Helper()
		WaitFor(t, 10*time.Second, func() (bool, string) {
			n := sb.prop(t, "moved.service", "NFileDescriptorStore")
			return n == want, "NFileDescriptorStore=" + n
		})
	}
	stored("1")
	refused := func(addr string) {
		t.Helper()
		WaitFor(t, 10*time.Second, func() (bool, string) {
			out, err := sb.Run(t, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(addr, ":", "/", 1)+" || echo refused")
			return err == nil && strings.Contains(out, "refused"), "connecting to " + addr + ": " + out
		})
	}

	write("http=tcp://127.0.0.1:9292")
	sb.MustRun(t, "systemctl", "restart", "moved.service")
	after := sb.waitServing(t, ctl, 1, 2)
	if after.PID == st.PID || len(after.Listeners) != 1 || after.Listeners[0].Address != "127.0.0.1:9292" {
		t.Fatalf("after the restart with a new address: %+v", after.Listeners)
	}
	sb.once(t, "127.0.0.1:9292")
	refused("127.0.0.1:9291")
	stored("1")

	write("web=tcp://127.0.0.1:9291")
	sb.MustRun(t, "systemctl", "restart", "moved.service")
	again := sb.waitServing(t, ctl, 1, 2)
	if len(again.Listeners) != 1 || again.Listeners[0].Name != "web" || again.Listeners[0].Address != "127.0.0.1:9291" {
		t.Fatalf("after the restart with another listener: %+v", again.Listeners)
	}
	sb.once(t, "127.0.0.1:9291")
	refused("127.0.0.1:9292")
	stored("1")
	// No listener at all (a queue consumer): the stored socket leaves the
	// store, and its address is free.
	sb.WriteFile(t, env, []byte("SOCKD_LISTEN=none\nSOCKD_WORKERS=2\nSOCKD_READY=after:100ms\nSOCKD_COMMAND=/bin/sleep 1000\n"))
	sb.MustRun(t, "systemctl", "restart", "moved.service")
	if none := sb.waitServing(t, ctl, 1, 2); len(none.Listeners) != 0 {
		t.Fatalf("after the restart with --listen none: %+v", none.Listeners)
	}
	refused("127.0.0.1:9291")
	stored("0")
	if out := sb.MustRun(t, "journalctl", "-u", "moved.service", "-o", "cat"); !strings.Contains(out, "stored listener dropped: the configuration has it at http=tcp://127.0.0.1:9292") ||
		!strings.Contains(out, "stored listener dropped: the configuration has no listener of that name any more") {
		t.Fatalf("the journal does not say what was dropped:\n%s", out)
	}
}
