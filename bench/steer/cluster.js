// Node's cluster module in its default round-robin mode (what PM2's
// cluster mode is built on), the peer bench/steer compares with: the
// primary accepts every connection and hands it to a worker in turn. It
// prints "workers PID PID …" once every worker listens.
'use strict';
const cluster = require('cluster');
const http = require('http');

if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  const n = Number(process.env.WORKERS || 4);
  let listening = 0;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++listening === n) console.log('workers ' + Object.values(cluster.workers).map((w) => w.process.pid).join(' '));
  });
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(`hello from pid=${process.pid}\n`));
  }).listen(Number(process.env.PORT), '127.0.0.1');
}
