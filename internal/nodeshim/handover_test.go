package nodeshim

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// handoverApp answers every request with its pid; once asked for /listen
// it echoes every message it gets on Node's channel back as {"seen": MSG},
// so the test sees which messages reached the app, and when.
const handoverApp = `
const echo = (m) => process.send({ seen: m });
const server = require('http').createServer((req, res) => {
  req.resume();
  if (req.url === '/listen') process.on('message', echo);
  req.on('end', () => res.end('pid=' + process.pid + '\n'));
});
server.listen(process.env.PORT, () => process.send('ready'));
`

// HandoverMessage tells a worker that its successor's slow start began:
// its keep-alive connections are closed one by one over the ramp (an
// answer with "Connection: close" at a moment drawn for each, spread over
// the whole ramp rather than all at once), an idle connection is left for
// the drain; the preload hears sockd while the app does not listen for
// messages at all, and the app, once it listens, gets its own messages
// (kept for it meanwhile, as Node keeps them) but never sockd's.
func TestHandoverSpreadsKeepAliveOverTheRamp(t *testing.T) {
	const conns, ramp = 20, 2 * time.Second
	set := bind(t, "web=tcp://127.0.0.1:0")
	script := filepath.Join(t.TempDir(), "app.js")
	os.WriteFile(script, []byte(handoverApp), 0o644)
	p := start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: []string{"PORT=" + strconv.Itoa(port(t, set[0])), "SOCKD_NODE_DEBUG=1"}})
	p.waitMsg(`"ready"`, readyTimeout)
	addr := set[0].Addr

	var cs []*keepAlive
	for range conns {
		k := dial(t, addr)
		if r := k.do(); r.Close {
			t.Fatal("Connection: close before any handover")
		}
		cs = append(cs, k)
	}
	idle := dial(t, addr)
	idle.do()

	t0 := time.Now()
	if _, err := p.ipc.Write(append(HandoverMessage(ramp), '\n')); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ipc.Write([]byte("{\"app\":1}\n")); err != nil {
		t.Fatal(err)
	}

	// Every connection keeps asking (every 20 ms) until an answer closes it.
	closedAt := make([]time.Duration, conns)
	open := conns
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(ramp + 10*time.Second)
	for open > 0 {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%d of %d keep-alive connections still open long after the %s ramp", open, conns, ramp)
		}
		for i, k := range cs {
			if closedAt[i] != 0 {
				continue
			}
			if r := k.do(); r.Close {
				closedAt[i] = time.Since(t0)
				if err := k.eof(5 * time.Second); err != nil {
					t.Fatalf("connection %d: answered with Connection: close but not closed cleanly: %v", i, err)
				}
				open--
			}
		}
	}
	slices.Sort(closedAt)
	// 20 moments drawn evenly over the ramp span most of it: all of them
	// within 30 % of it has a chance of about 20 × 0.3^19.
	if span := closedAt[conns-1] - closedAt[0]; span < ramp*3/10 {
		t.Fatalf("connections closed at %v: within %v, not spread over the %s ramp", closedAt, span, ramp)
	}
	t.Logf("keep-alive connections closed at %v", closedAt)
	// The idle one was left alone: it still answers (and, the ramp being
	// over, closes after this answer).
	if r := idle.do(); !r.Close {
		t.Fatal("a connection's first answer after the ramp keeps it alive")
	}
	// The app listens now: its message, kept meanwhile, reaches it;
	// sockd's never does.
	if pid, _, err := get("tcp", addr, "/listen"); err != nil || pid != p.pid {
		t.Fatalf("GET /listen: answered by %d (want %d), %v", pid, p.pid, err)
	}
	p.waitMsg(`{"seen":{"app":1}}`, 5*time.Second)
	for _, m := range p.messages() {
		if strings.Contains(m, "handover") {
			t.Fatalf("the app saw sockd's message: %s", m)
		}
	}
	p.waitOutput(fmt.Sprintf("handover: keep-alive connections move over %d ms", ramp.Milliseconds()), 5*time.Second)
}
