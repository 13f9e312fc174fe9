package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/daemon"
	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

var clientHelp = map[string]string{
	"status": "Shows the serving generation, every worker (slot, pid, state, uptime, restarts) and the listeners.\n",
	"reload": "Starts a new generation of workers on the same sockets; once it is ready the old one drains.\n" +
		"The configuration is read again first (--env-file files; with --update-env this command's\n" +
		"environment instead of the one sockd started with, as systemd's ExecReload= hands it the\n" +
		"re-read EnvironmentFile=): the new generation runs it. An invalid one is refused at once and\n" +
		"nothing changes. With --wait it returns when the reload is over: exit 0 if the new generation\n" +
		"took over, exit 1 with the reason if it was refused or rolled back (the old generation keeps\n" +
		"serving, on its configuration).\n",
	"upgrade": "Starts the sockd binary found at sockd's own path and hands it the listening sockets.\n",
	"scale":   "Sets the number of workers to N, or changes it by +K or -K (1 to 1024). New workers start at once;\nthe highest slots drain. During a reload the change waits for the reload's end. With --wait it\nreturns once that many workers are ready. Prints the new number.\n",
}

// scaleArg takes scale's N, +K or -K out of args before the flags are
// parsed (the flag package would read -1 as a flag): the first argument
// that is not a flag, or a flag that is a number (-1). valued are the
// flags that take a value.
func scaleArg(args []string, valued ...string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return args[i+1], append(args[:i:i], args[i+2:]...)
			}
			return "", args
		case strings.HasPrefix(a, "-") && strings.Trim(a[1:], "0123456789") != "":
			if !strings.Contains(a, "=") && slices.Contains(valued, strings.TrimLeft(a, "-")) {
				i++ // its value
			}
		default:
			return a, append(args[:i:i], args[i+1:]...)
		}
	}
	return "", args
}

// defaultClientTimeout bounds a request sockd answers at once (status, a
// reload without --wait): a sockd that accepts no connection (out of
// descriptors, stopped with SIGSTOP) must not hang a health check.
var defaultClientTimeout = 10 * time.Second // a variable for tests

// flagSet says whether the flag name was given (on the command line or
// in the environment).
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func clientCommand(name string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockd "+name, flag.ContinueOnError)
	tgt := addTarget(fs)
	asJSON, wait, check, updateEnv := new(bool), new(bool), new(bool), new(bool)
	timeoutHelp := "give up after this long (0: no limit; with --wait the default is no limit)"
	if name == "status" {
		timeoutHelp = "give up after this long (0: no limit)"
	}
	timeout := fs.Duration("timeout", defaultClientTimeout, timeoutHelp)
	synopsis := "sockd " + name + " [--timeout D] [--control PATH|--pid PID]"
	var workers string
	if name == "scale" {
		workers, args = scaleArg(args, "control", "pid", "timeout")
	}
	if name == "status" {
		fs.BoolVar(asJSON, "json", false, "print the status as JSON (shape documented in docs/reference.md)")
		fs.BoolVar(check, "check", false, "a health check: print the summary and exit 0 if a worker is ready and sockd is not stopping, else 1")
		synopsis = "sockd status [--json|--check] [--timeout D] [--control PATH|--pid PID]"
	} else {
		fs.BoolVar(wait, "wait", false, "wait for the outcome and exit non-zero if it failed")
		synopsis = "sockd " + name + " [--wait] [--timeout D] [--control PATH|--pid PID]"
		if name == "scale" {
			synopsis = "sockd scale [--wait] [--timeout D] [--control PATH|--pid PID] N|+K|-K"
		}
		if name == "reload" {
			fs.BoolVar(updateEnv, "update-env", false, "read the new configuration from this command's environment (SOCKD_* settings, the workers' variables) instead of the one sockd started with")
			synopsis = "sockd reload [--wait] [--update-env] [--timeout D] [--control PATH|--pid PID]"
		}
	}
	fs.Usage = usageFunc(fs, synopsis, clientHelp[name])
	if err := parseFlags(fs, args, getenv, stdout); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sockd %s: unexpected argument %q", name, fs.Arg(0))
	}
	if *asJSON && *check {
		return usagef("sockd status: --json or --check, not both")
	}
	if name == "scale" {
		if workers == "" {
			return usagef("sockd scale: want the number of workers: N, +K or -K (see sockd scale --help)")
		}
		if _, _, err := control.ParseScale(workers); err != nil {
			return usagef("sockd scale: %v", err)
		}
	}
	path, err := tgt.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *wait && !flagSet(fs, "timeout") {
		*timeout = 0 // a reload or an upgrade takes as long as it takes
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	req := control.Request{Command: name, Wait: *wait, Workers: workers}
	if *updateEnv {
		req.Env = os.Environ()
	}
	resp, err := control.CallChecked(ctx, path, req, tgt.check)
	if errors.Is(err, control.ErrUnreachable) {
		return err
	}
	if err != nil {
		return err
	}
	switch {
	case name == "status" && *check:
		return checkStatus(stdout, resp.Status)
	case name == "status":
		return printStatus(stdout, resp.Status, *asJSON)
	case name == "scale":
		fmt.Fprintf(stdout, "%d\n", resp.Workers)
		return nil
	}
	if *wait {
		fmt.Fprintf(stdout, "%s done\n", name)
	} else {
		fmt.Fprintf(stdout, "%s started; `sockd status` shows how it goes, `sockd %s --wait` waits for its outcome\n", name, name)
	}
	return nil
}

// checkStatus is `status --check`, for health probes: exit 0 while sockd
// serves (a worker ready, not stopping), 1 otherwise; one line either way.
func checkStatus(w io.Writer, raw json.RawMessage) error {
	var s pool.Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("bad status from sockd: %w", err)
	}
	if s.State == pool.StateStopping || s.Ready == 0 {
		return fmt.Errorf("not serving: %s", s.Summary)
	}
	fmt.Fprintln(w, s.Summary)
	return nil
}

func printStatus(w io.Writer, raw json.RawMessage, asJSON bool) error {
	if asJSON {
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	var s daemon.Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("bad status from sockd: %w", err)
	}
	fmt.Fprintf(w, "sockd pid %d: %s\n  %s\n", s.PID, s.State, s.Summary)
	fmt.Fprintf(w, "  up since %s, ready rule %s", s.StartedAt.Format(time.RFC3339), s.ReadyRule)
	if s.GuardPID != 0 {
		fmt.Fprintf(w, ", guard pid %d", s.GuardPID)
	}
	if c := s.Config; c.Command != "" {
		fmt.Fprintf(w, "\n  command: %s", c.Command)
		if c.Dir != "" {
			fmt.Fprintf(w, "\n  in %s", c.Dir)
		}
		if c.User != "" {
			fmt.Fprintf(w, " as %s", c.User)
		}
		fmt.Fprintf(w, "\n  configuration %s", c.Revision)
		if len(c.Changes) > 0 {
			fmt.Fprintf(w, "; the last reload changed %s", strings.Join(c.Changes, ", "))
		}
		if c.Refused != "" {
			fmt.Fprintf(w, "\n  last reload refused: %s", c.Refused)
		}
	}
	if s.Output != "" {
		fmt.Fprintf(w, "\n  worker output: %s; recent lines: sockd logs", s.Output)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTENER\tNETWORK\tADDRESS\tFD\tSOCKETS")
	for _, l := range s.Listeners {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", l.Name, l.Network, l.Address, l.FD, len(l.SockdFDs))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tGEN\tPID\tSTATE\tUPTIME\tRESTARTS\tREQUESTS\tSTATUS")
	for _, wk := range s.Workers {
		req := "-"
		if wk.Requests != nil {
			req = fmt.Sprint(*wk.Requests)
		}
		up := (time.Duration(wk.UptimeSeconds*1e3) * time.Millisecond).String()
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\n", wk.Slot, wk.Generation, wk.PID, wk.State, up, wk.Restarts, req, strings.TrimSpace(wk.Status))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, wk := range s.Workers {
		if wk.Restarts == 0 {
			continue
		}
		// The crashed workers' last words are in sockd's ring; the last
		// one's pid is in the events, if they reach back to it (a
		// replacement runs with the same slot and generation).
		crashed := 0
		for _, e := range s.Events {
			if e.Kind == pool.EventRestart && e.Slot == wk.Slot && e.Generation == wk.Generation && e.PID > 0 {
				crashed = e.PID
			}
		}
		if crashed > 0 {
			fmt.Fprintf(w, "\nslot %d restarted %d times: the last crashed worker's (pid %d) last lines: sockd logs --worker-pid %d\n", wk.Slot, wk.Restarts, crashed, crashed)
		} else {
			fmt.Fprintf(w, "\nslot %d restarted %d times: its crashed workers' last lines: sockd logs --worker %d --generation %d\n", wk.Slot, wk.Restarts, wk.Slot, wk.Generation)
		}
	}
	return nil
}

// controlPath is --control, or the default control socket path.
func controlPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	path, err := daemon.DefaultControlPath()
	if err != nil {
		return "", usagef("%v", err) // exit 2, as for sockd run
	}
	return path, nil
}

// target is the sockd a client command talks to: --control PATH, or
// --pid PID (the sockd with that pid, its control socket found through
// /proc), or the default path.
type target struct {
	fs      *flag.FlagSet
	control *string
	pid     *int
	// check, with --pid, makes sure each connection reaches the sockd
	// found (control.PeerUID).
	check func(*net.UnixConn) error
}

func addTarget(fs *flag.FlagSet) *target {
	return &target{
		fs:      fs,
		control: fs.String("control", "", "control socket `path` of the sockd to talk to (default as for sockd run)"),
		pid:     fs.Int("pid", 0, "talk to the sockd with this `pid`, wherever its control socket is (found through /proc: yours, or as root)"),
	}
}

func (t *target) path() (string, error) {
	switch {
	case *t.pid != 0 && *t.control != "" && *t.control != os.Getenv("SOCKD_CONTROL"):
		// (SOCKD_CONTROL in the environment is the default --pid
		// overrides.)
		return "", usagef("give --control or --pid, not both")
	case *t.pid < 0:
		return "", usagef("--pid %d: want a process id", *t.pid)
	case *t.pid > 0:
		path, uid, err := controlOfPID(*t.pid)
		if err == nil {
			t.check = control.PeerUID(uid)
		}
		return path, err
	case *t.control == "" && flagSet(t.fs, "control"):
		// --control="$SOCK" with SOCK unset must not reach the default
		// sockd (a reload of the system's main one).
		return "", usagef("--control: want a path (it is empty)")
	case *t.control != "":
		if err := activation.CheckUnixPath(*t.control); err != nil {
			return "", usagef("--control: %v", err)
		}
	}
	return controlPath(*t.control)
}

// controlOfPID finds the control socket of the sockd running as pid by
// asking it: among the listening unix sockets pid holds that none of its
// workers shares (those are the app's), the one whose sockd answers a
// status request with pid. Under a keeper (a sockd that handed over
// outside systemd and kept its pid) it is the control socket of the sockd
// in charge, its child. The path is the one pid sees, reached through
// /proc/PID/root when pid has another root (a chroot, a container).
func controlOfPID(pid int) (string, int, error) {
	st, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		// No sockd answers there: the exit status of an unreachable one.
		return "", 0, fmt.Errorf("--pid %d: no such process (%w)", pid, control.ErrUnreachable)
	}
	uid := int(st.Sys().(*syscall.Stat_t).Uid) // the process's owner
	if _, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); errors.Is(err, os.ErrPermission) {
		return "", 0, fmt.Errorf("--pid %d: cannot read which program it runs: %w (run as its user or root)", pid, err)
	}
	if !runsSockd(pid) {
		// Never send a request to another program's sockets.
		return "", 0, fmt.Errorf("--pid %d: not a sockd (its program's name has no \"sockd\" in it; give --control PATH)", pid)
	}
	// pid itself, then (a keeper) its children that are sockds: its
	// successor, the only one of them with a control socket (workers of
	// the demo, a guard, hold none of their own).
	candidates := []int{pid}
	for _, c := range procfs.Children(pid) {
		if runsSockd(c) {
			candidates = append(candidates, c)
		}
	}
	tried := 0
	for _, p := range candidates {
		ls, err := procfs.UnixListeners(p)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return "", 0, fmt.Errorf("--pid %d: cannot read its descriptors: %w (run as its user or root)", pid, err)
			}
			continue
		}
		shared := map[uint64]bool{}
		for _, c := range descendants(p, 3) {
			if in, err := procfs.SocketInodes(c); err == nil {
				for n := range in {
					shared[n] = true
				}
			}
		}
		for _, l := range ls {
			if shared[l.Inode] {
				continue
			}
			path := reachable(p, l.Path)
			if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
				continue // renamed, or replaced by something else
			}
			tried++
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			resp, err := control.CallChecked(ctx, path, control.Request{Command: "status"}, control.PeerUID(uid))
			cancel()
			var s struct {
				PID int `json:"pid"`
			}
			if err == nil && json.Unmarshal(resp.Status, &s) == nil && s.PID == p {
				return path, uid, nil
			}
		}
	}
	return "", 0, fmt.Errorf("--pid %d: no sockd control socket among its %d listening unix sockets of its own", pid, tried)
}

// runsSockd says whether pid runs a program named like sockd (also one
// replaced on disk since: "/usr/bin/sockd (deleted)").
func runsSockd(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	return strings.Contains(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), "sockd")
}

// descendants lists pid's children, theirs, … depth levels down.
func descendants(pid, depth int) []int {
	var out []int
	level := []int{pid}
	for ; depth > 0 && len(level) > 0; depth-- {
		var next []int
		for _, p := range level {
			next = append(next, procfs.Children(p)...)
		}
		out = append(out, next...)
		level = next
	}
	return out
}

// reachable is path as pid sees it, reached from here: through
// /proc/PID/root when pid has another root or another mount namespace (a
// unit's PrivateTmp=, a container), whose mounts that walk follows.
func reachable(pid int, path string) string {
	root := fmt.Sprintf("/proc/%d/root", pid)
	a, err1 := os.Stat(root)
	b, err2 := os.Stat("/")
	ns, err3 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	own, err4 := os.Readlink("/proc/self/ns/mnt")
	if err1 == nil && err2 == nil && os.SameFile(a, b) && err3 == nil && err4 == nil && ns == own {
		return path
	}
	return root + path
}
