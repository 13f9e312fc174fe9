package load

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
)

// Wrk is a run of wrk(1), the load generator users have: unlike a Go
// client it never retries a request, so every refused, reset or cut
// connection shows in its Socket errors.
type Wrk struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// WrkResult is what wrk reports.
type WrkResult struct {
	Requests, Non2xx, Connect, Read, Write, Timeout int
	Output                                          string
}

func (w WrkResult) String() string {
	return fmt.Sprintf("%d requests, %d non-2xx, socket errors: connect %d, read %d, write %d, timeout %d",
		w.Requests, w.Non2xx, w.Connect, w.Read, w.Write, w.Timeout)
}

// Failed counts the requests wrk saw fail.
func (w WrkResult) Failed() int { return w.Non2xx + w.Connect + w.Read + w.Write + w.Timeout }

// WrkOptions: conns keep-alive connections on threads threads; POST with
// a small body when Post; each connection pausing up to PauseMS between
// requests (0: back to back). Dir holds wrk's script.
type WrkOptions struct {
	Conns, Threads, PauseMS int
	Post                    bool
	Dir                     string
}

// StartWrk runs wrk against url until Stop (at most ten minutes).
func StartWrk(bin, url string, o WrkOptions) (*Wrk, error) {
	lua := ""
	if o.Post {
		lua += "wrk.method = \"POST\"\nwrk.body = \"hello\"\nwrk.headers[\"Content-Type\"] = \"text/plain\"\n"
	}
	if o.PauseMS > 0 {
		lua += fmt.Sprintf("function delay() return math.random(0, %d) end\n", o.PauseMS)
	}
	args := []string{"-t" + strconv.Itoa(max(o.Threads, 1)), "-c" + strconv.Itoa(o.Conns), "-d600s"}
	if lua != "" {
		script := filepath.Join(o.Dir, "wrk.lua")
		if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-s", script)
	}
	w := &Wrk{cmd: exec.Command(bin, append(args, url)...), out: &syncBuffer{}}
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	return w, w.cmd.Start()
}

// Stop ends the run (SIGINT: wrk prints its report) and reads the report.
func (w *Wrk) Stop() (WrkResult, error) {
	w.cmd.Process.Signal(syscall.SIGINT)
	w.cmd.Wait()
	return ParseWrk(w.out.String())
}

// Kill ends the run without a report (a cleanup).
func (w *Wrk) Kill() {
	if w.cmd.ProcessState == nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
	}
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkErrors   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// ParseWrk reads wrk's report.
func ParseWrk(out string) (WrkResult, error) {
	w := WrkResult{Output: out}
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return w, fmt.Errorf("no request count in wrk's output:\n%s", out)
	}
	w.Requests, _ = strconv.Atoi(m[1])
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		w.Non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkErrors.FindStringSubmatch(out); m != nil {
		w.Connect, _ = strconv.Atoi(m[1])
		w.Read, _ = strconv.Atoi(m[2])
		w.Write, _ = strconv.Atoi(m[3])
		w.Timeout, _ = strconv.Atoi(m[4])
	}
	return w, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
