// Package guard makes sure no worker outlives sockd, even when sockd is
// killed with SIGKILL.
//
// Each worker runs in its own process group and gets SIGKILL as its
// parent-death signal (prctl(2) PR_SET_PDEATHSIG). That reaches the worker,
// but not the processes the worker started: a shell wrapper's server, or
// `npm start`'s node, would be reparented to init and keep accepting on the
// listening sockets. The guard is a tiny second process (sockd re-executed
// as "sockd-guard") that holds the read end of a pipe from sockd and the
// list of the workers' process groups. When the pipe reaches end-of-file —
// sockd exited, however it died — the guard sends SIGKILL to every process
// group still on its list, and exits.
//
// Processes that leave their worker's process group (setsid, setpgid)
// are found another way: when the workers have cgroups of their own (see
// internal/cgroup), the guard kills every worker cgroup under sockd's
// subtree; otherwise it kills every process whose environment carries the
// SOCKD_WORKER_ID of one of this sockd's workers (which its descendants
// inherit, unless they clear their environment).
package guard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/reaper"
)

// arg0 marks a re-exec of sockd as the guard.
const arg0 = "sockd-guard"

// Main runs the guard if this process was started as one, and then exits.
// It must be called first thing in main (and in TestMain of tests that
// start guards); it returns at once in any other process.
func Main() {
	if len(os.Args) == 0 || os.Args[0] != arg0 {
		return
	}
	os.Exit(Run(os.Stdin))
}

// Run reads "+PGID" and "-PGID" lines (a worker's process group to kill,
// or no more), "mPREFIX" (the SOCKD_WORKER_ID prefix of sockd's workers),
// "cPATH" (sockd's cgroup subtree), "oPATH" (the cgroup sockd came from,
// if it made its subtree) and "x." (sockd exits cleanly) from in until
// end-of-file, then kills everything listed. It ignores the signals a terminal or a service
// manager might send to sockd's whole group, so it lasts exactly as long
// as sockd.
func Run(in io.Reader) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGTSTP)
	for n := 34; n <= 64; n++ { // real-time signals: Go leaves them deadly
		signal.Ignore(syscall.Signal(n))
	}
	sockd := os.Getppid() // while it lives
	groups := map[int]bool{}
	var mark, tree, origin string
	clean := false
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		switch line[0] {
		case 'm':
			mark = line[1:]
			continue
		case 'c':
			tree = line[1:]
			continue
		case 'o':
			origin = line[1:]
			continue
		case 'x':
			clean = line == "x."
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			groups[pgid] = true
		case '-':
			delete(groups, pgid)
		}
	}
	killed := 0
	for pgid := range groups {
		if unix.Kill(-pgid, unix.SIGKILL) == nil {
			killed++
		}
	}
	if tree != "" {
		killed += cgroup.KillTree(tree, sockd)
	}
	if mark != "" {
		killed += killMarked(mark)
	}
	if origin != "" && !clean {
		// sockd made the subtree, and died without removing it: gone with
		// it, once its cgroups emptied.
		for deadline := time.Now().Add(3 * time.Second); cgroup.Remove(tree, origin, os.Getpid()) != nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if killed > 0 {
		fmt.Fprintf(os.Stderr, "sockd-guard: sockd is gone; killed %d worker process groups, cgroups or processes left by workers\n", killed)
	}
	return 0
}

// killMarked kills every process whose environment has a variable that
// starts with mark, scanning /proc until a scan finds none (a process may
// fork while the scan runs) or a few seconds pass.
func killMarked(mark string) int {
	killed := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		found := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() || !procfs.Alive(pid) || !procfs.EnvHas(pid, mark) {
				continue
			}
			found++
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
		if found == 0 {
			break
		}
	}
	return killed
}

// Guard is sockd's end of the pipe to a running guard process. It keeps
// the guard running: if the guard dies (someone kills it), it is reaped
// and a new one started with everything the old one was told, so no
// zombie is left and sockd is never without a guard for long.
type Guard struct {
	opts Options
	exe  string

	mu       sync.Mutex
	w        *os.File
	proc     *os.Process
	exited   chan struct{} // closed once proc is reaped
	status   *os.ProcessState
	groups   map[int]bool
	closing  bool
	restarts int
}

// Options say what else the guard kills when sockd is gone.
type Options struct {
	// Mark is the SOCKD_WORKER_ID prefix of this sockd's workers
	// ("SOCKD_WORKER_ID=1234-"): processes they left behind carry it.
	Mark string
	// Cgroup is sockd's cgroup subtree: the guard kills its worker
	// cgroups; if CgroupOrigin is set, sockd made the subtree, and the
	// guard removes it, moving itself back to CgroupOrigin.
	Cgroup, CgroupOrigin string
	// Reaper registers the guard as a child sockd waits for itself.
	Reaper *reaper.Reaper
	// Logger hears of a guard that died and was started again.
	Logger hclog.Logger
}

// restartDelay spaces the starts of a guard that keeps dying.
const restartDelay = time.Second

// Start runs exe (sockd's own binary, normally /proc/self/exe) as a guard.
func Start(exe string, o Options) (*Guard, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	g := &Guard{opts: o, exe: exe, groups: map[int]bool{}}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.spawn(); err != nil {
		return nil, err
	}
	return g, nil
}

// spawn starts a guard process and tells it everything; g.mu is held.
func (g *Guard) spawn() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	defer r.Close()
	var proc *os.Process
	_, err = g.opts.Reaper.Start(func() (int, error) {
		var err error
		proc, err = os.StartProcess(g.exe, []string{arg0}, &os.ProcAttr{
			Env:   []string{},
			Files: []*os.File{r, nil, os.Stderr},
			// Its own group: a terminal's ^C for sockd's group must not reach it.
			Sys: &syscall.SysProcAttr{Setpgid: true},
		})
		if err != nil {
			return 0, err
		}
		return proc.Pid, nil
	})
	if err != nil {
		w.Close()
		return fmt.Errorf("guard: start %s: %w", g.exe, err)
	}
	g.w, g.proc, g.exited = w, proc, make(chan struct{})
	lines := []string{}
	if g.opts.Mark != "" {
		lines = append(lines, "m"+g.opts.Mark)
	}
	if g.opts.Cgroup != "" {
		lines = append(lines, "c"+g.opts.Cgroup)
	}
	if g.opts.CgroupOrigin != "" {
		lines = append(lines, "o"+g.opts.CgroupOrigin)
	}
	for pgid := range g.groups {
		lines = append(lines, "+"+strconv.Itoa(pgid))
	}
	for _, l := range lines {
		g.write(l)
	}
	go g.watch(proc, w, g.exited)
	return nil
}

// watch reaps a guard process; unless sockd closed it, a new one starts.
func (g *Guard) watch(proc *os.Process, w *os.File, exited chan struct{}) {
	st, _ := proc.Wait()
	g.opts.Reaper.Release(proc.Pid)
	g.mu.Lock()
	defer g.mu.Unlock()
	w.Close()
	g.status = st
	close(exited)
	if g.closing {
		return
	}
	g.opts.Logger.Warn("the guard died; starting a new one", "event", "guard_restart", "guard_pid", proc.Pid, "status", st.String())
	g.restarts++
	if g.restarts > 1 { // one that keeps dying is not started in a loop
		g.mu.Unlock()
		time.Sleep(restartDelay)
		g.mu.Lock()
		if g.closing {
			return
		}
	}
	if err := g.spawn(); err != nil {
		g.opts.Logger.Error("no guard: if sockd is killed, processes started by workers may survive it", "event", "guard_failed", "error", err)
	}
}

// PID is the guard's process id (the current one's, after a restart).
func (g *Guard) PID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proc.Pid
}

// Add puts a worker's process group on the list.
func (g *Guard) Add(pgid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.groups[pgid] = true
	return g.write("+" + strconv.Itoa(pgid))
}

// Remove takes a process group off the list once it is empty.
func (g *Guard) Remove(pgid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.groups, pgid)
	return g.write("-" + strconv.Itoa(pgid))
}

// write sends one line to the guard; g.mu is held. A guard that is gone
// gets the line again, with the whole list, when it is started again.
func (g *Guard) write(line string) error {
	if g.closing {
		return errors.New("guard: closed")
	}
	select {
	case <-g.exited:
		return errors.New("guard: not running")
	default:
	}
	// Never block the caller (the supervisor loop) on a stuck guard.
	g.w.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := g.w.Write([]byte(line + "\n")); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Stuck (stopped, say): replaced by one that reads. Killed,
			// it kills nothing; the new one gets the whole list.
			g.proc.Kill()
		}
		return fmt.Errorf("guard: %w", err)
	}
	return nil
}

// Close ends the guard: it kills the groups still listed, exits, and is
// reaped. sockd removes its cgroup subtree itself then.
func (g *Guard) Close() error {
	g.mu.Lock()
	g.write("x.")
	g.closing = true
	g.w.Close()
	exited := g.exited
	g.mu.Unlock()
	<-exited
	g.mu.Lock()
	st := g.status
	g.mu.Unlock()
	if st != nil && !st.Success() {
		return fmt.Errorf("guard: %s", st)
	}
	return nil
}
