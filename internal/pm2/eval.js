// Evaluates a PM2 ecosystem file the way `pm2 start FILE` does and writes
// what it exports, as JSON, to fd 3. sockd runs it as
//
//   node -e <this file> -- FILE MODE
//
// in the directory relative paths resolve against (see node.go). MODE is
// "module" (.js, .cjs, .mjs: require(), as PM2 does, falling back to
// import() for ES modules) or "expression" (a .json file that is not strict
// JSON: PM2 evaluates those as a JavaScript expression).
//
// Output on fd 3, one JSON object:
//   {"kind": "object"|"array"|"function"|"promise"|"string"|..., "config": VALUE}
//   {"error": {"name": ..., "message": ..., "stack": ...}}
'use strict';
const fs = require('fs');
const url = require('url');
const vm = require('vm');

// Descriptors sockd inherited without close-on-exec (listed by node.go):
// the file must not see them. They are closed before it runs.
for (const fd of (process.env.SOCKD_PM2_CLOSE_FDS || '').split(',')) {
  if (fd !== '') try { fs.closeSync(Number(fd)); } catch (e) { /* gone already */ }
}
delete process.env.SOCKD_PM2_CLOSE_FDS;

const [file, mode] = process.argv.slice(1);
let written = false;

function write(text) {
  if (written) return;
  written = true;
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) off += fs.writeSync(3, buf, off);
  fs.closeSync(3);
}

function fail(e) {
  const str = (x) => { try { return String(x); } catch (_) { return ''; } };
  const isObj = e !== null && (typeof e === 'object' || typeof e === 'function');
  write(JSON.stringify({ error: {
    name: isObj ? str(e.name) : 'Error',
    message: isObj ? str(e.message) : str(e),
    stack: isObj ? str(e.stack).slice(0, 4096) : '',
  } }));
  // Uncaught, node prints the error decorated with FILE:LINE and the
  // offending source line on stderr, which node.go reads when the stack
  // does not say where (syntax errors in ES modules).
  process.nextTick(() => { throw e; });
  // Should the file have made uncaught errors harmless, end all the same.
  setTimeout(() => process.exit(1), 500).unref();
}

function done(v) {
  // An ES module's namespace: PM2 users write `export default {apps}`.
  if (v !== null && typeof v === 'object' && (v[Symbol.toStringTag] === 'Module' || v.__esModule === true) &&
      'default' in v && !('apps' in v)) {
    v = v.default;
  }
  let kind = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
  if (kind === 'object' && typeof v.then === 'function') kind = 'promise';
  if (kind === 'function' || kind === 'promise' || kind === 'undefined' || kind === 'symbol') {
    write(JSON.stringify({ kind }));
    process.exit(0);
  }
  let json;
  try {
    json = JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? x.toString() : x));
  } catch (e) {
    return fail(e);
  }
  write('{"kind":' + JSON.stringify(kind) + ',"config":' + json + '}');
  // Whatever the file left running (timers, sockets) is not waited for:
  // PM2 reads module.exports as soon as require returns.
  process.exit(0);
}

function load() {
  if (mode === 'expression') {
    const src = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
    return done(vm.runInThisContext('(' + src + ')', { filename: file, timeout: 1000 }));
  }
  if (!file.endsWith('.mjs')) {
    let v;
    try {
      v = require(file);
    } catch (e) {
      if (e.code !== 'ERR_REQUIRE_ESM' && e.code !== 'ERR_REQUIRE_ASYNC_MODULE') throw e;
      return importIt();
    }
    return done(v);
  }
  return importIt();
}

function importIt() {
  return import(url.pathToFileURL(file).href).then(done, fail);
}

try {
  load();
} catch (e) {
  fail(e);
}
