package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// openPTY opens a pseudo-terminal pair: the master (the terminal window's
// side) and the slave (the shell's).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// Non-blocking, so that the runtime's poller reads it and Close ends a
	// pending read (and closes the descriptor: the hang-up) at once.
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// TestTerminalHangUpStops: sockd run in a terminal (its controlling
// terminal) reloads on a SIGHUP sent to it, and stops, workers and all,
// when the terminal goes (its window closed, the ssh connection lost),
// where the kernel's SIGHUP used to reload it and leave it running with
// no terminal.
func TestTerminalHangUpStops(t *testing.T) {
	master, slave := openPTY(t)
	defer master.Close()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--workers", "2", "--listen", "tcp://127.0.0.1:0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGTERM}
	go io.Copy(out, master) // the terminal shows what sockd writes
	d := launch(t, cmd, out, ctl)
	slave.Close()
	workers := d.mustStatus().Workers

	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "a reload", func() bool { s, err := d.status(); return err == nil && s.Generation == 2 && s.Ready == 2 })
	workers = append(workers, d.mustStatus().Workers...)

	master.Close() // the window closes
	if err := waitExit(t, cmd, "after its terminal hung up"); err != nil {
		t.Errorf("sockd after its terminal hung up: %v", err)
	}
	for _, w := range workers {
		waitFor(t, 10*time.Second, fmt.Sprintf("worker %d gone", w.PID), func() bool { return !procfs.Alive(w.PID) })
	}
}

// TestStderrNobodyReads: sockd's stderr is a full pipe nobody reads (a
// terminal paused with Ctrl-S, sockd run 2>&1 | less, a stuck log
// shipper). sockd's own log records wait in a queue (and are dropped when
// it is full): it still starts, answers on its control socket, restarts a
// crashed worker and stops, where it used to stop dead at its first log
// record.
func TestStderrNobodyReads(t *testing.T) {
	_, w := fullPipe(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, out := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--workers", "2", "--listen", "tcp://127.0.0.1:0", "--log-level", "debug")
	cmd.Stderr = w
	cmd.Stdout = io.Discard
	d := launch(t, cmd, out, ctl)
	w.Close()
	victim := d.mustStatus().Workers[0]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the crashed worker restarted", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 2 && s.Restarts == 1
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, "with a stderr nobody reads, after SIGTERM"); err != nil {
		t.Errorf("sockd with a stderr nobody reads stopped with %v", err)
	}
}

// waitExit waits for cmd (started) to exit, 30 s at most.
func waitExit(t *testing.T, cmd *exec.Cmd, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sockd still runs 30 s %s", what)
		return nil
	}
}

// fullPipe is a pipe of one page that is full, which nobody reads: a
// terminal paused with Ctrl-S, a stuck log shipper.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// TestBackgroundJobWithTostop: `stty tostop; sockd run … &` in an
// interactive shell on a terminal. Every write of a background job to the
// terminal then raises SIGTTOU for its whole process group: sockd took
// them for scale requests (in a loop, as the write is retried) and a
// child caught between fork and exec was stopped, so sockd never served.
// Now it serves, says SIGTTIN and SIGTTOU are job control, and stops on
// kill -TERM %1.
func TestBackgroundJobWithTostop(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	master, slave := openPTY(t)
	defer master.Close()
	sh := exec.Command(bash, "--norc", "--noprofile", "-i")
	sh.Stdin, sh.Stdout, sh.Stderr = slave, slave, slave
	sh.Env = append(os.Environ(), "PS1=$ ", "SOCKDTEST_MAIN=1", "GORACE=atexit_sleep_ms=0")
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer func() { sh.Process.Kill(); sh.Wait() }()
	var screen syncBuffer
	go io.Copy(&screen, master)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	fmt.Fprintf(master, "stty tostop\n%s run --control %s --workers 2 --listen tcp://127.0.0.1:0 --stop-timeout 5s &\n", os.Args[0], ctl)
	d := &daemonProc{control: ctl, t: t, out: &screen}
	waitFor(t, 20*time.Second, "sockd serving in the background", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 2
	})
	s := d.mustStatus()
	waitFor(t, 10*time.Second, "the job-control notice", func() bool { return strings.Contains(screen.String(), "event=job_control") })
	if strings.Contains(screen.String(), "scale=-1") {
		t.Errorf("SIGTTOU taken for a scale request:\n%s", screen.String())
	}
	fmt.Fprintf(master, "kill -TERM %%1\n")
	pids := []int{s.PID}
	for _, w := range s.Workers {
		pids = append(pids, w.PID)
	}
	for _, pid := range pids {
		waitFor(t, 20*time.Second, fmt.Sprintf("process %d gone", pid), func() bool { return !procfs.Alive(pid) })
	}
}

// A sockd that gives up while nobody reads its stderr still exits (4),
// so that systemd's Restart= or the container runtime acts: its last
// words wait for stderr 2 s at most.
func TestGivesUpWithAStderrNobodyReads(t *testing.T) {
	_, w := fullPipe(t)
	cmd, _ := sockdCmd(t, nil, "run", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--listen", "none", "--workers", "1",
		"--restart-limit", "1/60s", "--", "/bin/false")
	cmd.Stderr, cmd.Stdout = w, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := waitExit(t, cmd, "after it gave up, with its stderr full"); cmd.ProcessState.ExitCode() != exitWorkers {
		t.Errorf("sockd gave up with %v, want exit %d", err, exitWorkers)
	}
}
