// Package daemon is sockd as a service: it takes or binds the listening
// sockets, runs a pool of workers on them, answers the control socket, and
// is the process systemd supervises.
//
// Towards systemd it speaks the service side of sd_notify(3)
// (https://www.freedesktop.org/software/systemd/man/sd_notify.html):
// READY=1 once the first generation is ready, RELOADING=1 and READY=1
// around a reload, STATUS=, STOPPING=1, WATCHDOG=1 while the pool is
// healthy (WatchdogSec= in systemd.service(5)), MAINPID= during a binary
// upgrade, and FDSTORE=1 for the sockets it bound itself, so that a
// restart of the service finds them in LISTEN_FDS again
// (sd_listen_fds(3), FileDescriptorStoreMax=), FDSTOREREMOVE=1 for a
// stored one the configuration no longer asks for, and
// EXTEND_TIMEOUT_USEC= while systemd waits for READY=1 (the start, a
// reload), which sockd bounds itself.
//
// One goroutine (Run) owns the daemon's phase:
//
//	taking over   a new sockd whose workers are starting on an old sockd's sockets;
//	              it is in charge (control socket, systemd) only once the old one commits
//	running       reloads and upgrades are accepted (never both at once)
//	upgrading     a new sockd binary is starting on this one's sockets (package handoff);
//	              if it fails, back to running
//	handed off    the new sockd is in charge; this one drains its workers and exits
//
// Signals are not handled here: cmd/sockd turns them into calls of Stop,
// Reload, Upgrade and Scale, as the control socket does.
package daemon
