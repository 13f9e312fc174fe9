// Package container is sockd as a container's entrypoint: see the
// Containerfiles here and README.md, "Running in a container".
package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker/workertest"
)

// The FROM scratch image's file system (Containerfile.hello: /sockd, /hello
// and nothing else; the container runtime adds /proc and /dev), run the way
// a runtime would, minus the cgroups: sockd as PID 1 of fresh pid and mount
// namespaces, rooted there. It serves, runs its workers as uid 65534 with
// no /etc/passwd, and stops cleanly on SIGTERM.
func TestScratchImageAsPID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1)")
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	for _, b := range []struct{ out, pkg string }{{"sockd", "../../cmd/sockd"}, {"hello", "../hello"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	for _, d := range []string{"proc", "dev", "tmp"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	if err := unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make /dev/null in the image's file system here: %v", err)
	}
	// What Containerfile.hello says (ENV, ENTRYPOINT, CMD), with what a
	// user gives with -e: here a port of its own, a control socket in /tmp.
	image := readContainerfile(t, "Containerfile.hello")
	cmd := exec.Command(unshare, append([]string{"--pid", "--fork", "--mount", "--root=" + root, "--mount-proc"}, image.argv...)...)
	cmd.Env = append(image.env, "GOGC=25", "SOCKD_WORKERS=2", "SOCKD_LISTEN=http=tcp://127.0.0.1:0", "SOCKD_CONTROL=/tmp/sockd.sock")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var init int
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			if init > 1 {
				syscall.Kill(init, syscall.SIGKILL)
			}
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	waitFor(t, 10*time.Second, "sockd's host pid", func() bool {
		if kids := procfs.Children(cmd.Process.Pid); len(kids) == 1 {
			init = kids[0]
		}
		return init > 1
	})
	var s pool.Status
	waitFor(t, 30*time.Second, "sockd serving", func() bool {
		st, err := status(filepath.Join(root, "tmp/sockd.sock"))
		s = st
		return err == nil && s.Ready == 2
	})
	if s.PID != 1 {
		t.Fatalf("sockd is pid %d in its namespace", s.PID)
	}
	resp, err := http.Get("http://" + s.Listeners[0].Address + "/")
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from pid=") {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
	for _, w := range procfs.Children(init) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", w))
		if strings.Contains(string(b), "Name:\thello") && !strings.Contains(string(b), "Uid:\t65534\t65534") {
			t.Fatalf("worker %d does not run as 65534:\n%s", w, b)
		}
	}
	syscall.Kill(init, syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sockd after SIGTERM: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "all workers stopped") {
		t.Fatalf("no clean stop:\n%s", out.String())
	}
}

// status asks the sockd behind the control socket at path (the test runs
// as root, as sockd does).
func status(path string) (pool.Status, error) {
	var s pool.Status
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, path, control.Request{Command: "status"})
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(resp.Status, &s)
}

// waitFor waits on cond with a deadline.
var waitFor = workertest.Eventually

// containerfile is what a Containerfile says the container runs: its
// ENTRYPOINT and CMD (exec form), and its ENV.
type containerfile struct {
	argv, env []string
}

func readContainerfile(t *testing.T, name string) containerfile {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var c containerfile
	var entry, cmd []string
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch word {
		case "ENV":
			c.env = append(c.env, strings.Fields(rest)...)
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("%s: %s is not in exec form: %v", name, word, err)
			}
			if word == "CMD" {
				cmd = v
			} else {
				entry = v
			}
		}
	}
	c.argv = append(entry, cmd...)
	if len(c.argv) == 0 {
		t.Fatalf("%s: no ENTRYPOINT or CMD", name)
	}
	return c
}
