// A sockd worker in Node.js, without the cluster module: sockd runs N
// copies of it on the same listening sockets, passed as fds 3, 4, … like
// systemd socket activation does (LISTEN_FDS). Every response tells which
// process served it, like sockd's demo worker:
//
//   hello from pid=<pid> worker=<slot> generation=<gen>
//
// On SIGTERM it drains carefully: it stops accepting (closing only its own
// descriptors; the sockets stay open in sockd for the next generation),
// answers requests that still arrive with "Connection: close", closes
// connections that stay idle for IDLE_GRACE_MS, and exits 0 once no
// connection is open, or 1 at DRAIN_TIMEOUT_MS.
//
// Node cannot send unix datagrams itself, so once every socket accepts it
// runs systemd-notify(1) --ready, which sends READY=1 to the NOTIFY_SOCKET
// sockd gave it (sockd accepts notifications from a worker's descendants).
// Without systemd-notify, run it with sockd's `--ready after:DURATION`.
'use strict';

const http = require('http');
const net = require('net');
const { execFile } = require('child_process');

const LISTEN_FDS_START = 3;
const pid = process.pid;
const slot = intEnv('SOCKD_WORKER', 0);
const generation = intEnv('SOCKD_GENERATION', 1);
const drainTimeout = intEnv('DRAIN_TIMEOUT_MS', 1) > 0 ? intEnv('DRAIN_TIMEOUT_MS', 1) : 25000;
const idleGrace = intEnv('IDLE_GRACE_MS', 1) > 0 ? intEnv('IDLE_GRACE_MS', 1) : 1000;
const body = `hello from pid=${pid} worker=${slot} generation=${generation}\n`;

// intEnv returns the integer in process.env[name] if it is >= min, else -1.
function intEnv(name, min) {
  const v = process.env[name];
  if (v === undefined || !/^[0-9]+$/.test(v)) return -1;
  const n = Number(v);
  return n >= min ? n : -1;
}

function fail(msg) {
  process.stderr.write(`server.js: ${msg}\n`);
  process.exit(2);
}

// listenFDs checks LISTEN_PID and LISTEN_FDS like sd_listen_fds(3).
function listenFDs() {
  const n = process.env.LISTEN_FDS;
  if (!n || n === '0') fail('no listening sockets: LISTEN_FDS is not set (run it under sockd)');
  if (!/^[0-9]+$/.test(n)) fail(`invalid LISTEN_FDS=${JSON.stringify(n)}`);
  const lpid = process.env.LISTEN_PID;
  if (lpid !== undefined && lpid !== String(pid)) fail(`sockets are for pid ${lpid}, not ${pid}`);
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) delete process.env[k];
  const fds = [];
  for (let i = 0; i < Number(n); i++) fds.push(LISTEN_FDS_START + i);
  return fds;
}

// Connection states: idle (between requests, or no request yet) since
// when, and how many bytes had been read then.
const conns = new Map();
let draining = false;
let drainStart = 0;

function markIdle(socket) {
  conns.set(socket, { idle: true, since: Date.now(), bytesRead: socket.bytesRead });
}

function handle(req, res) {
  conns.set(req.socket, { idle: false });
  const headers = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'X-Sockd-Pid': String(pid),
    'X-Sockd-Worker': String(slot),
    'X-Sockd-Generation': String(generation),
  };
  if (draining) headers.Connection = 'close';
  res.on('finish', () => { if (!req.socket.destroyed) markIdle(req.socket); });
  req.resume(); // discard any request body
  req.on('end', () => { res.writeHead(200, headers); res.end(body); });
}

const fds = listenFDs();
let listening = fds.length;
const servers = fds.map((fd) => {
  const srv = http.createServer(handle);
  srv.on('connection', (socket) => {
    markIdle(socket);
    socket.on('close', () => { conns.delete(socket); if (draining) maybeExit(); });
  });
  srv.on('error', (err) => fail(`fd ${fd}: ${err.message}`));
  // Node calls listen(2) again on the fd, which resets the shared backlog
  // for every worker; ask for the most, which the kernel caps at
  // net.core.somaxconn, the value Go (and so sockd) uses.
  srv.listen({ fd }, 65535, () => { if (--listening === 0) ready(); }); // for an fd, only the second argument sets the backlog
  return srv;
});

// ready tells sockd READY=1 through systemd-notify, which waits until the
// message was read (BARRIER=1), so it is still running when sockd checks
// that it descends from this worker.
function ready() {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', ['--ready'], (err) => {
    if (err) process.stderr.write(`server.js: systemd-notify --ready: ${err.message}\n`);
  });
}

// sweep closes the connections idle for the grace period, counted from
// the later of the drain start and the moment they became idle, unless
// bytes arrived since (a request is being read).
function sweep() {
  const now = Date.now();
  for (const [socket, st] of conns) {
    if (!st.idle) continue;
    const since = Math.max(st.since, drainStart);
    if (now - since < idleGrace) continue;
    if (socket.bytesRead !== st.bytesRead) { markIdle(socket); continue; }
    socket.destroy();
  }
}

function maybeExit() {
  if (conns.size === 0) process.exit(0);
}

function drain() {
  if (draining) return;
  draining = true;
  drainStart = Date.now();
  // Not srv.close(): since Node 19 it also closes idle keep-alive
  // connections at once, under clients that may be sending on them.
  // net.Server's close only stops accepting and closes our descriptor.
  for (const srv of servers) net.Server.prototype.close.call(srv);
  setInterval(sweep, Math.min(100, idleGrace / 4)).unref();
  setTimeout(() => {
    process.stderr.write(`server.js: drain deadline: closing ${conns.size} connections\n`);
    process.exit(1);
  }, drainTimeout).unref();
  setImmediate(maybeExit);
}

process.on('SIGTERM', drain);
process.on('SIGINT', drain);
