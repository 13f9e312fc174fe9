package handoff

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/fdtest"
)

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		sd := newFakeSystemd(t, abstract)
		checkFDs := fdtest.Track(t, "notify")
		if err := notify(sd.addr, "MAINPID=42", -1); err != nil {
			t.Fatal(err)
		}
		if msg, fds := sd.recv(t); msg != "MAINPID=42" || len(fds) != 0 {
			t.Fatalf("fake systemd got %q with %d descriptors", msg, len(fds))
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := notify(sd.addr, "FDSTORE=1", int(r.Fd())); err != nil {
			t.Fatal(err)
		}
		msg, fds := sd.recv(t)
		if msg != "FDSTORE=1" || len(fds) != 1 || fdtest.Inode(fds[0]) != fdtest.Inode(int(r.Fd())) {
			t.Fatalf("fake systemd got %q with descriptors %v", msg, fds)
		}
		closeAll(fds)
		r.Close()
		w.Close()
		checkFDs()
	}
	checkFDs := fdtest.Track(t, "failed notify")
	if err := notify("", "READY=1", -1); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET is not set") {
		t.Errorf("notify without a socket: %v", err)
	}
	if err := notify(filepath.Join(t.TempDir(), "none"), "READY=1", 0); err == nil {
		t.Errorf("notify to a missing socket succeeded")
	}
	checkFDs()
}

func TestBarrier(t *testing.T) {
	sd := newFakeSystemd(t, false)
	checkFDs := fdtest.Track(t, "barrier")
	// systemd answers by closing the descriptor it was given.
	answered := make(chan error, 1)
	go func() {
		buf, oob := make([]byte, 64), make([]byte, 64)
		n, oobn, _, _, err := sd.conn.ReadMsgUnix(buf, oob)
		if err == nil && string(buf[:n]) != "BARRIER=1" {
			err = errors.New("got " + string(buf[:n]))
		}
		fds, _ := parseRights(oob[:oobn])
		if err == nil && len(fds) != 1 {
			err = errors.New("no descriptor")
		}
		closeAll(fds)
		answered <- err
	}()
	if err := barrier(sd.addr, 10*time.Second); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("fake systemd: %v", err)
	}
	checkFDs()
	// One that holds on to it: barrier gives up at its timeout.
	start := time.Now()
	err := barrier(sd.addr, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("barrier without an answer: %v after %v", err, time.Since(start))
	}
	msg, fds := sd.recv(t)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("fake systemd got %q with %d descriptors", msg, len(fds))
	}
	closeAll(fds) // the only copy left of the pipe barrier made
	checkFDs()
	if err := barrier(filepath.Join(t.TempDir(), "none"), time.Second); err == nil {
		t.Fatal("barrier to a missing socket succeeded")
	}
	checkFDs()
}

// mainPIDHelper runs this test binary as sockd-mainpid PID with stdin.
func mainPIDHelper(t *testing.T, notifySocket, stdin string) *exec.Cmd {
	t.Helper()
	c := exec.Command("/proc/self/exe", "4242")
	c.Args[0] = mainPIDArg0
	c.Env = []string{"NOTIFY_SOCKET=" + notifySocket, "GORACE=atexit_sleep_ms=0"}
	c.Stdin = strings.NewReader(stdin)
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMainPIDHelper(t *testing.T) {
	sd := newFakeSystemd(t, false)
	c := mainPIDHelper(t, sd.addr, "go\n")
	if msg, fds := sd.recv(t); msg != "MAINPID=4242" || len(fds) != 0 {
		t.Fatalf("first message %q with %d descriptors", msg, len(fds))
	}
	msg, fds := sd.recv(t)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("second message %q with %d descriptors", msg, len(fds))
	}
	closeAll(fds) // the answer it waits for
	if err := c.Wait(); err != nil {
		t.Fatalf("sockd-mainpid: %v", err)
	}
	// Without the go-ahead it says nothing and fails.
	c = mainPIDHelper(t, sd.addr, "")
	if err := c.Wait(); c.ProcessState.ExitCode() != 3 {
		t.Fatalf("sockd-mainpid without go-ahead: %v", err)
	}
	sd.mark(t)
	if msg, fds := sd.recv(t); msg != "TEST_MARK=1" {
		closeAll(fds)
		t.Fatalf("sockd-mainpid without go-ahead said %q", msg)
	}
	c = mainPIDHelper(t, "", "go\n")
	if err := c.Wait(); c.ProcessState.ExitCode() != 1 {
		t.Fatalf("sockd-mainpid without NOTIFY_SOCKET: %v", err)
	}
}

func TestWaitParentExitGivesUpWithContext(t *testing.T) {
	checkFDs := fdtest.Track(t, "waitParentExit")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	// This process's parent (go test) outlives the test.
	if err := waitParentExit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitParentExit: %v", err)
	}
	checkFDs()
	t.Setenv("NOTIFY_SOCKET", "")
	if err := AdoptMainPID(context.Background(), nil, func(int) { t.Error("handOver called") }, func() { t.Error("resume called") }); err != nil {
		t.Fatalf("AdoptMainPID without NOTIFY_SOCKET: %v", err)
	}
}
