package worker

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sockd/sockd/worker/workertest"
)

// starter runs the test binary as a worker in mode.
func starter(mode string, env ...string) workertest.Starter {
	return func(t testing.TB, gen int, f *os.File) *workertest.Proc {
		return workertest.Start(t, workertest.Config{
			Argv:       []string{os.Args[0]},
			Files:      []*os.File{f},
			Names:      []string{"http"},
			Env:        append([]string{helperEnv + "=" + mode}, env...),
			Notify:     true,
			Generation: gen,
		})
	}
}

func loadConfig(url string) workertest.LoadConfig {
	return workertest.LoadConfig{
		URL: url, KeepAlive: 8, NewConns: 4, Sporadic: 8,
		Check: func(resp *http.Response, body []byte) error {
			if !strings.HasPrefix(string(body), "ok pid=") {
				return fmt.Errorf("unexpected body %q", body)
			}
			return nil
		},
	}
}

// TestReloadCareful is the point of the package: a reload under load loses
// no request, the old worker exits 0, and the shared socket outlives it.
func TestReloadCareful(t *testing.T) {
	l := workertest.Listen(t)
	url := "http://" + l.Addr().String() + "/"
	r := workertest.ReloadUnderLoad(t, l, starter("careful"), loadConfig(url))
	t.Logf("careful drain: %v, drain took %v", r.Stats, r.DrainDuration)
	t.Logf("old worker said:\n%s", r.Old.Output())
	if r.OldExit != 0 || r.NewExit != 0 {
		t.Errorf("exit codes old=%d new=%d, want 0 0", r.OldExit, r.NewExit)
	}
	if r.Stats.Errors != 0 {
		t.Errorf("careful drain lost %d requests: %v", r.Stats.Errors, r.Stats.Samples)
	}
	// Every request the clients saw succeed was counted by exactly one
	// worker, and each reported its final count after its drain.
	served := reported(t, r.Old) + reported(t, r.New)
	if r.Stats.Errors == 0 && served != r.Stats.OK {
		t.Errorf("workers reported %d requests served, clients got %d", served, r.Stats.OK)
	}
	for _, p := range []*workertest.Proc{r.Old, r.New} {
		if p.Notify.Has("STOPPING=1") {
			t.Errorf("pid %d sent STOPPING=1 for a drain sockd ordered", p.Pid())
		}
	}
}

// TestReloadNaive shows what http.Server.Shutdown loses under the same
// load. The loss depends on timing, so it is logged, not asserted.
func TestReloadNaive(t *testing.T) {
	l := workertest.Listen(t)
	url := "http://" + l.Addr().String() + "/"
	start := func(t testing.TB, gen int, f *os.File) *workertest.Proc {
		mode := "careful"
		if gen == 1 {
			mode = "naive"
		}
		return starter(mode)(t, gen, f)
	}
	r := workertest.ReloadUnderLoad(t, l, start, loadConfig(url))
	t.Logf("naive Shutdown: %v, drain took %v", r.Stats, r.DrainDuration)
	if r.OldExit != 0 {
		t.Errorf("naive worker exit code %d", r.OldExit)
	}
}

func reported(t *testing.T, p *workertest.Proc) int64 {
	t.Helper()
	v, ok := p.Notify.Last("SOCKD_REQUESTS")
	if !ok {
		t.Fatalf("pid %d sent no SOCKD_REQUESTS", p.Pid())
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("SOCKD_REQUESTS=%q: %v", v, err)
	}
	return n
}
