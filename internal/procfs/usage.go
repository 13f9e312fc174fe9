package procfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture).
const clockTick = 10 * time.Millisecond

// Usage is what a process, or a process tree, uses now.
type Usage struct {
	RSS   int64         // resident memory, bytes
	CPU   time.Duration // user + system time so far
	Procs int           // processes counted
	// Waited is the CPU time of the process's children that it waited
	// for (cutime + cstime): gone from the tree, still its time.
	Waited time.Duration
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
	var cutime, cstime int64
	var err3, err4 error
	if len(f) >= 15 {
		cutime, err3 = strconv.ParseInt(string(f[13]), 10, 64)
		cstime, err4 = strconv.ParseInt(string(f[14]), 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
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
	return Usage{RSS: pages * int64(os.Getpagesize()), CPU: time.Duration(utime+stime) * clockTick, Procs: 1,
		Waited: time.Duration(cutime+cstime) * clockTick}, nil
}

// haveChildrenFiles: the kernel has /proc/PID/task/TID/children
// (CONFIG_PROC_CHILDREN, which Debian's and most distributions' kernels
// set, the kernel's default does not).
var haveChildrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d/children", unix.Gettid()))
	return err == nil
})

// childrenByScan lists pid's children by every process's parent (its
// /proc/PID/stat): Children on a kernel without the children files.
func childrenByScan(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := Stat(c); err == nil && ppid == pid {
			kids = append(kids, c)
		}
	}
	return kids
}

// Children lists pid's children, from /proc/PID/task/*/children (every
// thread's: a child belongs to the thread that forked it). The reaper
// calls it on every SIGCHLD, so it reads the task directory and the files
// through one pooled buffer (filepath.Glob and os.ReadFile allocated about
// 30 kB a call, most of sockd's garbage during reloads).
func Children(pid int) []int {
	if !haveChildrenFiles() {
		return childrenByScan(pid)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(dir)
	var tids []int
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil || n <= 0 {
			break
		}
		// struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
		for off := 0; off+19 <= n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen == 0 || off+reclen > n {
				break
			}
			if tid, ok := atoi(buf[off+19 : off+reclen]); ok {
				tids = append(tids, tid)
			}
			off += reclen
		}
	}
	var kids []int
	for _, tid := range tids {
		kids = appendNumbers(kids, dir, strconv.Itoa(tid)+"/children", buf)
	}
	return kids
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// atoi parses the decimal number at the start of b, up to a NUL byte or
// the end.
func atoi(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, c := range b {
		if c == 0 {
			break
		}
		if c < '0' || c > '9' || digits > 9 {
			return 0, false
		}
		n = n*10 + int(c-'0')
		digits++
	}
	return n, digits > 0
}

// appendNumbers appends the space-separated numbers of the file at path
// (relative to dir), read through buf.
func appendNumbers(dst []int, dir int, path string, buf []byte) []int {
	fd, err := unix.Openat(dir, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return dst
	}
	defer unix.Close(fd)
	n, digits := 0, 0
	for {
		m, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		for _, c := range buf[:m] {
			if c >= '0' && c <= '9' {
				n = n*10 + int(c-'0')
				digits++
				continue
			}
			if digits > 0 {
				dst = append(dst, n)
			}
			n, digits = 0, 0
		}
	}
	if digits > 0 {
		dst = append(dst, n)
	}
	return dst
}

// TreeUsage sums the usage of pid and all its descendants (at most limit
// processes). Resident memory shared between them (the same binary, say)
// counts once per process, as RSS does. CPU includes the time of the
// children they waited for, so that the sum does not fall when one of
// them ends.
func TreeUsage(pid, limit int) (Usage, error) {
	total, err := ProcUsage(pid)
	if err != nil {
		return Usage{}, err
	}
	total.CPU += total.Waited
	todo := Children(pid)
	for len(todo) > 0 && total.Procs < limit {
		p := todo[0]
		todo = todo[1:]
		if u, err := ProcUsage(p); err == nil {
			total.RSS += u.RSS
			total.CPU += u.CPU + u.Waited
			total.Waited += u.Waited
			total.Procs++
			todo = append(todo, Children(p)...)
		}
	}
	return total, nil
}
