require('fs').writeFileSync(process.env.PIDFILE, String(process.pid));
for (;;) {}
