// The Node.js app of sockd's benchmarks: one small HTTP server that runs
// unchanged
//
//   - under sockd (or systemd socket activation): LISTEN_FDS is set, it
//     serves the sockets passed as fds 3, 4, …;
//   - under PM2 cluster mode (pm2 start app.js -i N) or as a plain process:
//     it listens on 127.0.0.1:$PORT;
//   - as a Node cluster of its own: BENCH_CLUSTER=N makes the primary fork
//     N workers that listen on $PORT (NODE_CLUSTER_SCHED_POLICY=rr or none
//     picks the scheduling policy) and fork a replacement when one dies.
//
// Every response is 200 "hello from pid=<pid> worker=<slot> generation=<gen>"
// with the same pid in an X-Pid header, so the load generator can tell
// which process answered. With BENCH_READY_FILE set, each server appends
// "<pid>\n" to that file once it listens.
//
// On SIGTERM or SIGINT (PM2 sends SIGINT) every mode drains the same
// careful way, so that differences between supervisors are theirs, not the
// app's: stop accepting (net.Server's close: only our descriptor, or the
// cluster primary stops routing to us), answer requests that still arrive
// with "Connection: close", close connections idle for IDLE_GRACE_MS
// (default 1000), exit 0 when none is left (1 at DRAIN_TIMEOUT_MS, default
// 25000).
'use strict';

const cluster = require('cluster');
const fs = require('fs');
const http = require('http');
const net = require('net');

const pid = process.pid;
const slot = process.env.SOCKD_WORKER || process.env.NODE_APP_INSTANCE || process.env.BENCH_SLOT || '0';
const generation = process.env.SOCKD_GENERATION || '1';
const idleGrace = posInt('IDLE_GRACE_MS', 1000);
const drainTimeout = posInt('DRAIN_TIMEOUT_MS', 25000);

function posInt(name, def) {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : def;
}

function fail(msg) {
  process.stderr.write(`app.js[${pid}]: ${msg}\n`);
  process.exit(2);
}

function announce() {
  const f = process.env.BENCH_READY_FILE;
  if (f) fs.appendFileSync(f, `${pid}\n`);
  // Under sockd --ready node-ipc (or PM2): over Node's IPC channel, as
  // PM2's wait_ready expects. Under sockd --ready notify: READY=1 through
  // systemd-notify(1), since Node cannot send unix datagrams itself.
  if (process.send && process.env.LISTEN_FDS) {
    process.send('ready');
  } else if (process.env.NOTIFY_SOCKET) {
    require('child_process').execFile('systemd-notify', ['--ready'], (err) => {
      if (err) process.stderr.write(`app.js[${pid}]: systemd-notify --ready: ${err.message}\n`);
    });
  }
}

if (cluster.isPrimary && process.env.BENCH_CLUSTER && !process.env.LISTEN_FDS) {
  primary(Number(process.env.BENCH_CLUSTER));
} else {
  serve();
}

// primary runs a Node cluster: N workers, each replaced when it dies
// unless we are stopping; SIGTERM/SIGINT drain them all, then exit.
function primary(n) {
  if (!(n > 0)) fail(`BENCH_CLUSTER=${process.env.BENCH_CLUSTER}: want a worker count`);
  let stopping = false;
  let slots = 0;
  const fork = (s) => {
    const w = cluster.fork({ BENCH_SLOT: String(s) });
    w.benchSlot = s;
  };
  cluster.on('exit', (w) => {
    if (!stopping) fork(w.benchSlot);
    else if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  for (; slots < n; slots++) fork(slots);
  const stop = (sig) => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill(sig);
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGTERM'));
}

function serve() {
  const body = `hello from pid=${pid} worker=${slot} generation=${generation}\n`;
  const conns = new Map(); // socket -> {idle, since, bytesRead}
  let draining = false;
  let drainStart = 0;

  const markIdle = (socket) => conns.set(socket, { idle: true, since: Date.now(), bytesRead: socket.bytesRead });

  const handle = (req, res) => {
    conns.set(req.socket, { idle: false });
    const headers = {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'X-Pid': String(pid),
    };
    if (draining) headers.Connection = 'close';
    res.on('finish', () => { if (!req.socket.destroyed) markIdle(req.socket); });
    req.resume();
    req.on('end', () => { res.writeHead(200, headers); res.end(body); });
  };

  const mk = () => {
    const srv = http.createServer({ keepAliveTimeout: 75000 }, handle);
    srv.on('connection', (socket) => {
      markIdle(socket);
      socket.on('close', () => { conns.delete(socket); if (draining) maybeExit(); });
    });
    srv.on('error', (err) => fail(err.message));
    return srv;
  };

  let servers;
  if (process.env.LISTEN_FDS) {
    const n = Number(process.env.LISTEN_FDS);
    const lpid = process.env.LISTEN_PID;
    if (lpid !== undefined && lpid !== String(pid)) fail(`sockets are for pid ${lpid}, not ${pid}`);
    for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) delete process.env[k];
    servers = [];
    let pending = n;
    for (let i = 0; i < n; i++) {
      const srv = mk();
      // For an fd only the second argument sets the backlog: ask for the
      // most (the kernel caps it at somaxconn, what Go binds with), since
      // listen(2) again on a shared socket resets its backlog for everyone.
      srv.listen({ fd: 3 + i }, 65535, () => { if (--pending === 0) announce(); });
      servers.push(srv);
    }
  } else {
    const port = Number(process.env.PORT);
    if (!(port > 0)) fail('set PORT, or run under sockd (LISTEN_FDS)');
    const srv = mk();
    srv.listen(port, '127.0.0.1', 65535, announce);
    servers = [srv];
  }

  const sweep = () => {
    const now = Date.now();
    for (const [socket, st] of conns) {
      if (!st.idle) continue;
      if (now - Math.max(st.since, drainStart) < idleGrace) continue;
      if (socket.bytesRead !== st.bytesRead) { markIdle(socket); continue; }
      socket.destroy();
    }
  };
  const maybeExit = () => { if (conns.size === 0) process.exit(0); };
  const drain = () => {
    if (draining) return;
    draining = true;
    drainStart = Date.now();
    // Not http.Server.close(): since Node 19 it also closes idle keep-alive
    // connections at once, under clients that may be sending on them.
    for (const srv of servers) net.Server.prototype.close.call(srv);
    setInterval(sweep, Math.min(100, idleGrace / 4)).unref();
    setTimeout(() => process.exit(1), drainTimeout).unref();
    setImmediate(maybeExit);
  };
  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);
}
