module.exports = { apps: [{ script: "server.js", autorestart: false }] };
