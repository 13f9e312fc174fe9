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
	// OwnerVar is set by the preload itself, for the processes it starts:
	// the pid of the Node process that took the sockets ("npm:PID" for an
	// npm that hands them on). sockd must not set it (and removes it from
	// a worker's environment, as every SOCKD_ variable).
	OwnerVar = "SOCKD_NODE_OWNER"
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

// Options are the knobs of the preload; the zero value is the default.
type Options struct {
	// IdleGrace: see DefaultIdleGrace (zero means the default).
	IdleGrace time.Duration
	// Send: nothing by default.
	Send Send
	// RequestsInterval: how often Send.Requests reports (zero: 1s).
	RequestsInterval time.Duration
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
	if o.RequestsInterval > 0 {
		env = append(env, RequestsIntervalVar+"="+strconv.FormatInt(max(1, o.RequestsInterval.Milliseconds()), 10))
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
