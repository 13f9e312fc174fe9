package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/internal/output"
)

const logsHelp = "Prints the recent lines the workers wrote to stdout and stderr, attributed: \"[w1 g3] line\"\n" +
	"(worker slot 1, generation 3), \"[w1 g3 err]\" for stderr, \"+\" on a piece of a cut long line.\n" +
	"sockd keeps the last lines of every worker in memory, those of exited and crashed workers\n" +
	"too, whatever --worker-output says; -f then follows new lines until interrupted or sockd stops.\n"

// logsCommand is `sockd logs`.
func logsCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockd logs", flag.ContinueOnError)
	tgt := addTarget(fs)
	slot := fs.Int("worker", -1, "only the workers in slot `N`")
	gen := fs.Int("generation", -1, "only the workers of generation `G`")
	wpid := fs.Int("worker-pid", 0, "only the worker process `PID` (of a crashed worker and its replacement, same slot and generation, the crashed one)")
	var follow bool
	fs.BoolVar(&follow, "follow", false, "after the recent lines, print new ones as they come")
	fs.BoolVar(&follow, "f", false, "short for --follow")
	var lines int
	fs.IntVar(&lines, "lines", output.DefaultTail, "how many of the most recent lines to print first (`N`; 0: none)")
	fs.IntVar(&lines, "n", output.DefaultTail, "short for --lines `N`")
	withTime := fs.Bool("time", false, "print the time sockd read each line before it")
	asJSON := fs.Bool("json", false, "print each line as the JSON record sockd sends (worker, generation, pid, stream, priority, time, message)")
	fs.Usage = usageFunc(fs, "sockd logs [-f] [--worker N] [--generation G] [--worker-pid PID] [-n LINES] [--time|--json] [--control PATH|--pid PID]", logsHelp)
	if err := parseFlags(fs, args, getenv, stdout); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sockd logs: unexpected argument %q (see sockd logs --help)", fs.Arg(0))
	}
	if lines < 0 {
		return usagef("sockd logs: -n %d: want a number of lines >= 0", lines)
	}
	q := struct {
		Command string `json:"command"`
		output.Query
	}{Command: "logs", Query: output.Query{Lines: &lines, Follow: follow}}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["worker"] {
		if *slot < 0 {
			return usagef("sockd logs: --worker %d: want a slot, 0 or more", *slot)
		}
		q.Worker = slot
	}
	if set["generation"] {
		if *gen < 1 {
			return usagef("sockd logs: --generation %d: want a generation, 1 or more", *gen)
		}
		q.Generation = gen
	}
	if set["worker-pid"] {
		if *wpid < 1 {
			return usagef("sockd logs: --worker-pid %d: want a process id", *wpid)
		}
		q.PID = wpid
	}
	path, err := tgt.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	bw := bufio.NewWriterSize(stdout, 64<<10)
	var buf []byte
	emit := func(r output.Record) error {
		if *asJSON {
			buf, _ = json.Marshal(r)
			buf = append(buf, '\n')
		} else {
			buf = r.AppendText(buf[:0], *withTime)
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		if follow {
			return bw.Flush()
		}
		return nil
	}
	// A sockd that handed over to a new one as the request came says so
	// before any record, and after the last one when it was following:
	// ask again (at most 4 more times, as control.Call). The new sockd's
	// tail holds only its own workers' lines, which the old one never had.
	for range 5 {
		if err = readLogs(ctx, path, q, follow, tgt.check, emit); !errors.Is(err, output.ErrRetry) {
			break
		}
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if ctx.Err() != nil || errors.Is(err, syscall.EPIPE) {
		return nil // interrupted (the way out of -f), or the reader went away (| head)
	}
	return err
}

// readLogs sends the logs request q to the sockd at path and hands each
// record to fn.
func readLogs(ctx context.Context, path string, q any, follow bool, check func(*net.UnixConn) error, fn func(output.Record) error) error {
	dctx, cancel := context.WithTimeout(ctx, defaultClientTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "unix", path)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", control.ErrUnreachable, path, err)
	}
	defer c.Close()
	if check != nil {
		if err := check(c.(*net.UnixConn)); err != nil {
			return err
		}
	}
	// Interrupted (Ctrl-C ends -f): the read ends, and so does the command.
	defer context.AfterFunc(ctx, func() { c.Close() })()
	b, _ := json.Marshal(q)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%w at %s: %w", control.ErrUnreachable, path, err)
	}
	// The answer's first line, and without -f the whole tail, within the
	// time sockd status gets: a sockd that does not answer (stopped, out
	// of descriptors) must not hang the command. Following, lines come
	// when the workers write them.
	c.SetReadDeadline(time.Now().Add(defaultClientTimeout))
	r := &clearAfterHead{c: c, follow: follow}
	err = output.ReadLogs(r, fn)
	if errors.Is(err, output.ErrNoAnswer) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w at %s: %w", control.ErrUnreachable, path, err)
	}
	return err
}

// clearAfterHead bounds the wait for the answer's first line (sockd's
// ok); then, following, it lifts the deadline (lines come when workers
// write them), else it renews it at each read: the tail is sent at once,
// and a slow reader of this command's stdout (| less) only makes the reads
// come later.
type clearAfterHead struct {
	c      net.Conn
	follow bool
	done   bool
}

func (h *clearAfterHead) Read(p []byte) (int, error) {
	if h.done && !h.follow {
		h.c.SetReadDeadline(time.Now().Add(defaultClientTimeout))
	}
	n, err := h.c.Read(p)
	if !h.done && bytes.IndexByte(p[:n], '\n') >= 0 {
		h.done = true
		if h.follow {
			h.c.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}
