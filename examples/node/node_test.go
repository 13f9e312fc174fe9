package node

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/sockd/sockd/worker/workertest"
)

func nodePath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the Node.js worker example is not tested")
	}
	return p
}

// startNode runs server.js as sockd would: the shared socket on fd 3,
// slot and generation set. It probes readiness over HTTP, standing in for
// sockd's --ready after:DURATION rule.
func startNode(t *testing.T, url string) workertest.Starter {
	node := nodePath(t)
	script, err := filepath.Abs("server.js")
	if err != nil {
		t.Fatal(err)
	}
	return func(t testing.TB, gen int, f *os.File) *workertest.Proc {
		return workertest.Start(t, workertest.Config{
			Argv:       []string{node, script},
			Files:      []*os.File{f},
			Names:      []string{"http"},
			Env:        []string{"IDLE_GRACE_MS=1000", "DRAIN_TIMEOUT_MS=20000"},
			Slot:       1,
			Generation: gen,
			ProbeURL:   url,
		})
	}
}

func checkHello(resp *http.Response, body []byte) error {
	h := resp.Header
	want := fmt.Sprintf("hello from pid=%s worker=%s generation=%s\n",
		h.Get("X-Sockd-Pid"), h.Get("X-Sockd-Worker"), h.Get("X-Sockd-Generation"))
	if string(body) != want || h.Get("X-Sockd-Worker") != "1" {
		return fmt.Errorf("body %q with headers %v, want %q for worker 1", body, h, want)
	}
	if _, err := strconv.Atoi(h.Get("X-Sockd-Pid")); err != nil {
		return fmt.Errorf("X-Sockd-Pid %q", h.Get("X-Sockd-Pid"))
	}
	return nil
}

func TestNodeResponse(t *testing.T) {
	l := workertest.Listen(t)
	url := "http://" + l.Addr().String() + "/"
	f, err := workertest.File(l, "http")
	if err != nil {
		t.Fatal(err)
	}
	p := startNode(t, url)(t, 4, f)
	p.WaitReady(t, workertest.ReadyTimeout)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := checkHello(resp, body); err != nil {
		t.Fatal(err)
	}
	if g := resp.Header.Get("X-Sockd-Generation"); g != "4" {
		t.Errorf("generation %q, want 4", g)
	}
	if pid := resp.Header.Get("X-Sockd-Pid"); pid != strconv.Itoa(p.Pid()) {
		t.Errorf("X-Sockd-Pid %s, want %d", pid, p.Pid())
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, workertest.ExitTimeout); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.Output())
	}
	workertest.CheckAlive(t, l)
}

func TestNodeNoListenFDs(t *testing.T) {
	node := nodePath(t)
	cmd := exec.Command(node, "server.js")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2: %s", err, out)
	}
}

// TestNodeReload reloads the Node worker under load, as sockd does: no
// request may fail, both generations exit 0 and the socket outlives them.
func TestNodeReload(t *testing.T) {
	l := workertest.Listen(t)
	url := "http://" + l.Addr().String() + "/"
	load := workertest.LoadConfig{URL: url, KeepAlive: 4, NewConns: 2, Sporadic: 4, Check: checkHello}
	r := workertest.ReloadUnderLoad(t, l, startNode(t, url), load)
	t.Logf("node reload: %v, drain took %v", r.Stats, r.DrainDuration)
	if r.OldExit != 0 || r.NewExit != 0 {
		t.Errorf("exit codes %d %d, want 0 0", r.OldExit, r.NewExit)
	}
	if r.Stats.Errors != 0 {
		t.Errorf("%d requests failed during the reload: %v", r.Stats.Errors, r.Stats.Samples)
	}
}
