module.exports = Promise.resolve({ apps: [{ script: 'server.js' }] });
