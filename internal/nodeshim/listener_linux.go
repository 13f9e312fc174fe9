package nodeshim

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Describe reads what the preload needs to know of the listening socket
// fd from the kernel: its address (getsockname), its backlog (TCP_INFO's
// tcpi_sacked, or sock_diag for a unix socket) and its inode. FD is left 0.
func Describe(fd int) (Listener, error) {
	var l Listener
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return l, fmt.Errorf("fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return l, fmt.Errorf("fd %d: %w", fd, ErrNotStream)
	}
	l.Inode = st.Ino
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return l, fmt.Errorf("fd %d: SO_TYPE: %w", fd, err)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || typ != unix.SOCK_STREAM || acc != 1 {
		return l, fmt.Errorf("fd %d: %w", fd, ErrNotStream)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return l, fmt.Errorf("fd %d: getsockname: %w", fd, err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		l.Network, l.Host, l.Port = "tcp", netip.AddrFrom4(a.Addr).String(), a.Port
	case *unix.SockaddrInet6:
		l.Network, l.Host, l.Port = "tcp", netip.AddrFrom16(a.Addr).String(), a.Port
		v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return l, fmt.Errorf("fd %d: IPV6_V6ONLY: %w", fd, err)
		}
		l.V6Only = v6only == 1
	case *unix.SockaddrUnix:
		l.Network, l.Path = "unix", a.Name
		if strings.HasPrefix(a.Name, "@") {
			l.Path = "\x00" + a.Name[1:]
		}
	default:
		return l, fmt.Errorf("fd %d: %w", fd, ErrNotStream)
	}
	if l.Network == "tcp" {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return l, fmt.Errorf("fd %d: TCP_INFO: %w", fd, err)
		}
		l.Backlog = int(info.Sacked) // a listening socket's sk_max_ack_backlog
	} else if l.Backlog, err = unixBacklog(st.Ino); err != nil {
		l.Backlog = somaxconn()
	}
	return l, nil
}

// unixBacklog asks sock_diag(7) for the accept queue limit of the
// listening unix socket with inode ino (UDIAG_SHOW_RQLEN: for a listening
// socket udiag_wqueue is sk_max_ack_backlog).
func unixBacklog(ino uint64) (int, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(s)
	const (
		unixDiagByName = 20 // SOCK_DIAG_BY_FAMILY
		showRQLen      = 0x10
		attrRQLen      = 4 // UNIX_DIAG_RQLEN
		hdr            = unix.SizeofNlMsghdr
		tcpListen      = 10 // TCP_LISTEN, the state of a listening unix socket too
	)
	req := make([]byte, hdr+24)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unixDiagByName)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	b := req[hdr:] // struct unix_diag_req
	b[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(b[4:], 1<<tcpListen) // udiag_states
	binary.NativeEndian.PutUint32(b[8:], uint32(ino))
	binary.NativeEndian.PutUint32(b[12:], showRQLen)
	binary.NativeEndian.PutUint32(b[16:], ^uint32(0)) // udiag_cookie: none
	binary.NativeEndian.PutUint32(b[20:], ^uint32(0))
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	if n < hdr {
		return 0, fmt.Errorf("sock_diag: short answer")
	}
	if binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR && n >= hdr+4 {
		return 0, fmt.Errorf("sock_diag: %w", unix.Errno(-int32(binary.NativeEndian.Uint32(buf[hdr:]))))
	}
	if mlen := int(binary.NativeEndian.Uint32(buf[0:])); mlen < n {
		n = mlen
	}
	attrs := buf[hdr:n]
	const diagMsg = 16 // struct unix_diag_msg
	if len(attrs) < diagMsg {
		return 0, fmt.Errorf("sock_diag: short answer")
	}
	for attrs = attrs[diagMsg:]; len(attrs) >= 4; {
		alen := int(binary.NativeEndian.Uint16(attrs[0:]))
		if alen < 4 || alen > len(attrs) {
			break
		}
		if binary.NativeEndian.Uint16(attrs[2:]) == attrRQLen && alen >= 12 {
			return int(binary.NativeEndian.Uint32(attrs[8:])), nil
		}
		attrs = attrs[(alen+3)&^3:]
	}
	return 0, fmt.Errorf("sock_diag: no queue length")
}

// somaxconn is the kernel's cap on backlogs, which Go (and so sockd)
// passes to listen(2).
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 4096
}
