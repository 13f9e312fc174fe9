// An app written for PM2 cluster mode, as PM2's documentation shows it
// (https://pm2.keymetrics.io/docs/usage/signals-clean-restart/), runs under
// sockd unchanged but for where it listens: on the socket sockd passes as
// fd 3 instead of a port.
//
//   - Readiness the PM2 way (wait_ready): process.send('ready') once it
//     listens. Run it with `sockd run --ready node-ipc`, which gives each
//     worker Node's IPC channel and takes that message as READY=1.
//   - A graceful stop on SIGINT, the signal PM2 sends: `--stop-signal INT`.
//     For a second it answers with "Connection: close", then stops
//     accepting and exits once the open connections are closed.
//
//   sockd run --ready node-ipc --stop-signal INT -- node app.js
'use strict';

const http = require('http');

let stopping = false;
const server = http.createServer((req, res) => {
  if (stopping) res.setHeader('Connection', 'close');
  res.setHeader('X-Sockd-Pid', String(process.pid));
  res.setHeader('X-Sockd-Worker', process.env.SOCKD_WORKER || '');
  res.setHeader('X-Sockd-Generation', process.env.SOCKD_GENERATION || '');
  res.end(`hello from pid=${process.pid} worker=${process.env.SOCKD_WORKER} generation=${process.env.SOCKD_GENERATION}\n`);
});

server.listen({ fd: 3 }, () => {
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  // Node's server.close() also closes idle keep-alive connections at once,
  // under clients that may be sending their next request on them. So for
  // a second every answer says "Connection: close" (clients then close
  // those connections themselves), and only then does it close.
  stopping = true;
  setTimeout(() => server.close(() => process.exit(0)), 1000).unref();
  setTimeout(() => process.exit(1), 20000).unref();
});
