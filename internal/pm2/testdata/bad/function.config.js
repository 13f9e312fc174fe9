module.exports = function () { return { apps: [{ script: 'server.js' }] }; };
