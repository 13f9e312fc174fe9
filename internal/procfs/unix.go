package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// UnixListener is a listening stream unix socket with a path in the
// filesystem, as /proc/PID/net/unix lists it (unix(7)).
type UnixListener struct {
	Inode uint64
	Path  string // as the owner sees it: in its mount namespace and root
}

// SocketInodes returns the inodes of the sockets pid holds open
// ("socket:[N]" in /proc/PID/fd).
func SocketInodes(pid int) (map[uint64]bool, error) {
	fds, err := FDs(pid)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]bool, len(fds))
	for _, fd := range fds {
		t, err := FDTarget(pid, fd)
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(t, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out, nil
}

// UnixListeners lists the listening stream unix sockets with a path
// (not abstract, not unnamed) that pid holds open, in the order of
// /proc/PID/net/unix.
func UnixListeners(pid int) ([]UnixListener, error) {
	held, err := SocketInodes(pid)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
	if err != nil {
		return nil, err
	}
	var out []UnixListener
	for _, l := range parseNetUnix(b) {
		if held[l.Inode] {
			out = append(out, l)
		}
	}
	return out, nil
}

// acceptCon is __SO_ACCEPTCON in the Flags column: a listening socket.
const acceptCon = 1 << 16

// parseNetUnix reads /proc/net/unix: "Num RefCount Protocol Flags Type St
// Inode Path", hexadecimal but for the inode; the path is the rest of the
// line (it may hold blanks), '@' first for an abstract name.
func parseNetUnix(b []byte) []UnixListener {
	var out []UnixListener
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for first := true; sc.Scan(); first = false {
		if first {
			continue // the header
		}
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 8 {
			continue // unnamed
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 32)
		typ, err2 := strconv.ParseUint(f[4], 16, 16)
		inode, err3 := strconv.ParseUint(f[6], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || flags&acceptCon == 0 || typ != 1 {
			continue
		}
		// The path starts after the inode's field.
		rest := line
		for i := 0; i < 7; i++ {
			rest = strings.TrimLeft(rest, " ")
			if j := strings.IndexByte(rest, ' '); j >= 0 {
				rest = rest[j:]
			}
		}
		path := strings.TrimPrefix(rest, " ")
		if path == "" || path[0] == '@' {
			continue
		}
		out = append(out, UnixListener{Inode: inode, Path: path})
	}
	return out
}
