// Package reaper makes sockd the parent of last resort for everything its
// workers start: a child subreaper (PR_SET_CHILD_SUBREAPER, prctl(2)), so
// that a process whose parent exits (a daemon that double-forked with
// setsid, Node's spawn with detached: true) is reparented to sockd instead
// of to init, where sockd can still find it and end it. As PID 1 of a pid
// namespace (a container) sockd is that parent anyway.
//
// sockd must then reap those adopted processes when they exit, or they
// stay zombies. The processes sockd starts itself (workers, the guard, a
// new sockd of an upgrade) are waited for by their owners; the reaper must
// never reap one of those, or the owner's wait would fail. So every fork
// goes through Start, which registers the child under the same lock the
// reaper holds while it decides which children to reap: an adopted
// process is a child that nobody registered.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// Reaper reaps the children sockd adopted.
type Reaper struct {
	mu    sync.Mutex
	owned map[int]bool
	kick  chan struct{}
	self  int
}

// New makes this process a child subreaper (unless it is PID 1, which is
// one by nature) and returns its reaper. Run it with Run.
func New() (*Reaper, error) {
	r := &Reaper{owned: map[int]bool{}, kick: make(chan struct{}, 1), self: os.Getpid()}
	if r.self != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
		}
	}
	return r, nil
}

// Start runs fork (which starts one child and returns its pid) and
// registers the child as owned, so the reaper leaves it to its owner, who
// must call Release once it has reaped it. A nil Reaper just runs fork.
func (r *Reaper) Start(fork func() (int, error)) (int, error) {
	if r == nil {
		return fork()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err == nil && pid > 0 {
		r.owned[pid] = true
	}
	return pid, err
}

// Release says the owner of pid has reaped it.
func (r *Reaper) Release(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.owned, pid)
	r.mu.Unlock()
	// The pid is free again: a process adopted meanwhile under the same
	// number must not wait for the next SIGCHLD.
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reaps adopted children whenever a child exits (SIGCHLD) or a pid
// is released, until ctx ends. Signals that merge (several exits, one
// SIGCHLD) lose nothing: each pass reaps every exited child, and a
// SIGCHLD that arrives during a pass waits in the channel for the next.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	for {
		r.Reap()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-r.kick:
		}
	}
}

// Reap collects every adopted child that has exited and returns how many.
// A nil Reaper reaps nothing, adopts nothing and kills nothing.
func (r *Reaper) Reap() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, pid := range procfs.Children(r.self) {
		if r.owned[pid] {
			continue
		}
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG, nil); err == nil && info.Signo != 0 {
			n++
		}
	}
	return n
}

// Adopted lists the live children sockd did not start itself.
func (r *Reaper) Adopted() []int {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var pids []int
	for _, pid := range procfs.Children(r.self) {
		if !r.owned[pid] && procfs.Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Descendants lists pid and every process below it, at most limit.
func Descendants(pid, limit int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < limit; i++ {
		out = append(out, procfs.Children(out[i])...)
	}
	return out
}

// KillAdopted sends SIGKILL to every adopted child for which match holds
// (every one if match is nil), and to all its descendants, until none is
// left or the deadline passes. Descendants of a killed process are
// reparented to sockd and adopted in turn. It returns how many processes
// it killed.
func (r *Reaper) KillAdopted(match func(pid int) bool, deadline time.Time) (int, error) {
	if r == nil {
		return 0, nil
	}
	killed := 0
	for {
		var victims []int
		for _, pid := range r.Adopted() {
			if match == nil || match(pid) {
				victims = append(victims, Descendants(pid, 4096)...)
			}
		}
		if len(victims) == 0 {
			return killed, nil
		}
		for _, pid := range victims {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
		r.Reap()
		if time.Now().After(deadline) {
			return killed, errors.New("processes left by workers keep appearing")
		}
		time.Sleep(time.Millisecond) // let the kernel reparent the killed ones' children
	}
}
