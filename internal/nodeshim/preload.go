package nodeshim

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Preload is the script itself (preload.js), as sockd embeds it.
//
//go:embed preload.js
var Preload []byte

// Environment variables of the contract between sockd and the preload.
const (
	// ListenersVar lists the worker's listening sockets as JSON (a list of
	// Listener). Without it the preload does nothing.
	ListenersVar = "SOCKD_NODE_LISTENERS"
	// SendVar lists what the preload tells sockd over Node's IPC channel,
	// comma-separated: "ready", "requests", "watchdog" (see Send).
	SendVar = "SOCKD_NODE_SEND"
	// IdleGraceVar is the drain's idle grace in milliseconds.
	IdleGraceVar = "SOCKD_NODE_IDLE_GRACE_MS"
	// RequestsIntervalVar is how often (ms) the request count is sent.
	RequestsIntervalVar = "SOCKD_NODE_REQUESTS_MS"
	// WarmupVar is the path the preload's warm-up requests ask for (see
	// Warmup); without it there is no warm-up.
	WarmupVar = "SOCKD_NODE_WARMUP"
	// WarmupRequestsVar is how many warm-up requests the preload sends.
	WarmupRequestsVar = "SOCKD_NODE_WARMUP_REQUESTS"
	// WarmupTimeoutVar bounds the warm-up, in milliseconds.
	WarmupTimeoutVar = "SOCKD_NODE_WARMUP_MS"
	// OwnerVar is set by the preload itself, for the processes it starts:
	// the pid of the Node process that took the sockets ("npm:PID" for an
	// npm that hands them on). sockd must not set it (and removes it from
	// a worker's environment, as every SOCKD_ variable).
	OwnerVar = "SOCKD_NODE_OWNER"
	// StopSignalVar is Options.StopSignal.
	StopSignalVar = "SOCKD_NODE_STOP_SIGNAL"
)

// DefaultIdleGrace is how long a keep-alive connection must have been idle
// before the drain closes it: the worker package's default.
const DefaultIdleGrace = time.Second

// Send says what the preload reports on Node's IPC channel, when the
// worker has one (sockd's --ready node-ipc gives it).
type Send struct {
	// Ready: {"sockd":{"ready":true}} once every socket of sockd that the
	// process has is listening (for apps that never process.send('ready')).
	Ready bool
	// Requests: {"sockd":{"requests":N}}, the number of HTTP requests served
	// so far, every RequestsInterval (default 1s) while it changes.
	Requests bool
	// Watchdog: {"sockd":{"watchdog":true}} every WATCHDOG_USEC/2 from a
	// timer of the event loop: a blocked loop misses its pings.
	Watchdog bool
}

func (s Send) String() string {
	var out []string
	for _, f := range []struct {
		on   bool
		name string
	}{{s.Ready, "ready"}, {s.Requests, "requests"}, {s.Watchdog, "watchdog"}} {
		if f.on {
			out = append(out, f.name)
		}
	}
	return strings.Join(out, ",")
}

// Warmup asks the preload to warm the app up before its ready reaches
// sockd: the app's own HTTP(S) servers on sockd's sockets answer Requests
// GET requests for Path, sent from inside the worker over a private socket
// (never one of sockd's), one after another on one keep-alive connection,
// so that the slow first requests of a cold V8 are not a client's. The
// ready the worker sends over Node's IPC channel (the app's
// process.send('ready') or {"sockd":{"ready":true}}, or the preload's own
// under Send.Ready) is held, with every message after it, until the last
// answer, the first failed request or Timeout. The zero value is no
// warm-up.
type Warmup struct {
	// Path is the request target, "/" or "/warm?x=1"; "" is no warm-up.
	Path string
	// Requests is how many requests each server gets; zero means
	// DefaultWarmupRequests.
	Requests int
	// Timeout bounds the whole warm-up; zero means DefaultWarmupTimeout.
	Timeout time.Duration
}

// Defaults of Warmup.
const (
	DefaultWarmupRequests = 200
	DefaultWarmupTimeout  = 30 * time.Second
	MaxWarmupRequests     = 100000
)

// CheckWarmupPath says what is wrong with p as a warm-up request target:
// it must begin with "/" and hold only printable ASCII other than '#'
// (anything else percent-encoded, as in a URL).
func CheckWarmupPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errors.New("want a request target beginning with /")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return errors.New("want printable ASCII without spaces or # (percent-encode the rest)")
		}
	}
	return nil
}

// Check says what is wrong with w (nothing for the zero value).
func (w Warmup) Check() error {
	if w.Path == "" {
		return nil
	}
	if err := CheckWarmupPath(w.Path); err != nil {
		return fmt.Errorf("warm-up path %q: %w", w.Path, err)
	}
	if w.Requests < 0 || w.Requests > MaxWarmupRequests || w.Timeout < 0 {
		return fmt.Errorf("warm-up of %d requests in %s: want 0 to %d requests and a timeout not negative", w.Requests, w.Timeout, MaxWarmupRequests)
	}
	return nil
}

// Options are the knobs of the preload; the zero value is the default.
type Options struct {
	// IdleGrace: see DefaultIdleGrace (zero means the default).
	IdleGrace time.Duration
	// Send: nothing by default.
	Send Send
	// RequestsInterval: how often Send.Requests reports (zero: 1s).
	RequestsInterval time.Duration
	// Warmup: none by default.
	Warmup Warmup
	// StopSignal ("SIGTERM", "SIGINT") is the signal sockd asks a worker
	// to stop with. An app that has no handler for it when it comes (an
	// Express hello world) would die at once, in the middle of its
	// requests: the preload then closes the app's servers on sockd's
	// sockets with the careful drain and exits 0 once they are closed.
	// "": Node's default.
	StopSignal string
}

// Env returns the variables that tell the preload about the worker's
// sockets, to add to the worker's environment along with NODE_OPTIONS.
func (o Options) Env(ls []Listener) ([]string, error) {
	if ls == nil {
		ls = []Listener{}
	}
	for _, l := range ls {
		if l.FD < 3 || (l.Network != "tcp" && l.Network != "unix") {
			return nil, fmt.Errorf("nodeshim: listener %+v: want a stream socket at fd 3 or above", l)
		}
	}
	b, err := json.Marshal(ls)
	if err != nil {
		return nil, fmt.Errorf("nodeshim: %w", err)
	}
	env := []string{ListenersVar + "=" + string(b)}
	if s := o.Send.String(); s != "" {
		env = append(env, SendVar+"="+s)
	}
	if o.IdleGrace > 0 {
		env = append(env, IdleGraceVar+"="+strconv.FormatInt(max(1, o.IdleGrace.Milliseconds()), 10))
	}
	if o.StopSignal != "" {
		env = append(env, StopSignalVar+"="+o.StopSignal)
	}
	if o.RequestsInterval > 0 {
		env = append(env, RequestsIntervalVar+"="+strconv.FormatInt(max(1, o.RequestsInterval.Milliseconds()), 10))
	}
	if w := o.Warmup; w.Path != "" {
		if err := w.Check(); err != nil {
			return nil, fmt.Errorf("nodeshim: %w", err)
		}
		if w.Requests == 0 {
			w.Requests = DefaultWarmupRequests
		}
		if w.Timeout == 0 {
			w.Timeout = DefaultWarmupTimeout
		}
		env = append(env, WarmupVar+"="+w.Path, WarmupRequestsVar+"="+strconv.Itoa(w.Requests),
			WarmupTimeoutVar+"="+strconv.FormatInt(max(1, w.Timeout.Milliseconds()), 10))
	}
	return env, nil
}

// Install writes the preload into dir (sockd's run directory) and returns
// its path. The name carries a hash of the content, so a running worker's
// file is never rewritten under it and a second sockd with the same binary
// shares the file. dir must not be writable by the workers' user: the file
// runs in every Node worker.
func Install(dir string) (string, error) {
	sum := sha256.Sum256(Preload)
	path := filepath.Join(dir, "sockd-node-preload-"+hex.EncodeToString(sum[:6])+".js")
	if b, err := os.ReadFile(path); err == nil && string(b) == string(Preload) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".sockd-node-preload-*")
	if err != nil {
		return "", fmt.Errorf("nodeshim: install preload: %w", err)
	}
	_, err = tmp.Write(Preload)
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("nodeshim: install preload: %w", err)
	}
	return path, nil
}

// NodeOptions returns NODE_OPTIONS with `--require "preload"` appended to
// the user's options (existing, possibly empty), quoted the way Node
// parses NODE_OPTIONS (double quotes, backslash escapes inside them).
func NodeOptions(existing, preload string) string {
	q := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(preload)
	opt := `--require "` + q + `"`
	if strings.TrimSpace(existing) == "" {
		return opt
	}
	return existing + " " + opt
}
