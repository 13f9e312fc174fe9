// The Fastify app as an ES module, as Fastify's docs show it with import.
import Fastify from 'fastify';

const fastify = Fastify({ logger: false });

fastify.route({
  method: ['GET', 'POST'],
  url: '/',
  handler: async () => `hello from pid=${process.pid}\n`,
});

try {
  await fastify.listen({ port: Number(process.env.PORT) || 3000 });
  if (process.send) process.send('ready');
} catch (err) {
  console.error(err);
  process.exit(1);
}

process.on('SIGINT', async () => {
  await fastify.close();
  process.exit(0);
});
