package nodeshim

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/worker/workertest"
)

// The preload tells sockd, on request (SOCKD_NODE_SEND), that the worker
// listens, how many requests it served and that its loop runs, in the
// message shape ParseMessage reads; an app that says nothing itself gets
// ready this way.
func TestPreloadSendsReadyRequestsWatchdog(t *testing.T) {
	set := bind(t, "web=tcp://127.0.0.1:0")
	script := filepath.Join(t.TempDir(), "quiet.js")
	os.WriteFile(script, []byte(`
require('http').createServer((q, r) => r.end('pid=' + process.pid)).listen(process.env.PORT);`), 0o644)
	p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: []string{
		"PORT=" + strconv.Itoa(port(t, set[0])), SendVar + "=ready,requests,watchdog",
		RequestsIntervalVar + "=50", "WATCHDOG_USEC=200000"}})
	var ready, watchdog bool
	var requests int64
	deadline := time.After(readyTimeout)
	for sent := 0; !ready || !watchdog || requests < 3; {
		select {
		case line, ok := <-p.msgs:
			if !ok {
				t.Fatalf("channel closed; output:\n%s", p.out)
			}
			m, ours, err := ParseMessage([]byte(line))
			if !ours || err != nil {
				t.Fatalf("message %s: ours=%v, %v", line, ours, err)
			}
			ready = ready || m.Ready
			watchdog = watchdog || m.Watchdog
			if m.HasRequests {
				if m.Requests < requests {
					t.Fatalf("request count went down: %d after %d", m.Requests, requests)
				}
				requests = m.Requests
			}
			for ; ready && sent < 3; sent++ {
				if _, _, err := get("tcp", set[0].Addr, "/"); err != nil {
					t.Fatal(err)
				}
			}
		case <-deadline:
			t.Fatalf("ready=%v watchdog=%v requests=%d after %v; messages %q", ready, watchdog, requests, readyTimeout, p.messages())
		}
	}
}

// The preload keeps nothing alive: an app that closes its server and has
// nothing else to do exits by itself, IPC channel or not, before and
// after a drain. Without a channel process.send stays undefined.
func TestPreloadKeepsNothingAlive(t *testing.T) {
	for _, ipc := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipc=%v", ipc), func(t *testing.T) {
			set := bind(t, "web=tcp://127.0.0.1:0")
			script := filepath.Join(t.TempDir(), "once.js")
			os.WriteFile(script, []byte(`
console.log('send is ' + typeof process.send);
const s = require('http').createServer((q, r) => r.end('pid=' + process.pid));
s.listen(process.env.PORT, () => console.log('listening'));
process.on('SIGINT', () => s.close());`), 0o644)
			p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: ipc, env: []string{
				"PORT=" + strconv.Itoa(port(t, set[0])), SendVar + "=ready,requests,watchdog", "WATCHDOG_USEC=100000"}})
			p.waitOutput("listening", readyTimeout)
			k := dial(t, set[0].Addr)
			k.do() // an idle keep-alive connection for the drain to close
			p.signal(unix.SIGINT)
			if code := p.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d:\n%s", code, p.out)
			}
			want := map[bool]string{false: "send is undefined", true: "send is function"}[ipc]
			p.waitOutput(want, time.Second)
			workertest.Eventually(t, 10*time.Second, "the process group to end", p.groupGone)
		})
	}
}

// A listen({fd: 3}) written for sockd (its README's snippet) keeps sockd's
// backlog too under the preload.
func TestExplicitFDKeepsBacklog(t *testing.T) {
	set := bind(t, "web=tcp://127.0.0.1:0")
	fd := set[0].FD(0)
	before := backlog(t, fd)
	p := start(t, spec{cmd: []string{"node", "-e", `
		require('http').createServer((q, r) => r.end('pid=' + process.pid)).listen({fd: 3}, () => process.send('ready'));`},
		set: set, ipc: true})
	p.waitMsg(`"ready"`, readyTimeout)
	if after := backlog(t, fd); after != before {
		t.Fatalf("backlog %d before, %d after listen({fd: 3})", before, after)
	}
	if pid, _, err := get("tcp", set[0].Addr, "/"); err != nil || pid != p.pid {
		t.Fatalf("answered by %d, %v", pid, err)
	}
}
