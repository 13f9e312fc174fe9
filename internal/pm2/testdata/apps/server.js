// A plain HTTP app as PM2 users write it.
const http = require('http');
const server = http.createServer((req, res) => res.end('ok\n'));
server.listen(process.env.PORT || 3000, () => process.send && process.send('ready'));
process.on('SIGINT', () => server.close(() => process.exit(0)));
