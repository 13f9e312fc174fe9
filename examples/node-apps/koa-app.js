// A Koa app as its docs show it.
'use strict';
const Koa = require('koa');

const app = new Koa();

app.use(async (ctx) => {
  ctx.body = `hello from pid=${process.pid}\n`;
});

const server = app.listen(process.env.PORT || 3000, () => {
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
