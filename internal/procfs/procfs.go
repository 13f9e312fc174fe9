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
)

// Stat returns the state letter (R, S, D, Z, …) and parent pid of pid from
// /proc/PID/stat.
func Stat(pid int) (state byte, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+4 >= len(b) {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := bytes.Fields(b[i+2:])
	if len(fields) < 2 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ppid, err = strconv.Atoi(string(fields[1]))
	return fields[0][0], ppid, err
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
