package pool

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/sockd/sockd/worker/workertest"
	"golang.org/x/sys/unix"
)

// A worker whose end of the channel reads nothing: sockd's queue for it
// fills, send says so (not "no channel"), and once the worker's end is
// gone the queue is written off and its writer ends.
func TestNodeChannelBacklog(t *testing.T) {
	mine, theirs, err := nodeChannel()
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(theirs), "worker-end")
	defer peer.Close()
	// The socket's buffer full from the start, and writes that wait for
	// as long as the test runs: the writer blocks on the first message
	// it takes, and the queue is all that moves (a buffer with room, or a
	// write given up after sendTimeout, would let the writer drain the
	// queue while the test counts it).
	for {
		if _, err := unix.SendmsgN(mine, make([]byte, 64<<10), nil, nil, unix.MSG_DONTWAIT); err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				t.Fatal(err)
			}
			break
		}
	}
	defer func(d time.Duration) { sendTimeout = d }(sendTimeout)
	sendTimeout = time.Hour
	e := &osEnv{p: &Pool{log: hclog.NewNullLogger()}}
	c := &nodeChan{f: os.NewFile(uintptr(mine), "node-ipc")}
	defer c.f.Close()
	const pid = 4242
	e.channels.Store(pid, c)
	w := &worker{pid: pid}

	if err := e.send(&worker{pid: pid + 1}, []byte(`"x"`)); !errors.Is(err, errNoChannel) {
		t.Fatalf("send to a worker without a channel: %v, want errNoChannel", err)
	}
	msg := []byte(`"` + strings.Repeat("m", 1000) + `"`)
	sent := 0
	for ; sent < 100000; sent++ {
		if err = e.send(w, msg); err != nil {
			break
		}
	}
	if !errors.Is(err, errBacklog) {
		t.Fatalf("after %d messages nobody reads: %v, want errBacklog", sent, err)
	}
	// The queue holds maxPending; the writer took one, before the queue
	// filled or after: nothing more was taken.
	if sent != maxPending && sent != maxPending+1 {
		t.Errorf("queued %d messages before the backlog, want maxPending (%d), or one more that the writer took first", sent, maxPending)
	}
	workertest.Eventually(t, 10*time.Second, "the writer blocked on one message, the rest queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == sent-1 && c.writing
	})

	// The worker is gone: every write fails at once and the writer ends.
	peer.Close()
	workertest.Eventually(t, 10*time.Second, "the channel's writer to give up on a closed peer", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing && len(c.pending) == 0
	})
	// Not a SIGPIPE for sockd: a write to the closed peer is an error.
	if _, err := unix.Write(mine, msg); !errors.Is(err, unix.EPIPE) {
		t.Errorf("write to the closed peer: %v, want EPIPE", err)
	}
}

// A process is a worker's only by the worker's whole id: worker 1-1 does
// not claim what worker 1-10 or 1-12 left behind (a prefix would).
func TestMarkedByWholeID(t *testing.T) {
	start := func(id string) int {
		t.Helper()
		cmd := exec.Command("sleep", "60")
		cmd.Env = []string{WorkerIDVar + "=" + id}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd.Process.Pid
	}
	ten, one := start("4242-10"), start("4242-1")
	w := &worker{id: "4242-1"}
	if markedBy(ten, w) {
		t.Fatal("worker 4242-1 claims a process of worker 4242-10")
	}
	if !markedBy(one, w) {
		t.Fatal("worker 4242-1 does not recognise its own process")
	}
}
