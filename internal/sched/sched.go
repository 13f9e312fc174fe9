// Package sched starts a worker at the idle CPU priority and gives it
// back its normal one: SCHED_IDLE, one of Linux's scheduling policies
// (sched(7), https://man7.org/linux/man-pages/man7/sched.7.html;
// sched_setattr(2), https://man7.org/linux/man-pages/man2/sched_setattr.2.html).
//
// A task under SCHED_IDLE runs only when nothing else wants its CPU, and
// a waking task of the normal policy preempts it at once. A worker that
// starts while others serve (a reload's new generation, a crash
// replacement, a scale-up) then boots on the CPU time the serving workers
// leave, instead of taking it from their requests: on two cores, two
// Node.js processes booting beside two serving ones made the serving
// ones' slowest answers about twice as slow.
//
// Leaving SCHED_IDLE is a privileged step: the kernel allows it only
// with CAP_SYS_NICE, or when RLIMIT_NICE allows the task's nice value
// (can_nice in the kernel; RLIMIT_NICE is 0 by default, which allows
// nothing). So a supervisor must check it may restore a worker before it
// starts one idle (CanRestore): a worker that cannot be restored would
// stay at the idle priority for good.
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

// capSysNice is CAP_SYS_NICE's bit (capability.h).
const capSysNice = 23

// CanRestore reports whether this process may move a task of its own
// user (or, when sameUser is false, of any user) from SCHED_IDLE back to
// a, and if not, why not.
func CanRestore(a Attr, sameUser bool) (bool, string) {
	if a.Policy == unix.SCHED_IDLE {
		return false, "sockd itself runs at the idle priority"
	}
	if a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return false, fmt.Sprintf("sockd runs under scheduling policy %d (real-time): its workers keep it", a.Policy)
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

// IdleThread puts the calling thread under SCHED_IDLE, keeping its nice
// value: the threads and processes it starts inherit the policy (a
// process forked by it starts idle). The caller must be locked to its
// thread (runtime.LockOSThread) and give it its policy back (SetThread).
func IdleThread() error {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	a.Policy = unix.SCHED_IDLE
	if err := unix.SchedSetAttr(0, a, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_IDLE: %w", err)
	}
	return nil
}

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

// maxPasses bounds Restore's passes over a tree whose idle threads keep
// starting new ones while it works.
const maxPasses = 8

// Restore gives every thread of pid and of its descendants that is still
// under SCHED_IDLE the policy and nice value a. It walks the tree again
// until a pass finds no idle thread (a thread that an idle one started
// while the pass ran is idle too), at most maxPasses times. It returns
// how many threads it restored; threads and processes that exit while
// it works are no error.
func Restore(pid int, a Attr) (int, error) {
	n := 0
	for range maxPasses {
		changed, err := restoreTree(pid, a)
		n += changed
		if err != nil || changed == 0 {
			return n, err
		}
	}
	return n, nil
}

func restoreTree(pid int, a Attr) (int, error) {
	n := 0
	var errs []error
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/task")
		if err != nil {
			continue // it exited
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cur, err := unix.SchedGetAttr(tid, 0)
			if err != nil || cur.Policy != unix.SCHED_IDLE {
				continue // gone, or not idle (any more)
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
