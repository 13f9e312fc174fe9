package steering

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// diag reads the accept-queue depth of every listening socket on a port in
// one request: a sock_diag(7) dump (NETLINK_SOCK_DIAG, the interface of
// ss(8)) reports each socket's inode and, for a listener, idiag_rqueue =
// its accept-queue length (for UDP, the bytes queued). getsockopt
// TCP_INFO per socket costs a system call each, about 3 µs here: 3 ms
// for 1024 sockets every sample, against 0.15 ms for one dump.
type diag struct {
	fd  int
	buf []byte
}

func newDiag() (*diag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return &diag{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (d *diag) close() { unix.Close(d.fd) }

const (
	sockDiagByFamily = 20
	tcpListen        = 10
	udpClose         = 7 // an unconnected UDP socket's state
	diagReqLen       = 56
	diagMsgRqueue    = 56 // offset of idiag_rqueue in inet_diag_msg
	diagMsgInode     = 68
	diagMsgLen       = 72
)

// dump calls f(inode, depth) for every socket of family and protocol
// bound to port (listening, for TCP).
func (d *diag) dump(family, proto, port int, f func(inode uint64, depth int)) error {
	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = byte(family), byte(proto)
	states := uint32(1) << tcpListen
	if proto == unix.IPPROTO_UDP {
		states = 1 << udpClose
	}
	binary.NativeEndian.PutUint32(r[4:], states)
	binary.BigEndian.PutUint16(r[8:], uint16(port)) // idiag_sport
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		b := d.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errors.New("sock_diag: malformed reply")
			}
			switch binary.NativeEndian.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if l >= unix.NLMSG_HDRLEN+4 {
					if e := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); e < 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return errors.New("sock_diag: error reply")
			case sockDiagByFamily:
				if m := b[unix.NLMSG_HDRLEN:l]; len(m) >= diagMsgLen {
					f(uint64(binary.NativeEndian.Uint32(m[diagMsgInode:])), int(binary.NativeEndian.Uint32(m[diagMsgRqueue:])))
				}
			}
			b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		}
	}
}
