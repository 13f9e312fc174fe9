package steering

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// Kernel facts the design rests on, checked on the kernel the tests run
// on: the uid rule of reuseport groups, and optmem_max's charge for a
// steering program. Both need root (a helper runs as another uid, or in a
// network namespace of its own with its own optmem_max).

const (
	bindEnv   = "STEERING_TEST_BIND"   // "port": bind a reuseport socket there, say "ok" or the error
	optmemEnv = "STEERING_TEST_OPTMEM" // "bytes": run the optmem checks in a new network namespace
)

func init() {
	if port := os.Getenv(bindEnv); port != "" {
		os.Exit(bindHelper(port))
	}
	if b := os.Getenv(optmemEnv); b != "" {
		os.Exit(optmemHelper(b))
	}
}

// bindHelper binds a reuseport socket to 127.0.0.1:port and listens,
// prints "ok <port>" or the error, and holds the socket until stdin
// closes.
func bindHelper(port string) int {
	p, _ := strconv.Atoi(port)
	fd, err := reuseSocket(p)
	if err != nil {
		fmt.Println(err)
		return 0
	}
	sa, _ := unix.Getsockname(fd)
	fmt.Println("ok", sa.(*unix.SockaddrInet4).Port)
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func reuseSocket(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, unix.Listen(fd, 128)
}

// bindAs runs bindHelper as uid on port; it returns the helper's first
// line and a function that releases its socket.
func bindAs(t *testing.T, uid uint32, port int) (string, func()) {
	t.Helper()
	cmd := exec.Command(helperCopy(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), bindEnv+"="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	release := func() { in.Close(); cmd.Wait() }
	t.Cleanup(release)
	return strings.TrimSpace(line), release
}

// helperCopy is the test binary copied where another uid can run it (the
// build directory is root's alone).
func helperCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "steering-uid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(dir+"/steering.test", b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir + "/steering.test"
}

// A reuseport group admits only sockets created by the uid of its first
// socket: root's group (systemd's socket unit) refuses a socket of the
// service's uid, and the other way round; the same uid joins.
func TestReuseportGroupIsPerUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as another uid")
	}
	const nobody = 65534
	root, err := reuseSocket(0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	sa, _ := unix.Getsockname(root)
	port := sa.(*unix.SockaddrInet4).Port
	if got, _ := bindAs(t, nobody, port); !strings.Contains(got, "address already in use") {
		t.Fatalf("uid %d joining root's group: %q, want EADDRINUSE", nobody, got)
	}
	got, _ := bindAs(t, nobody, 0)
	var theirs int
	if _, err := fmt.Sscanf(got, "ok %d", &theirs); err != nil {
		t.Fatalf("uid %d binding a group of its own: %q", nobody, got)
	}
	if _, err := reuseSocket(theirs); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("root joining uid %d's group: %v, want EADDRINUSE", nobody, err)
	}
	if got, _ := bindAs(t, nobody, theirs); !strings.HasPrefix(got, "ok") {
		t.Fatalf("uid %d joining its own group: %q", nobody, got)
	}
}

// optmemHelper runs in a network namespace of its own: it sets
// optmem_max, then checks that a program within Limits{MaxBytes: optmem}
// attaches (our estimate of the kernel's charge is not too low), that the
// exact program past it is refused with ENOMEM (the limit is real), and
// that Steering coarsens its program to fit on its own.
func optmemHelper(bytes string) int {
	fail := func(f string, a ...any) int { fmt.Printf(f+"\n", a...); return 1 }
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket: %v", err)
	}
	ifr, _ := unix.NewIfreq("lo")
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fail("lo up: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/core/optmem_max", []byte(bytes), 0); err != nil {
		return fail("optmem_max: %v", err)
	}
	limit := optmemMax()
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "g", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{ReusePort: true, Slots: 1024})
	if err != nil {
		return fail("bind: %v", err)
	}
	l := set[0]
	r := rand.New(rand.NewSource(10))
	w := make([]int, 1024)
	for i := range w {
		w[i] = 1 + r.Intn(1000)
	}
	exact, err := Compile(w, Limits{})
	if err != nil {
		return fail("compile: %v", err)
	}
	err = l.AttachProgram(exact.Insns)
	fmt.Printf("optmem_max %d: exact program of %d instructions (~%d bytes): %v\n", limit, len(exact.Insns), ebpfSize(exact.Insns), err)
	if ebpfSize(exact.Insns) > 2*limit && !errors.Is(err, unix.ENOMEM) {
		return fail("a program of twice optmem_max attached: %v", err)
	}
	for _, frac := range []int{100, 75, 50, 25} {
		p, err := Compile(w, Limits{MaxBytes: limit * frac / 100})
		if err != nil {
			return fail("compile within %d%%: %v", frac, err)
		}
		if err := l.AttachProgram(p.Insns); err != nil {
			return fail("program of %d instructions, estimated %d bytes within %d: %v", len(p.Insns), ebpfSize(p.Insns), limit*frac/100, err)
		}
	}
	s, err := New(set, Options{})
	if err != nil {
		return fail("steering: %v", err)
	}
	defer s.Close()
	// As if optmem_max were unknown: the kernel's ENOMEM teaches it.
	s.mu.Lock()
	g := s.groups[0]
	g.weights, g.limits.MaxBytes = w, 1<<30
	ok := s.attach(g)
	size, exactAfter := ebpfSize(g.prog.Insns), g.prog.Exact
	s.mu.Unlock()
	fmt.Printf("steering after ENOMEM: attached %v, ~%d bytes, exact %v, worst share error %.2f%%\n", ok, size, exactAfter, 100*shareError(w, g.prog))
	if !ok {
		return fail("steering did not fit its program")
	}
	return 0
}

func TestProgramWithinOptmem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	for _, b := range []string{"20480", "10240"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), optmemEnv+"="+b)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		out, err := cmd.CombinedOutput()
		t.Logf("optmem_max %s:\n%s", b, out)
		if err != nil {
			t.Fatalf("optmem_max %s: %v", b, err)
		}
	}
}
