package output_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/output"
)

// The flood benchmark: a child process runs a relay as sockd does
// (GOMAXPROCS=1) with one sink, and one worker writing LINES lines as fast
// as it can; the child reports its own CPU time, its peak RSS, and how
// late a 1 ms timer and a channel round trip (what sockd's supervisor loop
// waits on) were during the flood.
//
//	go test -run XXX -bench Flood -benchtime 1x ./internal/output/
//	OUTPUT_BENCH_LINES=500000 (default) OUTPUT_BENCH_WORKER=node (testdata/flood.js)

const relayEnv = "OUTPUT_TEST_RELAY"

type floodResult struct {
	Lines        uint64        `json:"lines"`
	Elapsed      time.Duration `json:"elapsed"`
	CPU          time.Duration `json:"cpu"`
	PeakRSS      int64         `json:"peak_rss"`
	TimerP99     time.Duration `json:"timer_p99"`
	TimerMax     time.Duration `json:"timer_max"`
	ChanP99      time.Duration `json:"chan_p99"`
	ChanMax      time.Duration `json:"chan_max"`
	IdleTimerP99 time.Duration `json:"idle_timer_p99"`
	IdleChanP99  time.Duration `json:"idle_chan_p99"`
	// RunqWait is how long sockd's threads waited for a CPU (schedstat):
	// the machine's load, not sockd's doing.
	RunqWait   time.Duration `json:"runq_wait"`
	WorkerNote string        `json:"worker_note"`
}

func init() {
	if sink := os.Getenv(relayEnv); sink != "" && os.Getenv(workerEnv) == "" {
		res, err := relayProcess(sink)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
}

func relayProcess(sinkName string) (floodResult, error) {
	runtime.GOMAXPROCS(1)
	var res floodResult
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	var sink output.Sink
	switch sinkName {
	case "ring":
	case "raw", "prefix", "json":
		sink, err = output.NewWriterSink(output.WriterOptions{Mode: output.Mode(sinkName), Stdout: devnull, Stderr: devnull, Name: "bench"})
	case "journal":
		c, derr := journal.Dial(os.Getenv("OUTPUT_BENCH_JOURNAL"))
		if derr != nil {
			return res, derr
		}
		sink = output.NewJournalSink(output.JournalOptions{Conn: c, Name: "bench"})
	default:
		return res, fmt.Errorf("unknown sink %q", sinkName)
	}
	if err != nil {
		return res, err
	}
	r := output.New(output.Options{Sink: sink})
	p, err := r.Open(0, 1)
	if err != nil {
		return res, err
	}
	lines := os.Getenv("OUTPUT_BENCH_LINES")
	argv := []string{os.Args[0], "flood", lines}
	path := os.Args[0]
	if os.Getenv("OUTPUT_BENCH_WORKER") == "node" {
		path, _ = exec.LookPath("node")
		argv = []string{"node", "testdata/flood.js", lines}
	}
	out, errFD := p.FDs()
	stderr := uintptr(errFD)
	var noteR, noteW *os.File
	if os.Getenv("OUTPUT_BENCH_WORKER") == "node" {
		noteR, noteW, _ = os.Pipe()
		stderr = noteW.Fd()
	}
	// The probes alone first, for 300 ms: the machine's own lateness.
	stop := make(chan struct{})
	timer, ch := make(chan []time.Duration), make(chan []time.Duration)
	go probeTimer(stop, timer)
	go probeChan(stop, ch)
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	res.IdleTimerP99, _ = pct(<-timer)
	res.IdleChanP99, _ = pct(<-ch)
	stop = make(chan struct{})
	go probeTimer(stop, timer)
	go probeChan(stop, ch)
	runq0 := runqWait()
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: append(os.Environ(), workerEnv+"=1", relayEnv+"="),
		Files: []uintptr{devnull.Fd(), uintptr(out), stderr}})
	if err != nil {
		return res, err
	}
	p.Start(pid)
	if noteW != nil {
		noteW.Close()
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	<-p.Done()
	res.Elapsed = time.Since(start)
	close(stop)
	var after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	res.CPU = time.Duration(syscall.TimevalToNsec(after.Utime) + syscall.TimevalToNsec(after.Stime) -
		syscall.TimevalToNsec(before.Utime) - syscall.TimevalToNsec(before.Stime))
	out1, _ := r.Totals()
	res.Lines = out1.Lines
	res.PeakRSS = vmHWM()
	res.RunqWait = runqWait() - runq0
	res.TimerP99, res.TimerMax = pct(<-timer)
	res.ChanP99, res.ChanMax = pct(<-ch)
	if noteR != nil {
		b := make([]byte, 200)
		n, _ := noteR.Read(b)
		res.WorkerNote = strings.TrimSpace(string(b[:n]))
	}
	return res, nil
}

// probeTimer measures how late a 1 ms timer fires.
func probeTimer(stop chan struct{}, out chan []time.Duration) {
	var lates []time.Duration
	t := time.NewTimer(time.Millisecond)
	for {
		start := time.Now()
		t.Reset(time.Millisecond)
		select {
		case <-stop:
			out <- lates
			return
		case <-t.C:
			lates = append(lates, time.Since(start)-time.Millisecond)
		}
	}
}

// probeChan measures a round trip to another goroutine, once a ms.
func probeChan(stop chan struct{}, out chan []time.Duration) {
	var rtts []time.Duration
	ping, pong := make(chan struct{}), make(chan struct{})
	go func() {
		for range ping {
			pong <- struct{}{}
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			close(ping)
			out <- rtts
			return
		case <-tick.C:
			start := time.Now()
			ping <- struct{}{}
			<-pong
			rtts = append(rtts, time.Since(start))
		}
	}
}

func pct(ds []time.Duration) (p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)*99/100], ds[len(ds)-1]
}

// runqWait sums the time the process's threads waited on a run queue.
func runqWait() time.Duration {
	var sum int64
	dirs, _ := os.ReadDir("/proc/self/task")
	for _, d := range dirs {
		b, _ := os.ReadFile("/proc/self/task/" + d.Name() + "/schedstat")
		if f := strings.Fields(string(b)); len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n
		}
	}
	return time.Duration(sum)
}

func vmHWM() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// countingJournal is a journald that only counts datagrams: what sockd
// spends is measured, not the fake's parsing (journaltest.Server parses).
type countingJournal struct {
	Path string
	n    atomic.Int64
}

func startCountingJournal(b *testing.B) *countingJournal {
	c := &countingJournal{Path: filepath.Join(b.TempDir(), "journal.socket")}
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: c.Path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	l.SetReadBuffer(8 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			if _, err := l.Read(buf); err != nil {
				return
			}
			c.n.Add(1)
		}
	}()
	b.Cleanup(func() { l.Close(); <-done })
	return c
}

func BenchmarkFlood(b *testing.B) {
	lines := os.Getenv("OUTPUT_BENCH_LINES")
	if lines == "" {
		lines = "500000"
	}
	n, _ := strconv.Atoi(lines)
	if os.Getenv("OUTPUT_BENCH_WORKER") == "node" {
		if _, err := exec.LookPath("node"); err != nil {
			b.Skip("no node")
		}
	}
	for _, sink := range []string{"ring", "raw", "prefix", "json", "journal"} {
		b.Run("sink="+sink, func(b *testing.B) {
			var srv *countingJournal
			if sink == "journal" {
				srv = startCountingJournal(b)
			}
			for range b.N {
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), relayEnv+"="+sink, "OUTPUT_BENCH_LINES="+lines)
				if srv != nil {
					cmd.Env = append(cmd.Env, "OUTPUT_BENCH_JOURNAL="+srv.Path)
				}
				cmd.Stderr = os.Stderr
				outb, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				var res floodResult
				if err := json.Unmarshal(outb, &res); err != nil {
					b.Fatalf("%q: %v", outb, err)
				}
				if res.Lines != uint64(n) {
					b.Fatalf("%d lines relayed, want %d", res.Lines, n)
				}
				if srv != nil && srv.n.Load() < int64(n) {
					b.Fatalf("journal got %d entries", srv.n.Load())
				}
				b.ReportMetric(float64(res.CPU.Milliseconds())*100000/float64(n), "cpu-ms/100k-lines")
				b.ReportMetric(float64(res.Elapsed.Milliseconds()), "elapsed-ms")
				b.ReportMetric(float64(res.PeakRSS>>20), "peak-rss-MiB")
				b.ReportMetric(float64(res.TimerP99.Microseconds()), "timer-late-p99-µs")
				b.ReportMetric(float64(res.TimerMax.Microseconds()), "timer-late-max-µs")
				b.ReportMetric(float64(res.ChanP99.Microseconds()), "chan-rtt-p99-µs")
				b.ReportMetric(float64(res.ChanMax.Microseconds()), "chan-rtt-max-µs")
				b.ReportMetric(float64(res.IdleTimerP99.Microseconds()), "idle-timer-late-p99-µs")
				b.ReportMetric(float64(res.IdleChanP99.Microseconds()), "idle-chan-rtt-p99-µs")
				b.ReportMetric(float64(res.RunqWait.Milliseconds()), "os-runq-wait-ms")
				if res.WorkerNote != "" {
					b.Log(res.WorkerNote)
				}
			}
		})
	}
}
