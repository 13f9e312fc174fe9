package suite

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// The runner is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER): every
// process a peer starts stays its descendant, even a daemon that forks
// away from its parent (the PM2 daemon) or a tableflip generation whose
// parent exited. So the server side of a benchmark is exactly the runner's
// descendants, and nothing outlives the runner by accident.
//
// CPU time of the server side in a window is measured from /proc: the sum,
// over every live descendant, of utime+stime+cutime+cstime (a process's own
// time and that of the children it reaped), at the end minus at the start,
// plus the time of the descendants the runner itself reaped during the
// window (wait4's rusage). Control commands (pm2 reload, nginx -s reload)
// are not counted: the runner never samples while one runs, and their own
// time is reported apart.

type procs struct {
	self int

	mu     sync.Mutex // serialises spawning with the orphan reaper
	owned  map[int]*proc
	ledger time.Duration // CPU of server processes reaped by the runner

	spawnReq chan func()
}

// proc is a process the runner started.
type proc struct {
	pid     int
	name    string
	server  bool // counted as server side
	done    chan struct{}
	status  unix.WaitStatus
	cpu     time.Duration
	exitErr error
}

// exited reports whether the runner has reaped the process.
func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

func newProcs() (*procs, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	p := &procs{self: os.Getpid(), owned: map[int]*proc{}, spawnReq: make(chan func())}
	// Children get PR_SET_PDEATHSIG, which fires when the forking thread
	// exits: fork from one locked thread that lives as long as the runner.
	go func() {
		runtime.LockOSThread()
		for f := range p.spawnReq {
			f()
		}
	}()
	go p.reaper()
	return p, nil
}

// spawnSpec says how to start a process.
type spawnSpec struct {
	name   string   // for logs
	argv   []string // argv[0] is looked up in PATH
	env    []string // appended to os.Environ()
	dir    string
	extra  []int  // descriptors passed as 3, 4, …
	log    string // file for stdout and stderr ("" = /dev/null)
	server bool   // part of the server side (else a control command)
	pgrp   bool   // its own process group
}

func (p *procs) spawn(s spawnSpec) (*proc, error) {
	path, err := exec.LookPath(s.argv[0])
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if s.log != "" {
		out, err = os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	}
	if err != nil {
		return nil, err
	}
	defer out.Close()
	in, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	files := []uintptr{in.Fd(), out.Fd(), out.Fd()}
	for _, fd := range s.extra {
		files = append(files, uintptr(fd))
	}
	env := append(cleanEnv(), s.env...)
	var pr *proc
	done := make(chan struct{})
	p.spawnReq <- func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		var pid int
		pid, err = syscall.ForkExec(path, s.argv, &syscall.ProcAttr{Dir: s.dir, Env: env, Files: files,
			Sys: &syscall.SysProcAttr{Setpgid: s.pgrp, Pdeathsig: syscall.SIGKILL}})
		if err == nil {
			pr = &proc{pid: pid, name: s.name, server: s.server, done: make(chan struct{})}
			p.owned[pid] = pr
			go p.wait(pr)
		}
		close(done)
	}
	<-done
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	return pr, nil
}

func (p *procs) wait(pr *proc) {
	var ru unix.Rusage
	for {
		_, err := unix.Wait4(pr.pid, &pr.status, 0, &ru)
		if err != unix.EINTR {
			pr.exitErr = err
			break
		}
	}
	pr.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	p.mu.Lock()
	delete(p.owned, pr.pid)
	if pr.server {
		p.ledger += pr.cpu
	}
	p.mu.Unlock()
	close(pr.done)
}

// run runs a control command to its end and returns its output (if log is
// empty, into a temporary file) and its CPU time.
func (p *procs) run(s spawnSpec, timeout time.Duration) (string, time.Duration, error) {
	tmp := false
	if s.log == "" {
		f, err := os.CreateTemp("", "sockd-bench-cmd-*")
		if err != nil {
			return "", 0, err
		}
		f.Close()
		s.log, tmp = f.Name(), true
	}
	pr, err := p.spawn(s)
	if err != nil {
		return "", 0, err
	}
	select {
	case <-pr.done:
	case <-time.After(timeout):
		unix.Kill(pr.pid, unix.SIGKILL)
		<-pr.done
		err = fmt.Errorf("%s: timed out after %s", s.name, timeout)
	}
	out, _ := os.ReadFile(s.log)
	if tmp {
		os.Remove(s.log)
	}
	if err == nil && (!pr.status.Exited() || pr.status.ExitStatus() != 0) {
		err = fmt.Errorf("%s: %s: %s", s.name, describe(pr.status), lastLines(string(out), 5))
	}
	return string(out), pr.cpu, err
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// cleanEnv is the runner's environment without what would make a server
// think it was socket-activated.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(kv, "SOCKD_") || strings.HasPrefix(kv, "PM2_") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// reaper reaps the orphans that were reparented to the runner (and that no
// wait goroutine owns), adding their CPU time to the ledger.
func (p *procs) reaper() {
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	tick := time.NewTicker(time.Second)
	for {
		select {
		case <-sig:
		case <-tick.C:
		}
		p.reapOrphans()
	}
}

func (p *procs) reapOrphans() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range procfs.Processes() {
		if st.PPID != p.self || st.State != 'Z' || p.owned[st.PID] != nil {
			continue
		}
		var ws unix.WaitStatus
		var ru unix.Rusage
		if n, err := unix.Wait4(st.PID, &ws, unix.WNOHANG, &ru); err == nil && n == st.PID {
			p.ledger += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
}

// cpuMark is the server side's CPU counter at one moment.
type cpuMark struct {
	at  time.Time
	cpu time.Duration
}

// mark reads the CPU counter of the server side: every descendant's own
// and reaped children's time, plus what the runner reaped.
func (p *procs) mark() cpuMark {
	p.reapOrphans()
	var cpu time.Duration
	for _, st := range descendants(procfs.Processes(), p.self) {
		cpu += st.TreeCPU()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return cpuMark{at: time.Now(), cpu: cpu + p.ledger}
}

func (m cpuMark) to(end cpuMark) time.Duration { return end.cpu - m.cpu }

// killAll ends every descendant: SIGTERM, then SIGKILL after grace.
func (p *procs) killAll(grace time.Duration) {
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		ds := descendants(procfs.Processes(), p.self)
		if len(ds) == 0 {
			return
		}
		for _, st := range ds {
			unix.Kill(st.PID, sig)
		}
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) && len(liveDescendants(p.self)) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	p.reapOrphans()
}

// descendants returns the processes below root (root excluded).
func descendants(all []procfs.Process, root int) []procfs.Process {
	kids := map[int][]procfs.Process{}
	for _, p := range all {
		kids[p.PPID] = append(kids[p.PPID], p)
	}
	var out []procfs.Process
	var walk func(int)
	walk = func(pid int) {
		for _, k := range kids[pid] {
			out = append(out, k)
			walk(k.PID)
		}
	}
	walk(root)
	return out
}

// liveDescendants is descendants without zombies.
func liveDescendants(root int) []procfs.Process {
	var live []procfs.Process
	for _, p := range descendants(procfs.Processes(), root) {
		if !p.Gone() {
			live = append(live, p)
		}
	}
	return live
}

// children returns the live (not zombie) children of pid, sorted.
func children(pid int) []int {
	var out []int
	for _, p := range procfs.Processes() {
		if p.PPID == pid && !p.Gone() {
			out = append(out, p.PID)
		}
	}
	sort.Ints(out)
	return out
}

// rssKB is the resident set of pid in KiB.
func rssKB(pid int) int64 {
	p, err := procfs.ReadProcess(pid)
	if err != nil {
		return 0
	}
	return p.RSS() / 1024
}

// exePath is where /proc/PID/exe points.
func exePath(pid int) string {
	s, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	return s
}

var errTimeout = errors.New("timed out")

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(timeout, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(interval)
	}
}
