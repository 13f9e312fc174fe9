const cfg = require('./missing-settings');
module.exports = { apps: [{ script: cfg.script }] };
