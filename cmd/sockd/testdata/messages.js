// A Node worker that writes what it is told into OUT_DIR: each message
// (process.on('message')) and each SIGUSR2, one file per worker slot.
'use strict';
const fs = require('fs');
const path = require('path');
const http = require('http');
const out = path.join(process.env.OUT_DIR, 'worker-' + process.env.NODE_APP_INSTANCE);
process.on('message', (m) => fs.appendFileSync(out + '.messages', JSON.stringify(m) + '\n'));
process.on('SIGUSR2', () => fs.appendFileSync(out + '.signals', 'USR2\n'));
http.createServer((req, res) => res.end('ok\n')).listen(process.env.PORT);
