package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// EnvFD names the variable that tells a new sockd which descriptor is its
// end of the hand-off socketpair.
const EnvFD = "SOCKD_UPGRADE_FD"

const (
	version = 1
	// maxFDsPerPacket stays under the kernel's SCM_MAX_FD (253).
	maxFDsPerPacket = 200
	maxPacket       = 64 << 10
	// maxFDs bounds the descriptors of a hand-off: fs.nr_open's default,
	// more than a process may hold unless the limit was raised.
	maxFDs = 1 << 20
)

// State is what the old sockd tells the new one besides the descriptors.
type State struct {
	Version    int    `json:"version"`
	Generation int    `json:"generation"`        // the old sockd's serving generation
	Workers    int    `json:"workers,omitempty"` // its number of worker slots (0: the new sockd's own setting)
	Cgroup     string `json:"cgroup,omitempty"`  // its workers' cgroup subtree, which the new sockd takes over
	// CgroupOrigin, if set, is where the old sockd came from when it made
	// that subtree: the last sockd removes it.
	CgroupOrigin string `json:"cgroup_origin,omitempty"`
	// Steered: the reuseport socket index each of the old sockd's
	// workers holds (internal/steering), by worker.
	Steered   map[string]int  `json:"steered,omitempty"`
	Listeners []ListenerState `json:"listeners"`
	Control   bool            `json:"control"` // a descriptor after the listeners' is the control socket
	// Metrics: the last descriptor is the metrics listener (--metrics).
	Metrics bool `json:"metrics,omitempty"`
	FDs     int  `json:"fds"` // how many descriptors follow
}

// ListenerState describes one listener; its Slots descriptors follow in order.
type ListenerState struct {
	Name      string `json:"name"`
	Slots     int    `json:"slots"`
	Inherited bool   `json:"inherited"`
	Path      string `json:"path,omitempty"`
}

type message struct {
	Event string `json:"event,omitempty"` // "ready", "commit"
	PID   int    `json:"pid,omitempty"`
	FDs   int    `json:"fds,omitempty"`
}

// conn is one end of the socketpair.
type conn struct{ c *net.UnixConn }

func (c conn) send(v any, fds []int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.c.WriteMsgUnix(b, oob, nil)
	return err
}

// recv reads one packet into v and returns the descriptors it carried
// (close-on-exec: Go receives with MSG_CMSG_CLOEXEC).
func (c conn) recv(v any, deadline time.Time) ([]int, error) {
	c.c.SetReadDeadline(deadline)
	buf := make([]byte, maxPacket)
	oob := make([]byte, unix.CmsgSpace(maxFDsPerPacket*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	// Go reads a zero-length packet on a SOCK_SEQPACKET socket as io.EOF,
	// like the peer's close; descriptors such a packet carried have been
	// received all the same and must be closed.
	fds, perr := parseRights(oob[:oobn])
	if n == 0 && (err == nil || errors.Is(err, io.EOF)) {
		closeAll(fds)
		return nil, errors.New("peer closed the hand-off socket")
	}
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(fds)
		return nil, errors.New("hand-off packet truncated")
	}
	if err := errors.Join(perr, json.Unmarshal(buf[:n], v)); err != nil {
		closeAll(fds)
		return nil, fmt.Errorf("bad hand-off packet: %w", err)
	}
	return fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_RIGHTS {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				closeAll(fds)
				return nil, err
			}
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// sendFDs sends fds in packets of at most maxFDsPerPacket.
func (c conn) sendFDs(fds []int) error {
	for len(fds) > 0 {
		n := min(len(fds), maxFDsPerPacket)
		if err := c.send(message{FDs: n}, fds[:n]); err != nil {
			return fmt.Errorf("send descriptors: %w", err)
		}
		fds = fds[n:]
	}
	return nil
}

// recvFDs reads descriptor packets until want descriptors have arrived.
func (c conn) recvFDs(want int, deadline time.Time) ([]int, error) {
	var fds []int
	for len(fds) < want {
		var m message
		got, err := c.recv(&m, deadline)
		if err == nil && (len(got) != m.FDs || len(got) == 0) {
			closeAll(got)
			err = fmt.Errorf("packet announced %d descriptors and carried %d", m.FDs, len(got))
		}
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, got...)
	}
	if len(fds) > want {
		closeAll(fds)
		return nil, fmt.Errorf("got %d descriptors, expected %d", len(fds), want)
	}
	return fds, nil
}
