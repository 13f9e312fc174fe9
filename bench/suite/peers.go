package suite

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// peer is one way of running N server processes on one port: a row of the
// table peers.
type peer struct {
	name     string // short id, e.g. sockd-node-rp
	label    string // for tables
	app      string // go, node, python, nginx
	sup      string // what supervises: sockd, direct, pm2, cluster, gunicorn, nginx, tableflip
	mode     string // shared, reuseport, rr, none, single
	needs    string // the tool it needs besides sockd (Tools.has), "" for none
	baseline string // the peer without a supervisor its throughput is compared with
	spread   string // how connections reach the workers (the balance table)
	trigger  string // how it is reloaded (the reload latency table)
	// reload: it reloads its workers (the restart-* peers: the runner
	// restarts them itself); crash: it replaces a killed worker.
	reload, crash bool
	// args are extra sockd flags (for the sockd peers).
	args  []string
	start func(s *Suite, p *peer, workers int) (*instance, error)
}

const (
	spreadShared    = "one shared socket: the kernel wakes an accepting worker"
	spreadReuseport = "a SO_REUSEPORT socket per worker: the kernel hashes each connection"
	spreadPrimary   = "the primary accepts and hands connections round-robin"
	triggerSockd    = "`kill -HUP <sockd>`"
)

// peers is every peer the benchmarks know, in the order of the tables.
var peers = []peer{
	{name: "direct-go", label: "direct, Go demo worker, shared socket", app: "go", sup: "direct", mode: "shared",
		spread: spreadShared, start: (*Suite).startDirect},
	{name: "restart-go", label: "no supervisor: the runner restarts the Go demo worker (new ready, then old SIGTERMed)", app: "go", sup: "direct", mode: "shared",
		reload: true, start: (*Suite).startDirect},
	{name: "sockd-go", label: "sockd, Go demo worker, shared socket", app: "go", sup: "sockd", mode: "shared", baseline: "direct-go",
		spread: spreadShared, trigger: triggerSockd, reload: true, crash: true, start: (*Suite).startSockd},
	{name: "direct-go-rp", label: "direct, Go demo worker, SO_REUSEPORT", app: "go", sup: "direct", mode: "reuseport",
		spread: spreadReuseport, start: (*Suite).startDirect},
	{name: "sockd-go-rp", label: "sockd --reuseport, Go demo worker", app: "go", sup: "sockd", mode: "reuseport", baseline: "direct-go-rp",
		spread: spreadReuseport, trigger: triggerSockd, reload: true, crash: true, start: (*Suite).startSockd},
	{name: "direct-node", label: "direct, Node app on fd 3, shared socket", app: "node", sup: "direct", mode: "shared", needs: "node",
		spread: spreadShared, start: (*Suite).startDirect},
	{name: "restart-node", label: "no supervisor: the runner restarts the Node app (new ready, then old SIGTERMed)", app: "node", sup: "direct", mode: "shared", needs: "node",
		reload: true, start: (*Suite).startDirect},
	{name: "sockd-node", label: "sockd, Node app on fd 3, shared socket", app: "node", sup: "sockd", mode: "shared", needs: "node", baseline: "direct-node",
		spread: spreadShared, trigger: triggerSockd, reload: true, crash: true, start: (*Suite).startSockd},
	{name: "sockd-node-b1", label: "sockd --reload-batch 1, Node app: a rolling reload, one worker at a time", app: "node", sup: "sockd", mode: "shared", needs: "node", baseline: "direct-node",
		spread: spreadShared, trigger: triggerSockd, reload: true, crash: true, args: []string{"--reload-batch", "1"}, start: (*Suite).startSockd},
	{name: "sockd-node-ipc", label: "sockd --ready node-ipc, Node app saying process.send('ready')", app: "node", sup: "sockd", mode: "shared", needs: "node", baseline: "direct-node",
		spread: spreadShared, trigger: triggerSockd, reload: true, crash: true, args: []string{"--ready", "node-ipc"}, start: (*Suite).startSockd},
	{name: "sockd-node-rp", label: "sockd --reuseport, Node app on fd 3", app: "node", sup: "sockd", mode: "reuseport", needs: "node", baseline: "direct-node",
		spread: spreadReuseport, trigger: triggerSockd, reload: true, crash: true, start: (*Suite).startSockd},
	{name: "pm2", label: "PM2 cluster mode, Node app", app: "node", sup: "pm2", mode: "rr", needs: "pm2", baseline: "direct-node",
		spread: spreadPrimary, trigger: "`pm2 reload bench`", reload: true, crash: true, start: (*Suite).startPM2},
	{name: "cluster-rr", label: "Node cluster module, SCHED_RR", app: "node", sup: "cluster", mode: "rr", needs: "node", baseline: "direct-node",
		spread: spreadPrimary, crash: true, start: (*Suite).startCluster},
	{name: "cluster-none", label: "Node cluster module, SCHED_NONE", app: "node", sup: "cluster", mode: "none", needs: "node", baseline: "direct-node",
		spread: spreadShared, crash: true, start: (*Suite).startCluster},
	{name: "direct-python", label: "direct, Python fdserve.py on fd 3", app: "python", sup: "direct", mode: "shared", needs: "python",
		spread: spreadShared, start: (*Suite).startDirect},
	{name: "restart-python", label: "no supervisor: the runner restarts fdserve.py (new ready, then old SIGTERMed)", app: "python", sup: "direct", mode: "shared", needs: "python",
		reload: true, start: (*Suite).startDirect},
	{name: "sockd-python", label: "sockd, Python fdserve.py on fd 3", app: "python", sup: "sockd", mode: "shared", needs: "python", baseline: "direct-python",
		spread: spreadShared, trigger: triggerSockd, reload: true, crash: true, start: (*Suite).startSockd},
	{name: "gunicorn", label: "gunicorn, sync workers", app: "python", sup: "gunicorn", mode: "shared", needs: "gunicorn", baseline: "direct-python",
		spread: spreadShared, trigger: "`kill -HUP <master>`", reload: true, crash: true, start: (*Suite).startGunicorn},
	{name: "nginx", label: "nginx (return 200)", app: "nginx", sup: "nginx", mode: "shared", needs: "nginx",
		spread: "one shared socket, EPOLLEXCLUSIVE", trigger: "`nginx -s reload`", reload: true, crash: true, start: (*Suite).startNginx},
	{name: "tableflip", label: "tableflip, one Go process", app: "go", sup: "tableflip", mode: "single", needs: "tableflip",
		trigger: "`kill -HUP <current process>`", reload: true, start: (*Suite).startTableflip},
}

// peerNamed is the row of peers called name, nil if none.
func peerNamed(name string) *peer {
	for i := range peers {
		if peers[i].name == name {
			return &peers[i]
		}
	}
	return nil
}

// infoOf is the row of peers called name; a name no row has (in old
// results) is its own label.
func infoOf(name string) peer {
	if p := peerNamed(name); p != nil {
		return *p
	}
	return peer{name: name, label: name}
}

// selected filters names to the peers that exist, whose tools were found
// and that were asked for (Config.Peers).
func (s *Suite) selected(names ...string) []*peer {
	var out []*peer
	for _, n := range names {
		p := peerNamed(n)
		if p == nil || !s.Tools.has(p.needs) || (len(s.Peers) > 0 && !contains(s.Peers, n)) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Tools are the programs the peers need, found by Detect.
type Tools struct {
	Sockd     string // the sockd binary under test
	Tableflip string // bench/tableflip built
	Node      string
	PM2       string // bench/peers/node/node_modules/.bin/pm2
	Gunicorn  string
	Python    string // the interpreter gunicorn runs on (fdserve.py uses the same)
	Nginx     string
	Gnuplot   string
}

// has reports whether the tool a peer needs (peer.needs) was found.
func (t Tools) has(tool string) bool {
	path := map[string]string{"node": t.Node, "pm2": t.PM2, "python": t.Python,
		"gunicorn": t.Gunicorn, "nginx": t.Nginx, "tableflip": t.Tableflip}
	return tool == "" || path[tool] != ""
}

// Detect finds the tools; a missing one only drops the peers that need it.
func Detect(root string) Tools {
	var t Tools
	look := func(names ...string) string {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
		}
		return ""
	}
	t.Node = look("node", "nodejs")
	if pm2 := filepath.Join(root, "bench/peers/node/node_modules/.bin/pm2"); t.Node != "" && isExec(pm2) {
		t.PM2 = pm2
	}
	t.Gunicorn = look("gunicorn")
	// fdserve.py runs on gunicorn's interpreter: Debian's python3.
	for _, py := range []string{"/usr/bin/python3", look("python3")} {
		if py != "" && isExec(py) {
			t.Python = py
			break
		}
	}
	t.Nginx = look("nginx", "/usr/sbin/nginx")
	t.Gnuplot = look("gnuplot")
	return t
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// instance is a running peer.
type instance struct {
	peer      *peer
	addr      string
	dir       string
	n         int
	root      *proc      // the process the runner started, if one
	supPID    func() int // the supervisor's pid, 0 if none
	workers   func() []int
	reloadFn  func() (time.Duration, error) // triggers a reload; returns the trigger command's CPU time
	stopFn    func() error
	readyFile string
	logFile   string // sockd's stderr, JSON lines
	// retrigger: send the reload trigger again when nothing happened after
	// a second (tableflip refuses an upgrade with "parent hasn't exited"
	// until it noticed the previous generation's exit).
	retrigger bool
	closers   []func()
}

// newInstance makes a peer's run directory and picks its port.
func (s *Suite) newInstance(p *peer, n int) (*instance, error) {
	dir, err := os.MkdirTemp(s.work, p.name+"-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &instance{peer: p, dir: dir, n: n, addr: "127.0.0.1:" + strconv.Itoa(port)}, nil
}

// freePort picks a port below the ephemeral range (so no client
// connection of the load generator can hold it) that binds now.
func freePort() (int, error) {
	for i := 0; i < 200; i++ {
		port := 20000 + rand.Intn(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			ln.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}

// port is the instance's port number, as text.
func (in *instance) port() string {
	_, port, _ := net.SplitHostPort(in.addr)
	return port
}

func (in *instance) supervisor() int {
	if in.supPID == nil {
		return 0
	}
	return in.supPID()
}

func (in *instance) stop() error {
	var err error
	if in.stopFn != nil {
		err = in.stopFn()
	}
	for _, c := range in.closers {
		c()
	}
	return err
}

// readyPIDs returns the pids appended to the ready file.
func (in *instance) readyPIDs() map[int]bool {
	m := map[int]bool{}
	if in.readyFile == "" {
		return m
	}
	b, _ := os.ReadFile(in.readyFile)
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			m[n] = true
		}
	}
	return m
}

// rooted sets the instance up around the one process the runner started:
// the supervisor, whose children are the workers, stopped with stopSig
// (waiting up to grace) and, if reloadSig is not 0, reloaded with it.
func (in *instance) rooted(stopSig, reloadSig unix.Signal, grace time.Duration) {
	in.supPID = func() int { return in.root.pid }
	in.workers = func() []int { return children(in.root.pid) }
	in.stopFn = func() error { return in.stopRoot(stopSig, grace) }
	if reloadSig != 0 {
		in.reloadFn = func() (time.Duration, error) { return 0, unix.Kill(in.root.pid, reloadSig) }
	}
}

// stopRoot stops the root process with sig and waits; stragglers get
// SIGKILL.
func (in *instance) stopRoot(sig unix.Signal, grace time.Duration) error {
	if in.root == nil {
		return nil
	}
	unix.Kill(in.root.pid, sig)
	select {
	case <-in.root.done:
	case <-time.After(grace):
		unix.Kill(-in.root.pid, unix.SIGKILL)
		unix.Kill(in.root.pid, unix.SIGKILL)
		<-in.root.done
		return fmt.Errorf("%s did not stop within %s", in.peer.name, grace)
	}
	return nil
}

// waitReady waits until cond holds, or the root process died, or timeout;
// on failure it stops the instance.
func (in *instance) waitReady(timeout time.Duration, what string, cond func() bool) error {
	exited := func() bool { return in.root != nil && in.root.exited() }
	err := waitFor(timeout, 5*time.Millisecond, func() bool { return exited() || cond() })
	switch {
	case exited():
		err = fmt.Errorf("%s exited (%s) before %s; see %s", in.peer.name, describe(in.root.status), what, in.dir)
	case err != nil:
		err = fmt.Errorf("%s: %s: %w; see %s", in.peer.name, what, err, in.dir)
	}
	if err != nil {
		in.stop()
	}
	return err
}

// ready is the instance once waitReady returned err: nil and err when it
// failed.
func (in *instance) ready(err error) (*instance, error) {
	if err != nil {
		return nil, err
	}
	return in, nil
}

func (s *Suite) appCommand(app string) []string {
	switch app {
	case "go":
		return []string{s.Tools.Sockd, "demo-worker"}
	case "node":
		return []string{s.Tools.Node, filepath.Join(s.Root, "bench/peers/node/app.js")}
	case "python":
		return []string{s.Tools.Python, filepath.Join(s.Root, "bench/peers/python/fdserve.py")}
	}
	panic("no app " + app)
}
