package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/reaper"
)

// After an upgrade the new sockd is systemd's main pid, but not systemd's
// child: it was forked by the old sockd. systemd marks such a main pid
// "alien" ("Supervising process … which is not our child") and, with
// KillMode=mixed, `systemctl stop` then SIGKILLs the whole service right
// after the SIGTERM instead of waiting for sockd to drain: it cannot see an
// alien process exit. Once the old sockd has exited, the new one has been
// reparented to systemd (PID 1, or the user manager, a subreaper), but
// systemd evaluates "alien" only when the main pid changes. So the new
// sockd changes it twice: MAINPID= a short-lived helper of its own, which
// (as the main pid now, the only one NotifyAccess=main listens to) says
// MAINPID= the new sockd again, waits on a BARRIER=1 (sd_notify_barrier(3))
// until systemd has processed that, and exits.

// mainPIDArg0 marks a re-exec of sockd as that helper.
const mainPIDArg0 = "sockd-mainpid"

// MainPIDHelper runs the helper if this process was started as one, and
// exits. Call it first thing in main; it returns at once otherwise.
func MainPIDHelper() {
	if len(os.Args) != 2 || os.Args[0] != mainPIDArg0 {
		return
	}
	// Wait for the go-ahead: sockd has made this process the main pid.
	if b, _ := io.ReadAll(io.LimitReader(os.Stdin, 3)); string(b) != "go\n" {
		os.Exit(3)
	}
	sock := os.Getenv("NOTIFY_SOCKET")
	if err := notify(sock, "MAINPID="+os.Args[1], -1); err != nil {
		fmt.Fprintf(os.Stderr, "sockd-mainpid: %v\n", err)
		os.Exit(1)
	}
	if err := barrier(sock, 5*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "sockd-mainpid: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// notify sends one sd_notify(3) datagram, with fd attached if fd >= 0.
func notify(sock, msg string, fd int) error {
	if sock == "" {
		return errors.New("NOTIFY_SOCKET is not set")
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	return unix.Sendmsg(s, []byte(msg), oob, &unix.SockaddrUnix{Name: sock}, 0)
}

// barrier is sd_notify_barrier(3): systemd closes the passed pipe end once
// it has processed every message sent before.
func barrier(sock string, timeout time.Duration) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	err := notify(sock, "BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(p[0]), Events: 0}} // POLLHUP is always reported
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("barrier: %w", err)
		}
		if n == 0 {
			return errors.New("barrier: systemd did not answer in time")
		}
		return nil
	}
}

// AdoptMainPID is the new sockd's last step of an upgrade under systemd:
// once the old sockd (its parent) has exited, it makes systemd take it as
// its own child (see above). handOver(pid) must send MAINPID=pid to systemd
// and then stay quiet until resume is called: meanwhile systemd listens to
// the helper only. It returns when done, or with why not.
func AdoptMainPID(ctx context.Context, r *reaper.Reaper, handOver func(pid int), resume func()) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if err := waitParentExit(ctx); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe", strconv.Itoa(os.Getpid()))
	cmd.Args[0] = mainPIDArg0
	cmd.Env = []string{"NOTIFY_SOCKET=" + sock}
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	pid, err := r.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", mainPIDArg0, err)
	}
	defer r.Release(pid)
	handOver(cmd.Process.Pid)
	defer resume()
	io.WriteString(in, "go\n")
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", mainPIDArg0, err)
	}
	return nil
}

// waitParentExit returns once the process that started this one (the old
// sockd) has exited. A pidfd polls readable when its process exits; by
// then the process's children (this one) have been reparented. The wait
// is on Go's poller, not in a blocking poll(2): the supervisor runs with
// one P, which a thread blocked in a system call would hold until the
// runtime takes it back.
func waitParentExit(ctx context.Context) error {
	pfd, err := unix.PidfdOpen(os.Getppid(), unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watch the old sockd: %w", err)
	}
	f := os.NewFile(uintptr(pfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("watch the old sockd: %w", err)
	}
	defer context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })()
	err = rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("watch the old sockd: %w", err)
	}
	return nil
}
