package procfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture).
const clockTick = 10 * time.Millisecond

// Usage is what a process, or a process tree, uses now.
type Usage struct {
	RSS   int64         // resident memory, bytes
	CPU   time.Duration // user + system time so far
	Procs int           // processes counted
}

// ProcUsage reads pid's own resident memory (/proc/PID/statm) and CPU time
// (/proc/PID/stat).
func ProcUsage(pid int) (Usage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// After the command: state(3) ppid(4) … utime(14) stime(15).
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return Usage{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return Usage{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	m, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return Usage{}, err
	}
	mf := bytes.Fields(m)
	if len(mf) < 2 {
		return Usage{}, fmt.Errorf("/proc/%d/statm: unexpected format", pid)
	}
	pages, err := strconv.ParseInt(string(mf[1]), 10, 64)
	if err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/statm: %w", pid, err)
	}
	return Usage{RSS: pages * int64(os.Getpagesize()), CPU: time.Duration(utime+stime) * clockTick, Procs: 1}, nil
}

// Children lists pid's children, from /proc/PID/task/*/children (every
// thread's: a child belongs to the thread that forked it).
func Children(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range bytes.Fields(b) {
			if n, err := strconv.Atoi(string(s)); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// TreeUsage sums the usage of pid and all its descendants (at most limit
// processes). Resident memory shared between them (the same binary, say)
// counts once per process, as RSS does.
func TreeUsage(pid, limit int) (Usage, error) {
	total, err := ProcUsage(pid)
	if err != nil {
		return Usage{}, err
	}
	todo := Children(pid)
	for len(todo) > 0 && total.Procs < limit {
		p := todo[0]
		todo = todo[1:]
		if u, err := ProcUsage(p); err == nil {
			total.RSS += u.RSS
			total.CPU += u.CPU
			total.Procs++
			todo = append(todo, Children(p)...)
		}
	}
	return total, nil
}
