package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/internal/reaper"
)

// childEnv makes the test binary act as a new sockd (see TestMain):
// "ready" takes the hand-off, writes a report to the file named by
// childReportEnv, says ready and waits for the commit; "exit" takes it and
// exits before it is ready; "garbage" answers the hand-off with a wrong message; "hang"
// takes the hand-off and never answers.
const (
	childEnv       = "HANDOFF_TEST_CHILD"
	childReportEnv = "HANDOFF_TEST_REPORT"
)

func TestMain(m *testing.M) {
	MainPIDHelper()
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

// report is what a child found in its hand-off, as fd-level facts.
type report struct {
	State     State
	Listeners [][]sockFacts // per listener, per slot
	Control   sockFacts
	Stray     []string // sockets it holds that it did not take
	Commit    string
}

type sockFacts struct {
	FD        int
	Inode     string // socket:[N] as in /proc/PID/fd: the same socket in every process
	Addr      string // getsockname
	Accepting bool   // SO_ACCEPTCONN
	CloExec   bool
}

func facts(fd int) sockFacts {
	f := sockFacts{FD: fd}
	f.Inode, _ = procfs.FDTarget(os.Getpid(), fd)
	if sa, err := unix.Getsockname(fd); err == nil {
		f.Addr = fmt.Sprint(sa)
	}
	v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	f.Accepting = v == 1
	flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	f.CloExec = flags&unix.FD_CLOEXEC != 0
	return f
}

func runChild(mode string) int {
	ch, err := Accept(os.Getenv, 5*time.Second)
	if err != nil || ch == nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if mode == "exit" {
		return 7
	}
	rep := report{State: ch.State}
	taken := map[string]bool{}
	for _, l := range ch.Listeners {
		var ls []sockFacts
		for _, fd := range l.FDs() {
			f := facts(fd)
			taken[f.Inode] = true
			ls = append(ls, f)
		}
		rep.Listeners = append(rep.Listeners, ls)
	}
	if ch.Control != nil {
		raw, _ := ch.Control.SyscallConn()
		raw.Control(func(fd uintptr) { rep.Control = facts(int(fd)) })
		taken[rep.Control.Inode] = true
	}
	raw, _ := ch.c.c.SyscallConn()
	raw.Control(func(fd uintptr) { taken[facts(int(fd)).Inode] = true })
	fds, _ := procfs.FDs(os.Getpid())
	for _, fd := range fds {
		if t, _ := procfs.FDTarget(os.Getpid(), fd); strings.HasPrefix(t, "socket:") && !taken[t] {
			rep.Stray = append(rep.Stray, fmt.Sprintf("fd %d %s", fd, t))
		}
	}
	switch mode {
	case "garbage":
		ch.c.send(message{Event: "hello"}, nil)
	case "hang":
		select {}
	case "ready":
		if err := ch.Ready(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ch.WaitCommit(ctx); err != nil {
			rep.Commit = err.Error()
		} else {
			rep.Commit = "ok"
		}
	}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(os.Getenv(childReportEnv), b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	return 0
}

func bindSet(t *testing.T, specs []string, slots int) activation.Set {
	t.Helper()
	var ss []activation.Spec
	for _, s := range specs {
		sp, err := activation.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, sp)
	}
	set, err := activation.Bind(context.Background(), ss, activation.BindOptions{ReusePort: true, Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return set
}

func newReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	r, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func childEnviron(mode, report string) []string {
	return append(os.Environ(), childEnv+"="+mode, childReportEnv+"="+report)
}

// gone waits until pid is neither running nor a zombie.
func gone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for procfs.Alive(pid) {
		if time.Now().After(deadline) {
			st, _, _ := procfs.Stat(pid)
			t.Fatalf("pid %d still there (state %c)", pid, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := procfs.FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// A whole upgrade between two real processes: 2 listeners of 120 and 100
// reuseport sockets (more than one SCM_RIGHTS packet holds), a unix
// listener and the control socket. The new process holds exactly the
// same sockets (same inodes, in slot order, still listening, close-on-
// exec), no others, and the state; the old one leaks no descriptor.
func TestUpgradeHandsOverEverySocket(t *testing.T) {
	dir := t.TempDir()
	set := bindSet(t, []string{"http=tcp://127.0.0.1:0"}, 120)
	set = append(set, bindSet(t, []string{"dns=udp://127.0.0.1:0", "local=unix://" + filepath.Join(dir, "s.sock")}, 100)...)
	ctl, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "control"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	total := 0
	for _, l := range set {
		total += l.Slots()
	}
	if total <= maxFDsPerPacket {
		t.Fatalf("only %d sockets: the test must need more than one packet", total)
	}
	before := openFDs(t)
	out := filepath.Join(dir, "report.json")
	u, err := Start(Options{
		Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: childEnviron("ready", out),
		Generation: 7, Workers: 5, Cgroup: "/sockd-1", CgroupOrigin: "/x",
		Listeners: set, Control: ctl, Reaper: newReaper(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := u.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	<-u.exited
	if !u.cmd.ProcessState.Success() {
		t.Fatalf("child: %s", u.cmd.ProcessState)
	}
	if after := openFDs(t); after != before {
		t.Errorf("old side: %d descriptors before the upgrade, %d after", before, after)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Commit != "ok" {
		t.Errorf("commit: %s", rep.Commit)
	}
	st := rep.State
	if st.Generation != 7 || st.Workers != 5 || st.Cgroup != "/sockd-1" || st.CgroupOrigin != "/x" || !st.Control || st.FDs != total+1 {
		t.Errorf("state %+v", st)
	}
	if len(rep.Listeners) != len(set) {
		t.Fatalf("%d listeners, sent %d", len(rep.Listeners), len(set))
	}
	for i, l := range set {
		if st.Listeners[i].Name != l.Name || st.Listeners[i].Path != l.Path() {
			t.Errorf("listener %d: %+v, sent %s path %q", i, st.Listeners[i], l.Name, l.Path())
		}
		if len(rep.Listeners[i]) != l.Slots() {
			t.Fatalf("listener %s: %d sockets, sent %d", l.Name, len(rep.Listeners[i]), l.Slots())
		}
		for slot, fd := range l.FDs() {
			want, got := facts(fd), rep.Listeners[i][slot]
			if got.Inode != want.Inode || got.Addr != want.Addr {
				t.Fatalf("listener %s slot %d: child has %s %s, parent %s %s", l.Name, slot, got.Inode, got.Addr, want.Inode, want.Addr)
			}
			if got.Accepting != want.Accepting || !got.CloExec {
				t.Errorf("listener %s slot %d: %+v", l.Name, slot, got)
			}
		}
	}
	raw, _ := ctl.SyscallConn()
	var want sockFacts
	raw.Control(func(fd uintptr) { want = facts(int(fd)) })
	if rep.Control.Inode != want.Inode || !rep.Control.Accepting || !rep.Control.CloExec {
		t.Errorf("control socket: child %+v, parent %+v", rep.Control, want)
	}
	if len(rep.Stray) > 0 {
		t.Errorf("child holds sockets it did not take: %v", rep.Stray)
	}
}

// A new sockd that fails, in each way it can, is stopped and reaped, and
// the error says how it failed.
func TestUpgradeFailures(t *testing.T) {
	for _, tc := range []struct {
		mode, want string
		timeout    time.Duration
	}{
		{"exit", "exited before it was ready", 10 * time.Second},
		{"garbage", "unexpected message", 10 * time.Second},
		{"hang", "not ready in time", 300 * time.Millisecond},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			set := bindSet(t, []string{"http=tcp://127.0.0.1:0"}, 3)
			before := openFDs(t)
			u, err := Start(Options{
				Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: childEnviron(tc.mode, filepath.Join(t.TempDir(), "r")),
				Listeners: set, Reaper: newReaper(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			err = u.WaitReady(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WaitReady: %v, want %q", err, tc.want)
			}
			gone(t, u.PID())
			if after := openFDs(t); after != before {
				t.Errorf("%d descriptors before, %d after", before, after)
			}
		})
	}
}

// A binary that cannot run leaves nothing behind.
func TestUpgradeStartFails(t *testing.T) {
	set := bindSet(t, []string{"http=tcp://127.0.0.1:0"}, 2)
	before := openFDs(t)
	_, err := Start(Options{Path: filepath.Join(t.TempDir(), "no-such-sockd"), Args: []string{}, Listeners: set, Reaper: newReaper(t)})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Start: %v", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors before, %d after", before, after)
	}
}

// Accept without the variable is no upgrade; with a bad one it is a clear
// error that closes what it named.
func TestAcceptBadEnv(t *testing.T) {
	if ch, err := Accept(func(string) string { return "" }, time.Second); ch != nil || err != nil {
		t.Fatalf("no variable: %v %v", ch, err)
	}
	for _, v := range []string{"x", "-1", "2", "99999"} {
		if _, err := Accept(func(string) string { return v }, time.Second); err == nil || !strings.Contains(err.Error(), EnvFD) {
			t.Errorf("%s=%s: %v", EnvFD, v, err)
		}
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	_, err := Accept(func(string) string { return fmt.Sprint(p[0]) }, time.Second)
	if err == nil {
		t.Fatal("a pipe taken as the hand-off socket")
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("the pipe is still open after the error: %v", err)
	}
}

// An old sockd that goes away before the state is complete: the new one
// errors out in time and keeps nothing.
func TestAcceptPeerGone(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := openFDs(t) - 1 // the child's end is consumed by Accept
	st, _ := json.Marshal(State{Version: version, Listeners: []ListenerState{{Name: "http", Slots: 2}}, FDs: 2})
	unix.Sendmsg(pair[0], st, nil, nil, 0)
	unix.Close(pair[0])
	_, err = Accept(func(string) string { return fmt.Sprint(pair[1]) }, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "receive sockets") {
		t.Fatalf("Accept: %v", err)
	}
	if after := openFDs(t); after != before-1 {
		t.Errorf("%d descriptors before, %d after", before, after)
	}
}

// Store sends every socket sockd bound itself to systemd's fd store, one
// datagram each, named sockd.<listener>.<slot>, and none of the sockets
// it inherited; Regroup turns what systemd gives back into the same
// listeners.
func TestStoreAndRegroup(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify")
	sd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sd)
	if err := unix.Bind(sd, &unix.SockaddrUnix{Name: sockPath}); err != nil {
		t.Fatal(err)
	}
	own := bindSet(t, []string{"http=tcp://127.0.0.1:0", "api=unix://" + filepath.Join(dir, "api.sock")}, 3)
	inh := bindSet(t, []string{"web=tcp://127.0.0.1:0"}, 1)
	inh[0].Inherited = true
	n, err := Store(sockPath, append(own, inh...))
	if err != nil || n != 4 {
		t.Fatalf("Store: %d %v", n, err)
	}
	// What systemd would keep: name -> socket (as its own descriptor).
	stored := map[string]int{}
	for i := 0; i < n; i++ {
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4*4))
		m, oobn, _, _, err := unix.Recvmsg(sd, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds, err := parseRights(oob[:oobn])
		if err != nil || len(fds) != 1 {
			t.Fatalf("datagram %q carries %v (%v)", buf[:m], fds, err)
		}
		name, ok := strings.CutPrefix(string(buf[:m]), "FDSTORE=1\nFDNAME=")
		if !ok {
			t.Fatalf("datagram %q", buf[:m])
		}
		stored[name] = fds[0]
	}
	if _, _, _, _, err := unix.Recvmsg(sd, make([]byte, 64), nil, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Fatalf("more datagrams than sockets: %v", err)
	}
	wantNames := []string{"sockd.http.0", "sockd.http.1", "sockd.http.2", "sockd.api.0"}
	for _, name := range wantNames {
		if _, ok := stored[name]; !ok {
			t.Fatalf("stored %v, want %v", stored, wantNames)
		}
	}
	// systemd hands them back in some order, with a socket unit's socket.
	var back activation.Set
	for _, name := range []string{"sockd.http.2", "sockd.api.0", "sockd.http.0", "sockd.http.1"} {
		l, err := activation.NewListener(name, []int{stored[name]}, true, "")
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, l)
	}
	back = append(back, inh...)
	got, err := Regroup(back)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if names := got.Names(); names != "web:http:api" {
		t.Fatalf("regrouped into %s", names)
	}
	for _, l := range got[1:] {
		orig := own[0]
		if l.Name == "api" {
			orig = own[1]
			if l.Path() != orig.Path() {
				t.Errorf("api: path %q, want %q", l.Path(), orig.Path())
			}
		}
		if l.Inherited || l.Slots() != orig.Slots() {
			t.Errorf("%s: inherited %v, %d slots", l.Name, l.Inherited, l.Slots())
		}
		for slot, fd := range l.FDs() {
			if a, b := facts(fd).Inode, facts(orig.FD(slot)).Inode; a != b {
				t.Errorf("%s slot %d: %s, stored from %s", l.Name, slot, a, b)
			}
		}
	}
	if n, err := Store("", own); n != 0 || err != nil {
		t.Errorf("Store without NOTIFY_SOCKET: %d %v", n, err)
	}
}

func TestParseStoreName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		slot int
		ok   bool
	}{
		{"sockd.http.0", "http", 0, true},
		{"sockd.a.b.12", "a.b", 12, true},
		{"sockd.http.-1", "", 0, false},
		{"sockd.http", "", 0, false},
		{"sockd..3", "", 0, false},
		{"sockd.http.x", "", 0, false},
		{"http.0", "", 0, false},
		{"", "", 0, false},
	} {
		name, slot, ok := parseStoreName(tc.in)
		if ok != tc.ok || (ok && (name != tc.name || slot != tc.slot)) {
			t.Errorf("%q: %q %d %v", tc.in, name, slot, ok)
		}
	}
}

// fakeSystemd is a notify socket that records datagrams and answers
// BARRIER=1 by closing the passed pipe end, unless told to hold it.
type fakeSystemd struct {
	path string
	got  chan string
}

func newFakeSystemd(t *testing.T, answer bool) *fakeSystemd {
	t.Helper()
	f := &fakeSystemd{path: filepath.Join(t.TempDir(), "notify"), got: make(chan string, 16)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		var held []int
		defer func() { closeAll(held) }()
		for {
			buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			fds, _ := parseRights(oob[:oobn])
			if answer {
				closeAll(fds)
			} else {
				held = append(held, fds...)
			}
			f.got <- string(buf[:n])
		}
	}()
	return f
}

func TestBarrier(t *testing.T) {
	sd := newFakeSystemd(t, true)
	if err := barrier(sd.path, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := <-sd.got; m != "BARRIER=1" {
		t.Fatalf("sent %q", m)
	}
	quiet := newFakeSystemd(t, false)
	if err := barrier(quiet.path, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("unanswered barrier: %v", err)
	}
	if err := barrier(filepath.Join(t.TempDir(), "none"), time.Second); err == nil {
		t.Fatal("barrier on a missing socket")
	}
	if err := barrier("", time.Second); err == nil {
		t.Fatal("barrier without NOTIFY_SOCKET")
	}
}

// The main-pid helper, a real re-exec: it waits for "go", names the pid
// as systemd's main pid, waits for the barrier and exits 0; without "go"
// it says nothing and exits 3.
func TestMainPIDHelper(t *testing.T) {
	sd := newFakeSystemd(t, true)
	run := func(stdin string) (*exec.Cmd, error) {
		cmd := exec.Command(os.Args[0], "4242")
		cmd.Args[0] = mainPIDArg0
		cmd.Env = []string{"NOTIFY_SOCKET=" + sd.path}
		cmd.Stdin = strings.NewReader(stdin)
		return cmd, cmd.Run()
	}
	if _, err := run("go\n"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MAINPID=4242", "BARRIER=1"} {
		if m := <-sd.got; m != want {
			t.Fatalf("sent %q, want %q", m, want)
		}
	}
	cmd, err := run("")
	if cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("without go: %v", err)
	}
	select {
	case m := <-sd.got:
		t.Fatalf("sent %q without go", m)
	default:
	}
}
