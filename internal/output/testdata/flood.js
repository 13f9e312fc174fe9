// A Node worker flooding its stdout the way console.log does: write() on
// every line, never waiting for 'drain'. Node writes to a pipe
// asynchronously: what the pipe does not take waits in Node's memory.
// Usage: node flood.js LINES
const n = Number(process.argv[2] || 500000);
let i = 0, peak = 0;
function burst() {
  for (let k = 0; k < 10000 && i < n; k++, i++) {
    process.stdout.write(i + ' ' + 'x'.repeat(i % 97) + '\n');
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  if (i < n) setImmediate(burst);
  else process.stdout.end(() => process.stderr.write(`node peak rss ${peak} buffered ${process.stdout.writableLength}\n`));
}
burst();
