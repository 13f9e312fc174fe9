// Package cgroup puts each of sockd's workers, with everything it starts,
// into a control group of its own (cgroup v2, see
// https://docs.kernel.org/admin-guide/cgroup-v2.html), where the kernel
// keeps track of them whatever they do: a daemon that left its process
// group and its parent is still in its worker's cgroup, and cgroup.kill
// ends all of it at once.
//
// sockd may only manage a subtree that is its own: the cgroup systemd
// delegated to it (Delegate=yes in systemd.resource-control(5); systemd
// marks such a cgroup with the trusted.delegate extended attribute), or,
// when sockd runs outside systemd as root, a new cgroup below the root of
// the hierarchy it sees (a host's, or a container's own namespace). The
// layout, following the no-internal-processes rule (a cgroup with
// controllers enabled for its children has no processes of its own):
//
//	BASE/               delegated, or created as sockd-PID under the root
//	BASE/supervisor/    sockd itself and its guard
//	BASE/worker-P-N/    one per worker process (P: sockd's pid), created before
//	                    the fork and entered at the fork (clone3 CLONE_INTO_CGROUP)
//
// Per-worker limits (memory.max, pids.max, cpu.weight) need the memory,
// pids and cpu controllers in BASE's cgroup.controllers; asking for one
// that is not there is an error, not a silent no-op. (On a host that binds
// them to cgroup v1, the "hybrid" layout, the v2 hierarchy has none.)
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnavailable: this sockd may not manage a cgroup v2 subtree here.
var ErrUnavailable = errors.New("no cgroup v2 subtree sockd may manage")

// Limits are per-worker resource limits; zero fields set none.
type Limits struct {
	MemoryMax int64 // memory.max, bytes
	PidsMax   int64 // pids.max
	CPUWeight int64 // cpu.weight, 1 to 10000 (100 is the default)
}

func (l Limits) controllers() []string {
	var c []string
	if l.MemoryMax > 0 {
		c = append(c, "memory")
	}
	if l.PidsMax > 0 {
		c = append(c, "pids")
	}
	if l.CPUWeight > 0 {
		c = append(c, "cpu")
	}
	return c
}

// Tree is sockd's subtree.
type Tree struct {
	Base    string // absolute path of BASE
	origin  string // the cgroup sockd was in, to go back to on Close
	created bool   // BASE was made by sockd (standalone), so Close removes it
	limits  Limits // the ones asked for at Setup
	seq     int
}

// Options say which subtree to take.
type Options struct {
	// Mount is the cgroup2 mount; "" finds it in /proc/self/mountinfo.
	Mount string
	// Own is sockd's cgroup ("/system.slice/sockd.service"); "" reads it
	// from /proc/self/cgroup.
	Own string
	// Delegated says systemd delegated Own to sockd; when false it is
	// taken from the trusted.delegate (or user.delegate) attribute.
	Delegated bool
	// Base, if set, is a subtree to take over as it is (an old sockd's,
	// during an upgrade); Origin, if set, says sockd made it, coming
	// from that cgroup.
	Base, Origin string
	// Limits every worker gets.
	Limits Limits
}

// Setup takes sockd's subtree and moves this process into its supervisor
// leaf. It returns an error wrapping ErrUnavailable when there is no
// subtree sockd may manage, and another error when there is one but the
// limits asked for cannot be had.
func Setup(o Options) (*Tree, error) {
	if o.Base != "" {
		t := &Tree{Base: o.Base, origin: o.Origin, created: o.Origin != "", limits: o.Limits}
		if err := t.setup(); err != nil {
			return nil, err
		}
		return t, nil
	}
	var err error
	if o.Mount == "" {
		if o.Mount, err = findMount(); err != nil {
			return nil, err
		}
	}
	if o.Own == "" {
		if o.Own, err = ownCgroup(); err != nil {
			return nil, err
		}
	}
	t, err := plan(o)
	if err != nil {
		return nil, err
	}
	if t.created {
		if err := makeBase(t); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	if err := t.setup(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// makeBase makes t.Base, sockd-PID. One of that name already there was
// left by a sockd that had this pid before (one killed by SIGKILL, a
// container's PID 1 of an earlier run, which is always 1): empty, it is
// removed and made again; in use (a sockd with this pid in another pid
// namespace), the name gets a suffix, sockd-PID.2, .3, ….
func makeBase(t *Tree) error {
	base := t.Base
	for i := 1; i <= 100; i++ {
		if i > 1 {
			t.Base = fmt.Sprintf("%s.%d", base, i)
		}
		err := os.Mkdir(t.Base, 0o755)
		if errors.Is(err, os.ErrExist) && removeEmpty(t.Base) == nil {
			err = os.Mkdir(t.Base, 0o755)
		}
		if !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return fmt.Errorf("mkdir %s: exists, and so do 99 more of its name in use", base)
}

// removeEmpty removes the cgroup dir and every cgroup below it, deepest
// first; the kernel refuses (EBUSY) where a process is left.
func removeEmpty(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeEmpty(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.Remove(dir)
}

// Leave moves this process back to the cgroup it came from (a sockd that
// handed its workers over to a new one and stays as its keeper), so that
// the new sockd can remove the subtree when it ends.
func (t *Tree) Leave() error {
	if t.origin == "" {
		return nil
	}
	return write(filepath.Join(t.origin, "cgroup.procs"), strconv.Itoa(os.Getpid()))
}

// Probe says whether Setup would find a subtree, without making or
// moving anything.
func Probe() error {
	var o Options
	var err error
	if o.Mount, err = findMount(); err != nil {
		return err
	}
	if o.Own, err = ownCgroup(); err != nil {
		return err
	}
	_, err = plan(o)
	return err
}

// plan decides which subtree sockd takes.
func plan(o Options) (*Tree, error) {
	own := filepath.Join(o.Mount, o.Own)
	t := &Tree{Base: own, origin: own, limits: o.Limits}
	switch {
	case o.Delegated || delegated(own):
	case o.Own == "/":
		// The root of the hierarchy sockd sees: nobody else manages a
		// cgroup sockd makes below it.
		t.Base, t.created = filepath.Join(own, fmt.Sprintf("sockd-%d", os.Getpid())), true
	default:
		return nil, fmt.Errorf("%w: %s is neither delegated to sockd (Delegate=yes) nor the root of the hierarchy", ErrUnavailable, o.Own)
	}
	if unix.Access(filepath.Join(own, "cgroup.procs"), unix.W_OK) != nil || unix.Access(own, unix.W_OK) != nil {
		return nil, fmt.Errorf("%w: %s is not writable", ErrUnavailable, own)
	}
	return t, nil
}

func (t *Tree) setup() error {
	sup := filepath.Join(t.Base, "supervisor")
	if err := os.Mkdir(sup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := write(filepath.Join(sup, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("%w: move sockd into %s: %v", ErrUnavailable, sup, err)
	}
	return t.Enable(t.limits)
}

// Enable makes the controllers limits need available to the workers'
// cgroups (a reload may bring limits the first workers did not have).
func (t *Tree) Enable(limits Limits) error {
	want := limits.controllers()
	if len(want) == 0 {
		return nil
	}
	have, _ := os.ReadFile(filepath.Join(t.Base, "cgroup.controllers"))
	var missing []string
	for _, c := range want {
		if !contains(strings.Fields(string(have)), c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("per-worker limits need the %s controller(s) of cgroup v2, and %s offers only %q (on a host that binds them to cgroup v1, none is there)",
			strings.Join(missing, ", "), t.Base, strings.TrimSpace(string(have)))
	}
	if err := write(filepath.Join(t.Base, "cgroup.subtree_control"), "+"+strings.Join(want, " +")); err != nil {
		return fmt.Errorf("enable %s for the workers' cgroups: %w", strings.Join(want, ", "), err)
	}
	return nil
}

// Created reports whether sockd made BASE itself (standalone), so that
// the last sockd to use it removes it; Origin is where sockd was before.
func (t *Tree) Created() bool  { return t.created }
func (t *Tree) Origin() string { return t.origin }

// Close puts this process back where it was and removes the subtree sockd
// made, with any worker cgroup left empty in it.
func (t *Tree) Close() error {
	if !t.created {
		return nil
	}
	return Remove(t.Base, t.origin, os.Getpid())
}

// Remove moves pid to origin and removes base, which sockd created: its
// supervisor leaf and its empty worker cgroups with it.
func Remove(base, origin string, pid int) error {
	write(filepath.Join(origin, "cgroup.procs"), strconv.Itoa(pid))
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if e.IsDir() {
			os.Remove(filepath.Join(base, e.Name()))
		}
	}
	return os.Remove(base)
}

// Group is one worker's cgroup.
type Group struct {
	Path string
	dir  *os.File
}

// NewGroup makes the cgroup of the next worker, with limits l (which
// Setup or Enable made available).
func (t *Tree) NewGroup(l Limits) (*Group, error) {
	t.seq++
	path := filepath.Join(t.Base, fmt.Sprintf("worker-%d-%d", os.Getpid(), t.seq))
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("worker cgroup: %w", err)
	}
	g := &Group{Path: path}
	for _, s := range []struct {
		file string
		v    int64
	}{{"memory.max", l.MemoryMax}, {"pids.max", l.PidsMax}, {"cpu.weight", l.CPUWeight}} {
		if s.v > 0 {
			if err := write(filepath.Join(path, s.file), strconv.FormatInt(s.v, 10)); err != nil {
				os.Remove(path)
				return nil, fmt.Errorf("worker cgroup %s: %w", s.file, err)
			}
		}
	}
	if l.MemoryMax > 0 {
		// The whole worker goes when it is over its memory, not a random
		// process of it: sockd then replaces it.
		write(filepath.Join(path, "memory.oom.group"), "1")
	}
	dir, err := os.Open(path)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("worker cgroup: %w", err)
	}
	g.dir = dir
	return g, nil
}

// FD is the cgroup's directory, for CLONE_INTO_CGROUP.
func (g *Group) FD() int { return int(g.dir.Fd()) }

// CloseFD releases the directory descriptor (after the fork).
func (g *Group) CloseFD() { g.dir.Close() }

// Add moves process pid into the cgroup.
func (g *Group) Add(pid int) error {
	return write(filepath.Join(g.Path, "cgroup.procs"), strconv.Itoa(pid))
}

// Populated reports whether a process is left in the cgroup.
func (g *Group) Populated() bool {
	b, err := os.ReadFile(filepath.Join(g.Path, "cgroup.events"))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("populated 1"))
}

// Kill ends every process in the cgroup (cgroup.kill, Linux 5.14); it
// reports whether there was one.
func (g *Group) Kill() bool {
	if !g.Populated() {
		return false
	}
	if err := write(filepath.Join(g.Path, "cgroup.kill"), "1"); err != nil {
		g.Signal(unix.SIGKILL)
	}
	return true
}

// PIDs lists the processes in the cgroup.
func (g *Group) PIDs() ([]int, error) { return readPIDs(filepath.Join(g.Path, "cgroup.procs")) }

// Signal sends sig to every process in the cgroup.
func (g *Group) Signal(sig unix.Signal) error {
	pids, err := g.PIDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the cgroup once it is empty.
func (g *Group) Remove() error {
	g.CloseFD()
	return os.Remove(g.Path)
}

// Memory is memory.current (false without the memory controller); CPU
// is cpu.stat's usage_usec: every process the worker ever ran, exited
// ones too.
func (g *Group) Memory() (int64, bool) {
	b, err := os.ReadFile(filepath.Join(g.Path, "memory.current"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

// CPU is the time every process of the cgroup ever ran.
func (g *Group) CPU() (time.Duration, error) {
	f, err := os.Open(filepath.Join(g.Path, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(n) * time.Microsecond, err
		}
	}
	return 0, errors.New("cpu.stat has no usage_usec")
}

// KillTree ends every process in the cgroups of sockd pid's workers
// below base: the guard's last act when sockd is gone. (During an upgrade
// two sockds share base; each one's guard ends only its own workers.)
func KillTree(base string, pid int) int {
	ents, _ := os.ReadDir(base)
	n := 0
	prefix := fmt.Sprintf("worker-%d-", pid)
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		g := &Group{Path: filepath.Join(base, e.Name())}
		if g.Kill() {
			n++
		}
	}
	return n
}

// write writes a cgroup file. Tests replace it to make the kernel's
// refusals (EBUSY, ENOENT) happen where a real tree will not.
var write = func(path, v string) error { return os.WriteFile(path, []byte(v), 0) }

func readPIDs(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// findMount finds the cgroup2 file system in /proc/self/mountinfo (at
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid
// one).
func findMount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) >= 6 && f[3] == "/" && strings.HasPrefix(f[5], "rw") {
			return unescape(f[4]), nil
		}
	}
	return "", fmt.Errorf("%w: no writable cgroup2 mount", ErrUnavailable)
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroup is this process's cgroup v2 path, from the "0::" line of
// /proc/self/cgroup.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no cgroup v2 line in /proc/self/cgroup", ErrUnavailable)
}

// delegated reports whether systemd marked the cgroup as delegated.
func delegated(path string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(path, attr, buf); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}
