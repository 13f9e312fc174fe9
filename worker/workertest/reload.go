package workertest

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// Starter starts generation gen of a worker on the shared listener file.
type Starter func(t testing.TB, gen int, listener *os.File) *Proc

// Reload is the outcome of ReloadUnderLoad.
type Reload struct {
	Stats         Stats
	Old, New      *Proc
	OldRequests   int64 // successful requests before the old generation exited
	OldExit       int
	NewExit       int
	DrainDuration time.Duration // from SIGTERM to the old generation's exit
}

// Timeouts of ReloadUnderLoad; generous for -race on small machines.
const (
	ReadyTimeout = 20 * time.Second
	ExitTimeout  = 30 * time.Second
	loadTimeout  = 20 * time.Second
	// phaseRequests succeed before each step of a reload.
	phaseRequests = 1000
)

// ReloadUnderLoad does what sockd does on a reload, under load: generation
// 1 serves l, the load starts, generation 2 starts and becomes ready, then
// generation 1 gets SIGTERM and must exit while the load goes on (served by
// generation 2 and by connections queued on l). Once generation 2 served
// some more, the load stops and generation 2 gets SIGTERM too. It then
// checks that l is still non-blocking, with the same backlog, and accepts
// a connection itself.
func ReloadUnderLoad(t testing.TB, l *net.TCPListener, start Starter, load LoadConfig) Reload {
	t.Helper()
	var r Reload
	backlog, err := Backlog(l)
	if err != nil {
		t.Fatal(err)
	}
	r.Old = start(t, 1, listenerFile(t, l))
	r.Old.WaitReady(t, ReadyTimeout)
	ld := StartLoad(load)
	defer ld.Stop()
	ld.WaitOK(t, phaseRequests, loadTimeout)

	r.New = start(t, 2, listenerFile(t, l))
	r.New.WaitReady(t, ReadyTimeout)
	ld.WaitOK(t, phaseRequests, loadTimeout)
	began := time.Now()
	r.Old.Signal(t, syscall.SIGTERM)
	r.OldExit = r.Old.Wait(t, ExitTimeout)
	r.DrainDuration = time.Since(began)
	r.OldRequests = ld.OK()
	ld.WaitOK(t, phaseRequests, loadTimeout)
	r.Stats = ld.Stop()

	r.New.Signal(t, syscall.SIGTERM)
	r.NewExit = r.New.Wait(t, ExitTimeout)
	if after, err := Backlog(l); err != nil || after != backlog {
		t.Errorf("shared socket backlog %d (%v) after the workers, was %d", after, err, backlog)
	}
	CheckAlive(t, l)
	return r
}

func listenerFile(t testing.TB, l *net.TCPListener) *os.File {
	t.Helper()
	f, err := File(l, "http")
	if err != nil {
		t.Fatalf("listener file: %v", err)
	}
	return f
}
