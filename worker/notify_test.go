package worker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

func TestNotifyUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	if err := Ready(); err != nil {
		t.Fatalf("Ready without NOTIFY_SOCKET: %v", err)
	}
}

func TestNotifyPath(t *testing.T) {
	n := workertest.NewNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", n.Path())
	for _, f := range []func() error{Ready, Stopping,
		func() error { return Status("busy") },
		func() error { return ReportRequests(42) }} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"READY=1", "STOPPING=1", "STATUS=busy", "SOCKD_REQUESTS=42"} {
		n.WaitFor(t, want, 5*time.Second)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@sockd-worker-test-%d", os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1" {
		t.Fatalf("read %q, %v; want READY=1", buf[:k], err)
	}
}

func TestNotifyError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/nobody")
	if err := Ready(); err == nil {
		t.Fatal("Ready to a missing socket: want an error")
	}
}

func TestSlotGeneration(t *testing.T) {
	for _, tc := range []struct {
		slot, gen         string
		wantSlot, wantGen int
	}{
		{"0", "1", 0, 1},
		{"3", "12", 3, 12},
		{"", "", -1, -1},
		{"-1", "0", -1, -1},
		{"x", "1.5", -1, -1},
	} {
		t.Setenv("SOCKD_WORKER", tc.slot)
		t.Setenv("SOCKD_GENERATION", tc.gen)
		if s, g := Slot(), Generation(); s != tc.wantSlot || g != tc.wantGen {
			t.Errorf("SOCKD_WORKER=%q SOCKD_GENERATION=%q: Slot()=%d Generation()=%d, want %d %d",
				tc.slot, tc.gen, s, g, tc.wantSlot, tc.wantGen)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"2000000", "", time.Second},
		{"2000000", self, time.Second},
		{"2000000", strconv.Itoa(os.Getppid()), 0},
		{"", "", 0},
		{"garbage", "", 0},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got := WatchdogInterval(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}

// TestServeHTTPSelfInitiated: cancelling ctx is the worker's own decision,
// so STOPPING=1 goes out before the drain; READY=1, WATCHDOG=1 and the
// final SOCKD_REQUESTS are sent along the way.
func TestServeHTTPSelfInitiated(t *testing.T) {
	n := workertest.NewNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", n.Path())
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")
	l := workertest.Listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(helperHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, srv, []net.Listener{l}, Options{}) }()

	n.WaitFor(t, "READY=1", 5*time.Second)
	for i := 0; i < 3; i++ {
		get(t, "http://"+l.Addr().String()+"/")
	}
	n.WaitFor(t, "WATCHDOG=1", 5*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	n.Flush(t)
	if !n.Has("STOPPING=1") {
		t.Error("no STOPPING=1 for a self-initiated exit")
	}
	if v, _ := n.Last("SOCKD_REQUESTS"); v != "3" {
		t.Errorf("last SOCKD_REQUESTS=%q, want 3", v)
	}
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestServeHTTPServeFailure: a Serve loop that stops on its own is a
// self-initiated exit (STOPPING=1) and an error.
func TestServeHTTPServeFailure(t *testing.T) {
	n := workertest.NewNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", n.Path())
	l := workertest.Listen(t)
	l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(helperHandler)}
	err := ServeHTTP(context.Background(), srv, []net.Listener{l}, Options{Signals: []os.Signal{}})
	if err == nil || !strings.Contains(err.Error(), "serve") {
		t.Fatalf("ServeHTTP = %v, want a serve error", err)
	}
	n.Flush(t)
	if !n.Has("STOPPING=1") {
		t.Error("no STOPPING=1 when a Serve loop failed")
	}
	if err := ServeHTTP(context.Background(), srv, nil, Options{}); err == nil {
		t.Error("ServeHTTP without listeners: want an error")
	}
}
