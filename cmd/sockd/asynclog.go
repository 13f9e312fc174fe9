package main

import (
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// asyncLog writes sockd's own log records from a goroutine of its own, so
// that a stderr nobody reads (a terminal paused with Ctrl-S, a pipe into a
// pager, a stuck log shipper) never stops the supervisor: crash restarts,
// signals and the control socket go on. Records that find the queue full
// are dropped and counted, and a record saying how many goes out once
// stderr takes records again. Worker output is not queued here: it keeps
// its back-pressure (internal/output).
type asyncLog struct {
	w       io.Writer
	mu      sync.Mutex // guards closed and sends on q
	closed  bool
	q       chan []byte
	dropped atomic.Uint64
	done    chan struct{}
}

// asyncLogQueue is how many records wait for stderr before more are
// dropped.
const asyncLogQueue = 4096

func newAsyncLog(w io.Writer) *asyncLog {
	a := &asyncLog{w: w, q: make(chan []byte, asyncLogQueue), done: make(chan struct{})}
	go a.run()
	return a
}

// Write queues a copy of one record (hclog writes one per call).
func (a *asyncLog) Write(b []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return a.w.Write(b) // after Close: the last words, in order
	}
	select {
	case a.q <- append([]byte(nil), b...):
	default:
		a.dropped.Add(1)
	}
	return len(b), nil
}

func (a *asyncLog) run() {
	defer close(a.done)
	for b := range a.q {
		a.w.Write(b)
		if n := a.dropped.Swap(0); n > 0 {
			a.w.Write(droppedRecord(n))
		}
	}
}

// droppedRecord is a record as hclog makes them (JSON; logFormat turns it
// into text where that is the format).
func droppedRecord(n uint64) []byte {
	b, _ := json.Marshal(map[string]any{
		"@level": "warn", "@module": "sockd", "@timestamp": time.Now().Format(time.RFC3339Nano),
		"@message": "sockd's own log records dropped: stderr did not take them in time",
		"event":    "log_dropped", "records": n,
	})
	return append(b, '\n')
}

// Close writes out what is queued, waiting at most wait for a stderr that
// takes nothing; records written after it go out directly.
func (a *asyncLog) Close(wait time.Duration) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	close(a.q)
	a.mu.Unlock()
	select {
	case <-a.done:
	case <-time.After(wait):
	}
}
