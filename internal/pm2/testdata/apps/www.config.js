module.exports = { apps: [
  { name: 'www', script: 'bin/www', instances: 2, env: { PORT: 3001 } },
  { name: 'sh', script: 'scripts/run.sh' },
  { name: 'py', script: 'tasks/job.py', instances: 2 },
  { name: 'cmd', script: 'node server.js --port 3002' },
] };
