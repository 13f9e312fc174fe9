package pm2

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/procfs"
)

//go:embed eval.js
var evalJS string

// evalMode says how eval.js reads the file.
type evalMode string

const (
	evalModule     evalMode = "module"     // require(), or import() for ES modules
	evalExpression evalMode = "expression" // '(' + text + ')', PM2's way with .json
)

// What sockd's own plumbing puts in its environment and a file evaluated
// on its behalf must not inherit (its sockets, its notify socket, an IPC
// channel of its own).
var privateEnv = []string{
	"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
	"NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID", "SOCKD_PM2_CLOSE_FDS",
}

// evalResult is eval.js's answer.
type evalResult struct {
	Kind   string          `json:"kind"`
	Config json.RawMessage `json:"config"`
	Error  *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
		Stack   string `json:"stack"`
	} `json:"error"`
}

// evalMarkVar marks node and everything the evaluated file starts.
const evalMarkVar = "SOCKD_PM2_EVAL"

var evalSeq atomic.Uint64

// killMarked kills every process whose environment holds mark (one that
// did not clear its environment): what an evaluated file left running
// outside node's process group, which would otherwise outlive sockd, one
// more at each reload.
func killMarked(mark string) {
	// Again while any is found: one may fork as the others are killed.
	for pass := 0; pass < 5; pass++ {
		found := false
		for _, p := range procfs.Processes() {
			if p.PID != os.Getpid() && !p.Gone() && procfs.EnvIs(p.PID, mark) {
				unix.Kill(p.PID, unix.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
	}
}

// evalNode runs node on the file and returns what it exports, decoded.
//
// node runs in its own process group with no descriptors but stdin
// (/dev/null), stdout and stderr (bounded buffers) and fd 3 (the result).
// Descriptors this process inherited without close-on-exec are closed by
// eval.js before the file runs. On return, whatever the file started in
// its process group is killed; node itself is killed at the deadline.
func evalNode(ctx context.Context, o *Options, mode evalMode) (any, error) {
	node, err := o.node()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("evaluating %s: %w", o.Path, err)
	}
	defer r.Close()
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = 64<<10, 64<<10
	cmd := exec.Command(node, "-e", evalJS, "--", o.abs, string(mode))
	cmd.Dir = o.Dir
	// What the file starts carries the mark, also what leaves node's
	// process group (detached, setsid): killed by it once node is done.
	mark := fmt.Sprintf("%s=%d-%d", evalMarkVar, os.Getpid(), evalSeq.Add(1))
	cmd.Env = append(cleanEnv(o.Environ), "SOCKD_PM2_CLOSE_FDS="+strayFDs(), mark)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second // a grandchild escaping the group may hold stdout
	// Registered with sockd's reaper (a nil one just starts it), which
	// would otherwise take node for an adopted orphan and reap it.
	pid, err := o.Reaper.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	w.Close()
	if err != nil {
		return nil, &Error{Kind: ErrNodeMissing, File: o.Path, Msg: fmt.Sprintf("cannot run %s: %v (install Node.js, or use a .json ecosystem file)", node, err), Err: err}
	}

	type read struct {
		b    []byte
		over bool
		err  error
	}
	got := make(chan read, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(r, int64(o.MaxOutput)+1))
		got <- read{b, len(b) > o.MaxOutput, err}
	}()
	exited := make(chan struct{})
	go func() { waitExit(pid); close(exited) }()

	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
	var res read
	var haveRes, done, timedOut, canceled bool
	for !done {
		select {
		case res = <-got:
			haveRes, got = true, nil
			if res.over || !bytes.HasPrefix(res.b, []byte(`{"error":`)) {
				// All there is to read (or too much): PM2 reads
				// module.exports as soon as require returns, and does not
				// wait for what the file left running. An error is left
				// to finish, so node prints where it happened.
				unix.Kill(-pid, unix.SIGKILL)
			}
		case <-exited:
			done = true
		case <-timer.C:
			timedOut = true
			unix.Kill(-pid, unix.SIGKILL)
		case <-ctx.Done():
			canceled = true
			unix.Kill(-pid, unix.SIGKILL)
		}
	}
	// node is a zombie now: its pid, and so its process group's id, cannot
	// be reused until it is reaped, so this reaches only what it left.
	unix.Kill(-pid, unix.SIGKILL)
	killMarked(mark)
	waitErr := cmd.Wait()
	o.Reaper.Release(pid)
	if !haveRes {
		// Every writer is gone, unless something the file started left
		// the group and holds fd 3: give up on it after a moment.
		grace := time.NewTimer(time.Second)
		if timedOut || canceled {
			grace.Reset(0)
		}
		select {
		case res = <-got:
		case <-grace.C:
			r.Close()
			res = <-got
		}
		grace.Stop()
	}
	tooBig := res.over

	switch {
	case canceled:
		return nil, ctx.Err()
	case timedOut:
		return nil, &Error{Kind: ErrTimeout, File: o.Path, Msg: fmt.Sprintf("node did not finish evaluating the file within %s", o.Timeout)}
	case tooBig:
		return nil, newErr(ErrSyntax, o.Path, "", "the evaluated file exports more than %d bytes of JSON", o.MaxOutput)
	}
	var out evalResult
	if err := json.Unmarshal(res.b, &out); err != nil || (out.Kind == "" && out.Error == nil) {
		return nil, newErr(ErrSyntax, o.Path, "", "node exited (%v) before the file was read%s", exitText(waitErr), lastLine(stderr.String()))
	}
	if e := out.Error; e != nil {
		where := errorLocation(e.Stack, stderr.String())
		msg := firstLine(e.Message)
		if e.Name != "" && !strings.HasPrefix(msg, e.Name) {
			msg = e.Name + ": " + msg
		}
		if where != "" {
			msg = where + ": " + msg
		}
		return nil, &Error{Kind: ErrSyntax, File: o.Path, Msg: msg}
	}
	switch out.Kind {
	case "function":
		return nil, newErr(ErrNoApps, o.Path, "", "module.exports is a function, which PM2 does not call: export the object, module.exports = {apps: [...]}")
	case "promise":
		return nil, newErr(ErrNoApps, o.Path, "", "module.exports is a promise, which PM2 does not wait for: export the object, module.exports = {apps: [...]}")
	case "undefined", "symbol":
		return nil, newErr(ErrNoApps, o.Path, "", exportsNothing)
	}
	v, err := decodeJSON(out.Config)
	if err != nil {
		return nil, newErr(ErrSyntax, o.Path, "", "node's output: %v", err)
	}
	return v, nil
}

// waitExit waits until pid has exited without reaping it.
func waitExit(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// strayFDs lists this process's descriptors from 4 up that lack
// close-on-exec (fd 3 is the result pipe in the child). sockd keeps its
// own descriptors close-on-exec; these would be inherited from whoever
// started sockd, e.g. systemd's sockets before sockd takes them.
func strayFDs() string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return ""
	}
	var out []string
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 4 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			out = append(out, e.Name())
		}
	}
	return strings.Join(out, ",")
}

func cleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !contains(privateEnv, k) {
			out = append(out, kv)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var (
	// A syntax error's decorated stack starts with FILE:LINE.
	headerRE = regexp.MustCompile(`^((?:file://)?/[^\n]*?):(\d+)$`)
	// A stack frame: "at fn (FILE:LINE:COL)" or "at FILE:LINE:COL".
	frameRE = regexp.MustCompile(`^\s*at (?:.*? \()?((?:file://)?/[^():]*):(\d+):\d+\)?$`)
)

// errorLocation finds FILE:LINE in what node said: the decorated header of
// a syntax error, else the first stack frame in a file.
func errorLocation(stack, stderr string) string {
	for _, text := range []string{stack, stderr} {
		lines := strings.Split(text, "\n")
		if m := headerRE.FindStringSubmatch(strings.TrimSpace(lines[0])); m != nil {
			return strings.TrimPrefix(m[1], "file://") + ":" + m[2]
		}
		for _, l := range lines {
			if m := frameRE.FindStringSubmatch(l); m != nil {
				return strings.TrimPrefix(m[1], "file://") + ":" + m[2]
			}
		}
	}
	return ""
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return ": " + l
	}
	return ""
}

func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
