package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/fdtest"
)

// testSet binds what an old sockd would pass on: a TCP reuseport group
// of slots sockets, a unix socket (file under the test's directory) and a
// UDP group marked inherited, all closed at the end of the test.
func testSet(t *testing.T, slots int) activation.Set {
	t.Helper()
	var specs []activation.Spec
	for _, s := range []string{"http=tcp://127.0.0.1:0", "adm=unix://" + filepath.Join(t.TempDir(), "adm.sock") + "?mode=0660", "dns=udp://127.0.0.1:0"} {
		spec, err := activation.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, spec)
	}
	set, err := activation.Bind(context.Background(), specs, activation.BindOptions{ReusePort: true, Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	set[2].Inherited = true
	t.Cleanup(func() { set.Close() })
	return set
}

func testControl(t *testing.T) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "ctl.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startChild runs this test binary as the new sockd in mode; its report
// goes to the returned path. The child is reaped at the end of the test
// at the latest.
func startChild(t *testing.T, mode string, o Options) (*Upgrade, string) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Path, o.Args = exe, []string{}
	o.Env = append(os.Environ(), "HANDOFF_TEST_CHILD="+mode, "HANDOFF_TEST_REPORT="+report, "GORACE=atexit_sleep_ms=0")
	u, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-u.exited:
		default:
			u.Abort(0)
		}
	})
	return u, report
}

func readReport(t *testing.T, path string) childReport {
	t.Helper()
	var r childReport
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		t.Fatalf("child report: %v", err)
	}
	return r
}

// waitExit waits for the child to be reaped.
func waitExit(t *testing.T, u *Upgrade) *os.ProcessState {
	t.Helper()
	select {
	case <-u.exited:
		return u.cmd.ProcessState
	case <-time.After(20 * time.Second):
		t.Fatalf("new sockd %d did not exit", u.PID())
		return nil
	}
}

func TestUpgradeExchange(t *testing.T) {
	// 3 slots: 8 descriptors in one packet; 230: 462 in three (200, 200
	// and 62).
	for _, slots := range []int{3, 230} {
		t.Run(fmt.Sprintf("%dslots", slots), func(t *testing.T) {
			testUpgradeExchange(t, slots)
		})
	}
}

func testUpgradeExchange(t *testing.T, slots int) {
	set, ctl := testSet(t, slots), testControl(t)
	checkFDs := fdtest.Track(t, "upgrade done")
	u, report := startChild(t, "ok", Options{Generation: 4, Listeners: set, Control: ctl})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := u.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	r := readReport(t, report)
	if r.Err != "" || r.PID != u.PID() {
		t.Fatalf("child %d (Start says %d): %s", r.PID, u.PID(), r.Err)
	}
	// The state, as the child received it.
	st := r.State
	total := 2*slots + 1 + 1
	if st.Version != version || st.Generation != 4 || !st.Control || st.FDs != total || len(st.Listeners) != len(set) {
		t.Fatalf("state %+v; want version %d, generation 4, control, %d descriptors, %d listeners", st, version, total, len(set))
	}
	if r.FDsTaken != total {
		t.Errorf("the child's descriptors grew by %d, want %d", r.FDsTaken, total)
	}
	// The listeners: the very same sockets, in slot order, close-on-exec
	// and as they were (listening, non-blocking).
	for i, l := range set {
		ls, lr := st.Listeners[i], r.Listeners[i]
		if ls != (ListenerState{Name: l.Name, Slots: l.Slots(), Inherited: l.Inherited, Path: l.Path()}) {
			t.Errorf("listener %d state %+v; parent's %s has %d sockets, inherited %v, path %q", i, ls, l, l.Slots(), l.Inherited, l.Path())
		}
		if lr.Name != l.Name || lr.Network != l.Network || lr.Addr != l.Addr || lr.Path != l.Path() || lr.Inherited != l.Inherited || len(lr.FDs) != l.Slots() {
			t.Errorf("listener %d: child has %+v, parent %s (path %q, inherited %v, %d sockets)", i, lr, l, l.Path(), l.Inherited, l.Slots())
			continue
		}
		for j, fd := range l.FDs() {
			want := describeFD(fd)
			want.Cloexec = true
			if lr.FDs[j] != want {
				t.Errorf("listener %s socket %d: child's %+v, parent's %+v", l.Name, j, lr.FDs[j], describeFD(fd))
			}
		}
	}
	if set[0].Network != "tcp" || set[1].Path() == "" || !describeFD(set[0].FD(0)).Listening || describeFD(set[2].FD(0)).Listening {
		t.Fatalf("test set not as meant: %v", set)
	}
	rc, _ := ctl.SyscallConn()
	rc.Control(func(fd uintptr) {
		want := describeFD(int(fd))
		want.Cloexec = true
		if r.Control == nil || *r.Control != want {
			t.Errorf("control socket: child's %+v, parent's %+v", r.Control, want)
		}
	})
	if err := u.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if ps := waitExit(t, u); !ps.Success() {
		t.Fatalf("child: %s", ps)
	}
	if r := readReport(t, report); !r.Committed {
		t.Fatalf("child did not see the commit: %s", r.CommitErr)
	}
	checkFDs()
}

func TestUpgradeFailures(t *testing.T) {
	exited7 := func(err error) bool {
		// How a closed socket is explained depends on whether the exit
		// was seen first; either way it is the child's doing.
		return strings.Contains(err.Error(), "new sockd exited before it was ready (exit status 7)") ||
			strings.Contains(err.Error(), "new sockd broke the hand-off: peer closed the hand-off socket")
	}
	for _, c := range []struct {
		mode string
		// giveUp: the context ends once the child waits, its SIGTERM
		// handler set up (for a deadline, the child might not be there
		// yet and die of the SIGTERM).
		giveUp bool
		errOK  func(error) bool
		exit   int
	}{
		{"noready", true, func(err error) bool {
			return errors.Is(err, context.Canceled) && strings.Contains(err.Error(), "new sockd not ready in time")
		}, 0},
		{"exit", false, exited7, 7},
		{"refuse", false, exited7, 7},
		{"garbage", false, func(err error) bool {
			return strings.Contains(err.Error(), "new sockd broke the hand-off: bad hand-off packet")
		}, 0},
		{"wrongpid", false, func(err error) bool {
			return strings.Contains(err.Error(), "new sockd broke the hand-off: unexpected message {Event:ready PID:1")
		}, 0},
	} {
		t.Run(c.mode, func(t *testing.T) {
			set, ctl := testSet(t, 2), testControl(t)
			checkFDs := fdtest.Track(t, "failed upgrade")
			u, report := startChild(t, c.mode, Options{Generation: 1, Listeners: set, Control: ctl})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if c.giveUp {
				go func() {
					for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
						if _, err := os.Stat(report); err == nil {
							break
						}
					}
					cancel()
				}()
			}
			err := u.WaitReady(ctx)
			if err == nil || !c.errOK(err) {
				t.Fatalf("WaitReady: %v", err)
			}
			// WaitReady aborted the child: it is reaped already.
			select {
			case <-u.exited:
			default:
				t.Fatal("WaitReady failed and left the child running")
			}
			if ps := u.cmd.ProcessState; !ps.Exited() || ps.ExitCode() != c.exit {
				t.Fatalf("child: %s, want exit status %d", ps, c.exit)
			}
			checkFDs()
		})
	}
}

func TestAbortKillsAfterGrace(t *testing.T) {
	set := testSet(t, 1)
	checkFDs := fdtest.Track(t, "aborted upgrade")
	u, _ := startChild(t, "ignoreterm", Options{Listeners: set})
	if err := u.WaitReady(context.Background()); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	start := time.Now()
	u.Abort(300 * time.Millisecond)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Abort returned after %v, before the grace", d)
	}
	ws, _ := u.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ignoring SIGTERM: %s, want killed", u.cmd.ProcessState)
	}
	checkFDs()
}

func TestAbortAfterReadyFailsWaitCommit(t *testing.T) {
	set := testSet(t, 1)
	u, report := startChild(t, "nocommit", Options{Listeners: set})
	if err := u.WaitReady(context.Background()); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	// The child ignores SIGTERM: it exits because its WaitCommit sees the
	// hand-off socket closed, well before the grace.
	u.Abort(time.Minute)
	if ps := u.cmd.ProcessState; ps.ExitCode() != 5 {
		t.Fatalf("child: %s, want exit status 5", ps)
	}
	if r := readReport(t, report); r.Committed || !strings.Contains(r.CommitErr, "old sockd did not hand over") {
		t.Fatalf("child's WaitCommit: %+v", r)
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	set := testSet(t, 2)
	checkFDs := fdtest.Track(t, "failed Start")
	if _, err := Start(Options{Path: "/nonexistent/sockd", Listeners: set, Args: []string{}, Env: []string{}}); err == nil || !strings.Contains(err.Error(), "start new sockd /nonexistent/sockd") {
		t.Fatalf("Start of a missing binary: %v", err)
	}
	checkFDs()
	// A listener whose socket is gone: the ones duplicated before it are
	// closed again, and nothing is started.
	// (A high number: a low one would be taken again by the first dup.)
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	const fd = 10000
	if err := unix.Dup3(s, fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(s)
	broken, err := activation.NewListener("broken", []int{fd}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	checkFDs = fdtest.Track(t, "Start with a closed socket")
	if _, err := Start(Options{Path: "/nonexistent/sockd", Listeners: append(set, broken), Args: []string{}, Env: []string{}}); err == nil || !strings.Contains(err.Error(), "dup listener broken") {
		t.Fatalf("Start with a closed socket: %v", err)
	}
	checkFDs()
}
