// Package sched starts a worker at a low CPU priority and gives it back
// its normal one: ten nice levels below sockd's own, under sockd's own
// scheduling policy (sched(7), https://man7.org/linux/man-pages/man7/sched.7.html;
// sched_setattr(2), https://man7.org/linux/man-pages/man2/sched_setattr.2.html).
//
// When every CPU is busy, the kernel shares them by weight: a task ten
// nice levels down weighs 110 against a normal task's 1024, so it gets
// about a tenth of a serving worker's share. A worker that starts while
// others serve (a reload's new generation, a crash replacement, a
// scale-up) then boots, and warms up, on a trickle of CPU time instead
// of taking a burst of it from their requests; on an idle CPU it runs at
// full speed. (SCHED_IDLE, tried first, gets nothing while the CPUs are
// busy, so the boot only moved to whenever the worker got its priority
// back, and came as a burst there: BENCHMARKS.md.)
//
// Raising a task's priority back is a privileged step: the kernel allows
// it only with CAP_SYS_NICE, or when RLIMIT_NICE allows the nice value
// (can_nice in the kernel; RLIMIT_NICE is 0 by default, which allows
// nothing). So a supervisor must check it may restore a worker before it
// starts one low (CanRestore): a worker that cannot be restored would
// stay at the low priority for good.
package sched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// Attr is a task's scheduling policy and nice value.
type Attr struct {
	Policy uint32
	Nice   int32
}

// Self is the calling thread's policy and nice value: what sockd's
// workers inherit, and what Restore gives them back.
func Self() (Attr, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return Attr{}, fmt.Errorf("sched_getattr: %w", err)
	}
	return Attr{Policy: a.Policy, Nice: a.Nice}, nil
}

// Lower is how many nice levels below sockd's own a worker starts.
const Lower = 10

// Low is the priority a worker of a process at a starts at: a's policy,
// Lower nice levels down (at most 19).
func Low(a Attr) Attr { return Attr{Policy: a.Policy, Nice: min(a.Nice+Lower, 19)} }

// capSysNice is CAP_SYS_NICE's bit (capability.h).
const capSysNice = 23

// CanRestore reports whether this process may start a task of its own
// user (or, when sameUser is false, of any user) at Low(a) and move it
// back to a, and if not, why not.
func CanRestore(a Attr, sameUser bool) (bool, string) {
	if a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return false, fmt.Sprintf("sockd runs under scheduling policy %d (idle or real-time): its workers keep it", a.Policy)
	}
	if Low(a).Nice == a.Nice {
		return false, "sockd runs at nice 19: there is no lower priority"
	}
	if hasCap(capSysNice) {
		return true, ""
	}
	if !sameUser {
		return false, "the workers run as another user and sockd lacks CAP_SYS_NICE"
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NICE, &rl); err == nil && rl.Cur >= uint64(20-a.Nice) {
		return true, ""
	}
	return false, "sockd lacks CAP_SYS_NICE and RLIMIT_NICE does not allow its nice value"
}

// hasCap reports whether bit is in this process's effective capabilities.
func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}

// LowThread puts the calling thread at Low(a), a being its own priority:
// the threads and processes it starts inherit it (a process forked by it
// starts low). The caller must be locked to its thread
// (runtime.LockOSThread) and give it its priority back (SetThread).
func LowThread(a Attr) error { return SetThread(Low(a)) }

// SetThread gives the calling thread the policy and nice value a.
func SetThread(a Attr) error {
	cur, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	cur.Policy, cur.Nice, cur.Flags = a.Policy, a.Nice, 0
	if err := unix.SchedSetAttr(0, cur, 0); err != nil {
		return fmt.Errorf("sched_setattr: %w", err)
	}
	return nil
}

// maxPasses bounds Restore's passes over a tree whose low threads keep
// starting new ones while it works.
const maxPasses = 8

// Restore gives every thread of the processes roots and of their
// descendants that is still at Low(a) the priority a. A supervisor passes
// the worker and what left its tree but is still the worker's (a daemon
// that double-forked, found in the worker's cgroup or among the orphans
// sockd adopted). It walks the trees again until a pass finds no such
// thread (a thread that a low one started while the pass ran is low too),
// at most maxPasses times. It returns how many threads it restored;
// threads and processes that exit while it works are no error.
//
// A thread the app itself moved to another priority keeps that one; so
// does every thread in seen (if not nil), to which Restore adds every
// thread it looks at: a later call with the same set touches only
// threads that are new since, and leaves alone one the app has since put
// at Low(a) itself. That later call is needed: a thread whose clone(2)
// from a low one was under way may be listed only after Restore
// returned, low.
func Restore(a Attr, seen map[int]bool, roots ...int) (int, error) {
	if seen == nil {
		seen = map[int]bool{}
	}
	n := 0
	for range maxPasses {
		changed, err := restoreTrees(roots, seen, Low(a), a)
		n += changed
		if err != nil || changed == 0 {
			return n, err
		}
	}
	return n, nil
}

func restoreTrees(roots []int, seen map[int]bool, low, a Attr) (int, error) {
	n := 0
	var errs []error
	todo := append([]int(nil), roots...)
	walked := map[int]bool{}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if walked[p] {
			continue // a root inside another root's tree: walked once
		}
		walked[p] = true
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/task")
		if err != nil {
			continue // it exited
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || seen[tid] {
				continue
			}
			seen[tid] = true
			cur, err := unix.SchedGetAttr(tid, 0)
			if err != nil || cur.Policy != low.Policy || cur.Nice != low.Nice {
				continue // gone, or not low (any more)
			}
			cur.Policy, cur.Nice, cur.Flags = a.Policy, a.Nice, 0
			if err := unix.SchedSetAttr(tid, cur, 0); err != nil {
				if !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("sched_setattr %d: %w", tid, err))
				}
				continue
			}
			n++
		}
		todo = append(todo, procfs.Children(p)...)
	}
	return n, errors.Join(errs...)
}
