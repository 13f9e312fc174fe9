// A Fastify 5 app as its docs show it (host left to Fastify's default,
// 'localhost'), with PM2's ready message and SIGINT.
'use strict';
const fastify = require('fastify')({ logger: false });

fastify.route({
  method: ['GET', 'POST'],
  url: '/',
  handler: async () => `hello from pid=${process.pid}\n`,
});

fastify.listen({ port: Number(process.env.PORT) || 3000 }, (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  fastify.close().then(() => process.exit(0));
});
