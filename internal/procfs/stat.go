package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ,
// which the kernel fixes at 100 for user space (sysconf(_SC_CLK_TCK)).
const ClockTick = 10 * time.Millisecond

// Process is what /proc/PID/stat says of a process (proc(5)), for
// accounting: its place in the tree, its CPU times and its size.
type Process struct {
	PID, PPID int
	Comm      string // the command name, without the parentheses
	State     byte   // R, S, D, Z, …
	// CPU times in clock ticks: the process's own (user, system) and those
	// of the children it waited for.
	UTime, STime, CUTime, CSTime uint64
	Threads                      int
	RSSPages                     int64 // resident set, in pages
}

// Gone reports whether the process is a zombie or dead.
func (p Process) Gone() bool { return p.State == 'Z' || p.State == 'X' || p.State == 'x' }

// CPU is the process's own CPU time, user and system.
func (p Process) CPU() time.Duration { return time.Duration(p.UTime+p.STime) * ClockTick }

// TreeCPU is its own CPU time and that of the children it waited for.
func (p Process) TreeCPU() time.Duration {
	return time.Duration(p.UTime+p.STime+p.CUTime+p.CSTime) * ClockTick
}

// RSS is the resident set in bytes.
func (p Process) RSS() int64 { return p.RSSPages * int64(os.Getpagesize()) }

// ReadProcess reads /proc/PID/stat.
func ReadProcess(pid int) (Process, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Process{}, err
	}
	return ParseProcess(pid, b)
}

// ParseProcess parses the contents of /proc/PID/stat.
func ParseProcess(pid int, b []byte) (Process, error) {
	// The command name is in parentheses and may itself contain ") ".
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open || end+2 >= len(b) {
		return Process{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := bytes.Fields(b[end+2:])
	if len(f) < 22 {
		return Process{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 of proc(5), the state.
	num := func(field int) uint64 { n, _ := strconv.ParseUint(string(f[field-3]), 10, 64); return n }
	return Process{PID: pid, PPID: int(num(4)), Comm: string(b[open+1 : end]), State: f[0][0],
		UTime: num(14), STime: num(15), CUTime: num(16), CSTime: num(17),
		Threads: int(num(20)), RSSPages: int64(num(24))}, nil
}

// Processes reads every process's stat; processes that exit meanwhile
// are left out.
func Processes() []Process {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]Process, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := ReadProcess(pid); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// PeakRSS is pid's VmHWM from /proc/PID/status: the largest resident set
// it ever had, in bytes.
func PeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmHWM %q: %w", pid, v, err)
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}
