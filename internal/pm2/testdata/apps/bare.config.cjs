// Or the whole export is one app (PM2 takes the config as the app).
module.exports = { script: 'worker.js', instances: 2 };
