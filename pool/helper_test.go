package pool_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/sockd/sockd/pool"
	"github.com/sockd/sockd/worker"
	"github.com/sockd/sockd/worker/workertest"
)

// The test binary doubles as the worker: pools in these tests run it with
// POOL_TEST_WORKER=1 (through sockd's trampoline, like any worker).
func TestMain(m *testing.M) {
	pool.Trampoline()
	if os.Getenv("POOL_TEST_WORKER") == "1" {
		os.Exit(helperWorker())
	}
	os.Exit(m.Run())
}

// report is what a helper worker writes about itself at start.
type report struct {
	PID     int               `json:"pid"`
	Env     map[string]string `json:"env"`
	FDs     map[int]string    `json:"fds"` // fd → /proc/self/fd target
	Blocked bool              `json:"blocked"`
}

// helperWorker behaves as POOL_TEST_MODE (or the content of the file
// POOL_TEST_MODE_FILE, so that a test can change what the next generation
// does) says:
//
//	serve        serve HTTP, READY=1, drain on SIGTERM
//	noready      serve but never send READY=1
//	crash        exit 3 at once
//	ignoreterm   like serve, but ignore SIGTERM
//	suicide      like serve; on SIGUSR1 send STOPPING=1, exit 0 on SIGUSR2
//	quit         like serve; on SIGUSR1 send STOPPING=1 and exit 0 at once
//	leaveearly   READY=1, STOPPING=1, exit 0, all at once
//	forker       like serve, with a child (mode sleeper) in its process group
//	sleeper      ignore SIGTERM and wait forever
//	gated        like serve, but READY=1 only once POOL_TEST_DIR/go exists
//
// In mode serve, SIGUSR2 makes the worker exit 3 (a crash), and
// POOL_TEST_CRASH_AFTER=D makes it exit 3 D after it started.
func helperWorker() int {
	fds := selfFDs()
	mode := os.Getenv("POOL_TEST_MODE")
	if f := os.Getenv("POOL_TEST_MODE_FILE"); f != "" {
		b, _ := os.ReadFile(f)
		mode = strings.TrimSpace(string(b))
	}
	writeReport(fds)
	switch mode {
	case "crash":
		return 3
	case "sleeper": // a wrapper's child: ignores SIGTERM, never ends by itself
		signal.Ignore(syscall.SIGTERM)
		select {}
	case "lingerer": // a wrapper's child: exits 200 ms after SIGTERM
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		<-sigs
		<-time.After(200 * time.Millisecond) // a drain that takes a while
		return 0
	case "leaveearly": // announces its exit as soon as it is ready
		sddaemon.SdNotify(false, "READY=1")
		sddaemon.SdNotify(false, "STOPPING=1")
		return 0
	case "forker":
		// Starts a child in its own process group, as a wrapper script
		// would, and says its pid.
		child := exec.Command(os.Args[0])
		childMode := os.Getenv("POOL_TEST_CHILD_MODE")
		if childMode == "" {
			childMode = "sleeper"
		}
		child.Env = []string{"POOL_TEST_WORKER=1", "POOL_TEST_MODE=" + childMode, "GORACE=atexit_sleep_ms=0"}
		if err := child.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			return 5
		}
		os.WriteFile(filepath.Join(os.Getenv("POOL_TEST_DIR"), fmt.Sprintf("%d.child", os.Getpid())), []byte(fmt.Sprint(child.Process.Pid)), 0o644)
		mode = "serve"
	case "careful":
		return carefulWorker()
	case "bloat": // the first one grows to 256 MiB once ready; its replacements do not
		// O_EXCL: of workers started at once, one claims the file (a Stat
		// then a write let two of them bloat).
		if f, err := os.OpenFile(filepath.Join(os.Getenv("POOL_TEST_DIR"), "bloated"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			f.Close()
			go func() {
				ballast = make([]byte, 256<<20)
				for i := range ballast {
					ballast[i] = 1
				}
			}()
		}
		return carefulWorker()
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	}
	ls, err := sdactivation.Listeners() // checks LISTEN_PID == our pid
	if err != nil || len(ls) == 0 || ls[0] == nil {
		fmt.Fprintf(os.Stderr, "helper: no listeners: %v (LISTEN_PID=%s pid=%d)\n", err, os.Getenv("LISTEN_PID"), os.Getpid())
		return 4
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello)}
	for _, l := range ls {
		if l != nil {
			go srv.Serve(l)
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	if mode != "ignoreterm" {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	if mode == "gated" {
		for {
			if _, err := os.Stat(filepath.Join(os.Getenv("POOL_TEST_DIR"), "go")); err == nil {
				break
			}
			<-time.After(5 * time.Millisecond) // the helper's own poll of the file the test creates
		}
	}
	if mode != "noready" {
		sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	}
	if d, err := time.ParseDuration(os.Getenv("POOL_TEST_CRASH_AFTER")); err == nil {
		go func() {
			<-time.After(d) // a worker that crashes some time after it started
			os.Exit(3)
		}()
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR1:
			if mode == "quit" { // a chatty worker: its last words queue behind these
				for i := 0; i < 50; i++ {
					sddaemon.SdNotify(false, fmt.Sprintf("STATUS=leaving, %d", i))
				}
			}
			sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
			if mode == "quit" { // leaves right after saying so, as fast as it can
				syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
			}
		case syscall.SIGUSR2:
			if mode == "serve" { // crash
				return 3
			}
			return 0
		case syscall.SIGTERM:
			srv.SetKeepAlivesEnabled(false)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			srv.Shutdown(ctx)
			cancel()
			return 0
		}
	}
	return 0
}

// ballast is what a "bloat" worker holds on to.
var ballast []byte

// carefulWorker serves with package worker's careful drain.
func carefulWorker() int {
	ls, err := worker.Listeners()
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 4
	}
	if err := worker.ServeHTTP(context.Background(), &http.Server{Handler: http.HandlerFunc(hello)}, ls, worker.Options{}); err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 1
	}
	return 0
}

func hello(w http.ResponseWriter, r *http.Request) {
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
		// Pacing a request so that concurrent clients spread over workers.
		<-time.After(d)
	}
	w.Header().Set("X-Pid", fmt.Sprint(os.Getpid()))
	w.Header().Set("X-Generation", os.Getenv("SOCKD_GENERATION"))
	fmt.Fprintf(w, "pid=%d worker=%s generation=%s\n", os.Getpid(), os.Getenv("SOCKD_WORKER"), os.Getenv("SOCKD_GENERATION"))
}

func selfFDs() map[int]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	fds := map[int]string{}
	for _, e := range ents {
		var n int
		fmt.Sscan(e.Name(), &n)
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasPrefix(target, "/proc/") {
			continue // the directory being read
		}
		fds[n] = target
	}
	return fds
}

func writeReport(fds map[int]string) {
	dir := os.Getenv("POOL_TEST_DIR")
	if dir == "" {
		return
	}
	r := report{PID: os.Getpid(), Env: map[string]string{}, FDs: fds}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		r.Env[k] = v
	}
	if fl, _, err := syscall.Syscall(syscall.SYS_FCNTL, 3, syscall.F_GETFL, 0); err == 0 {
		r.Blocked = fl&syscall.O_NONBLOCK == 0
	}
	b, _ := json.Marshal(r)
	tmp := filepath.Join(dir, fmt.Sprintf(".%d", r.PID))
	os.WriteFile(tmp, b, 0o644)
	os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("%d.json", r.PID)))
}

func readReport(t *testing.T, dir string, pid int) report {
	t.Helper()
	var r report
	waitFor(t, 10*time.Second, fmt.Sprintf("report of worker %d", pid), func() bool {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.json", pid)))
		return err == nil && json.Unmarshal(b, &r) == nil
	})
	return r
}

// waitFor waits on cond with a deadline.
var waitFor = workertest.Eventually

// get fetches url on a fresh connection and returns the worker's pid.
func get(c *http.Client, url string) (pid, gen string, err error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Pid"), resp.Header.Get("X-Generation"), nil
}

func freshClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}
