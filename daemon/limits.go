package daemon

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/account"
	"github.com/sockd/sockd/internal/resources"
	"github.com/sockd/sockd/pool"
)

// Descriptors sockd needs, besides the listening sockets: fdsBase whatever
// the pool's size (the Go runtime, the control, notify and metrics
// sockets, the guard's pipe, cgroup files, forks in progress, control
// clients), and fdsPerSlot per worker slot (a pidfd for its worker, and
// one for the worker replacing it during a reload).
const (
	fdsBase    = 64
	fdsPerSlot = 2
)

// checkLimits refuses a pool that cannot run within sockd's resource
// limits, before anything is forked: better one clear line at start than
// workers failing to start one after another. Go has raised the soft
// RLIMIT_NOFILE to the hard one already (and restores it for the workers).
func checkLimits(workers int, ls activation.Set, user *account.User) error {
	sockets := 0
	for _, l := range ls {
		sockets += l.Slots()
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		if need := fdsBase + sockets + fdsPerSlot*workers; rl.Cur < uint64(need) {
			return tag(pool.ErrResources, fmt.Errorf("RLIMIT_NOFILE is %d, and %d workers on %d sockets need about %d descriptors: raise LimitNOFILE= (systemd) or ulimit -n",
				rl.Cur, workers, sockets, need))
		}
	}
	// RLIMIT_NPROC counts every process and thread of the workers' user;
	// root's are not counted.
	uid := os.Geteuid()
	if user != nil {
		uid = int(user.UID)
	}
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY && uid != 0 {
		if need := 2*workers + 2; rl.Cur < uint64(need) {
			return tag(pool.ErrResources, fmt.Errorf("RLIMIT_NPROC is %d for uid %d, and %d workers (twice as many during a reload, and sockd and its guard) need at least %d processes: raise LimitNPROC= (systemd) or ulimit -u",
				rl.Cur, uid, workers, need))
		}
	}
	return nil
}

// shortOf tags err with pool.ErrResources when it says the system or a limit
// ran short of something (a full disk, too many open files, …).
func shortOf(err error) error {
	if err != nil && resources.ShortOf(err) != "" && !errors.Is(err, pool.ErrResources) {
		return tag(pool.ErrResources, err)
	}
	return err
}
