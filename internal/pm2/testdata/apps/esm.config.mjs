// An ES module, with top-level await.
const instances = await Promise.resolve(3);
export default { apps: [{ name: 'esm', script: 'server.js', instances, env: { PORT: 7000 } }] };
