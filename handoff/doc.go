// Package handoff passes sockd's listening sockets on, so that they outlive
// the sockd process that holds them:
//
//   - to a new sockd binary (binary upgrade, `sockd upgrade` or SIGUSR2), over
//     a unix SOCK_SEQPACKET socketpair with SCM_RIGHTS (unix(7)); and
//   - to systemd's file descriptor store (FDSTORE=1 and FDNAME= in
//     sd_notify(3), https://www.freedesktop.org/software/systemd/man/sd_notify.html,
//     enabled by FileDescriptorStoreMax= in systemd.service(5)), which hands
//     them back through LISTEN_FDS when systemd restarts sockd.
//
// # The upgrade protocol
//
// The old sockd (the parent) starts the new binary with one end of the
// socketpair as fd 3 and SOCKD_UPGRADE_FD=3. Every message is one packet of
// JSON, some carrying descriptors:
//
//	parent → child  state: generation, listeners (name, slots, path), fd count
//	parent → child  {"fds":n} with n descriptors, until the count is reached
//	child → parent  {"event":"ready","pid":P}  its first generation is ready
//	parent → child  {"event":"commit"}          systemd was told MAINPID=P
//
// Only after "commit" does the child talk to systemd (under NotifyAccess=main
// systemd listens to the main pid only, so the parent, still main, sends
// MAINPID=) and serve the control socket; the parent then drains its own
// workers and exits. If the child exits, breaks the protocol or is not ready
// in time, the parent kills it and keeps serving. Descriptors arrive
// close-on-exec (MSG_CMSG_CLOEXEC), so nothing leaks into workers.
package handoff
