// apps may be one object rather than a list.
module.exports = { apps: { name: 'solo', script: 'server.js', port: 5000 } };
