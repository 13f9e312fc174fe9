package nodeshim

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
)

// rawListen makes a listening socket with an exact backlog.
func rawListen(t *testing.T, family int, sa unix.Sockaddr, backlog int, v6only bool) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if family == unix.AF_INET6 {
		v := 0
		if v6only {
			v = 1
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestDescribe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	tcp4 := rawListen(t, unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, 123, false)
	tcp6 := rawListen(t, unix.AF_INET6, &unix.SockaddrInet6{}, 77, true)
	uds := rawListen(t, unix.AF_UNIX, &unix.SockaddrUnix{Name: sock}, 55, false)
	abstract := rawListen(t, unix.AF_UNIX, &unix.SockaddrUnix{Name: "@nodeshim-test-" + filepath.Base(t.TempDir())}, 33, false)
	for _, c := range []struct {
		fd   int
		want Listener
	}{
		{tcp4, Listener{Network: "tcp", Host: "127.0.0.1", Backlog: 123}},
		{tcp6, Listener{Network: "tcp", Host: "::", V6Only: true, Backlog: 77}},
		{uds, Listener{Network: "unix", Path: sock, Backlog: 55}},
		{abstract, Listener{Network: "unix", Backlog: 33}},
	} {
		l, err := Describe(c.fd)
		if err != nil {
			t.Fatal(err)
		}
		if l.Inode != fdtest.Inode(c.fd) || l.Inode == 0 {
			t.Errorf("fd %d: inode %d, want %d", c.fd, l.Inode, fdtest.Inode(c.fd))
		}
		if c.want.Network == "tcp" && l.Port == 0 {
			t.Errorf("fd %d: no port", c.fd)
		}
		if c.fd == abstract && !strings.HasPrefix(l.Path, "\x00nodeshim-test-") {
			t.Errorf("abstract socket path %q, want a leading NUL as Node spells it", l.Path)
		}
		l.Inode, l.Port, c.want.Path = 0, 0, map[bool]string{true: l.Path, false: c.want.Path}[c.fd == abstract]
		if l != c.want {
			t.Errorf("fd %d: %+v, want %+v", c.fd, l, c.want)
		}
	}

	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	unix.Bind(udp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	unbound, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unbound)
	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, fd := range []int{udp, unbound, int(file.Fd())} {
		if _, err := Describe(fd); !errors.Is(err, ErrNotStream) {
			t.Errorf("fd %d: %v, want ErrNotStream", fd, err)
		}
	}
	if _, err := Describe(1 << 20); err == nil || errors.Is(err, ErrNotStream) {
		t.Errorf("a closed fd: %v", err)
	}

	// Listeners numbers them as the worker sees them and skips datagrams.
	ls, err := Listeners([]int{tcp4, udp, uds}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].FD != 3 || ls[0].Name != "a" || ls[1].FD != 5 || ls[1].Name != "c" {
		t.Fatalf("listeners %+v", ls)
	}
}

func TestOptionsEnv(t *testing.T) {
	ls := []Listener{{FD: 3, Name: "web", Network: "tcp", Host: "::", Port: 80, Backlog: 4096, Inode: 9}}
	env, err := Options{IdleGrace: 1500 * time.Millisecond, Send: Send{Ready: true, Requests: true}}.Env(ls)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`SOCKD_NODE_LISTENERS=[{"fd":3,"name":"web","net":"tcp","host":"::","port":80,"backlog":4096,"ino":9}]`,
		"SOCKD_NODE_SEND=ready,requests", "SOCKD_NODE_IDLE_GRACE_MS=1500",
	}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Fatalf("env\n%s\nwant\n%s", strings.Join(env, "\n"), strings.Join(want, "\n"))
	}
	env, err = Options{}.Env(nil)
	if err != nil || len(env) != 1 || env[0] != "SOCKD_NODE_LISTENERS=[]" {
		t.Fatalf("no listeners: %q, %v", env, err)
	}
	for _, bad := range []Listener{{FD: 2, Network: "tcp"}, {FD: 3, Network: "udp"}} {
		if _, err := (Options{}).Env([]Listener{bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	env, err = Options{Warmup: Warmup{Path: "/warm?x=1"}}.Env(ls)
	if err != nil || !slices.Contains(env, "SOCKD_NODE_WARMUP=/warm?x=1") || !slices.Contains(env, "SOCKD_NODE_WARMUP_REQUESTS=200") ||
		!slices.Contains(env, "SOCKD_NODE_WARMUP_MS=30000") {
		t.Fatalf("warm-up with defaults: %q, %v", env, err)
	}
	env, err = Options{Warmup: Warmup{Path: "/", Requests: 7, Timeout: 1500 * time.Millisecond}}.Env(ls)
	if err != nil || !slices.Contains(env, "SOCKD_NODE_WARMUP_REQUESTS=7") || !slices.Contains(env, "SOCKD_NODE_WARMUP_MS=1500") {
		t.Fatalf("warm-up: %q, %v", env, err)
	}
	for _, bad := range []Warmup{{Path: "warm"}, {Path: "/a b"}, {Path: "/a\nb"}, {Path: "/#x"}, {Path: "/ä"}, {Path: "/", Requests: -1}, {Path: "/", Requests: MaxWarmupRequests + 1}, {Path: "/", Timeout: -1}} {
		if _, err := (Options{Warmup: bad}).Env(ls); err == nil {
			t.Errorf("warm-up %+v accepted", bad)
		}
	}
	// The path survives JSON as Node reads it (an abstract socket's NUL).
	b, _ := json.Marshal([]Listener{{FD: 3, Network: "unix", Path: "\x00x"}})
	if !strings.Contains(string(b), `"path":"\u0000x"`) {
		t.Fatalf("abstract path encoded as %s", b)
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	p1, err := Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p1)
	if err != nil || string(b) != string(Preload) {
		t.Fatalf("installed file differs: %v", err)
	}
	fi, _ := os.Stat(p1)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", fi.Mode())
	}
	p2, err := Install(dir)
	if err != nil || p2 != p1 {
		t.Fatalf("second install: %s, %v", p2, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left %d files in the run directory", len(entries))
	}
	if _, err := Install(filepath.Join(dir, "missing")); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("install into a missing directory: %v", err)
	}
}

// NODE_OPTIONS keeps the user's options and quotes the path so that node
// reads it back, spaces, quotes and backslashes included.
func TestNodeOptions(t *testing.T) {
	if got := NodeOptions("", "/run/a.js"); got != `--require "/run/a.js"` {
		t.Fatalf("%s", got)
	}
	if got := NodeOptions("--max-old-space-size=100", "/run/a.js"); got != `--max-old-space-size=100 --require "/run/a.js"` {
		t.Fatalf("%s", got)
	}
	node := need(t, "node", "the preload runs in Node")
	dir := filepath.Join(t.TempDir(), `a dir "with" \ odd`)
	os.Mkdir(dir, 0o755)
	script := filepath.Join(dir, "p.js")
	os.WriteFile(script, []byte(`process.stdout.write('preloaded ');`), 0o644)
	cmd := exec.Command(node, "-e", `process.stdout.write(String(require('v8').getHeapStatistics().heap_size_limit < 200e6))`)
	cmd.Env = append(baseEnv(), "NODE_OPTIONS="+NodeOptions("--max-old-space-size=100", script))
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "preloaded true" {
		t.Fatalf("node printed %q (%v)", out, err)
	}
}
