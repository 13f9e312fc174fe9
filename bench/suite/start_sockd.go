package suite

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// startSockd runs sockd with n workers of the peer's app on its port,
// logging JSON to the run directory's sockd.log. It is ready when sockd
// logged pool_ready and, for the Node and Python apps, every worker wrote
// its pid to the ready file once it listened.
func (s *Suite) startSockd(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	in.readyFile = filepath.Join(in.dir, "ready")
	ctl := filepath.Join(in.dir, "sockd.sock")
	argv := []string{s.Tools.Sockd, "run", "--listen", "tcp://" + in.addr, "--workers", strconv.Itoa(n),
		"--control", ctl, "--restart-limit", "100/60s", "--log-format", "json"}
	if p.mode == "reuseport" {
		argv = append(argv, "--reuseport")
	}
	argv = append(argv, p.args...)
	if p.app != "go" {
		// The Node app says READY=1 through systemd-notify(1) once it
		// listens, fdserve.py itself.
		argv = append(append(argv, "--"), s.appCommand(p.app)...)
	}
	s.note(p.name, argv)
	in.logFile = filepath.Join(in.dir, "sockd.log")
	in.root, err = s.procs.spawn(spawnSpec{name: p.name, argv: argv, log: in.logFile, server: true, pgrp: true,
		env: []string{"BENCH_READY_FILE=" + in.readyFile}})
	if err != nil {
		return nil, err
	}
	if p.app == "go" {
		in.readyFile = "" // the demo worker tells sockd, not a file
	}
	in.rooted(unix.SIGTERM, unix.SIGHUP, 45*time.Second)
	guard := s.sockdGuard(ctl)
	in.workers = func() []int { return without(children(in.root.pid), guard()) }
	log := &sockdLog{path: in.logFile}
	return in.ready(in.waitReady(60*time.Second, "all workers ready", func() bool {
		return log.has(evPoolReady) && (p.app == "go" || len(in.readyPIDs()) >= n)
	}))
}

// sockdStatus is the part of `sockd status --json` the runner reads.
type sockdStatus struct {
	GuardPID int `json:"guard_pid"`
}

// sockdGuard returns a function giving the pid of sockd's guard (a child
// of sockd that lives as long as it and is no worker), asked of sockd
// with `sockd status --json` the first time it is needed.
func (s *Suite) sockdGuard(ctl string) func() int {
	var mu sync.Mutex
	guard := 0
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		if guard == 0 {
			st, err := s.sockdStatus(ctl)
			if err != nil {
				s.warnf("%v", err)
			}
			guard = st.GuardPID
		}
		return guard
	}
}

func (s *Suite) sockdStatus(ctl string) (sockdStatus, error) {
	var st sockdStatus
	out, _, err := s.procs.run(spawnSpec{name: "sockd status",
		argv: []string{s.Tools.Sockd, "status", "--json", "--control", ctl}}, 10*time.Second)
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	if err != nil {
		return st, fmt.Errorf("sockd status --json: %w", err)
	}
	return st, nil
}

// without is pids but pid.
func without(pids []int, pid int) []int {
	out := pids[:0:0]
	for _, p := range pids {
		if p != pid {
			out = append(out, p)
		}
	}
	return out
}
