package nodeshim

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// warmApp counts the warm-up requests it answers (user agent
// sockd-warmup) apart from the others and tells them on GET /stats: how
// many, for which path, over which kind of connection, and how many it had
// answered when Node's channel actually sent its ready (process.send's
// callback: a ready the preload holds is sent later). WARM_DELAY_MS delays
// each warm-up answer, WARM_HANG never answers them, WARM_RESET resets
// their connection; READY=app makes the app say it is ready when it
// listens, READY=none leaves that to the preload. HTTPS=KEY:CERT serves
// TLS.
const warmApp = `
const fs = require('fs');
const e = process.env;
let warm = 0, other = 0, overTCP = 0, readySentAt = -1;
const paths = new Set();
const handler = (q, r) => {
  if (q.headers['user-agent'] === 'sockd-warmup') {
    paths.add(q.url);
    if (q.socket.remotePort !== undefined) overTCP++;
    if (e.WARM_RESET) return q.socket.destroy();
    if (e.WARM_HANG) return;
    return setTimeout(() => { warm++; r.end('warm'); }, Number(e.WARM_DELAY_MS || 0));
  }
  other++;
  r.setHeader('content-type', 'application/json');
  r.end(JSON.stringify({ pid: process.pid, warm, other, overTCP, readySentAt, paths: [...paths] }));
};
const server = e.HTTPS
  ? require('https').createServer({ key: fs.readFileSync(e.HTTPS.split(':')[0]), cert: fs.readFileSync(e.HTTPS.split(':')[1]) }, handler)
  : require('http').createServer(handler);
server.listen(e.PORT, () => {
  if (e.READY !== 'app') return;
  process.send('ready', () => { readySentAt = warm; });
  process.send({ sockd: { status: 'after ready' } });
});
process.on('SIGINT', () => server.close(() => process.exit(0)));
`

type warmStats struct {
	PID         int      `json:"pid"`
	Warm        int      `json:"warm"`
	Other       int      `json:"other"`
	OverTCP     int      `json:"overTCP"`
	ReadySentAt int      `json:"readySentAt"`
	Paths       []string `json:"paths"`
}

func startWarmApp(t *testing.T, env ...string) (*proc, string) {
	t.Helper()
	set := bind(t, "web=tcp://127.0.0.1:0")
	script := filepath.Join(t.TempDir(), "warm.js")
	os.WriteFile(script, []byte(warmApp), 0o644)
	env = append(env, "PORT="+strconv.Itoa(port(t, set[0])))
	return start(t, spec{cmd: []string{"node", script}, set: set, ipc: true, env: env}), set[0].Addr
}

// stats asks the app for its counts (url: http://ADDR or https://ADDR).
func stats(t *testing.T, url string) warmStats {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := c.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s warmStats
	if b, _ := io.ReadAll(res.Body); json.Unmarshal(b, &s) != nil {
		t.Fatalf("stats: %q", b)
	}
	return s
}

// The app's process.send('ready') leaves the worker only once the app
// has answered every warm-up request, sent over a private socket (not
// sockd's, not TCP) for the path asked; messages after it follow it in
// order; the request count sockd gets leaves the warm-up out.
func TestWarmupHoldsTheAppsReady(t *testing.T) {
	const n = 20
	p, addr := startWarmApp(t, "READY=app", "WARM_DELAY_MS=2", WarmupVar+"=/warm?deep=1", WarmupRequestsVar+"="+strconv.Itoa(n),
		SendVar+"=requests", RequestsIntervalVar+"=20")
	p.waitMsg(`"ready"`, readyTimeout)
	p.waitMsg(`{"sockd":{"status":"after ready"}}`, 5*time.Second)
	s := stats(t, "http://"+addr)
	if s.ReadySentAt != n || s.Warm != n || s.OverTCP != 0 || strings.Join(s.Paths, " ") != "/warm?deep=1" || s.Other != 1 {
		t.Fatalf("stats %+v: want the ready sent after %d warm-up requests for /warm?deep=1 over a unix socket, 1 other request", s, n)
	}
	p.waitOutput(fmt.Sprintf("sockd: warm-up: %d requests for /warm?deep=1 answered in", n), 5*time.Second)
	stats(t, "http://"+addr)
	p.waitMsg(`{"sockd":{"requests":2}}`, 5*time.Second)
	for _, m := range p.messages() {
		if msg, ours, _ := ParseMessage([]byte(m)); ours && msg.HasRequests && msg.Requests > 2 {
			t.Fatalf("request count %d includes the warm-up: %q", msg.Requests, p.messages())
		}
	}
}

// Under --ready node-listen the preload's own ready waits for the
// warm-up too; an https server is warmed up over TLS, and its warm-up
// requests are not counted.
func TestWarmupHoldsThePreloadsReady(t *testing.T) {
	const n = 10
	key, cert := selfSigned(t, t.TempDir())
	p, addr := startWarmApp(t, "READY=none", "HTTPS="+key+":"+cert, "WARM_DELAY_MS=5", WarmupVar+"=/", WarmupRequestsVar+"="+strconv.Itoa(n),
		SendVar+"=ready,requests", RequestsIntervalVar+"=20")
	p.waitMsg(`{"sockd":{"ready":true}}`, readyTimeout)
	if s := stats(t, "https://"+addr); s.Warm != n || s.OverTCP != 0 {
		t.Fatalf("stats %+v: want %d warm-up requests answered before the preload's ready", s, n)
	}
	// Warm-up requests over TLS are not counted either.
	p.waitMsg(`{"sockd":{"requests":1}}`, 5*time.Second)
	for _, m := range p.messages() {
		if msg, ours, _ := ParseMessage([]byte(m)); ours && msg.HasRequests && msg.Requests != 1 {
			t.Fatalf("request count %d includes the warm-up: %q", msg.Requests, p.messages())
		}
	}
}

// A warm-up that fails (the app resets the connection) or never ends
// (the app does not answer) costs the worker no more than the warm-up's
// timeout: the ready goes out with one line that says why.
func TestWarmupFailureStillReady(t *testing.T) {
	for _, c := range []struct {
		name, env, line string
	}{
		{"reset", "WARM_RESET=1", "sockd: warm-up of /: request 1 of 5: "},
		{"hang", "WARM_HANG=1", "sockd: warm-up of /: 0 of 5 requests answered in 300 ms; the worker says it is ready anyway"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, addr := startWarmApp(t, "READY=app", c.env, WarmupVar+"=/", WarmupRequestsVar+"=5", WarmupTimeoutVar+"=300")
			p.waitMsg(`"ready"`, readyTimeout)
			p.waitOutput(c.line, 5*time.Second)
			if s := stats(t, "http://"+addr); s.Warm != 0 || len(s.Paths) != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// An app that says it is ready before any server listens on sockd's
// sockets gets its ready through at once, with a line saying the warm-up
// was skipped.
func TestWarmupWithoutServer(t *testing.T) {
	set := bind(t, "web=tcp://127.0.0.1:0")
	p := start(t, spec{cmd: []string{"node", "-e", `process.send('ready'); setTimeout(() => {}, 60000);`}, set: set, ipc: true,
		env: []string{WarmupVar + "=/"}})
	p.waitMsg(`"ready"`, readyTimeout)
	p.waitOutput("sockd: warm-up skipped: no HTTP(S) server listens on sockd's sockets when the worker says it is ready", 5*time.Second)
}
