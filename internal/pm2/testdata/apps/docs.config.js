// The shape of PM2's documentation (Application Declaration / cluster mode).
module.exports = {
  apps: [{
    name: 'api',
    script: './server.js',
    cwd: '.',
    args: '--color --title="My API" "two words"',
    node_args: '--max-old-space-size=512 --enable-source-maps',
    instances: 'max',
    exec_mode: 'cluster',
    wait_ready: true,
    listen_timeout: 10000,
    kill_timeout: 5000,
    max_memory_restart: '300M',
    min_uptime: '2s',
    max_restarts: 5,
    autorestart: true,
    watch: false,
    merge_logs: true,
    out_file: './logs/out.log',
    error_file: './logs/err.log',
    log_date_format: 'YYYY-MM-DD HH:mm Z',
    env: {
      NODE_ENV: 'development',
      PORT: 3000,
    },
    env_production: {
      NODE_ENV: 'production',
      PORT: 8080,
      DATABASE_URL: 'postgres://app:s3cr3t@db/app',
    },
  }],
};
