package suite

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// The peers that are not sockd and not the runner's own workers: PM2,
// Node's cluster module, gunicorn, nginx, tableflip. Each app writes its
// pid to BENCH_READY_FILE once it listens.

// startPM2 runs the Node app in PM2's cluster mode, with PM2_HOME in the
// run directory.
func (s *Suite) startPM2(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	in.readyFile = filepath.Join(in.dir, "ready")
	home := filepath.Join(in.dir, "home")
	eco := map[string]any{"apps": []map[string]any{{
		"name": "bench", "script": filepath.Join(s.Root, "bench/peers/node/app.js"),
		"exec_mode": "cluster", "instances": n, "kill_timeout": 5000,
		"out_file": filepath.Join(in.dir, "out.log"), "error_file": filepath.Join(in.dir, "err.log"),
		"env": map[string]string{"PORT": in.port(), "BENCH_READY_FILE": in.readyFile},
	}}}
	b, _ := json.MarshalIndent(eco, "", "  ")
	ecoFile := filepath.Join(in.dir, "ecosystem.json")
	if err := os.WriteFile(ecoFile, b, 0o644); err != nil {
		return nil, err
	}
	env := []string{"PM2_HOME=" + home, "PM2_DISABLE_VERSION_CHECK=true"}
	pm2 := func(args ...string) (time.Duration, error) {
		argv := append([]string{s.Tools.PM2}, args...)
		_, cpu, err := s.procs.run(spawnSpec{name: "pm2 " + args[0], argv: argv, env: env, log: filepath.Join(in.dir, "cli.log")}, 120*time.Second)
		return cpu, err
	}
	eb, _ := json.Marshal(eco)
	s.note(p.name, []string{"PM2_HOME=" + home, s.Tools.PM2, "start", ecoFile, "  # ecosystem.json: " + string(eb)})
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
		if d > 0 && waitFor(30*time.Second, 20*time.Millisecond, func() bool { return !procfs.Alive(d) }) != nil {
			unix.Kill(d, unix.SIGKILL)
		}
		return err
	}
	return in.ready(in.waitReady(60*time.Second, "all workers listening", func() bool { return len(in.readyPIDs()) >= n }))
}

// startCluster runs the Node app as a primary with n workers of Node's
// cluster module, scheduling policy peer.mode (rr or none).
func (s *Suite) startCluster(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	in.readyFile = filepath.Join(in.dir, "ready")
	env := []string{"BENCH_CLUSTER=" + strconv.Itoa(n), "NODE_CLUSTER_SCHED_POLICY=" + p.mode, "PORT=" + in.port(),
		"BENCH_READY_FILE=" + in.readyFile}
	argv := s.appCommand("node")
	s.note(p.name, append(append([]string{}, env[:3]...), argv...))
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, env: env, log: filepath.Join(in.dir, "node.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.rooted(unix.SIGTERM, 0, 40*time.Second)
	return in.ready(in.waitReady(60*time.Second, "all workers listening", func() bool { return len(in.readyPIDs()) >= n }))
}

// startGunicorn runs the WSGI app under gunicorn's sync workers.
func (s *Suite) startGunicorn(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	in.readyFile = filepath.Join(in.dir, "ready")
	pydir := filepath.Join(s.Root, "bench/peers/python")
	argv := []string{s.Tools.Gunicorn, "-c", filepath.Join(pydir, "gunicorn.conf.py"), "--chdir", pydir,
		"-w", strconv.Itoa(n), "-b", in.addr, "app:app"}
	s.note(p.name, argv)
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, env: []string{"BENCH_READY_FILE=" + in.readyFile},
		log: filepath.Join(in.dir, "gunicorn.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.rooted(unix.SIGTERM, unix.SIGHUP, 40*time.Second)
	return in.ready(in.waitReady(60*time.Second, "all workers booted", func() bool { return len(in.readyPIDs()) >= n }))
}

const nginxConf = `daemon off;
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
`

// startNginx runs nginx answering a fixed text with its worker's pid.
func (s *Suite) startNginx(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	confFile := filepath.Join(in.dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(fmt.Sprintf(nginxConf, n, in.dir, in.dir, in.addr)), 0o644); err != nil {
		return nil, err
	}
	argv := []string{s.Tools.Nginx, "-p", in.dir, "-c", confFile}
	s.note(p.name, append(argv, "  # nginx.conf: worker_processes "+strconv.Itoa(n)+"; location / { add_header X-Pid $pid; return 200 \"hello from pid=$pid …\"; }"))
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: filepath.Join(in.dir, "nginx.log"), server: true, pgrp: true})
	if err != nil {
		return nil, err
	}
	in.rooted(unix.SIGQUIT, 0, 40*time.Second)
	in.reloadFn = func() (time.Duration, error) {
		_, cpu, err := s.procs.run(spawnSpec{name: "nginx -s reload", argv: append(argv, "-s", "reload"),
			log: filepath.Join(in.dir, "cli.log")}, 30*time.Second)
		return cpu, err
	}
	return in.ready(in.waitReady(30*time.Second, "workers started", func() bool {
		if len(in.workers()) < n {
			return false
		}
		c, err := net.Dial("tcp", in.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}))
}

// startTableflip runs the tableflip peer: one Go process that upgrades
// itself on SIGHUP (n is ignored).
func (s *Suite) startTableflip(p *peer, _ int) (*instance, error) {
	in, err := s.newInstance(p, 1)
	if err != nil {
		return nil, err
	}
	pidFile := filepath.Join(in.dir, "pid")
	argv := []string{s.Tools.Tableflip, "-listen", in.addr, "-pid-file", pidFile}
	s.note(p.name, argv)
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: filepath.Join(in.dir, "tableflip.log"), server: true, pgrp: true})
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
		for _, st := range descendants(procfs.Processes(), s.procs.self) {
			if !st.Gone() && exePath(st.PID) == exe {
				pids = append(pids, st.PID)
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
	return in.ready(in.waitReady(30*time.Second, "ready", func() bool { return current() > 0 }))
}
