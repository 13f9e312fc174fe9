package nodeshim

import (
	"errors"
)

// Listener is one listening socket as the preload sees it: an entry of
// SOCKD_NODE_LISTENERS.
type Listener struct {
	// FD is the descriptor in the worker: 3 for the first LISTEN_FDS entry.
	FD int `json:"fd"`
	// Name is its LISTEN_FDNAMES entry (used in messages only).
	Name string `json:"name,omitempty"`
	// Network is "tcp" or "unix" (stream sockets only).
	Network string `json:"net"`
	// Host and Port are the bound address of a TCP socket: "::" or
	// "0.0.0.0" for a wildcard, an IP otherwise (canonical form).
	Host string `json:"host,omitempty"`
	Port int    `json:"port,omitempty"`
	// V6Only is IPV6_V6ONLY of an IPv6 socket: "::" then covers IPv6 only.
	V6Only bool `json:"v6only,omitempty"`
	// Path is the bound path of a unix socket; an abstract one starts with
	// a NUL byte, as Node spells it.
	Path string `json:"path,omitempty"`
	// Backlog is the socket's accept queue limit as the kernel has it; the
	// preload passes it to listen(2), which Node calls again on the socket.
	Backlog int `json:"backlog"`
	// Inode identifies the socket: the preload uses an fd only if it is
	// still this socket.
	Inode uint64 `json:"ino"`
}

// ErrNotStream is returned by Describe for a socket that is not a
// listening stream socket (a datagram socket, a connected one): Node's
// listen() cannot take it.
var ErrNotStream = errors.New("not a listening TCP or unix stream socket")

// Listeners describes the sockets a worker gets as fds 3, 4, … (fds in
// sockd, in LISTEN_FDS order, and their names) and returns the stream
// ones, numbered as the worker sees them. Datagram sockets are skipped:
// the preload has nothing to map them to.
func Listeners(fds []int, names []string) ([]Listener, error) {
	var out []Listener
	for i, fd := range fds {
		l, err := Describe(fd)
		if errors.Is(err, ErrNotStream) {
			continue
		}
		if err != nil {
			return nil, err
		}
		l.FD = 3 + i
		if i < len(names) {
			l.Name = names[i]
		}
		out = append(out, l)
	}
	return out, nil
}
