// Package activation holds the listening sockets that sockd's workers share:
// it binds them from --listen specs, or takes the ones systemd passes with
// socket activation, and hands them to each worker exactly as systemd would
// hand them to a single service.
//
// The protocol is the one of sd_listen_fds(3)
// (https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html):
// the sockets are file descriptors 3, 4, … of the process; LISTEN_FDS says
// how many there are, LISTEN_PID names the process they are meant for and
// LISTEN_FDNAMES carries their names, colon separated (FileDescriptorName=
// in systemd.socket(5)).
//
// Two rules keep workers from hurting each other:
//
//   - Every worker gets a duplicate of the same open file description, and
//     O_NONBLOCK lives on that description. sockd never calls Fd() on a
//     net.Listener's File (which would switch the shared socket to blocking
//     mode); it duplicates sockets with F_DUPFD_CLOEXEC through SyscallConn.
//     Workers must not make the sockets blocking either.
//   - sockd keeps its own descriptors CLOEXEC; only the listeners a worker is
//     meant to see reach it, as fds 3, 4, ….
//
// In reuseport mode a TCP or UDP listener is a group of SO_REUSEPORT sockets,
// one per worker slot. sockd owns every one of them for its whole life and
// hands slot i's socket to whichever worker runs in slot i, so the group
// never shrinks and no accept queue is ever orphaned.
package activation
