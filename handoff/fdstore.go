package handoff

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// storePrefix marks the fd-store names sockd gives the sockets it bound
// itself: "sockd.<listener>.<slot>".
const storePrefix = "sockd."

// Store puts every socket of the listeners sockd bound itself into
// systemd's fd store (FDSTORE=1 with FDNAME=sockd.<name>.<slot>), so that a
// restart of the service (after a crash, or systemctl restart) gets the
// very same sockets back in LISTEN_FDS, with their queued connections.
// systemd ignores a socket it already stores, and drops the message when
// FileDescriptorStoreMax= is 0. Without NOTIFY_SOCKET it does nothing and
// returns (0, nil).
func Store(notifySocket string, ls activation.Set) (int, error) {
	return StoreFrom(notifySocket, ls, nil)
}

// StoreFrom is Store for the sockets of each listener from slot from[name]
// on (those before are stored already); from may be nil. A non-nil from
// is updated to the sockets each listener had when they were sent (a
// group may grow meanwhile: those are sent next time).
func StoreFrom(notifySocket string, ls activation.Set, from map[string]int) (int, error) {
	if notifySocket == "" {
		return 0, nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("fd store: %w", err)
	}
	defer unix.Close(fd)
	name := notifySocket
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	addr := &unix.SockaddrUnix{Name: name}
	n := 0
	for _, l := range ls {
		if l.Inherited {
			continue
		}
		fds := l.FDs()
		for slot, sfd := range fds {
			if slot < from[l.Name] {
				continue
			}
			msg := fmt.Sprintf("FDSTORE=1\nFDNAME=%s%s.%d", storePrefix, l.Name, slot)
			if err := unix.Sendmsg(fd, []byte(msg), unix.UnixRights(sfd), addr, 0); err != nil {
				return n, fmt.Errorf("fd store %s: %w", l.Name, err)
			}
			n++
		}
		if from != nil {
			from[l.Name] = max(from[l.Name], len(fds))
		}
	}
	return n, nil
}

// Unstore asks systemd to drop the sockets of l from its fd store
// (FDSTOREREMOVE=1 with the names Store gave them), for a stored listener
// the configuration no longer asks for: systemd closes its copies, which
// would otherwise keep the address bound and queue connections nobody
// takes. Without NOTIFY_SOCKET it does nothing.
func Unstore(notifySocket string, l *activation.Listener) error {
	if notifySocket == "" {
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	defer unix.Close(fd)
	name := notifySocket
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	for slot := range l.Slots() {
		msg := fmt.Sprintf("FDSTOREREMOVE=1\nFDNAME=%s%s.%d", storePrefix, l.Name, slot)
		if err := unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrUnix{Name: name}); err != nil {
			return fmt.Errorf("fd store %s: %w", l.Name, err)
		}
	}
	return nil
}

// Regroup turns the sockets systemd gave back from its fd store (named
// sockd.<name>.<slot>) into sockd's own listeners again: one listener per
// name, its sockets in slot order, not marked inherited (sockd bound them,
// and keeps storing them). Other inherited sockets (a .socket unit's) stay
// as they are.
func Regroup(set activation.Set) (activation.Set, error) {
	type slotFD struct{ slot, fd int }
	groups := map[string][]slotFD{}
	var order []string
	var out activation.Set
	for _, l := range set {
		name, slot, ok := parseStoreName(l.Name)
		if !ok || l.Slots() != 1 {
			out = append(out, l)
			continue
		}
		if _, seen := groups[name]; !seen {
			order = append(order, name)
		}
		groups[name] = append(groups[name], slotFD{slot, l.FD(0)})
	}
	for _, name := range order {
		g := groups[name]
		sort.Slice(g, func(i, j int) bool { return g[i].slot < g[j].slot })
		fds := make([]int, len(g))
		for i, s := range g {
			fds[i] = s.fd
		}
		l, err := activation.NewListener(name, fds, false, unixPath(fds[0]))
		if err != nil {
			return nil, fmt.Errorf("stored listener %s: %w", name, err)
		}
		out = append(out, l)
	}
	return out, nil
}

func parseStoreName(s string) (string, int, bool) {
	rest, ok := strings.CutPrefix(s, storePrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", 0, false
	}
	// Only the slot numbers Store writes: "01" or "+1" would be a second
	// name for slot 1.
	slot, err := strconv.Atoi(rest[i+1:])
	return rest[:i], slot, err == nil && slot >= 0 && strconv.Itoa(slot) == rest[i+1:]
}

// unixPath is the file of a unix socket (to remove on a final stop).
func unixPath(fd int) string {
	sa, err := unix.Getsockname(fd)
	if u, ok := sa.(*unix.SockaddrUnix); err == nil && ok && strings.HasPrefix(u.Name, "/") {
		if fi, err := os.Stat(u.Name); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return u.Name
		}
	}
	return ""
}
