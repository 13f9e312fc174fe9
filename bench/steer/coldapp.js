// The cold Node app of bench/steer's reload scenario: it serves the moment
// it listens but says it is ready (process.send('ready'), what PM2's
// wait_ready and sockd's --ready node-ipc wait for) only READY_AFTER_MS
// later, like an app that warms caches or connects to its database after
// listen. Every answer says whether it came before that, and from which
// pid. The handler renders a small JSON document, so a cold V8 (no JIT
// yet) shows in the latency. It drains on SIGINT (what PM2 sends) and
// SIGTERM.
'use strict';
const http = require('http');

let ready = false;
function render(n) {
  const items = [];
  for (let i = 0; i < n; i++) items.push({ id: i, name: 'item' + i, tags: ['a', 'b', String(i % 7)], score: (i * 7919) % 1000 / 10 });
  return JSON.stringify({ items, total: n });
}

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const body = render(200);
    res.end(`pid=${process.pid} ready=${ready ? 1 : 0} bytes=${body.length}\n`);
  });
});

server.listen(process.env.PORT, process.env.HOST, () => {
  setTimeout(() => {
    ready = true;
    if (process.send) process.send('ready');
  }, Number(process.env.READY_AFTER_MS || 1000));
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
