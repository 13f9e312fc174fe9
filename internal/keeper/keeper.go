// Package keeper keeps a sockd's process alive after it handed the
// service over to a new sockd binary (sockd upgrade), where its pid must
// not change: a container's PID 1 (its exit ends the container, and the
// new sockd with it) or a process a shell or a foreground supervisor
// started and waits for. Under systemd the new sockd becomes the main pid
// instead (sd_notify MAINPID=) and the old one exits.
//
// The kept process runs nothing but this: it forwards the signals it gets
// to the sockd in charge (its child), reaps every other child it is given
// (it is a child subreaper, PR_SET_CHILD_SUBREAPER in prctl(2), and PID 1
// of a container is init), and exits with the status of the sockd in
// charge. When that sockd hands over in turn, it exits and its successor,
// its child, is reparented here: the keeper finds it among its children
// (the variable SOCKD_UPGRADE_FD in its environment marks a new sockd) and
// keeps it in charge. A SIGTERM is never lost to a window without a
// handler: the keeper handles signals from start to end, and nothing is
// ever exec'd in place.
package keeper

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// Var marks a sockd started under a keeper (its value is the keeper's
// pid): such a sockd exits after an upgrade, for the keeper adopts its
// successor.
const Var = "SOCKD_KEEPER"

// Forwarded are the signals the keeper passes on to the sockd in charge.
var Forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1,
	syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU}

// Child is the sockd in charge: its pid, and a channel closed once it
// exited with its exit status (its reaping belongs to whoever started
// it).
type Child struct {
	PID    int
	Exited <-chan struct{}
	Status func() int
}

// Keep keeps this process alive for first and its successors and returns
// the exit status of the last one. sigs carries the signals this process
// receives (Forwarded at least; the caller's signal.Notify).
func Keep(first Child, sigs <-chan os.Signal, log hclog.Logger) int {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	cur := first
	log.Info("keeping this process for the sockd in charge", "event", "keeper", "sockd_pid", cur.PID)
	tick := time.NewTicker(time.Second) // orphans whose SIGCHLD merged with another's
	defer tick.Stop()
	// stop is the last stop signal passed on: the sockd it went to may
	// have been handing over and exited before it could pass it on to
	// its successor (it does once its successor is in charge), so the
	// successor gets it again. A second stop signal is harmless.
	var stop os.Signal
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				stop = sig
			}
			if err := unix.Kill(cur.PID, sig.(syscall.Signal)); err == nil {
				log.Debug("signal passed on", "event", "keeper_signal", "signal", sig.String(), "sockd_pid", cur.PID)
			}
		case <-cur.Exited:
			status := cur.Status()
			next, ok := successor(cur.PID)
			if !ok {
				log.Info("the sockd in charge exited; so does its keeper", "event", "keeper_exit", "status", status)
				reapOrphans(0)
				return status
			}
			log.Info("the sockd in charge handed over; keeping its successor", "event", "keeper", "sockd_pid", next.PID)
			cur = next
			if stop != nil {
				unix.Kill(cur.PID, stop.(syscall.Signal))
			}
		case <-chld:
			reapOrphans(cur.PID)
		case <-tick.C:
			reapOrphans(cur.PID)
		}
	}
}

// successor finds a new sockd among this process's children: the one the
// exited sockd started, reparented here.
func successor(gone int) (Child, bool) {
	for _, pid := range procfs.Children(os.Getpid()) {
		if pid != gone && procfs.EnvHas(pid, "SOCKD_UPGRADE_FD=") {
			return adopt(pid), true
		}
	}
	return Child{}, false
}

// adopt waits for a child this process did not start (no one else reaps
// it: the keeper reaps orphans only by their pids, and not this one).
func adopt(pid int) Child {
	exited := make(chan struct{})
	status := 1
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				status = exitStatus(ws)
			}
			close(exited)
			return
		}
	}()
	return Child{PID: pid, Exited: exited, Status: func() int { return status }}
}

func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// reapOrphans reaps the exited children other than the sockd in charge
// (whose exit belongs to its own waiter): what a container's PID 1 owes.
func reapOrphans(cur int) {
	for _, pid := range procfs.Children(os.Getpid()) {
		if pid == cur {
			continue
		}
		if st, _, err := procfs.Stat(pid); err == nil && st == 'Z' && !procfs.EnvHas(pid, "SOCKD_UPGRADE_FD=") {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// Pid is the keeper's pid as Var carries it.
func Pid() string { return strconv.Itoa(os.Getpid()) }
