// A plain Node http server written as PM2's docs show it: listen on PORT,
// tell PM2 (or sockd --ready node-ipc) it is ready, close on SIGINT.
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end(`hello from pid=${process.pid}\n`));
});

server.listen(process.env.PORT || 3000, () => {
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
