package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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

// peer is one way of running N server processes on one port.
type peer struct {
	name  string // short id, e.g. sockd-node-rp
	label string // for tables
	app   string // go, node, python, nginx
	sup   string // what supervises: sockd, direct, pm2, cluster, gunicorn, nginx, tableflip
	mode  string // shared, reuseport, rr, none, …
	// reload/crash: whether the peer can reload its workers / replace a
	// killed one.
	reload, crash bool
	start         func(s *Suite, workers int) (*instance, error)
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
	ctl       string // sockd's control socket
	logFile   string // sockd's stderr
	// retrigger: send the reload trigger again when nothing happened after
	// a second (tableflip refuses an upgrade with "parent hasn't exited"
	// until it noticed the previous generation's exit).
	retrigger bool
	closers   []func()
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

func (s *Suite) peers() []*peer {
	t := s.Tools
	var ps []*peer
	add := func(ok bool, p *peer) {
		if ok {
			ps = append(ps, p)
		}
	}
	node, py := t.Node != "", t.Python != ""
	add(true, &peer{name: "direct-go", label: "direct, Go demo worker, shared socket", app: "go", sup: "direct", mode: "shared",
		start: func(s *Suite, n int) (*instance, error) { return s.startDirect("go", false, n) }})
	add(true, &peer{name: "restart-go", label: "no supervisor: the runner restarts the Go demo worker (new ready, then old SIGTERMed)", app: "go", sup: "direct", mode: "shared", reload: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startDirectAs(s.peer("restart-go"), "go", false, n) }})
	add(true, &peer{name: "sockd-go", label: "sockd, Go demo worker, shared socket", app: "go", sup: "sockd", mode: "shared", reload: true, crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startSockd("go", false, n) }})
	add(true, &peer{name: "direct-go-rp", label: "direct, Go demo worker, SO_REUSEPORT", app: "go", sup: "direct", mode: "reuseport",
		start: func(s *Suite, n int) (*instance, error) { return s.startDirect("go", true, n) }})
	add(true, &peer{name: "sockd-go-rp", label: "sockd --reuseport, Go demo worker", app: "go", sup: "sockd", mode: "reuseport", reload: true, crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startSockd("go", true, n) }})
	add(node, &peer{name: "direct-node", label: "direct, Node app on fd 3, shared socket", app: "node", sup: "direct", mode: "shared",
		start: func(s *Suite, n int) (*instance, error) { return s.startDirect("node", false, n) }})
	add(node, &peer{name: "restart-node", label: "no supervisor: the runner restarts the Node app (new ready, then old SIGTERMed)", app: "node", sup: "direct", mode: "shared", reload: true,
		start: func(s *Suite, n int) (*instance, error) {
			return s.startDirectAs(s.peer("restart-node"), "node", false, n)
		}})
	add(node, &peer{name: "sockd-node", label: "sockd, Node app on fd 3, shared socket", app: "node", sup: "sockd", mode: "shared", reload: true, crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startSockd("node", false, n) }})
	add(node, &peer{name: "sockd-node-rp", label: "sockd --reuseport, Node app on fd 3", app: "node", sup: "sockd", mode: "reuseport", reload: true, crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startSockd("node", true, n) }})
	add(node && t.PM2 != "", &peer{name: "pm2", label: "PM2 cluster mode, Node app", app: "node", sup: "pm2", mode: "rr", reload: true, crash: true,
		start: (*Suite).startPM2})
	add(node, &peer{name: "cluster-rr", label: "Node cluster module, SCHED_RR", app: "node", sup: "cluster", mode: "rr", crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startCluster("rr", n) }})
	add(node, &peer{name: "cluster-none", label: "Node cluster module, SCHED_NONE", app: "node", sup: "cluster", mode: "none", crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startCluster("none", n) }})
	add(py, &peer{name: "direct-python", label: "direct, Python fdserve.py on fd 3", app: "python", sup: "direct", mode: "shared",
		start: func(s *Suite, n int) (*instance, error) { return s.startDirect("python", false, n) }})
	add(py, &peer{name: "restart-python", label: "no supervisor: the runner restarts fdserve.py (new ready, then old SIGTERMed)", app: "python", sup: "direct", mode: "shared", reload: true,
		start: func(s *Suite, n int) (*instance, error) {
			return s.startDirectAs(s.peer("restart-python"), "python", false, n)
		}})
	add(py, &peer{name: "sockd-python", label: "sockd, Python fdserve.py on fd 3", app: "python", sup: "sockd", mode: "shared", reload: true, crash: true,
		start: func(s *Suite, n int) (*instance, error) { return s.startSockd("python", false, n) }})
	add(t.Gunicorn != "", &peer{name: "gunicorn", label: "gunicorn, sync workers", app: "python", sup: "gunicorn", mode: "shared", reload: true, crash: true,
		start: (*Suite).startGunicorn})
	add(t.Nginx != "", &peer{name: "nginx", label: "nginx (return 200)", app: "nginx", sup: "nginx", mode: "shared", reload: true, crash: true,
		start: (*Suite).startNginx})
	add(t.Tableflip != "", &peer{name: "tableflip", label: "tableflip, one Go process", app: "go", sup: "tableflip", mode: "single", reload: true,
		start: (*Suite).startTableflip})
	return ps
}

func (s *Suite) peer(name string) *peer {
	for _, p := range s.peers() {
		if p.name == name {
			return p
		}
	}
	return nil
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

func (s *Suite) newDir(name string) (string, error) {
	return os.MkdirTemp(s.work, name+"-")
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

// waitReady waits until cond holds, or the root process died, or timeout.
func waitReady(in *instance, timeout time.Duration, what string, cond func() bool) error {
	err := waitFor(timeout, 5*time.Millisecond, func() bool {
		if in.root != nil {
			select {
			case <-in.root.done:
				return true
			default:
			}
		}
		return cond()
	})
	if in.root != nil {
		select {
		case <-in.root.done:
			return fmt.Errorf("%s exited (%s) before %s; see %s", in.peer.name, describe(in.root.status), what, in.dir)
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w; see %s", in.peer.name, what, err, in.dir)
	}
	return nil
}

// stopRoot stops the root process with sig and waits; stragglers get
// SIGKILL.
func (s *Suite) stopRoot(in *instance, sig unix.Signal, grace time.Duration) error {
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

// ---- sockd ----

func (s *Suite) startSockd(app string, reuseport bool, n int) (*instance, error) {
	p := s.peerByShape("sockd", app, reuseport)
	in, err := s.newInstance(p, p.name, n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	in.readyFile, in.ctl = filepath.Join(dir, "ready"), filepath.Join(dir, "sockd.sock")
	argv := []string{s.Tools.Sockd, "run", "--listen", "tcp://" + in.addr, "--workers", strconv.Itoa(n),
		"--control", in.ctl, "--restart-limit", "100/60s"}
	if reuseport {
		argv = append(argv, "--reuseport")
	}
	switch app {
	case "node":
		// The app says READY=1 through systemd-notify(1) once it listens.
		argv = append(append(argv, "--"), s.appCommand(app)...)
	case "python":
		argv = append(append(argv, "--"), s.appCommand(app)...)
	}
	s.note(p.name, argv)
	log := filepath.Join(dir, "sockd.log")
	in.logFile = log
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: log, server: true, pgrp: true,
		env: []string{"BENCH_READY_FILE=" + in.readyFile}})
	if err != nil {
		return nil, err
	}
	if app == "go" {
		in.readyFile = "" // the demo worker tells sockd, not a file
	}
	in.supPID = func() int { return in.root.pid }
	in.workers = func() []int { return sockdWorkers(in.root.pid) }
	in.reloadFn = func() (time.Duration, error) { return 0, unix.Kill(in.root.pid, unix.SIGHUP) }
	in.stopFn = func() error { return s.stopRoot(in, unix.SIGTERM, 45*time.Second) }
	err = waitReady(in, 60*time.Second, "all workers ready", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "event=pool_ready") && (app == "go" || len(in.readyPIDs()) >= n)
	})
	if err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

// sockdWorkers is sockd's children but its guard (sockd re-executed with
// argv[0] "sockd-guard", which kills the workers' process groups if sockd
// dies): that one lives as long as sockd and is no worker.
func sockdWorkers(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		if argv0(c) != "sockd-guard" {
			out = append(out, c)
		}
	}
	return out
}

func (s *Suite) peerByShape(sup, app string, reuseport bool) *peer {
	name := sup + "-" + app
	if reuseport {
		name += "-rp"
	}
	if p := s.peer(name); p != nil {
		return p
	}
	return &peer{name: name, app: app, sup: sup}
}

// ---- direct: the runner binds and starts the same worker processes ----

func (s *Suite) startDirect(app string, reuseport bool, n int) (*instance, error) {
	return s.startDirectAs(s.peerByShape("direct", app, reuseport), app, reuseport, n)
}

// startDirectAs starts peer p as the runner's own workers. The restart-*
// peers also reload, by hand the way sockd does it: start n new workers on
// the same sockets, wait for their READY=1, then SIGTERM the old ones. They
// show what reloads cost an app without sockd (its start-up, its
// warm-up), to compare sockd's reloads with.
func (s *Suite) startDirectAs(p *peer, app string, reuseport bool, n int) (*instance, error) {
	in, err := s.newInstance(p, p.name, n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	in.readyFile = filepath.Join(dir, "ready")
	// Bind like sockd does: Go's listener (SO_REUSEADDR, backlog somaxconn,
	// non-blocking), duplicated with F_DUPFD_CLOEXEC, one socket per
	// worker with SO_REUSEPORT.
	socks := 1
	if reuseport {
		socks = n
	}
	var fds []int
	for i := 0; i < socks; i++ {
		fd, err := bindTCP(in.addr, reuseport)
		if err != nil {
			for _, f := range fds {
				unix.Close(f)
			}
			return nil, err
		}
		fds = append(fds, fd)
	}
	in.closers = append(in.closers, func() {
		for _, f := range fds {
			unix.Close(f)
		}
	})
	// The restart peers, like sockd, wait for READY=1 on a notify socket
	// (the Node app then runs systemd-notify(1), as under sockd); the
	// plain direct peers only need it for the Go demo worker, which writes
	// no ready file.
	restart := strings.HasPrefix(p.name, "restart-")
	var ns *notifySock
	if app == "go" || restart {
		if app == "go" {
			in.readyFile = ""
		}
		if ns, err = listenNotify(); err != nil {
			in.stop()
			return nil, err
		}
		in.closers = append(in.closers, ns.close)
	}
	// LISTEN_PID must be the worker's own pid: a shell sets it and execs.
	spawnGen := func(gen int) ([]*proc, error) {
		var prs []*proc
		for i := 0; i < n; i++ {
			argv := append([]string{"/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`}, s.appCommand(app)...)
			if i == 0 && gen == 1 {
				s.note(p.name, argv)
			}
			env := []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "SOCKD_WORKER=" + strconv.Itoa(i), "SOCKD_GENERATION=" + strconv.Itoa(gen),
				"BENCH_READY_FILE=" + in.readyFile}
			if ns != nil {
				env = append(env, "NOTIFY_SOCKET="+ns.addr)
			}
			pr, err := s.procs.spawn(spawnSpec{name: fmt.Sprintf("%s[%d.%d]", p.name, gen, i), argv: argv, env: env,
				extra: []int{fds[i%len(fds)]}, log: filepath.Join(dir, "workers.log"), server: true, pgrp: true})
			if err != nil {
				for _, pr := range prs {
					unix.Kill(pr.pid, unix.SIGKILL)
				}
				return nil, err
			}
			prs = append(prs, pr)
		}
		return prs, nil
	}
	var mu sync.Mutex // procsList, gen
	gen := 1
	procsList, err := spawnGen(gen)
	if err != nil {
		in.stop()
		return nil, err
	}
	// A worker is live until the runner reaped it (its pid is then free
	// for another process).
	live := func() []*proc {
		mu.Lock()
		defer mu.Unlock()
		var out []*proc
		for _, pr := range procsList {
			select {
			case <-pr.done:
			default:
				out = append(out, pr)
			}
		}
		procsList = out
		return append([]*proc(nil), out...)
	}
	in.workers = func() []int {
		var pids []int
		for _, pr := range live() {
			pids = append(pids, pr.pid)
		}
		return pids
	}
	stopped := make(chan struct{}) // closed by stopFn: pending reloads give up
	if restart {
		in.reloadFn = func() (time.Duration, error) {
			old := live()
			mu.Lock()
			gen++
			g := gen
			mu.Unlock()
			want := ns.readyCount() + n // this generation's READY=1s on top of all so far
			news, err := spawnGen(g)
			if err != nil {
				return 0, err
			}
			mu.Lock()
			procsList = append(procsList, news...)
			mu.Unlock()
			go func() {
				deadline := time.Now().Add(60 * time.Second)
				for ns.readyCount() < want {
					select {
					case <-stopped:
						return
					case <-time.After(2 * time.Millisecond):
					}
					if time.Now().After(deadline) {
						return // the reload is not over: reloadOnce reports it
					}
				}
				for _, pr := range old {
					select {
					case <-pr.done: // reaped: its pid may be another's by now
					default:
						unix.Kill(pr.pid, unix.SIGTERM)
					}
				}
			}()
			return 0, nil
		}
	}
	var stopOnce sync.Once
	in.stopFn = func() error {
		stopOnce.Do(func() { close(stopped) })
		procsList := live()
		for _, pr := range procsList {
			unix.Kill(pr.pid, unix.SIGTERM)
		}
		var err error
		for _, pr := range procsList {
			select {
			case <-pr.done:
			case <-time.After(30 * time.Second):
				unix.Kill(pr.pid, unix.SIGKILL)
				<-pr.done
				err = fmt.Errorf("%s: a worker did not stop", p.name)
			}
		}
		return err
	}
	err = waitFor(30*time.Second, 5*time.Millisecond, func() bool {
		if ns != nil {
			return ns.readyCount() >= n
		}
		return len(in.readyPIDs()) >= n
	})
	if err != nil {
		in.stop()
		return nil, fmt.Errorf("%s: workers not ready: %w; see %s", p.name, err, dir)
	}
	return in, nil
}

func bindTCP(addr string, reuseport bool) (int, error) {
	lc := net.ListenConfig{}
	if reuseport {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
			return errors.Join(err, serr)
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return -1, err
	}
	defer ln.Close()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := raw.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

// notifySock receives sd_notify datagrams from directly started Go
// workers (which, like under sockd, send READY=1 and request counts).
type notifySock struct {
	addr  string
	conn  *net.UnixConn
	ready atomic.Int64 // READY=1 messages so far
}

func listenNotify() (*notifySock, error) {
	name := fmt.Sprintf("@sockd-bench/%d/%d", os.Getpid(), time.Now().UnixNano())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	ns := &notifySock{addr: name, conn: c}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					ns.ready.Add(1)
				}
			}
		}
	}()
	return ns, nil
}

func (ns *notifySock) readyCount() int { return int(ns.ready.Load()) }
func (ns *notifySock) close()          { ns.conn.Close() }

// ---- PM2 cluster mode ----

func (s *Suite) startPM2(n int) (*instance, error) {
	p := s.peer("pm2")
	in, err := s.newInstance(p, "pm2", n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	in.readyFile = filepath.Join(dir, "ready")
	home := filepath.Join(dir, "home")
	eco := map[string]any{"apps": []map[string]any{{
		"name": "bench", "script": filepath.Join(s.Root, "bench/peers/node/app.js"),
		"exec_mode": "cluster", "instances": n, "kill_timeout": 5000,
		"out_file": filepath.Join(dir, "out.log"), "error_file": filepath.Join(dir, "err.log"),
		"env": map[string]string{"PORT": in.port(), "BENCH_READY_FILE": in.readyFile},
	}}}
	b, _ := json.MarshalIndent(eco, "", "  ")
	ecoFile := filepath.Join(dir, "ecosystem.json")
	if err := os.WriteFile(ecoFile, b, 0o644); err != nil {
		return nil, err
	}
	env := []string{"PM2_HOME=" + home, "PM2_DISABLE_VERSION_CHECK=true"}
	pm2 := func(args ...string) (time.Duration, error) {
		argv := append([]string{s.Tools.PM2}, args...)
		_, cpu, err := s.procs.run(spawnSpec{name: "pm2 " + args[0], argv: argv, env: env, log: filepath.Join(dir, "cli.log")}, 120*time.Second)
		return cpu, err
	}
	s.note(p.name, []string{"PM2_HOME=" + home, s.Tools.PM2, "start", ecoFile, "  # ecosystem.json: " + string(mustJSON(eco))})
	if _, err := pm2("start", ecoFile); err != nil {
		pm2("kill")
		return nil, err
	}
	daemon := func() int {
		b, _ := os.ReadFile(filepath.Join(home, "pm2.pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	in.supPID = daemon
	in.workers = func() []int { return children(daemon()) }
	in.reloadFn = func() (time.Duration, error) { return pm2("reload", "bench") }
	in.stopFn = func() error {
		d := daemon()
		_, err := pm2("kill")
		if d > 0 {
			if werr := waitFor(30*time.Second, 20*time.Millisecond, func() bool { return !alive(d) }); werr != nil {
				unix.Kill(d, unix.SIGKILL)
			}
		}
		return err
	}
	if err := waitReady(in, 60*time.Second, "all workers listening", func() bool { return len(in.readyPIDs()) >= n }); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// ---- Node cluster module ----

func (s *Suite) startCluster(policy string, n int) (*instance, error) {
	p := s.peer("cluster-" + policy)
	in, err := s.newInstance(p, p.name, n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	in.readyFile = filepath.Join(dir, "ready")
	env := []string{"BENCH_CLUSTER=" + strconv.Itoa(n), "NODE_CLUSTER_SCHED_POLICY=" + policy, "PORT=" + in.port(),
		"BENCH_READY_FILE=" + in.readyFile}
	argv := s.appCommand("node")
	s.note(p.name, append(append([]string{}, env[:3]...), argv...))
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, env: env, log: filepath.Join(dir, "node.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.supPID = func() int { return in.root.pid }
	in.workers = func() []int { return children(in.root.pid) }
	in.stopFn = func() error { return s.stopRoot(in, unix.SIGTERM, 40*time.Second) }
	if err := waitReady(in, 60*time.Second, "all workers listening", func() bool { return len(in.readyPIDs()) >= n }); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

// ---- gunicorn ----

func (s *Suite) startGunicorn(n int) (*instance, error) {
	p := s.peer("gunicorn")
	in, err := s.newInstance(p, "gunicorn", n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	in.readyFile = filepath.Join(dir, "ready")
	pydir := filepath.Join(s.Root, "bench/peers/python")
	argv := []string{s.Tools.Gunicorn, "-c", filepath.Join(pydir, "gunicorn.conf.py"), "--chdir", pydir,
		"-w", strconv.Itoa(n), "-b", in.addr, "app:app"}
	s.note(p.name, argv)
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, env: []string{"BENCH_READY_FILE=" + in.readyFile},
		log: filepath.Join(dir, "gunicorn.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.supPID = func() int { return in.root.pid }
	in.workers = func() []int { return children(in.root.pid) }
	in.reloadFn = func() (time.Duration, error) { return 0, unix.Kill(in.root.pid, unix.SIGHUP) }
	in.stopFn = func() error { return s.stopRoot(in, unix.SIGTERM, 40*time.Second) }
	if err := waitReady(in, 60*time.Second, "all workers booted", func() bool { return len(in.readyPIDs()) >= n }); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

// ---- nginx ----

func (s *Suite) startNginx(n int) (*instance, error) {
	p := s.peer("nginx")
	in, err := s.newInstance(p, "nginx", n)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type text/plain;
    server {
        listen %s;
        location / {
            add_header X-Pid $pid;
            return 200 "hello from pid=$pid worker=0 generation=1\n";
        }
    }
}
`, n, dir, dir, in.addr)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	argv := []string{s.Tools.Nginx, "-p", dir, "-c", confFile}
	s.note(p.name, append(argv, "  # nginx.conf: worker_processes "+strconv.Itoa(n)+"; location / { add_header X-Pid $pid; return 200 \"hello from pid=$pid …\"; }"))
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: filepath.Join(dir, "nginx.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.supPID = func() int { return in.root.pid }
	in.workers = func() []int { return children(in.root.pid) }
	in.reloadFn = func() (time.Duration, error) {
		_, cpu, err := s.procs.run(spawnSpec{name: "nginx -s reload", argv: append(argv, "-s", "reload"),
			log: filepath.Join(dir, "cli.log")}, 30*time.Second)
		return cpu, err
	}
	in.stopFn = func() error { return s.stopRoot(in, unix.SIGQUIT, 40*time.Second) }
	if err := waitReady(in, 30*time.Second, "workers started", func() bool {
		if len(in.workers()) < n {
			return false
		}
		c, err := net.Dial("tcp", in.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

// ---- tableflip ----

func (s *Suite) startTableflip(n int) (*instance, error) {
	p := s.peer("tableflip")
	in, err := s.newInstance(p, "tableflip", 1)
	if err != nil {
		return nil, err
	}
	dir := in.dir
	pidFile := filepath.Join(dir, "pid")
	argv := []string{s.Tools.Tableflip, "-listen", in.addr, "-pid-file", pidFile}
	s.note(p.name, argv)
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: filepath.Join(dir, "tableflip.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	current := func() int {
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	exe, _ := filepath.EvalSymlinks(s.Tools.Tableflip)
	in.workers = func() []int {
		var pids []int
		for _, st := range descendants(scan(), s.procs.self) {
			if st.state != 'Z' && exePath(st.pid) == exe {
				pids = append(pids, st.pid)
			}
		}
		return pids
	}
	in.reloadFn = func() (time.Duration, error) { return 0, unix.Kill(current(), unix.SIGHUP) }
	in.retrigger = true
	in.stopFn = func() error {
		for _, pid := range in.workers() {
			unix.Kill(pid, unix.SIGTERM)
		}
		return waitFor(30*time.Second, 20*time.Millisecond, func() bool { return len(in.workers()) == 0 })
	}
	if err := waitReady(in, 30*time.Second, "ready", func() bool { return current() > 0 }); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
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

// newInstance makes a peer's run directory and picks its port.
func (s *Suite) newInstance(p *peer, dirName string, n int) (*instance, error) {
	dir, err := s.newDir(dirName)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &instance{peer: p, dir: dir, n: n, addr: "127.0.0.1:" + strconv.Itoa(port)}, nil
}

// port is the instance's port number, as text.
func (in *instance) port() string {
	_, port, _ := net.SplitHostPort(in.addr)
	return port
}
