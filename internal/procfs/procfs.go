// Package procfs reads the few facts sockd needs from /proc (proc(5)):
// a process's state and parent, and its open descriptors.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// Stat returns the state letter (R, S, D, Z, …) and parent pid of pid from
// /proc/PID/stat. The notify socket asks it of every message's sender, so
// it reads through a pooled buffer and allocates next to nothing.
func Stat(pid int) (state byte, ppid int, err error) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b, n := *bp, 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, 0, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return parseStat(pid, b[:n])
}

// parseStat reads the state and the parent pid from a /proc/PID/stat line.
// The command name is in parentheses and may itself contain ") ".
func parseStat(pid int, b []byte) (state byte, ppid int, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+4 >= len(b) || b[i+1] != ' ' || b[i+3] != ' ' {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	rest := b[i+4:]
	if j := bytes.IndexAny(rest, " \n"); j >= 0 {
		rest = rest[:j]
	}
	ppid, ok := atoi(rest)
	if !ok || len(rest) == 0 || rest[0] == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return b[i+2], ppid, nil
}

// Alive reports whether pid is running: it exists and is neither a zombie
// nor dead. kill(pid, 0) cannot tell, since it succeeds on zombies.
func Alive(pid int) bool {
	state, _, err := Stat(pid)
	return err == nil && state != 'Z' && state != 'X' && state != 'x'
}

// Ancestors returns pid's parent, grandparent, … up to depth of them,
// stopping before init, at a process that is gone, or at stop (not
// included): nothing above sockd can be one of its workers.
func Ancestors(pid, stop, depth int) []int {
	var as []int
	for i := 0; i < depth && pid > 1; i++ {
		_, ppid, err := Stat(pid)
		if err != nil || ppid <= 1 || ppid == stop {
			break
		}
		as = append(as, ppid)
		pid = ppid
	}
	return as
}

// FDs lists the open descriptors of pid (use os.Getpid() for self).
func FDs(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	return fds, nil
}

// FDTarget is what /proc/PID/fd/N points at, e.g. "socket:[12345]".
func FDTarget(pid, fd int) (string, error) {
	return os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), strconv.Itoa(fd)))
}

// EnvIs reports whether the environment pid started with has exactly the
// variable kv ("NAME=value", the whole value).
func EnvIs(pid int, kv string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// EnvHas reports whether the environment pid started with (its
// /proc/PID/environ, as of its last execve) has a variable that starts
// with prefix, e.g. "SOCKD_WORKER_ID=12-" or a whole "NAME=value".
func EnvHas(pid int, prefix string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	p := []byte(prefix)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.HasPrefix(kv, p) {
			return true
		}
	}
	return false
}
