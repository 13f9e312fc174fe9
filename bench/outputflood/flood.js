// The flood app of bench/outputflood/run.sh: an HTTP server on PORT
// (listen(PORT), process.send('ready'), as under PM2's wait_ready) that,
// on GET /flood?id=ID&n=N, writes N numbered lines (default 500,000) of
// 50 bytes each, "line <n> f=<ID> xxx…", to stdout as fast as it can:
// process.stdout.write on every line, never waiting for 'drain' (as
// console.log does), 10,000 lines per turn of the event loop. It answers
// once the last line's write has completed, with the time it took and the
// process's peak RSS as Node sees it. SIGINT or SIGTERM: close the server,
// let an in-flight flood finish, then exit once stdout took the last line.
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 3000);
const LINE = 50; // bytes, with the newline

function line(n, id) {
  const s = `line ${n} f=${id} `;
  return s + 'x'.repeat(Math.max(1, LINE - 1 - s.length)) + '\n';
}

function flood(id, n, done) {
  const t0 = process.hrtime.bigint();
  let i = 1, peak = 0;
  (function burst() {
    for (let k = 0; k < 10000 && i < n; k++, i++) process.stdout.write(line(i, id));
    peak = Math.max(peak, process.memoryUsage().rss);
    if (i < n) return setImmediate(burst);
    // the last line: its callback runs once every earlier write completed
    process.stdout.write(line(n, id), () => {
      peak = Math.max(peak, process.memoryUsage().rss);
      done(Number(process.hrtime.bigint() - t0) / 1e6, peak);
    });
  })();
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname !== '/flood') {
    res.end(`flood.js pid=${process.pid}\n`);
    return;
  }
  const id = u.searchParams.get('id') || 'x';
  const n = Number(u.searchParams.get('n') || 500000);
  flood(id, n, (ms, peak) => {
    res.end(JSON.stringify({ pid: process.pid, lines: n, ms, peak_rss: peak }) + '\n');
  });
});

server.listen(port, () => {
  process.stdout.write(`flood.js pid=${process.pid} listening on ${port}\n`);
  if (process.send) process.send('ready');
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close(() => {
    process.stdout.write(`flood.js pid=${process.pid} stopping\n`, () => process.exit(0));
  });
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
