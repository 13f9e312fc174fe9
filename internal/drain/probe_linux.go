package drain

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawConn returns the syscall.RawConn of c, looking through *tls.Conn.
func rawConn(c net.Conn) (syscall.RawConn, bool) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}

// ReceivedBytes returns how many bytes the kernel has received on c so far
// (TCP_INFO tcpi_bytes_received), without reading any. ok is false for
// connections that are not TCP.
func ReceivedBytes(c net.Conn) (n uint64, ok bool) {
	rc, found := rawConn(c)
	if !found {
		return 0, false
	}
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			n, ok = info.Bytes_received, true
		}
	})
	return n, ok
}

// Quiet reports whether nothing arrived on c since ReceivedBytes returned
// rcvd (when known) and nothing waits unread in its receive buffer.
func Quiet(c net.Conn, rcvd uint64, known bool) bool {
	rc, found := rawConn(c)
	if !found {
		return true
	}
	q := true
	rc.Control(func(fd uintptr) {
		if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil && n > 0 {
			q = false
		}
		if !known {
			return
		}
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil && info.Bytes_received != rcvd {
			q = false
		}
	})
	return q
}
