package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// outputWorker writes to stdout and stderr what every format must carry:
// plain lines, a JSON object line (a structured logger's), an sd-daemon
// "<4>" line and a last line without a newline; on SIGUSR1 it writes
// "usr1 SLOT"; it exits 3 with last words on stderr when the file
// crash-SLOT is in DIR (then removes it: its replacement runs on).
const outputWorker = `
trap 'echo "usr1 $SOCKD_WORKER"' USR1
trap 'printf "bye $SOCKD_WORKER"; exit 0' TERM
if [ -e "$DIR/crash-$SOCKD_WORKER" ]; then
	rm "$DIR/crash-$SOCKD_WORKER"
	echo "last words of $$" >&2
	exit 3
fi
echo "out $SOCKD_WORKER"
echo "err $SOCKD_WORKER" >&2
echo '{"level":"error","msg":"structured","slot":'"$SOCKD_WORKER"'}'
echo "<4>warned $SOCKD_WORKER" >&2
while :; do sleep 0.05; done
`

func startOutputSockd(t *testing.T, args ...string) (*daemonProc, *syncBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	all := append([]string{"run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--workers", "2", "--ready", "after:100ms"}, args...)
	all = append(all, "--", "/bin/sh", "-c", outputWorker)
	cmd, errb := sockdCmd(t, []string{"DIR=" + dir}, all...)
	outb := &syncBuffer{}
	cmd.Stdout = outb
	d := launch(t, cmd, errb, ctl)
	return d, outb, dir
}

func logsOf(t *testing.T, d *daemonProc, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := sockd(append([]string{"logs", "--control", d.control}, args...), &out, &errb); code != 0 {
		t.Fatalf("sockd logs %v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

// Standalone, the default (prefix): each worker's lines on sockd's stdout
// and stderr as the worker wrote them, after "[wSLOT gGEN]" ("err" for
// stderr); sockd logs shows them from its ring, a crashed worker's last
// words included, and -f follows.
func TestWorkerOutputPrefixAndLogs(t *testing.T) {
	d, outb, dir := startOutputSockd(t)
	for _, want := range []string{"[w0 g1] out 0\n", "[w1 g1] out 1\n", `[w1 g1] {"level":"error","msg":"structured","slot":1}` + "\n"} {
		waitFor(t, 10*time.Second, "stdout line "+want, func() bool { return strings.Contains(outb.String(), want) })
	}
	for _, want := range []string{"[w0 g1 err] err 0\n", "[w1 g1 err] <4>warned 1\n"} {
		waitFor(t, 10*time.Second, "stderr line "+want, func() bool { return strings.Contains(d.out.String(), want) })
	}
	if strings.Contains(outb.String(), "err 0") || strings.Contains(d.out.String(), "] out 0") {
		t.Errorf("stdout and stderr mixed up:\nstdout %q\nstderr %q", outb, d.out)
	}

	// The ring: both workers, both streams, in order per worker.
	all := logsOf(t, d, "-n", "100")
	for _, want := range []string{"[w0 g1] out 0", "[w0 g1 err] err 0", "[w1 g1 err] warned 1"} { // "<4>" is the priority
		if !strings.Contains(all, want) {
			t.Errorf("sockd logs lacks %q:\n%s", want, all)
		}
	}
	one := logsOf(t, d, "--worker", "1", "-n", "100")
	if strings.Contains(one, "[w0 ") || !strings.Contains(one, "[w1 g1] out 1") {
		t.Errorf("sockd logs --worker 1:\n%s", one)
	}
	if got := strings.Count(logsOf(t, d, "-n", "2"), "\n"); got != 2 {
		t.Errorf("sockd logs -n 2 printed %d lines", got)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logsOf(t, d, "--json", "--worker", "0", "-n", "100")), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("sockd logs --json: %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	w0 := slotOf(d.mustStatus(), 0).PID
	for _, r := range recs {
		if r["worker"] != 0.0 || r["generation"] != 1.0 || r["pid"] != float64(w0) || r["time"] == "" {
			t.Errorf("sockd logs --json record %v: want worker 0, generation 1, pid %d", r, w0)
		}
		if r["message"] == "warned 0" && r["priority"] != 4.0 || r["message"] == "err 0" && r["priority"] != 3.0 || r["message"] == "out 0" && r["priority"] != 6.0 {
			t.Errorf("record %v: wrong priority", r)
		}
	}

	// -f in its own process: new lines as they come, Ctrl-C ends it with 0.
	follow, fout := sockdCmd(t, nil, "logs", "-f", "-n", "0", "--worker", "0", "--control", d.control)
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	// The follower is in place once sockd has a connection for it: poke
	// until its line shows.
	waitFor(t, 10*time.Second, "sockd logs -f shows usr1 0", func() bool {
		sockd([]string{"signal", "--worker", "0", "--control", d.control, "USR1"}, io.Discard, io.Discard)
		return strings.Contains(fout.String(), "[w0 g1] usr1 0\n")
	})
	if strings.Contains(fout.String(), "usr1 1") || strings.Contains(fout.String(), "out 0") {
		t.Errorf("sockd logs -f -n 0 --worker 0 printed:\n%s", fout)
	}
	follow.Process.Signal(syscall.SIGINT)
	if err := follow.Wait(); err != nil {
		t.Errorf("sockd logs -f after SIGINT: %v\n%s", err, fout)
	}

	// A crash: the crashed worker's last words stay in the ring after its
	// replacement started.
	if err := os.WriteFile(filepath.Join(dir, "crash-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := slotOf(d.mustStatus(), 1).PID
	sockd([]string{"signal", "--worker", "1", "--control", d.control, "KILL"}, io.Discard, io.Discard)
	var crashed string
	waitFor(t, 20*time.Second, "worker 1 crashed and replaced by one that runs", func() bool {
		w := slotOf(d.mustStatus(), 1)
		running := false // its first line is out: its traps are set
		for _, line := range strings.Split(logsOf(t, d, "--worker", "1", "--json", "-n", "100"), "\n") {
			var r struct {
				PID     int
				Message string
			}
			if json.Unmarshal([]byte(line), &r) != nil {
				continue
			}
			if strings.HasPrefix(r.Message, "last words of ") {
				crashed = strconv.Itoa(r.PID)
			}
			running = running || r.Message == "out 1" && r.PID == w.PID && w.PID != old
		}
		return crashed != "" && running && strconv.Itoa(w.PID) != crashed
	})
	var st bytes.Buffer
	sockd([]string{"status", "--control", d.control}, &st, io.Discard)
	if !strings.Contains(st.String(), "slot 1 restarted 2 times: the last crashed worker's (pid "+crashed+") last lines: sockd logs --worker-pid "+crashed) || !strings.Contains(st.String(), "worker output: prefix") {
		t.Errorf("sockd status does not point to the crashed worker's lines (pid %s):\n%s", crashed, st.String())
	}
	if !strings.Contains(logsOf(t, d, "--worker", "1", "-n", "100"), "last words of "+crashed) {
		t.Errorf("the crashed worker's last words (pid %s) are not in sockd logs --worker 1", crashed)
	}
	// Its replacement (same slot, same generation) is not in the crashed
	// one's lines.
	if l := logsOf(t, d, "--worker-pid", crashed); !strings.Contains(l, "last words of "+crashed) || strings.Contains(l, "out 1") {
		t.Errorf("sockd logs --worker-pid %s:\n%s", crashed, l)
	}
	if p, _ := strconv.Atoi(crashed); procfs.Alive(p) {
		t.Errorf("crashed worker %s still alive", crashed)
	}

	// At stop, what the workers wrote last (no newline) arrives.
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	for _, want := range []string{"[w0 g1] bye 0\n", "[w1 g1] bye 1\n"} {
		if !strings.Contains(outb.String(), want) {
			t.Errorf("stdout lacks the last words %q:\n%s", want, outb)
		}
	}
}

// --worker-output json: every line of sockd's stdout is one JSON object in
// the shape of --log-format json, with the worker's attribution; a line
// that is a JSON object is embedded, its level mapped.
func TestWorkerOutputJSON(t *testing.T) {
	d, outb, _ := startOutputSockd(t, "--worker-output", "json")
	waitFor(t, 10*time.Second, "both workers' structured lines", func() bool {
		return strings.Count(outb.String(), `"json":{`) >= 2
	})
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	pids := map[float64]bool{}
	structured := 0
	for _, line := range strings.Split(strings.TrimSpace(outb.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line not JSON: %q", line)
		}
		if m["@module"] != "sh" || m["stream"] != "stdout" || m["generation"] != 1.0 || m["@timestamp"] == nil || m["@level"] == nil {
			t.Errorf("record %v: want @module sh (the command's name), stream stdout, generation 1, @timestamp, @level", m)
		}
		pids[m["worker_pid"].(float64)] = true
		if obj, ok := m["json"].(map[string]any); ok {
			structured++
			if obj["msg"] != "structured" || m["@level"] != "error" || m["@message"] != "structured" {
				t.Errorf("embedded JSON line %v: want the object, @level error, @message structured", m)
			}
		}
	}
	if structured != 2 || len(pids) != 2 {
		t.Errorf("%d embedded objects from %d workers, want 2 from 2:\n%s", structured, len(pids), outb)
	}
	// sockd's own log stays text on stderr; the workers' stderr lines are
	// JSON there too.
	for _, line := range strings.Split(d.out.String(), "\n") {
		if strings.Contains(line, "warned 0") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || m["@level"] != "warn" || m["stream"] != "stderr" {
				t.Errorf("stderr line %q: %v, want JSON at level warn", line, err)
			}
		}
	}
}

// --worker-output raw: the lines as written; with --log-format json the
// default (auto) is json, so every line sockd prints parses.
func TestWorkerOutputRawAndAuto(t *testing.T) {
	d, outb, _ := startOutputSockd(t, "--worker-output", "raw")
	waitFor(t, 10*time.Second, "raw lines", func() bool {
		return strings.Contains(outb.String(), "\nout 1\n") || strings.HasPrefix(outb.String(), "out 1\n")
	})
	waitFor(t, 10*time.Second, "raw stderr", func() bool { return strings.Contains(d.out.String(), "\n<4>warned 0\n") })
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()

	d, outb, _ = startOutputSockd(t, "--log-format", "json")
	waitFor(t, 10*time.Second, "json lines", func() bool { return strings.Count(outb.String(), `"json":{`) >= 2 })
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	for name, b := range map[string]*syncBuffer{"stdout": outb, "stderr": d.out} {
		for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			if !json.Valid([]byte(line)) {
				t.Errorf("%s line with --log-format json is not JSON: %q", name, line)
			}
		}
	}
}

// Metrics count the lines and bytes each worker wrote (read by the
// Prometheus client's own parser).
func TestWorkerOutputMetrics(t *testing.T) {
	python := pythonParser(t)
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	d, outb, _ := startOutputSockd(t, "--metrics", "unix://"+sock)
	waitFor(t, 10*time.Second, "lines", func() bool {
		return strings.Count(outb.String(), `"structured"`) >= 2 && strings.Count(d.out.String(), "warned") >= 2
	})
	p := scrape(t, python, sock, false)
	w0 := slotOf(d.mustStatus(), 0).PID
	for key, want := range map[string]float64{
		fmt.Sprintf("sockd_worker_output_lines_total{generation=1,pid=%d,slot=0,stream=stdout}", w0): 2,
		fmt.Sprintf("sockd_worker_output_bytes_total{generation=1,pid=%d,slot=0,stream=stderr}", w0): float64(len("err 0\n<4>warned 0\n")),
		"sockd_output_lines_total{stream=stderr}":                                                    4,
		"sockd_output_dropped_lines_total{stream=stdout}":                                            0,
	} {
		if got, ok := p[key]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", key, got, ok, want)
		}
	}
}

// sockd logs refuses bad flags with exit 2 and says so when no sockd
// answers.
func TestLogsBadInput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := sockd([]string{"logs", "-n", "-3", "--control", filepath.Join(t.TempDir(), "none")}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "-n -3") {
		t.Errorf("sockd logs -n -3: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := sockd([]string{"logs", "--control", filepath.Join(t.TempDir(), "none")}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "cannot reach sockd") {
		t.Errorf("sockd logs without sockd: exit %d, %q", code, errb.String())
	}
}

// sockd logs -f follows the new sockd once an upgrade has handed over.
func TestLogsFollowAcrossAnUpgrade(t *testing.T) {
	d, _, _ := startOutputSockd(t)
	follow, fout := sockdCmd(t, nil, "logs", "-f", "-n", "0", "--worker", "0", "--control", d.control)
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	poke := func(gen int) {
		t.Helper()
		// Its "out" line comes after its USR1 trap is set: a SIGUSR1
		// before would kill it (a loaded machine can take longer than
		// the 100 ms of --ready after:100ms to get there).
		trapped := fmt.Sprintf("[w0 g%d] out 0\n", gen)
		waitFor(t, 20*time.Second, "worker 0 of generation "+strconv.Itoa(gen)+" with its traps set", func() bool {
			var out bytes.Buffer
			sockd([]string{"logs", "--worker", "0", "--generation", strconv.Itoa(gen), "--control", d.control}, &out, io.Discard)
			return strings.Contains(out.String(), trapped)
		})
		want := fmt.Sprintf("[w0 g%d] usr1 0\n", gen)
		waitFor(t, 20*time.Second, "sockd logs -f shows "+want, func() bool {
			sockd([]string{"signal", "--worker", "0", "--control", d.control, "USR1"}, io.Discard, io.Discard)
			return strings.Contains(fout.String(), want)
		})
	}
	poke(1)
	var errb bytes.Buffer
	if code := sockd([]string{"upgrade", "--wait", "--control", d.control}, io.Discard, &errb); code != 0 {
		t.Fatalf("upgrade --wait: exit %d: %s", code, errb.String())
	}
	poke(2)
	follow.Process.Signal(syscall.SIGINT)
	if err := follow.Wait(); err != nil {
		t.Errorf("sockd logs -f after SIGINT: %v\n%s", err, fout)
	}
}

// A logs request that reached a sockd handing over to a new one is asked
// again, and the new one answers it; a sockd that keeps saying so is
// asked five times in all.
func TestLogsAsksAgainAfterAHandOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns, retries := 0, 1
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadBytes('\n')
			mu.Lock()
			conns++
			n, retry := conns, conns <= retries
			mu.Unlock()
			switch {
			case n == 0: // a follow that the hand-over ends
				c.Write([]byte(`{"ok":true}` + "\n" + `{"worker":0,"generation":1,"pid":6,"stream":"out","priority":6,"message":"from the old sockd"}` + "\n" +
					`{"ok":false,"error":"this sockd handed over to a new one","retry":true}` + "\n"))
			case retry:
				c.Write([]byte(`{"ok":false,"error":"this sockd handed over to a new one","retry":true}` + "\n"))
			default:
				c.Write([]byte(`{"ok":true}` + "\n" + `{"worker":0,"generation":2,"pid":7,"stream":"out","priority":6,"message":"from the new sockd"}` + "\n" + `{"end":true}` + "\n"))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	var out, errb bytes.Buffer
	if code := sockd([]string{"logs", "--control", path}, &out, &errb); code != 0 || !strings.Contains(out.String(), "from the new sockd") {
		t.Fatalf("sockd logs: exit %d, out %q, err %q", code, out.String(), errb.String())
	}
	// Following: the old sockd's records, its last one saying to ask the
	// new one, then the new one's.
	mu.Lock()
	conns, retries = -1, 0
	mu.Unlock()
	out.Reset()
	if code := sockd([]string{"logs", "-f", "--control", path}, &out, &errb); code != 0 || out.String() != "[w0 g1] from the old sockd\n[w0 g2] from the new sockd\n" {
		t.Fatalf("sockd logs -f across a hand-over: exit %d, out %q, err %q", code, out.String(), errb.String())
	}
	mu.Lock()
	conns, retries = 0, 100
	mu.Unlock()
	out.Reset()
	if code := sockd([]string{"logs", "--control", path}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "handed over") {
		t.Fatalf("sockd logs on a sockd that always hands over: exit %d, err %q", code, errb.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 5 {
		t.Fatalf("asked %d times, want 5", conns)
	}
}

// slotOf is the current worker of slot (zero if none).
func slotOf(s pool.Status, slot int) pool.WorkerStatus {
	for _, w := range s.Workers {
		if w.Slot == slot && w.Generation == s.Generation {
			return w
		}
	}
	return pool.WorkerStatus{}
}

// Bad output: bytes that are not text, a 10 MB line, a worker that closes
// its stdout and then its stderr. The bytes reach stdout as written, the
// long line in pieces of at most 64 KiB marked "+" after the first, the
// json format carries the exact bytes in base64; no descriptor is left
// behind by the generations a reload retired.
func TestWorkerOutputBadBytes(t *testing.T) {
	const script = `
trap 'exit 0' TERM
head -c 10485760 /dev/zero | tr '\0' x; echo
printf 'bin\377\376ary\n'
exec 1>&-
echo "after close" >&2
exec 2>&-
while :; do sleep 0.05; done
`
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	cmd, errb := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--workers", "1", "--ready", "after:100ms",
		"--", "/bin/sh", "-c", script)
	outb := &syncBuffer{}
	cmd.Stdout = outb
	d := launch(t, cmd, errb, ctl)
	waitFor(t, 20*time.Second, "after close", func() bool { return strings.Contains(d.out.String(), "[w0 g1 err] after close\n") })
	// stdout and stderr are two pipes relayed on their own: the end of
	// the 10 MB line may still be on its way when stderr's line is out.
	waitFor(t, 20*time.Second, "the binary line as written", func() bool { return strings.Contains(outb.String(), "[w0 g1] bin\377\376ary\n") })
	waitFor(t, 20*time.Second, "the 10 MB line", func() bool { return strings.Count(outb.String(), "x") == 10<<20 })
	pieces := 0
	for _, line := range strings.Split(outb.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "[w0 g1 +] "); ok {
			pieces++
			if len(rest) > 64<<10 || strings.Trim(rest, "x") != "" {
				t.Fatalf("a piece of %d bytes: %.40q", len(rest), rest)
			}
		}
	}
	if pieces < (10<<20)/(64<<10)-1 {
		t.Errorf("the 10 MB line came in %d continued pieces", pieces+1)
	}
	var js bytes.Buffer
	sockd([]string{"logs", "--json", "-n", "1000", "--control", ctl}, &js, io.Discard)
	if !strings.Contains(js.String(), `"message_base64":"Ymlu//5hcnk="`) {
		t.Errorf("sockd logs --json does not carry the exact bytes in base64:\n%.300s", js.String())
	}
	for i := 0; i < 2; i++ {
		if code := sockd([]string{"reload", "--wait", "--control", ctl}, io.Discard, io.Discard); code != 0 {
			t.Fatalf("reload: exit %d", code)
		}
	}
	// A pipe sockd still reads that no other process can write to any
	// more has reached its end and must be closed: none is left over.
	pid := d.mustStatus().PID
	waitFor(t, 20*time.Second, "no pipe end left open in sockd without a writer", func() bool {
		return len(orphanPipes(pid)) == 0
	})
}

// orphanPipes lists the pipes pid holds that no other process holds.
func orphanPipes(pid int) []string {
	held := map[string]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		other, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || other == pid {
			continue
		}
		fds, _ := procfs.FDs(other)
		for _, fd := range fds {
			if target, err := procfs.FDTarget(other, fd); err == nil && strings.HasPrefix(target, "pipe:") {
				held[target] = true
			}
		}
	}
	var out []string
	fds, _ := procfs.FDs(pid)
	for _, fd := range fds {
		if target, err := procfs.FDTarget(pid, fd); err == nil && strings.HasPrefix(target, "pipe:") && !held[target] {
			out = append(out, target)
		}
	}
	return out
}

// TestOneStreamForStdoutAndStderr: `sockd run 2>&1 | …` (fds 1 and 2 one
// pipe, here of one page, so that every long write blocks part way): a
// worker writing long lines to its stdout and stderr at once, and sockd's
// own log records, come out whole, each line with its own prefix. Two
// descriptors writing more than PIPE_BUF to one pipe splice each other.
func TestOneStreamForStdoutAndStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	const n, size = 300, 3000
	worker := fmt.Sprintf(`a=$(head -c %d /dev/zero | tr '\0' A); e=$(head -c %d /dev/zero | tr '\0' E)
(i=0; while [ $i -lt %d ]; do echo "$a"; i=$((i+1)); done) &
(i=0; while [ $i -lt %d ]; do echo "$e" >&2; i=$((i+1)); done) &
wait
echo finished
exec sleep 600`, size, size, n, n)
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	cmd, _ := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--workers", "1",
		"--ready", "after:10ms", "--log-level", "debug", "--", "/bin/sh", "-c", worker)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	wantOut, wantErr := "[w0 g1] "+strings.Repeat("A", size), "[w0 g1 err] "+strings.Repeat("E", size)
	outs, errs, bad := 0, 0, 0
	deadline := time.After(60 * time.Second)
	for outs < n || errs < n {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("sockd's output ended after %d stdout and %d stderr lines", outs, errs)
			}
			switch {
			case l == wantOut:
				outs++
			case l == wantErr:
				errs++
			case strings.Contains(l, "AAAA") || strings.Contains(l, "EEEE"):
				if bad++; bad <= 3 {
					t.Errorf("a spliced line: %.120q…", l)
				}
			}
		case <-deadline:
			t.Fatalf("after 60 s: %d whole stdout lines, %d whole stderr lines of %d, %d spliced", outs, errs, n, bad)
		}
	}
	if bad > 0 {
		t.Errorf("%d spliced lines", bad)
	}
	go func() {
		for range lines {
		}
	}()
}

// A sockd that does not answer (stopped, out of descriptors; here a
// socket nobody answers on) ends sockd logs, logs -f and top within the
// client timeout, exit 5, as sockd status; bad selectors are refused; a
// reader that goes away (| head) ends logs quietly.
func TestLogsAndTopAgainstASilentSockd(t *testing.T) {
	old := defaultClientTimeout
	defaultClientTimeout = 300 * time.Millisecond
	defer func() { defaultClientTimeout = old }()
	dir := t.TempDir()
	silent := filepath.Join(dir, "silent.sock")
	ln, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	for _, args := range [][]string{{"logs"}, {"logs", "-f"}, {"top", "-n", "1"}} {
		done := make(chan int, 1)
		var errb bytes.Buffer
		go func() { done <- sockd(append(args, "--control", silent), io.Discard, &errb) }()
		select {
		case code := <-done:
			if code != exitUnreachable || !strings.Contains(errb.String(), "no answer") && !strings.Contains(errb.String(), "in time") {
				t.Errorf("sockd %v against a silent sockd: exit %d, %q", args, code, errb.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("sockd %v against a silent sockd hangs", args)
		}
	}
	for _, args := range [][]string{{"logs", "--worker", "-2"}, {"logs", "--generation", "0"}} {
		var errb bytes.Buffer
		if code := sockd(append(args, "--control", silent), io.Discard, &errb); code != exitUsage || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
			t.Errorf("sockd %v: exit %d, %q; want a one-line usage error", args, code, errb.String())
		}
	}

	// A sockd that answers three lines; the reader is gone after one.
	answering := filepath.Join(dir, "answering.sock")
	ln2, err := net.Listen("unix", answering)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		c, err := ln2.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bufio.NewReader(c).ReadBytes('\n')
		io.WriteString(c, `{"ok":true}`+"\n")
		for i := range 3 {
			fmt.Fprintf(c, `{"worker":0,"generation":1,"pid":42,"stream":"stdout","priority":6,"message":"line %d"}`+"\n", i)
		}
		io.WriteString(c, `{"end":true}`+"\n")
	}()
	var errb bytes.Buffer
	if code := sockd([]string{"logs", "-f", "--control", answering}, epipeWriter{}, &errb); code != 0 {
		t.Errorf("sockd logs -f | head -1: exit %d, %q", code, errb.String())
	}
}

// epipeWriter is a pipe whose reader has gone.
type epipeWriter struct{}

func (epipeWriter) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}
}

// A Python worker's print() reaches sockd line by line (Python buffers a
// pipe in 8 KiB blocks unless PYTHONUNBUFFERED is set, which sockd does
// when it relays the output and the environment does not say otherwise).
func TestPythonOutputUnbuffered(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	cmd, errb := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--workers", "1", "--ready", "after:10ms",
		"--", python, "-c", "import time\nwhile True:\n    print('tick', flush=False)\n    time.sleep(0.05)")
	outb := &syncBuffer{}
	cmd.Stdout = outb
	launch(t, cmd, errb, ctl)
	waitFor(t, 10*time.Second, "a print() line", func() bool { return strings.Contains(outb.String(), "[w0 g1] tick\n") })
}

// A worker that binds a port sockd holds (an app not written for socket
// activation) dies with "address already in use", in whatever language:
// sockd says what to do, once, naming what it holds.
func TestHintAddressInUse(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	cmd, errb := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", fmt.Sprintf("http=tcp://127.0.0.1:%d", port), "--workers", "1",
		"--ready", "after:5s", "--", python, "-c", fmt.Sprintf("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', %d))", port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitFor(t, 20*time.Second, "the hint", func() bool { return strings.Contains(errb.String(), "event=hint_address_in_use") })
	if n := strings.Count(errb.String(), "event=hint_address_in_use"); n != 1 || !strings.Contains(errb.String(), fmt.Sprintf(`held="http=tcp://127.0.0.1:%d"`, port)) {
		t.Errorf("%d hints, or not naming the listener:\n%s", n, errb)
	}
}

// A worker that exits 0 right after it started, before it was ready, is
// most likely a server that went to the background: sockd says so.
func TestHintDaemonized(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd, errb := sockdCmd(t, nil, "run", "--control", ctl, "--stop-timeout", "5s", "--listen", "none", "--workers", "1", "--", "/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitFor(t, 20*time.Second, "the hint", func() bool {
		return strings.Contains(errb.String(), "did the command go to the background (daemonize)?")
	})
}
