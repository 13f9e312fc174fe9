package worker

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/listenfds"
)

// ErrNotActivated is returned when no sockets were passed: LISTEN_FDS is
// unset, empty or 0. Callers that can bind a port themselves may fall back
// on it (errors.Is).
var ErrNotActivated = listenfds.ErrNone

// listenFdsStart is SD_LISTEN_FDS_START. Only in-process tests change it,
// to hand sockets on free descriptors instead of the runtime's fd 3.
var listenFdsStart = listenfds.Start

// maxListenFDs bounds LISTEN_FDS to catch garbage before touching fds.
const maxListenFDs = 4096

// passedFD is one descriptor of LISTEN_FDS with its LISTEN_FDNAMES name.
type passedFD struct {
	fd   int
	name string
}

// Files returns the passed descriptors as files named after LISTEN_FDNAMES
// ("unknown" when unset), for sockets that are not stream listeners (UDP,
// FIFOs); their Fd method leaves O_NONBLOCK alone. Use Listeners for
// stream sockets. Like all functions taking the sockets, it can be called
// once: it unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, whether it
// succeeds or not.
func Files() ([]*os.File, error) {
	fds, err := takeFDs()
	if err != nil {
		return nil, err
	}
	files := make([]*os.File, len(fds))
	for i, p := range fds {
		files[i] = os.NewFile(uintptr(p.fd), p.name)
	}
	return files, nil
}

// Listeners returns the passed sockets as listeners, in fd order. Every
// passed descriptor must be a listening stream socket. The descriptors
// 3, 4, … are closed; each listener holds its own close-on-exec duplicate,
// left non-blocking. On error no listener is returned; descriptors not
// taken yet stay open, close-on-exec.
func Listeners() ([]net.Listener, error) {
	named, err := takeListeners()
	if err != nil {
		return nil, err
	}
	ls := make([]net.Listener, len(named))
	for i, n := range named {
		ls[i] = n.l
	}
	return ls, nil
}

// ListenersWithNames is Listeners keyed by LISTEN_FDNAMES; several sockets
// may share a name. Sockets without a name are under "unknown".
func ListenersWithNames() (map[string][]net.Listener, error) {
	named, err := takeListeners()
	if err != nil {
		return nil, err
	}
	m := make(map[string][]net.Listener)
	for _, n := range named {
		m[n.name] = append(m[n.name], n.l)
	}
	return m, nil
}

type namedListener struct {
	name string
	l    net.Listener
}

func takeListeners() ([]namedListener, error) {
	fds, err := takeFDs()
	if err != nil {
		return nil, err
	}
	for _, p := range fds {
		if err := checkListening(p.fd); err != nil {
			return nil, fmt.Errorf("worker: fd %d (%s): %w", p.fd, p.name, err)
		}
	}
	out := make([]namedListener, 0, len(fds))
	for _, p := range fds {
		l, err := fileListener(p)
		if err != nil {
			for _, n := range out {
				n.l.Close()
			}
			return nil, err
		}
		out = append(out, namedListener{p.name, l})
	}
	return out, nil
}

// fileListener turns a passed fd into a listener. os.NewFile sees that the
// fd is non-blocking and leaves it so; net.FileListener duplicates it
// (close-on-exec) and closing the file then closes the passed fd.
func fileListener(p passedFD) (net.Listener, error) {
	f := os.NewFile(uintptr(p.fd), p.name)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("worker: fd %d (%s): %w", p.fd, p.name, err)
	}
	return l, nil
}

// checkListening reports why fd is not a listening stream socket.
func checkListening(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	if typ != unix.SOCK_STREAM && typ != unix.SOCK_SEQPACKET {
		return errors.New("not a stream socket (use Files for datagram sockets)")
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("get SO_ACCEPTCONN: %w", err)
	}
	if acc == 0 {
		return errors.New("socket is not listening (Accept=yes is not supported)")
	}
	return nil
}

// takeFDs validates LISTEN_* and returns the passed descriptors, made
// close-on-exec. It always unsets LISTEN_*.
func takeFDs() ([]passedFD, error) {
	defer unsetListenEnv()
	names, err := listenfds.Parse(os.Getenv, os.Getpid(), maxListenFDs)
	if errors.Is(err, listenfds.ErrNone) {
		return nil, ErrNotActivated
	}
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	n := len(names)
	fds := make([]passedFD, n)
	for i := range fds {
		fd := listenFdsStart + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("worker: fd %d of LISTEN_FDS=%d: %w", fd, n, err)
		}
		fds[i] = passedFD{fd: fd, name: names[i]}
	}
	for _, p := range fds {
		unix.CloseOnExec(p.fd)
	}
	return fds, nil
}

func unsetListenEnv() {
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
}
