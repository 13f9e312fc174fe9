// Several apps: a web app in cluster mode, a queue consumer, a cron job.
const path = require('path');
module.exports = {
  apps: [
    {
      name: 'web',
      script: 'server.js',
      instances: -1,
      env: { PORT: '4000' },
    },
    {
      name: 'consumer',
      script: path.join(__dirname, 'worker.js'),
      instances: 4,
      exec_mode: 'fork',
      instance_var: 'INSTANCE_ID',
      env_production: { QUEUE: 'jobs' },
    },
    {
      script: 'worker.js',
      name: 'nightly',
      cron_restart: '0 3 * * *',
      env_production: { QUEUE: 'nightly' },
    },
  ],
  deploy: {
    production: { user: 'deploy', host: 'example.org', ref: 'origin/main', repo: 'git@example.org:app.git', path: '/srv/app', env: { DEPLOYED: 'yes' } },
  },
};
