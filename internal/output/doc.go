// Package output relays what sockd's workers write to their stdout and
// stderr, line by line and attributed to the worker (slot, generation,
// pid, stream), to the journal over its native protocol
// (systemd-journald.service(8), sd_journal_send(3),
// https://systemd.io/JOURNAL_NATIVE_PROTOCOL/), or to sockd's own
// stdout/stderr in one of three formats (raw, prefix, json), and keeps the
// recent lines of every worker in a bounded ring for `sockd logs`.
//
// # Pipes
//
// Each worker gets one pipe for its stdout and one for its stderr
// (Relay.Open, Pipes.FDs). Pipes, not socketpairs: a program may
// open("/dev/stdout") or "/dev/stderr" (shell scripts `echo >/dev/stderr`
// do), which works on a pipe and fails with ENXIO on a socket; pipes are
// what every runtime expects of a non-terminal stdout; and a pipe's
// capacity can be raised (Options.PipeSize). The worker's ends are
// blocking, as programs expect; sockd's are non-blocking and read by one
// goroutine per stream through Go's poller: no thread per pipe, no
// goroutine per line, a deadline interrupts a read without losing a byte.
// Two pipes keep the order of lines per stream; between a worker's stdout
// and stderr the order is the order sockd read them (as with any two
// pipes: journald's own stream transport keeps it only because systemd
// gives both fds the same socket).
//
// # Lines
//
// Only "\n" ends a line. A line of up to MaxLine bytes (DefaultMaxLine,
// 64 KiB) is relayed whole; a longer one is cut into pieces of at most
// MaxLine bytes (never inside a UTF-8 character), each piece after the
// first marked Continued (journal: SOCKD_CONTINUED=1, json:
// "continued":true, prefix: "+" in the prefix) and counted once in Cut:
// nothing is dropped, and the pieces join to the line. A stream that ends
// without a final newline delivers its last bytes as a line (NoNewline).
// Bytes are carried as they are: NUL, CR, invalid UTF-8 and binary reach
// the journal as written (a native field may hold any bytes) and the raw
// and prefix formats unchanged; the json format and the `sockd logs` wire
// format put U+FFFD for each invalid byte in the text and the exact bytes
// in base64 beside it (format.go, logs.go).
//
// The priority of a line is, first, that of an sd-daemon(3) "<N>" prefix
// (N 0-7; the prefix is then not part of the journal's MESSAGE), else the
// level of a line that is one JSON object with a level field (pino,
// bunyan, Fastify, winston, Go's slog, hclog's "@level", zap, GCP's
// severity: jsonscan.go has the mapping), else 6 (info) for stdout and 3
// (err) for stderr.
//
// # Back-pressure, not drops
//
// A stream's reader delivers what one read returned (up to 64 KiB, ~1000
// short lines) to the ring and the sink before it reads again, and yields
// the P in between (sockd runs with GOMAXPROCS=1). Memory per stream is
// one buffer of at most MaxLine + 128 KiB. When the sink is slower than
// the worker (journald busy, a terminal paused), the reader waits in the
// sink, the pipe fills, and the worker's write(2) blocks: the worker is
// slowed, sockd's memory does not grow, nothing is dropped. The ring never
// blocks: it forgets its oldest lines. Only a `sockd logs -f` follower that
// falls behind by more than a ring misses lines, and is told how many.
//
// Node writes to a pipe asynchronously: process.stdout.write (and
// console.log) return at once and what the pipe does not take waits in
// Node's heap, unbounded unless the app waits for 'drain'. Back-pressure
// from sockd therefore moves a flooding Node app's backlog into the app's
// own memory (measured in BENCHMARKS.md: a Node worker writing 500,000
// lines).
//
// # The end of a worker
//
// A pipe ends when every process holding its write end has closed it: the
// reader reads until end of file, so lines written just before the worker
// exits arrive. A process the worker started (and that outlived it) may
// hold the pipe forever; once sockd knows the worker's processes are gone
// it calls Pipes.Close(drain), which reads on for at most drain, then
// reads what the pipe still holds without waiting, delivers it and closes
// the pipe (a later write by the straggler gets EPIPE).
//
// # Across an upgrade, and after a SIGKILL
//
// handoff.go: Relay.Export, Export.Stop, Relay.Adopt and Adoption.Start
// move the read ends to a new sockd with no line lost or repeated (the
// partial line in the old buffer travels in the Switch), and name them
// for systemd's fd store.
//
// # sockd logs
//
// logs.go: the request and the stream of records on the control socket,
// the server side (Relay.ServeLogs) and the client's (ReadLogs,
// Record.AppendText).
package output
