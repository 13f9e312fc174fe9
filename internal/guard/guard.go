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
// Processes that leave their worker's process group (setsid, setpgid) are
// out of its reach; under systemd the service's cgroup catches those.
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

// Run reads "+PGID" and "-PGID" lines from in until end-of-file, then
// kills every process group still listed. It ignores the signals a
// terminal or a service manager might send to sockd's whole group, so it
// lasts exactly as long as sockd.
func Run(in io.Reader) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGTSTP)
	for n := 34; n <= 64; n++ { // real-time signals: Go leaves them deadly
		signal.Ignore(syscall.Signal(n))
	}
	groups := map[int]bool{}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
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
	if killed > 0 {
		fmt.Fprintf(os.Stderr, "sockd-guard: sockd is gone; killed %d worker process groups\n", killed)
	}
	return 0
}

// Guard is sockd's end of the pipe to a running guard process.
type Guard struct {
	mu     sync.Mutex
	w      *os.File
	proc   *os.Process
	failed bool
}

// Start runs exe (sockd's own binary, normally /proc/self/exe) as a guard.
func Start(exe string) (*Guard, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	defer r.Close()
	proc, err := os.StartProcess(exe, []string{arg0}, &os.ProcAttr{
		Env:   []string{},
		Files: []*os.File{r, nil, os.Stderr},
		// Its own group: a terminal's ^C for sockd's group must not reach it.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guard: start %s: %w", exe, err)
	}
	return &Guard{w: w, proc: proc}, nil
}

// PID is the guard's process id.
func (g *Guard) PID() int { return g.proc.Pid }

// Add puts a worker's process group on the list.
func (g *Guard) Add(pgid int) error { return g.send('+', pgid) }

// Remove takes a process group off the list once it is empty.
func (g *Guard) Remove(pgid int) error { return g.send('-', pgid) }

func (g *Guard) send(op byte, pgid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed {
		return errors.New("guard: not running")
	}
	// Never block the caller (the supervisor loop) on a stuck guard.
	g.w.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := g.w.Write([]byte(string(op) + strconv.Itoa(pgid) + "\n")); err != nil {
		g.failed = true
		return fmt.Errorf("guard: %w", err)
	}
	return nil
}

// Close ends the guard: it kills the groups still listed, exits, and is
// reaped here.
func (g *Guard) Close() error {
	g.mu.Lock()
	g.failed = true
	g.w.Close()
	g.mu.Unlock()
	st, err := g.proc.Wait()
	if err == nil && !st.Success() {
		err = fmt.Errorf("guard: %s", st)
	}
	return err
}
