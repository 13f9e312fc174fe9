package output_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/output"
	"github.com/sockd/sockd/internal/procfs"
)

// The test binary re-executed as a worker: OUTPUT_TEST_WORKER=1 and the
// scenario in its arguments.
const workerEnv = "OUTPUT_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(worker(os.Args[1:]))
	}
	if os.Getenv(e2eEnv) == "1" {
		os.Exit(journaldSender(os.Args[1:]))
	}
	// Orphans of the grandchild test are reparented to the test process,
	// which reaps them, instead of to an init that may not.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	os.Exit(m.Run())
}

// payload is line i's deterministic text after its number: 0 to 96 bytes.
func payload(i int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	n := (i * 7919) % 97
	b := make([]byte, n)
	for k := range b {
		b[k] = alphabet[(i+k)%len(alphabet)]
	}
	return string(b)
}

// longPayload is line i of the variable flood: up to 3000 bytes.
func longPayload(i int) string {
	n := (i * 104729) % 3001
	b := make([]byte, n)
	for k := range b {
		b[k] = 'a' + byte((i+k)%26)
	}
	return string(b)
}

func worker(args []string) int {
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	n := 0
	if len(args) > 1 {
		n, _ = strconv.Atoi(args[1])
	}
	switch args[0] {
	case "lines": // n lines on each stream, alternating
		for i := range n {
			fmt.Fprintf(os.Stdout, "out %d\n", i)
			fmt.Fprintf(os.Stderr, "err %d\n", i)
		}
	case "flood": // n numbered lines, as fast as possible
		for i := range n {
			fmt.Fprintf(out, "%d %s\n", i, payload(i))
		}
	case "varflood": // n numbered lines of 0-3000 bytes
		for i := range n {
			fmt.Fprintf(out, "%d:%s\n", i, longPayload(i))
		}
	case "big": // one line of n bytes, then a short one
		b := make([]byte, n+1)
		for k := range n {
			b[k] = 'A' + byte(k%26)
		}
		b[n] = '\n'
		out.Write(b)
		out.WriteString("after\n")
	case "utf8": // n times "é€😀" (2, 3 and 4 bytes) on one line
		out.WriteString(strings.Repeat("é€😀", n) + "\n")
	case "binary":
		b := make([]byte, 0, 256)
		for c := range 256 {
			if c != '\n' {
				b = append(b, byte(c))
			}
		}
		out.Write(append(b, '\n'))
		out.WriteString("bad \xff\xfe utf8 \xc3\n")
		out.WriteString("\x00nul\x00\n")
		out.WriteString("crlf\r\n")
	case "levels":
		for _, l := range []string{
			"plain",
			"<4>warned",
			"<7>{\"level\":50,\"msg\":\"prefix wins\"}",
			`{"level":30,"time":1,"pid":1,"hostname":"h","msg":"pino info"}`,
			`{"level":50,"msg":"pino error","err":{"type":"Error","stack":"a\nb"}}`,
			`{"level":60,"msg":"pino fatal"}`,
			`{"level":10,"msg":"pino trace"}`,
			`{"time":"2026-12-05T10:00:00Z","level":"WARN","msg":"slog warn","n":1}`,
			`{"level":"ERROR+2","msg":"slog error+2"}`,
			`{"level":"DEBUG","msg":"slog debug"}`,
			`{"@level":"warn","@message":"hclog warn","@timestamp":"x"}`,
			`{"level":"info","message":"winston info"}`,
			`{"severity":"CRITICAL","message":"gcp critical"}`,
			`{"level":"unknown","msg":"no such level"}`,
			`{"level":40,"msg":"broken"`,
			`{"msg":"no level"}`,
			`{"msg":"nested","level":{"x":50}}`,
		} {
			fmt.Fprintln(out, l)
		}
		out.Flush()
		fmt.Fprintln(os.Stderr, "stderr plain")
		fmt.Fprintln(os.Stderr, `{"level":30,"msg":"info on stderr"}`)
		fmt.Fprintln(os.Stderr, "<5>notice on stderr")
	case "closestdout":
		fmt.Fprint(os.Stdout, "before close\n")
		os.Stdout.Close()
		for i := range 100 {
			fmt.Fprintf(os.Stderr, "err %d\n", i)
		}
		_, err := syscall.Write(1, []byte("after close\n"))
		fmt.Fprintf(os.Stderr, "write to closed stdout: %v\n", err)
	case "closedstderr":
		os.Stderr.Close()
		_, err := syscall.Write(2, []byte("to closed stderr\n"))
		fmt.Fprintf(os.Stdout, "write to closed stderr: %v\n", err)
	case "exitbuffered": // n lines and a partial one, then exit at once
		for i := range n {
			fmt.Fprintf(out, "%d %s\n", i, payload(i))
		}
		out.WriteString("no newline at the end")
		out.Flush()
		syscall.Exit(0)
	case "grandchild": // leave a process holding the pipes, then exit
		pid, err := syscall.ForkExec(os.Args[0], []string{os.Args[0], "hold"}, &syscall.ProcAttr{
			Env: os.Environ(), Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setsid: true}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(out, "grandchild %d\n", pid)
		for i := range n {
			fmt.Fprintf(out, "%d %s\n", i, payload(i))
		}
	case "hold":
		fmt.Println("held")
		select {}
	case "sleep":
		time.Sleep(time.Hour)
	}
	return 0
}

// spawn starts the test binary as a worker with the relay's pipes.
func spawn(t testing.TB, r *output.Relay, slot, gen int, args ...string) (*output.Pipes, int) {
	t.Helper()
	p, err := r.Open(slot, gen)
	if err != nil {
		t.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	out, errFD := p.FDs()
	pid, err := syscall.ForkExec(os.Args[0], append([]string{os.Args[0]}, args...), &syscall.ProcAttr{
		// The race detector sleeps 1 s at exit unless told not to.
		Env:   append(os.Environ(), workerEnv+"=1", "GOMAXPROCS=1", "GORACE=atexit_sleep_ms=0"),
		Files: []uintptr{devnull.Fd(), uintptr(out), uintptr(errFD)},
	})
	if err != nil {
		p.Abort()
		t.Fatal(err)
	}
	p.Start(pid)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); reap(pid) })
	return p, pid
}

var reaped sync.Map

// reap waits for pid to exit and reaps it, once.
func reap(pid int) int {
	var ws syscall.WaitStatus
	if _, loaded := reaped.LoadOrStore(pid, true); loaded {
		return -1
	}
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	return ws.ExitStatus()
}

// gone reports whether pid is neither running nor a zombie.
func gone(pid int) bool {
	p, err := procfs.ReadProcess(pid)
	return err != nil || p.Gone()
}

// waitDone waits for the pipes to end.
func waitDone(t testing.TB, p *output.Pipes, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatalf("pipes of %+v not done after %v", p.Worker(), timeout)
	}
}

// got is a line as the memory sink keeps it.
type got struct {
	w      output.Worker
	stream output.Stream
	data   string
	msg    string
	prio   int8
	flags  output.Flags
}

// memSink keeps every line.
type memSink struct {
	mu    sync.Mutex
	lines []got
}

func (m *memSink) Write(b *output.Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range b.Lines {
		l := &b.Lines[i]
		m.lines = append(m.lines, got{b.Worker, b.Stream, string(l.Data), string(l.Message()), l.Priority, l.Flags})
	}
	return nil
}

func (m *memSink) all() []got {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]got(nil), m.lines...)
}

func (m *memSink) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lines)
}

// of lists the data of the lines of one stream.
func of(ls []got, s output.Stream) []string {
	var out []string
	for _, l := range ls {
		if l.stream == s {
			out = append(out, l.data)
		}
	}
	return out
}
