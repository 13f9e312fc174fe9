// sockd's preload for Node.js workers. sockd writes this file to its run
// directory and adds `--require <it>` to the worker's NODE_OPTIONS; the
// contract with sockd (environment variables, IPC messages) and the drain
// are described in internal/nodeshim/doc.go. In short:
//
//  1. A listen() on a port or path that sockd holds (SOCKD_NODE_LISTENERS)
//     listens on sockd's inherited socket instead ({fd: N}, with sockd's
//     backlog); any other listen() is left to Node.
//  2. server.close() (and closeIdleConnections()) on such an HTTP server
//     drains it carefully: answers get "Connection: close", idle keep-alive
//     connections are closed only once they have been idle for a grace
//     period and nothing is waiting in their receive buffer.
//  3. Optionally tells sockd over Node's IPC channel that the worker listens,
//     how many requests it served, and that its event loop runs.
//  4. `npm start` as sockd's worker hands the sockets and the channel on to
//     the script npm runs.
// It does nothing in a process that sockd did not start (or one below it
// that is not the first Node process on the way).
'use strict';
(function sockdPreload() {
  const env = process.env;
  if (!env.SOCKD_NODE_LISTENERS) return;
  if (!require('worker_threads').isMainThread) return;
  const fs = require('fs');
  const net = require('net');
  const http = require('http');
  const https = require('https');
  const path = require('path');

  let listeners;
  try {
    listeners = JSON.parse(env.SOCKD_NODE_LISTENERS);
    if (!Array.isArray(listeners)) throw new Error('not a list');
  } catch (err) {
    return say(`SOCKD_NODE_LISTENERS is not valid (${err.message}); sockd's preload is off`);
  }
  const pid = process.pid;
  const listenPID = Number(env.LISTEN_PID);
  const owner = env.SOCKD_NODE_OWNER || '';
  const grace = positive(env.SOCKD_NODE_IDLE_GRACE_MS, 1000);
  const sends = new Set((env.SOCKD_NODE_SEND || '').split(',').filter(Boolean));
  const careful = env.SOCKD_NODE_DRAIN !== '0'; // 0: Node's own close (for comparisons)
  const debug = env.SOCKD_NODE_DEBUG === '1';

  function say(msg) {
    try { fs.writeSync(2, `sockd: ${debug ? `${Date.now() % 100000} ` : ''}${msg}\n`); } catch { /* stderr closed */ }
  }
  function positive(v, dflt) {
    const n = Number(v);
    return Number.isFinite(n) && n > 0 ? n : dflt;
  }

  // --- Which process uses the sockets ------------------------------------
  // sockd passes them to LISTEN_PID. The first Node process at or below it
  // (through shells and other programs that are not Node) takes them and
  // marks its environment (SOCKD_NODE_OWNER), so that Node processes it
  // starts leave them alone. npm hands them on (see npmHandOver).
  function ancestors() {
    const out = [];
    let p = process.ppid;
    for (let i = 0; i < 32 && p > 1; i++) {
      out.push(p);
      try {
        const stat = fs.readFileSync(`/proc/${p}/stat`, 'latin1');
        p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      } catch { break; }
    }
    return out;
  }
  function isNpm() {
    try {
      return /[\\/]npm[\\/]bin[\\/]np[mx]-cli\.js$/.test(fs.realpathSync(process.argv[1] || ''));
    } catch { return false; }
  }
  const below = listenPID !== pid && ancestors().includes(listenPID);
  let role = 'none';
  let why = `sockd passed its sockets to pid ${env.LISTEN_PID}, not to this process (pid ${pid})`;
  if (owner !== '' && owner !== `npm:${env.LISTEN_PID}`) {
    why = `sockd's sockets belong to the Node process ${owner}, which started this one (pid ${pid})`;
  } else if (listenPID === pid || below) {
    role = isNpm() ? 'npm' : 'worker';
  }

  // The listeners this process really holds: the fd is still the socket
  // sockd described (same inode).
  for (const l of listeners) {
    l.ok = false;
    l.state = 'free'; // free, claimed (a server listens on it), closed
    if (!Number.isInteger(l.fd) || l.fd < 3) continue;
    try {
      const st = fs.fstatSync(l.fd, { bigint: true });
      l.ok = st.isSocket() && String(st.ino) === String(l.ino);
    } catch { /* not open here */ }
    if (l.net === 'tcp') l.family = net.isIPv6(l.host) ? 6 : 4;
    if (l.net === 'tcp') l.host = canonical(l.host);
  }
  if (role === 'worker' && !listeners.some((l) => l.ok)) {
    role = 'none';
    why = `this process (pid ${pid}) does not have the sockets sockd passed as fd ${listeners.map((l) => l.fd).join(', ')} (a program on the way closed them)`;
  }
  if (role === 'worker' || role === 'npm') env.SOCKD_NODE_OWNER = role === 'npm' ? `npm:${pid}` : String(pid);
  if (role === 'npm') return npmHandOver();

  // --- listen() -----------------------------------------------------------
  function canonical(ip) {
    if (typeof ip !== 'string') return ip;
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (m) return m[1];
    if (net.isIPv6(ip)) {
      try { return new URL(`http://[${ip}]/`).hostname.slice(1, -1); } catch { return ip; }
    }
    return ip;
  }
  // conflicts reports whether binding r (null: no host; else {ip, family})
  // would fail with EADDRINUSE because of l: the app asks for a socket that
  // sockd holds.
  function conflicts(l, r, v6only) {
    if (r === null) return v6only ? l.family === 6 : true; // Node binds [::] (dual-stack), else 0.0.0.0
    const lAny = l.host === '0.0.0.0' || l.host === '::';
    if (r.family === 4) {
      if (l.family === 4) return lAny || r.ip === '0.0.0.0' || r.ip === l.host;
      return l.host === '::' && !l.v6only;
    }
    if (l.family === 6) return lAny || r.ip === '::' || r.ip === l.host;
    return r.ip === '::' && !v6only;
  }
  function parseArgs(args) {
    const a0 = args[0];
    const cb = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : null;
    if (typeof a0 === 'object' && a0 !== null) {
      const o = a0._handle || a0.handle || a0;
      if (typeof o.fd === 'number') return { kind: 'fd', fd: o.fd, options: a0, cb };
      if (o !== a0) return null; // a handle object: Node's business
      if (a0.port !== undefined && a0.port !== null) return { kind: 'port', port: a0.port, host: a0.host, options: a0, cb };
      if (typeof a0.path === 'string') return { kind: 'path', path: a0.path, options: a0, cb };
      return null;
    }
    if (typeof a0 === 'string' && !(Number(a0) >= 0)) return { kind: 'path', path: a0, options: {}, cb };
    return { kind: 'port', port: a0, host: typeof args[1] === 'string' ? args[1] : undefined, options: {}, cb };
  }
  function validPort(p) {
    if (typeof p === 'string' && p.trim() === '') return 0;
    const n = typeof p === 'number' || typeof p === 'string' ? Number(p) : NaN;
    return Number.isInteger(n) && n > 0 && n <= 65535 ? n : 0;
  }
  // candidates lists sockd's listeners that a listen would collide with.
  function candidates(req, resolved) {
    if (req.kind === 'fd') return listeners.filter((l) => l.fd === req.fd);
    if (req.kind === 'path') {
      const p = req.path[0] === '\0' ? req.path : path.resolve(req.path);
      return listeners.filter((l) => l.net === 'unix' && l.path === p);
    }
    const port = validPort(req.port);
    if (port === 0) return [];
    return listeners.filter((l) => l.net === 'tcp' && l.port === port && conflicts(l, resolved, !!req.options.ipv6Only));
  }

  // close() closes the fd at once (the 'close' event comes after the
  // drain): a later listen on the port must not reuse its number.
  const kClaim = Symbol('sockd.listener');
  const kH2 = Symbol('sockd.h2'); // an HTTP/2 server's drain (below)
  const origClose = net.Server.prototype.close;
  net.Server.prototype.close = function close() {
    const l = this[kClaim];
    if (l && this._handle) l.state = 'closed';
    if (this[kH2]) beginH2Drain(this[kH2]);
    return origClose.apply(this, arguments);
  };

  const origListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function listen(...args) {
    if (this._handle || args.length === 0) return origListen.apply(this, args);
    const req = parseArgs(args);
    if (req === null) return origListen.apply(this, args);
    const host = req.kind === 'port' && req.host ? String(req.host) : '';
    if (host === '' || net.isIP(host) || role !== 'worker') {
      if (host !== '' && !net.isIP(host)) return origListen.apply(this, args);
      const r = host === '' ? null : { ip: canonical(host), family: net.isIPv6(canonical(host)) ? 6 : 4 };
      return route(this, args, req, candidates(req, r));
    }
    // A host name: look it up as Node would, then decide.
    require('dns').lookup(host, (err, ip, family) => {
      if (err) return origListen.apply(this, args); // Node reports the error itself
      route(this, args, req, candidates(req, { ip: canonical(ip), family: net.isIPv6(canonical(ip)) ? 6 : 4 }));
    });
    return this;
  };

  function route(server, args, req, ls) {
    if (ls.length === 0) { // not sockd's: exactly as without sockd
      if (role === 'worker' && req.kind === 'port' && validPort(req.port)) watchForeign(server, validPort(req.port));
      return origListen.apply(server, args);
    }
    const l = role === 'worker' ? ls.find((x) => x.ok && x.state === 'free') : undefined;
    if (!l) {
      watchInUse(server, ls);
      return origListen.apply(server, args);
    }
    l.state = 'claimed';
    l.server = server;
    server[kClaim] = l;
    widerThanAsked(req, l);
    const opts = { fd: l.fd };
    if (req.options.signal) opts.signal = req.options.signal;
    if (server instanceof http.Server || server instanceof https.Server) track(server);
    else if (isH2(server)) trackH2(server);
    server.once('listening', () => setImmediate(maybeReady));
    return req.cb ? origListen.call(server, opts, l.backlog, req.cb) : origListen.call(server, opts, l.backlog);
  }

  // widerThanAsked says, once, that a listen on one address (127.0.0.1,
  // localhost) took sockd's socket on every address: the app is then
  // reachable where it did not ask to be, which sockd's address decides.
  function widerThanAsked(req, l) {
    const host = req.kind === 'port' && req.host ? String(req.host) : '';
    if (l.warnedWide || l.net !== 'tcp' || host === '' || host === '0.0.0.0' || host === '::') return;
    if (l.host !== '0.0.0.0' && l.host !== '::') return;
    l.warnedWide = true;
    const all = l.host === '::' ? `[::]:${l.port}` : `0.0.0.0:${l.port}`;
    const want = net.isIPv6(host) ? `[${host}]:${l.port}` : `${host}:${l.port}`;
    say(`listen on ${want} took sockd's socket${l.name ? ` ${l.name}` : ''}, which listens on every address (${all}): to serve on ${host} only, give sockd that address (--listen ${l.name || 'NAME'}=tcp://${want}, or ListenStream=${want})`);
  }

  // --- One clear line when a listen collides with sockd's socket -----------
  let pendingHint = '';
  function hintFor(ls) {
    const l = ls.find((x) => x.state === 'claimed') || ls.find((x) => x.state === 'closed') || ls[0];
    const what = l.net === 'unix' ? `path ${l.path}` : `port ${l.port}`;
    const head = `listen EADDRINUSE on ${what}: it is sockd's listening socket (fd ${l.fd}${l.name ? `, ${l.name}` : ''})`;
    if (role !== 'worker') return `${head}, but ${why}; run node as sockd's worker (sockd run -- node app.js), from a shell script, or with npm start`;
    if (!l.ok) return `${head}, but this process does not have that fd (closed on the way); start node directly or from a shell`;
    if (l.state === 'closed') return `${head}, which this process closed (server.close()); sockd keeps it, so a new listen on it cannot bind`;
    return `${head}, and another server of this process already listens on it`;
  }
  function watchInUse(server, ls) {
    const emit = server.emit;
    const usable = role === 'worker' && ls.some((l) => l.ok && l.state !== 'closed');
    server.emit = function (ev, err) {
      if (ev === 'error' || ev === 'listening') server.emit = emit;
      if (ev === 'error' && err && err.code === 'EADDRINUSE') {
        // Served in this process already (say, Fastify's second binding of
        // localhost): a line only if the process dies of it.
        if (usable) pendingHint = hintFor(ls);
        else say(hintFor(ls));
      }
      return emit.apply(this, arguments);
    };
  }
  // watchForeign: a port sockd does not hold, which another process
  // (another worker of the same app, under PM2 shared through cluster's
  // primary) may have bound first: one line if this process dies of it.
  function watchForeign(server, port) {
    const emit = server.emit;
    server.emit = function (ev, err) {
      if (ev === 'error' || ev === 'listening') server.emit = emit;
      if (ev === 'listening') noticeForeign(port);
      if (ev === 'error' && err && err.code === 'EADDRINUSE') {
        pendingHint = `listen EADDRINUSE on port ${port}: not one of sockd's sockets, so each worker binds it on its own and only the first can (PM2's cluster mode shares every port); give sockd a listener for it to share it between the workers (--listen NAME=tcp://:${port}, or a ListenStream= of the socket unit)`;
      }
      return emit.apply(this, arguments);
    };
  }
  // noticeForeign: the app listens on a port sockd does not hold. Fine
  // beside sockd's socket (an admin port), but if after a while the app
  // has taken none of sockd's sockets, the clients of sockd's address
  // reach no server of it, while the worker looks healthy: one line.
  let foreignNoticed = false;
  function noticeForeign(port) {
    if (foreignNoticed || role !== 'worker') return;
    foreignNoticed = true;
    setTimeout(() => {
      const ours = listeners.filter((l) => l.ok);
      if (ours.length === 0 || ours.some((l) => l.state !== 'free')) return;
      const what = ours.map((l) => (l.net === 'unix' ? `path ${l.path}` : `port ${l.port}`)).join(', ');
      const first = ours.find((l) => l.net === 'tcp');
      say(`listening on port ${port}, which is not one of sockd's sockets (sockd holds ${what}): connections to sockd's address reach no server of this worker; listen on ${first ? `port ${first.port}` : 'sockd\'s socket'} instead, or give sockd --listen NAME=tcp://:${port}`);
    }, positive(env.SOCKD_NODE_FOREIGN_MS, 2000)).unref();
  }
  process.on('uncaughtExceptionMonitor', (err) => {
    if (pendingHint && err && err.code === 'EADDRINUSE') { say(pendingHint); pendingHint = ''; }
  });
  process.on('exit', (code) => {
    if (pendingHint && code !== 0) say(pendingHint);
  });

  if (role !== 'worker') return;

  // --- sockd's socket files ------------------------------------------------
  // Apps that listen on a path often remove a stale file first
  // (`if (fs.existsSync(p)) fs.unlinkSync(p)`) and again on exit. That file
  // is sockd's listening socket, shared by every worker and the next
  // generation: once it is gone, every worker listens on a socket that no
  // client can reach. Such an unlink or rm is skipped, with one line.
  const held = [];
  for (const l of listeners) {
    if (!l.ok || l.net !== 'unix' || typeof l.path !== 'string' || l.path === '' || l.path[0] === '\0') continue;
    try {
      const st = fs.lstatSync(l.path, { bigint: true });
      if (st.isSocket()) held.push({ l, dev: st.dev, ino: st.ino, said: false });
    } catch { /* gone already: nothing to keep */ }
  }
  if (held.length > 0) guardSocketFiles();
  function heldFile(p) {
    try {
      if (p instanceof URL) p = require('url').fileURLToPath(p);
      else if (Buffer.isBuffer(p)) p = p.toString();
      if (typeof p !== 'string' || p === '') return null;
      const st = fs.lstatSync(p, { bigint: true });
      if (!st.isSocket()) return null;
      return held.find((h) => h.dev === st.dev && h.ino === st.ino) || null;
    } catch { return null; }
  }
  function kept(h, fn) {
    if (h.said) return;
    h.said = true;
    say(`kept ${h.l.path}: it is sockd's listening socket${h.l.name ? ` ${h.l.name}` : ''}, shared by every worker and the next generation; the app's ${fn}() of it was skipped`);
  }
  function guardSocketFiles() {
    const fsp = fs.promises;
    for (const fn of ['unlinkSync', 'rmSync']) {
      const orig = fs[fn];
      fs[fn] = function (p) {
        const h = heldFile(p);
        if (h) return kept(h, fn);
        return orig.apply(this, arguments);
      };
    }
    for (const fn of ['unlink', 'rm']) {
      const orig = fs[fn];
      fs[fn] = function (p, ...rest) {
        const h = heldFile(p);
        const cb = rest[rest.length - 1];
        if (h && typeof cb === 'function') {
          kept(h, fn);
          return process.nextTick(cb, null);
        }
        return orig.apply(this, arguments);
      };
      const origP = fsp[fn];
      fsp[fn] = function (p) {
        const h = heldFile(p);
        if (h) {
          kept(h, fn);
          return Promise.resolve();
        }
        return origP.apply(this, arguments);
      };
    }
  }

  // --- The careful drain ---------------------------------------------------
  const kState = Symbol('sockd.drain');
  const probe = Buffer.alloc(1);
  let requests = 0;

  function track(server) {
    const st = { server, draining: false, start: 0, idle: new Map(), timer: null, closedIdle: 0 };
    server[kState] = st;
    server.prependListener('request', (req, res) => {
      if (warmingUp(req.socket)) return;
      requests++;
      if (st.draining) {
        res.shouldKeepAlive = false; // "Connection: close", and Node closes after it
        st.idle.delete(req.socket);
      }
    });
    server.once('close', () => {
      if (debug) say(`drain: done, ${st.closedIdle} idle connections closed`);
      if (st.timer) clearInterval(st.timer);
      st.timer = null;
      st.idle.clear();
    });
  }
  function connections(server) {
    const sym = Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections');
    return sym ? server[sym] : null;
  }
  function beginDrain(st) {
    if (st.draining) return;
    if (debug) say(`drain: begins with ${connections(st.server) ? connections(st.server).all().length : '?'} connections`);
    st.draining = true;
    st.start = Date.now();
    const list = connections(st.server);
    if (list) {
      for (const parser of list.all()) {
        const res = parser.socket && parser.socket._httpMessage;
        if (res && !res.headersSent) res.shouldKeepAlive = false;
      }
    }
    sweep(st);
    st.timer = setInterval(sweep, Math.max(10, Math.min(100, grace / 4)), st);
    st.timer.unref();
  }
  // sweep closes the connections that have been idle for the grace period
  // (counted from the later of the drain's start and the moment they were
  // first seen idle) and on which nothing arrived since.
  function sweep(st) {
    const list = connections(st.server);
    if (!list) return;
    const now = Date.now();
    const idle = new Set(list.idle());
    for (const parser of list.all()) {
      const s = parser.socket;
      if (!s || s.destroyed) continue;
      if (!idle.has(parser) || s._httpMessage) { // a request is being read or answered
        st.idle.delete(s);
        continue;
      }
      const rec = st.idle.get(s);
      if (!rec) {
        st.idle.set(s, { since: now, bytes: s.bytesRead });
        continue;
      }
      if (now - Math.max(rec.since, st.start) < grace) continue;
      if (s.bytesRead !== rec.bytes || !quiet(s)) {
        rec.since = now;
        rec.bytes = s.bytesRead;
        continue;
      }
      st.idle.delete(s);
      st.closedIdle++;
      if (debug) say(`drain: closing connection fd ${s._handle && s._handle.fd}, idle for ${now - rec.since} ms`);
      s.destroy();
    }
    for (const s of st.idle.keys()) if (s.destroyed) st.idle.delete(s);
  }
  // quiet reports whether nothing waits in the connection's receive buffer
  // that Node has not read yet: a non-blocking read(2) of one byte on its fd.
  // A byte found is handed to the HTTP parser, as if Node had read it.
  function quiet(s) {
    const fd = s._handle && s._handle.fd;
    if (s.encrypted || typeof fd !== 'number' || fd < 0) return true; // TLS: bytesRead is all we know
    if (s._paused) return false;
    let n;
    try {
      n = fs.readSync(fd, probe, 0, 1, null);
    } catch (err) {
      return true; // EAGAIN: nothing there; a reset: closing is right
    }
    if (n === 0) return true; // the client closed its side
    if (debug) say(`drain: a request began on idle connection fd ${fd} as it was to be closed; kept, its byte handed to the parser`);
    s.emit('data', Buffer.from(probe));
    return false;
  }
  for (const Server of [http.Server, https.Server]) {
    const orig = Server.prototype.closeIdleConnections;
    if (!careful || typeof orig !== 'function' || orig.sockd) continue;
    // Node's server.close() calls closeIdleConnections() first.
    const patched = function closeIdleConnections() {
      const st = this[kState];
      if (!st) return orig.apply(this, arguments);
      beginDrain(st);
    };
    patched.sockd = true;
    Server.prototype.closeIdleConnections = patched;
  }

  // --- HTTP/2 ----------------------------------------------------------------
  // Node's Http2Server.close() stops accepting but leaves every session
  // open, so a client on a kept session never learns that the worker
  // leaves, and the worker lives until sockd kills it. On sockd's sockets
  // close() also ends each session, in the way that loses the fewest
  // streams with nghttp2 (which ends a session as soon as it has sent a
  // GOAWAY and no stream is open, dropping one the client sent meanwhile;
  // Node has no shutdown notice): a session with a stream open gets a
  // GOAWAY that admits every stream (clients open no new one on it) at
  // once, or when its next stream begins; one that stays idle for the
  // idle grace is closed then, as an idle HTTP/1.1 connection is.
  function isH2(server) {
    for (let p = Object.getPrototypeOf(server); p; p = Object.getPrototypeOf(p)) {
      const c = Object.hasOwn(p, 'constructor') ? p.constructor : null;
      if (c && (c.name === 'Http2Server' || c.name === 'Http2SecureServer')) return true;
    }
    return false;
  }
  function trackH2(server) {
    if (!careful) return;
    const st = { sessions: new Map(), draining: false, start: 0, timer: null };
    server[kH2] = st;
    server.on('session', (session) => {
      const rec = { open: 0, since: Date.now(), told: false, toldAt: 0, closing: false };
      st.sessions.set(session, rec);
      session.once('close', () => st.sessions.delete(session));
      session.on('stream', (stream) => {
        rec.open++;
        stream.once('close', () => { rec.open--; rec.since = Date.now(); });
        if (st.draining) goAway(session, rec);
      });
    });
  }
  function goAway(session, rec) {
    if (rec.told) return;
    rec.told = true;
    rec.toldAt = Date.now();
    try {
      if (!session.closed && !session.destroyed) session.goaway(0, 2 ** 31 - 1);
    } catch { /* the session ended meanwhile */ }
  }
  function closeSession(session, rec) {
    if (rec.closing) return;
    rec.told = rec.closing = true;
    try { session.close(); } catch { /* ended meanwhile */ }
  }
  function beginH2Drain(st) {
    if (st.draining) return;
    st.draining = true;
    st.start = Date.now();
    if (debug) say(`drain: HTTP/2, ${st.sessions.size} sessions`);
    sweepH2(st);
    st.timer = setInterval(sweepH2, Math.max(10, Math.min(100, grace / 4)), st);
    st.timer.unref();
  }
  function sweepH2(st) {
    const now = Date.now();
    for (const [session, rec] of st.sessions) {
      if (rec.open > 0) goAway(session, rec);
      else if (rec.told) {
        // Told, and no stream since for the grace: a client that got the
        // GOAWAY opens none, and nghttp2 does not end a session that was
        // told with every stream admitted (nor does the client's own
        // close reach it): close() ends it.
        if (now - Math.max(rec.since, rec.toldAt) >= grace) closeSession(session, rec);
      } else if (now - Math.max(rec.since, st.start) >= grace) closeSession(session, rec);
    }
    if (st.sessions.size === 0 && st.timer) {
      clearInterval(st.timer);
      st.timer = null;
    }
  }

  // --- A graceful stop for an app that has none (SOCKD_NODE_STOP_SIGNAL) ----
  // An app with no handler for the signal sockd stops workers with would
  // die at once, in the middle of its requests (Node's default): the
  // preload's own handler, which acts only when it is the signal's one
  // listener as it comes, closes the app's servers on sockd's sockets
  // (the careful drain above) and exits 0 once they are closed. An app
  // that handles the signal itself is left to do it.
  const stopSignal = env.SOCKD_NODE_STOP_SIGNAL || '';
  if (careful && role === 'worker' && /^SIG[A-Z0-9]+$/.test(stopSignal)) {
    try {
      process.on(stopSignal, function sockdStop() {
        if (process.listenerCount(stopSignal) > 1) return; // the app's own
        const servers = listeners.filter((l) => l.state === 'claimed' && l.server && l.server.listening).map((l) => l.server);
        if (debug) say(`${stopSignal} with no handler of the app's: closing its ${servers.length} servers, then exit`);
        let left = servers.length;
        if (left === 0) process.exit(0);
        for (const s of servers) s.close(() => { if (--left === 0) process.exit(0); });
      });
    } catch { /* a signal Node cannot handle: its default stays */ }
  }

  // --- Warm-up before ready (SOCKD_NODE_WARMUP) ----------------------------
  // The worker's ready waits until the app's HTTP(S) servers on sockd's
  // sockets have answered SOCKD_NODE_WARMUP_REQUESTS requests for the path,
  // sent from this process over a private abstract unix socket whose
  // connections are handed to the server as if it had accepted them: the
  // first requests of a cold V8 are slow, and they should not be a
  // client's. One keep-alive connection, one request after another; the
  // warm-up ends at the last answer, the first failed request or the
  // timeout, and the ready goes out then in every case.
  const warmPath = env.SOCKD_NODE_WARMUP || '';
  const warmRequests = Math.floor(positive(env.SOCKD_NODE_WARMUP_REQUESTS, 200));
  const warmMs = positive(env.SOCKD_NODE_WARMUP_MS, 30000);
  const kWarm = Symbol('sockd.warmup');
  let warming = null; // the warm-up's promise, once begun
  let warmed = false;
  function warmingUp(s) {
    return !!s && (s[kWarm] === true || (!!s._parent && s._parent[kWarm] === true));
  }
  function warmUp() {
    if (!warming) warming = warmAll().then(() => { warmed = true; });
    return warming;
  }
  async function warmAll() {
    const servers = listeners.filter((l) => l.state === 'claimed' && l.server.listening && l.server[kState]).map((l) => l.server);
    if (servers.length === 0) return say(`warm-up skipped: no HTTP(S) server listens on sockd's sockets when the worker says it is ready`);
    const t0 = Date.now();
    let answered = 0;
    for (let i = 0; i < servers.length; i++) {
      const r = await warmServer(servers[i], i, t0 + warmMs);
      answered += r.answered;
      if (r.err) {
        say(`warm-up of ${warmPath}: ${r.err}; the worker says it is ready anyway`);
        break;
      }
    }
    say(`warm-up: ${answered} requests for ${warmPath} answered in ${Date.now() - t0} ms`);
  }
  function warmServer(server, i, deadline) {
    const tls = server instanceof https.Server;
    const proto = tls ? https : http;
    const name = `\0sockd-warmup-${pid}-${i}`;
    return new Promise((resolve) => {
      const agent = new proto.Agent({ keepAlive: true, maxSockets: 1 });
      const priv = net.createServer((c) => {
        c[kWarm] = true;
        server.emit('connection', c);
      });
      let answered = 0;
      let over = false;
      const finish = (err) => {
        if (over) return;
        over = true;
        clearTimeout(timer);
        agent.destroy();
        priv.close();
        resolve({ answered, err });
      };
      const timer = setTimeout(() => finish(`${answered} of ${warmRequests} requests answered in ${warmMs} ms`), Math.max(0, deadline - Date.now()));
      priv.on('error', (err) => finish(`no private socket: ${err.message}`));
      const next = () => {
        if (over) return;
        if (answered >= warmRequests) return finish(null);
        const fail = (err) => finish(`request ${answered + 1} of ${warmRequests}: ${err.message}`);
        let req;
        try {
          req = proto.request({ socketPath: name, path: warmPath, agent, rejectUnauthorized: false,
            headers: { host: 'localhost', 'user-agent': 'sockd-warmup' } }, (res) => {
            res.on('error', fail);
            res.on('end', () => { answered++; next(); });
            res.resume();
          });
        } catch (err) {
          return fail(err);
        }
        req.on('error', fail);
        req.end();
      };
      origListen.call(priv, name, next);
    });
  }

  // --- Messages to sockd over Node's IPC channel ---------------------------
  const rawSend = typeof process.send === 'function' ? process.send : null;
  function send(msg) {
    if (!rawSend || !process.connected) return;
    try { rawSend.call(process, { sockd: msg }, undefined, {}, () => {}); } catch { /* channel gone */ }
  }
  let readySent = false;
  function maybeReady() {
    if (readySent || !sends.has('ready')) return;
    if (listeners.some((l) => l.ok && !(l.state === 'claimed' && l.server.listening))) return;
    readySent = true;
    if (warmPath && !warmed) return void warmUp().then(() => send({ ready: true }));
    send({ ready: true });
  }
  // The app's own ready (process.send('ready') or {sockd: {ready: true}})
  // waits for the warm-up too, and every message after it behind it, in
  // order.
  if (warmPath && rawSend) {
    const held = [];
    const saysReady = (m) => m === 'ready' || (!!m && typeof m === 'object' && !!m.sockd && typeof m.sockd === 'object' && m.sockd.ready === true);
    const flush = () => {
      for (const [self, args] of held.splice(0)) {
        try { rawSend.apply(self, args); } catch { /* the channel closed meanwhile */ }
      }
    };
    process.send = function send(msg, ...rest) {
      if (held.length === 0 && (warmed || !saysReady(msg))) return rawSend.call(this, msg, ...rest);
      if (held.length === 0) warmUp().then(flush);
      held.push([this, [msg, ...rest]]);
      return true;
    };
  }
  if (sends.has('requests')) {
    let sent = 0;
    const t = setInterval(() => {
      if (requests !== sent) send({ requests: (sent = requests) });
    }, positive(env.SOCKD_NODE_REQUESTS_MS, 1000));
    t.unref();
  }
  const watchdogUsec = Number(env.WATCHDOG_USEC);
  if (sends.has('watchdog') && watchdogUsec > 0 && (!env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === listenPID)) {
    setInterval(() => send({ watchdog: true }), Math.max(1, watchdogUsec / 2000)).unref();
  }

  if (careful) fastifyDefaults();

  // --- Fastify answers 503 to requests on open connections while it closes
  // (return503OnClosing), which the careful drain exists to serve: its
  // default becomes false in sockd's workers, unless the app sets it. The
  // option is read by the router's setup (lib/route.js), which fastify.js
  // requires through Module._load whether the app used require or import.
  function fastifyDefaults() {
    const Module = require('module');
    const load = Module._load;
    Module._load = function (request, parent) {
      const exp = load.apply(this, arguments);
      if (exp && typeof exp.buildRouting === 'function' && !exp.buildRouting.sockd &&
          /route(\.js)?$/.test(request) && parent && /[\\/]fastify[\\/]/.test(parent.filename || '')) {
        const build = exp.buildRouting;
        const wrapped = function buildRouting(...a) {
          const r = build.apply(this, a);
          if (r && typeof r.setup === 'function') {
            const setup = r.setup;
            r.setup = function (options, ...rest) {
              if (options && typeof options === 'object' && !Object.hasOwn(options, 'return503OnClosing')) {
                options = Object.assign(Object.create(Object.getPrototypeOf(options)), options, { return503OnClosing: false });
              }
              return setup.call(this, options, ...rest);
            };
          }
          return r;
        };
        wrapped.sockd = true;
        exp.buildRouting = wrapped;
      }
      return exp;
    };
  }

  // --- npm start -----------------------------------------------------------
  // npm (Node itself) runs the script with fds 0-2 only and keeps Node's IPC
  // channel for itself. As sockd's worker it passes the listeners on as fds
  // 3, 4, … of the script's shell (which leaves them to node), adds an IPC
  // channel right after them, and relays messages both ways.
  function npmHandOver() {
    const cp = require('child_process');
    const spawn = cp.spawn;
    const fds = [];
    for (let fd = 3; fd < 3 + (Number(env.LISTEN_FDS) || 0); fd++) {
      try { if (fs.fstatSync(fd).isSocket()) fds.push(fd); } catch { break; }
    }
    const whole = fds.length === Number(env.LISTEN_FDS);
    cp.spawn = function (file, args, options) {
      const o = Array.isArray(args) ? options : args;
      if (!whole || !o || !o.env || o.env.npm_lifecycle_event === undefined) return spawn.apply(this, arguments);
      const stdio = o.stdio === undefined || o.stdio === 'inherit' ? [0, 1, 2] : o.stdio;
      if (!Array.isArray(stdio) || stdio.length !== 3) return spawn.apply(this, arguments);
      const channel = typeof process.send === 'function' && process.connected;
      const opts = { ...o, stdio: [...stdio, ...fds, ...(channel ? ['ipc'] : [])] };
      if (channel) opts.serialization = 'json';
      const child = Array.isArray(args) ? spawn.call(this, file, args, opts) : spawn.call(this, file, opts);
      if (channel) relay(child);
      return child;
    };
  }
  function relay(child) {
    const up = (msg) => {
      if (process.connected) process.send(msg, undefined, {}, () => {});
    };
    const down = (msg) => {
      if (child.connected) child.send(msg, undefined, {}, () => {});
    };
    child.on('message', up);
    process.on('message', down);
    child.once('exit', () => {
      process.removeListener('message', down);
      if (process.channel && process.listenerCount('message') === 0) process.channel.unref();
    });
  }
})();
