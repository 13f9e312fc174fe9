package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

// Limits too low for the pool, a full file system, a read-only one: sockd
// says so in one line and exits with the documented code before it forks
// a worker, and leaves no socket file behind.
func TestResourcesAtStart(t *testing.T) {
	self := worldExecutableCopy(t) // --user nobody runs it
	for _, c := range []struct {
		name  string
		shell string // run before sockd; DIR is the control socket's directory
		args  []string
		code  int
		msg   string
	}{
		{"descriptors", "ulimit -n 40", []string{"--workers", "8", "--reuseport"}, exitResources, "RLIMIT_NOFILE is 40, and 8 workers on 8 sockets need about"},
		{"processes", "ulimit -u 10", []string{"--workers", "8", "--user", "nobody"}, exitResources, "RLIMIT_NPROC is 10 for uid 65534"},
		{"full disk", "mount -t tmpfs -o size=64k,nr_inodes=2 tmpfs DIR", nil, exitResources, "no space left on device"},
		{"read-only directory", "mount -t tmpfs -o ro tmpfs DIR", nil, exitListeners, "read-only file system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ctl := filepath.Join(dir, "ctl.sock")
			args := append([]string{"run", "--control", ctl, "--listen", "tcp://127.0.0.1:0"}, c.args...)
			cmd, out := sockdCmd(t, nil)
			script := strings.ReplaceAll(c.shell, "DIR", dir) + ` && exec "$0" "$@"`
			// A mount namespace of its own: the mount goes with the test.
			cmd.Path = "/usr/bin/unshare"
			cmd.Args = append([]string{"unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", script, self}, args...)
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("sockd hung:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			if code := cmd.ProcessState.ExitCode(); code != c.code || !strings.HasPrefix(last, "sockd: ") || !strings.Contains(last, c.msg) {
				t.Fatalf("exit %d (want %d), output:\n%s", code, c.code, out)
			}
			if strings.Contains(out.String(), "worker started") {
				t.Errorf("a worker was started:\n%s", out)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left in the control socket's directory: %v", entries)
			}
		})
	}
}

// At run time, a worker sockd cannot start for want of descriptors is
// tried again with backoff while the other one serves: no busy loop (a
// few failures a second, not thousands), one log line, the restart budget
// untouched (so sockd does not give up), no descriptor leaked; once
// descriptors are free again the slot is filled. Meanwhile the control
// socket fails to accept (EMFILE too) and recovers.
func TestForkFailsAtRunTime(t *testing.T) {
	d := startSockd(t, nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0", "--restart-limit", "10/2s")
	pid := d.cmd.Process.Pid
	s := d.mustStatus()
	victim := s.Workers[0].PID
	fds := func() []int {
		l, err := procfs.FDs(pid)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// Not counting the control socket's connections: the server closes
	// one after it wrote its answer, so a status call may still be open.
	count := func() int {
		control := unixSocketsAt(t, d.control)
		n := 0
		for _, fd := range fds() {
			if target, err := procfs.FDTarget(pid, fd); err != nil || !control[target] {
				n++
			}
		}
		return n
	}
	var baseline int
	waitFor(t, 10*time.Second, "sockd's descriptors settled", func() bool {
		n := count()
		same := n == baseline
		baseline = n
		return same
	})
	// Let sockd open no new descriptor: the limit is its lowest free
	// descriptor number (the soft one: raising a hard limit again needs
	// CAP_SYS_RESOURCE, which a container's root may not have).
	open := fds()
	sort.Ints(open)
	lowest := 0
	for _, fd := range open {
		if fd != lowest {
			break
		}
		lowest++
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lowest), Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	syscall.Kill(victim, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "the failed start logged", func() bool {
		return strings.Contains(d.out.String(), "too many open files")
	})
	// An exposure time, not a synchronisation: a busy loop would fail
	// thousands of times in it.
	time.Sleep(time.Second)
	restore()
	waitFor(t, 20*time.Second, "the slot filled again", func() bool {
		s, err := d.status()
		return err == nil && s.Ready == 2
	})
	s = d.mustStatus()
	if s.SpawnFailures < 1 || s.SpawnFailures > 50 || s.Restarts != 1 || s.State != "running" {
		t.Errorf("after 1 s without descriptors: %d spawn failures, %d restarts, %s", s.SpawnFailures, s.Restarts, s.State)
	}
	t.Logf("1 s without descriptors: %d spawn failures; log: %q", s.SpawnFailures, grepLines(d.out.String(), "cannot start worker"))
	if n := strings.Count(d.out.String(), "cannot start worker"); n != 1 {
		t.Errorf("%d log lines for %d failures within 10 s", n, s.SpawnFailures)
	}
	waitFor(t, 10*time.Second, "sockd's descriptors back to where they were", func() bool {
		return count() == baseline
	})
}

func grepLines(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
