package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// Child is the new sockd's side of an upgrade.
type Child struct {
	c conn
	// State is what the old sockd said.
	State State
	// Listeners are the old sockd's listening sockets.
	Listeners activation.Set
	// Control is the old sockd's control socket, or nil.
	Control *net.UnixListener
	// Metrics is the old sockd's metrics listener, or nil.
	Metrics net.Listener
}

// Accept takes the hand-off when getenv(EnvFD) names a descriptor, and
// returns (nil, nil) otherwise. Every descriptor is received
// close-on-exec; on error all of them are closed.
func Accept(getenv func(string) string, timeout time.Duration) (*Child, error) {
	v := getenv(EnvFD)
	if v == "" {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a descriptor", EnvFD, v)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("%s=%d: %w", EnvFD, fd, err)
	}
	f := os.NewFile(uintptr(fd), "handoff")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("hand-off socket: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, errors.New("hand-off descriptor is not a unix socket")
	}
	ch := &Child{c: conn{uc}}
	if err := ch.receive(time.Now().Add(timeout)); err != nil {
		uc.Close()
		return nil, err
	}
	return ch, nil
}

func (ch *Child) receive(deadline time.Time) error {
	fds, err := ch.c.recv(&ch.State, deadline)
	closeAll(fds)
	if err != nil {
		return fmt.Errorf("receive hand-off state: %w", err)
	}
	if ch.State.Version != version {
		return fmt.Errorf("hand-off protocol version %d, this sockd speaks %d", ch.State.Version, version)
	}
	want := 0
	for _, l := range ch.State.Listeners {
		// Bounded, so that the sum cannot overflow into a small count.
		if l.Slots < 1 || l.Slots > maxFDs-want {
			return fmt.Errorf("listener %q with %d sockets", l.Name, l.Slots)
		}
		want += l.Slots
	}
	if ch.State.Control {
		want++
	}
	if ch.State.Metrics {
		want++
	}
	if want != ch.State.FDs {
		return fmt.Errorf("hand-off announces %d descriptors for %d sockets", ch.State.FDs, want)
	}
	if fds, err = ch.c.recvFDs(want, deadline); err != nil {
		return fmt.Errorf("receive sockets: %w", err)
	}
	return ch.adopt(fds)
}

func (ch *Child) adopt(fds []int) error {
	rest := fds
	for _, ls := range ch.State.Listeners {
		l, err := activation.NewListener(ls.Name, rest[:ls.Slots], ls.Inherited, ls.Path)
		if err != nil {
			closeAll(rest)
			ch.Listeners.Close()
			return fmt.Errorf("listener %q: %w", ls.Name, err)
		}
		ch.Listeners = append(ch.Listeners, l)
		rest = rest[ls.Slots:]
	}
	if ch.State.Control {
		ln, err := controlListener(rest[0])
		if err != nil {
			closeAll(rest[1:]) // the metrics socket's
			ch.Listeners.Close()
			return fmt.Errorf("control socket: %w", err)
		}
		ch.Control = ln
		rest = rest[1:]
	}
	if ch.State.Metrics {
		ln, err := metricsListener(rest[0])
		if err != nil {
			ch.Listeners.Close()
			if ch.Control != nil {
				ch.Control.SetUnlinkOnClose(false)
				ch.Control.Close()
			}
			return fmt.Errorf("metrics socket: %w", err)
		}
		ch.Metrics = ln
	}
	return nil
}

// metricsListener takes fd over as the metrics listener, which must be a
// listening socket.
func metricsListener(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "metrics")
	defer f.Close()
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
		return nil, errors.New("not a listening socket")
	}
	return net.FileListener(f)
}

// controlListener takes fd over as the control socket, which must be a
// listening unix socket.
func controlListener(fd int) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "control")
	defer f.Close()
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
		return nil, errors.New("not a listening socket")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("a %s socket, not a unix one", ln.Addr().Network())
	}
	return ul, nil
}

// Ready tells the old sockd that this one's workers are ready.
func (ch *Child) Ready() error {
	return ch.c.send(message{Event: "ready", PID: os.Getpid()}, nil)
}

// WaitCommit waits for the old sockd to hand over the main pid.
func (ch *Child) WaitCommit(ctx context.Context) error {
	deadline, _ := ctx.Deadline()
	var m message
	fds, err := ch.c.recv(&m, deadline)
	closeAll(fds)
	ch.c.c.Close()
	if err == nil && m.Event != "commit" {
		err = fmt.Errorf("unexpected message %+v", m)
	}
	if err != nil {
		return fmt.Errorf("old sockd did not hand over: %w", err)
	}
	return nil
}

// Close releases the hand-off socket (not the listeners).
func (ch *Child) Close() { ch.c.c.Close() }
