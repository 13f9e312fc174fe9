package handoff

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/procfs"
)

// The test binary doubles as the new sockd of an upgrade (started by
// Start with HANDOFF_TEST_CHILD=MODE) and as the sockd-mainpid helper.
// The child writes a childReport to the file HANDOFF_TEST_REPORT: once it
// has taken the hand-off and set up its signals (before it says ready),
// and again at its end.
//
//	ok          Accept, Ready, WaitCommit, exit 0
//	noready     Accept, then wait for SIGTERM and exit 0
//	ignoreterm  Accept, ignore SIGTERM, Ready, wait forever
//	nocommit    Accept, ignore SIGTERM, Ready, WaitCommit (which is to
//	            fail), exit 5
//	exit        Accept, exit 7
//	refuse      exit 7 without reading anything
//	garbage     Accept, send a packet that is not JSON with two
//	            descriptors attached, wait for SIGTERM
//	wrongpid    Accept, say ready with another pid, wait for SIGTERM
func TestMain(m *testing.M) {
	MainPIDHelper()
	if mode := os.Getenv("HANDOFF_TEST_CHILD"); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// childReport is what the child saw.
type childReport struct {
	PID       int
	Err       string
	State     State
	Listeners []listenerReport
	Control   *fdReport
	// FDsTaken is how many descriptors Accept added to the child's own.
	FDsTaken  int
	CommitErr string
	Committed bool
}

type listenerReport struct {
	Name, Network, Addr, Path string
	Inherited                 bool
	FDs                       []fdReport
}

type fdReport struct {
	Inode                        uint64
	Cloexec, Listening, NonBlock bool
}

func describeFD(fd int) fdReport {
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return fdReport{Inode: fdtest.Inode(fd), Cloexec: fdtest.Cloexec(fd), Listening: fdtest.Listening(fd), NonBlock: fl&unix.O_NONBLOCK != 0}
}

func (r *childReport) write() {
	b, _ := json.Marshal(r)
	os.WriteFile(os.Getenv("HANDOFF_TEST_REPORT"), b, 0o644)
}

func countFDs() int {
	fds, _ := procfs.FDs(os.Getpid())
	return len(fds)
}

func child(mode string) int {
	if mode == "refuse" {
		return 7
	}
	r := &childReport{PID: os.Getpid()}
	// Start the runtime's poller, whose descriptors are not Accept's.
	if pr, pw, err := os.Pipe(); err == nil {
		pr.Close()
		pw.Close()
	}
	before := countFDs()
	ch, err := Accept(os.Getenv, 10*time.Second)
	if err != nil {
		r.Err = err.Error()
		r.write()
		return 4
	}
	r.FDsTaken = countFDs() - before
	r.State = ch.State
	for _, l := range ch.Listeners {
		lr := listenerReport{Name: l.Name, Network: l.Network, Addr: l.Addr, Path: l.Path(), Inherited: l.Inherited}
		for _, fd := range l.FDs() {
			lr.FDs = append(lr.FDs, describeFD(fd))
		}
		r.Listeners = append(r.Listeners, lr)
	}
	if ch.Control != nil {
		rc, _ := ch.Control.SyscallConn()
		rc.Control(func(fd uintptr) {
			d := describeFD(int(fd))
			r.Control = &d
		})
	}
	// term is never sent SIGUSR1: the wait on it cannot look like a
	// deadlock to the runtime even when SIGTERM is ignored.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGUSR1)
	switch mode {
	case "ignoreterm", "nocommit":
		signal.Ignore(syscall.SIGTERM)
	default:
		signal.Notify(term, syscall.SIGTERM)
	}
	// Once the report is there, SIGTERM is handled (or ignored).
	r.write()
	switch mode {
	case "exit":
		return 7
	case "garbage":
		ch.c.c.WriteMsgUnix([]byte("not json"), unix.UnixRights(0, 1), nil)
	case "wrongpid":
		ch.c.send(message{Event: "ready", PID: 1}, nil)
	case "noready":
	default:
		if err := ch.Ready(); err != nil {
			r.Err = err.Error()
			r.write()
			return 4
		}
	}
	switch mode {
	case "ok", "nocommit":
		if err := ch.WaitCommit(context.Background()); err != nil {
			r.CommitErr = err.Error()
			r.write()
			return 5
		}
		r.Committed = true
		r.write()
		return 0
	}
	<-term // ignoreterm: until SIGKILL
	return 0
}
