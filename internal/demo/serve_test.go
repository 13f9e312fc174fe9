package demo

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/sockd/sockd/worker/workertest"
)

// startHello runs the demo worker as sockd would: the shared socket on
// fd 3, slot and generation set, a notify socket served by the test.
func startHello(args ...string) workertest.Starter {
	return func(t testing.TB, gen int, f *os.File) *workertest.Proc {
		return workertest.Start(t, workertest.Config{
			Argv:       append([]string{os.Args[0]}, args...),
			Files:      []*os.File{f},
			Env:        []string{helperEnv + "=1"},
			Notify:     true,
			Slot:       3,
			Generation: gen,
		})
	}
}

// checkHello checks the body and headers of a demo response.
func checkHello(gen int) func(*http.Response, []byte) error {
	return func(resp *http.Response, body []byte) error {
		pid := resp.Header.Get("X-Sockd-Pid")
		if _, err := strconv.Atoi(pid); err != nil {
			return fmt.Errorf("X-Sockd-Pid %q", pid)
		}
		g := resp.Header.Get("X-Sockd-Generation")
		if gen > 0 && g != strconv.Itoa(gen) {
			return fmt.Errorf("X-Sockd-Generation %q, want %d", g, gen)
		}
		want := fmt.Sprintf("hello from pid=%s worker=3 generation=%s\n", pid, g)
		if string(body) != want || resp.Header.Get("X-Sockd-Worker") != "3" {
			return fmt.Errorf("body %q worker %q, want %q worker 3", body, resp.Header.Get("X-Sockd-Worker"), want)
		}
		return nil
	}
}

func TestServeAndDrain(t *testing.T) {
	l := workertest.Listen(t)
	f, err := workertest.File(l, "http")
	if err != nil {
		t.Fatal(err)
	}
	p := startHello()(t, 7, f)
	p.WaitReady(t, workertest.ReadyTimeout)
	resp, err := http.Get("http://" + l.Addr().String() + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := checkHello(7)(resp, body); err != nil {
		t.Fatal(err)
	}
	if pid := resp.Header.Get("X-Sockd-Pid"); pid != strconv.Itoa(p.Pid()) {
		t.Errorf("X-Sockd-Pid %s, want the worker's pid %d", pid, p.Pid())
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, workertest.ExitTimeout); code != ExitOK {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	workertest.CheckAlive(t, l)
}

// TestReloadWithDelay reloads the demo worker under load while requests
// are in flight (--delay): no request may fail.
func TestReloadWithDelay(t *testing.T) {
	l := workertest.Listen(t)
	load := workertest.LoadConfig{
		URL: "http://" + l.Addr().String() + "/", KeepAlive: 8, NewConns: 4, Sporadic: 8, Check: checkHello(0),
	}
	r := workertest.ReloadUnderLoad(t, l, startHello("--delay", "2ms"), load)
	t.Logf("demo reload: %v, drain took %v", r.Stats, r.DrainDuration)
	if r.OldExit != ExitOK || r.NewExit != ExitOK {
		t.Errorf("exit codes %d %d, want 0 0", r.OldExit, r.NewExit)
	}
	if r.Stats.Errors != 0 {
		t.Errorf("%d requests failed during the reload: %v", r.Stats.Errors, r.Stats.Samples)
	}
}
