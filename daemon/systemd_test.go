package daemon

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

// While systemd waits for READY=1 (the start, a reload from RELOADING=1)
// the notifier extends systemd's timeout again and again; READY=1 and
// STOPPING=1 end that, and without systemd there is nothing to extend.
func TestNotifierExtendsWhileSystemdWaits(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	saved := send
	send = func(s string) { mu.Lock(); sent = append(sent, s); mu.Unlock() }
	defer func() { send = saved }()
	extensions := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(slices.DeleteFunc(slices.Clone(sent), func(s string) bool { return !strings.HasPrefix(s, "EXTEND_TIMEOUT_USEC=30000000") }))
	}
	t.Setenv("NOTIFY_SOCKET", "")
	n := &notifier{on: true, every: 5 * time.Millisecond}
	n.wait()
	if n.waiting != nil {
		t.Fatal("waiting without systemd")
	}
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	n.wait()
	workertest.Eventually(t, 10*time.Second, "3 extensions during the start", func() bool { return extensions() >= 3 })
	n.Notify("READY=1\nSTATUS=2/2 workers ready")
	after := extensions()
	// Once READY=1 is out, no extension follows: the ticker is gone.
	n.mu.Lock()
	if n.waiting != nil {
		t.Fatal("still waiting after READY=1")
	}
	n.mu.Unlock()
	n.Notify("STATUS=idle")
	if extensions() != after {
		t.Fatal("an extension after READY=1")
	}
	n.Notify("RELOADING=1\nMONOTONIC_USEC=1\nSTATUS=reloading")
	workertest.Eventually(t, 10*time.Second, "extensions during the reload", func() bool { return extensions() >= after+2 })
	// RELOADING=1 went out before the reload's first extension: systemd
	// extends only a timeout it has armed.
	mu.Lock()
	i := slices.IndexFunc(sent, func(s string) bool { return strings.HasPrefix(s, "RELOADING=1") })
	j := slices.IndexFunc(sent[i+1:], func(s string) bool { return strings.HasPrefix(s, "EXTEND_TIMEOUT_USEC=") })
	mu.Unlock()
	if i < 1 || j < 0 || strings.HasPrefix(sent[i-1], "EXTEND_TIMEOUT_USEC=") {
		t.Fatalf("the reload's extensions must follow RELOADING=1: %q", sent)
	}
	n.Notify("STOPPING=1")
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.waiting != nil {
		t.Fatal("still waiting after STOPPING=1")
	}
}
