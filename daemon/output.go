package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/output"
)

// workerOutput relays what the workers write (internal/output) to the
// sink --worker-output picks, which a reload may change.
type workerOutput struct {
	relay          *output.Relay
	stdout, stderr io.Writer
	log            hclog.Logger
	sink           atomic.Value // sinkBox
	mu             sync.Mutex
	mode           string // the sink's mode, resolved (journal, prefix, json, raw)
	name           string
	jconn          *journal.Conn
	// held describes the listeners sockd holds, for the hint to a worker
	// that says an address is in use; hinted: when it was last given.
	held   string
	hinted atomic.Int64
}

type sinkBox struct{ output.Sink }

func newWorkerOutput(c *config.Run, stdout, stderr io.Writer, log hclog.Logger) *workerOutput {
	if stdout == nil && stderr == nil && output.SameStream(os.Stdout, os.Stderr) {
		// 2>&1 into a pipe or a terminal: one file, so that its lock
		// keeps every write whole (two files writing more than PIPE_BUF
		// to one pipe at once splice each other's lines), sockd's own
		// log records included.
		stdout = os.Stderr
	}
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	o := &workerOutput{stdout: stdout, stderr: stderr, log: log}
	o.relay = output.New(output.Options{Sink: o, Logger: log})
	o.apply(c)
	return o
}

// Write hands a batch to the sink in force.
func (o *workerOutput) Write(b *output.Batch) error {
	o.hintAddressInUse(b)
	return o.sink.Load().(sinkBox).Write(b)
}

// hintAddressInUse: a worker that says an address is in use (Node's
// EADDRINUSE, Python's and Go's "address already in use") most likely
// binds a port itself that sockd holds: say once a minute what to do.
// The most common mistake of an app new to sockd, in any language.
func (o *workerOutput) hintAddressInUse(b *output.Batch) {
	for _, l := range b.Lines {
		if !bytes.Contains(l.Data, []byte("EADDRINUSE")) && !bytes.Contains(l.Data, []byte("ddress already in use")) { // Address, address
			continue
		}
		now := time.Now().UnixNano()
		if last := o.hinted.Load(); last != 0 && now-last < int64(time.Minute) || !o.hinted.CompareAndSwap(last, now) {
			return
		}
		log := o.log.With("event", "hint_address_in_use", "worker", b.Worker.Slot, "generation", b.Worker.Generation, "worker_pid", b.Worker.PID)
		if o.held == "" {
			log.Warn("a worker says an address is in use: workers that each bind one port themselves cannot all have it (only the first can); " +
				"let sockd hold it (--listen, or env.PORT of a PM2 app) and the workers take it from sockd (fds 3 on, LISTEN_FDS; Node.js apps through sockd's preload)")
			return
		}
		log.Warn("a worker says an address is in use: if it binds its port itself, it cannot bind one sockd holds; "+
			"a worker takes its sockets from sockd (fds 3 on, LISTEN_FDS, as systemd's socket activation; Node.js apps through sockd's preload), "+
			"or binds only ports sockd does not hold", "held", o.held)
		return
	}
}

// heldListeners describes ls for a log record: "http=tcp://[::]:3000".
func heldListeners(ls activation.Set) string {
	var parts []string
	for _, l := range ls {
		if l.Network == "unix" {
			parts = append(parts, l.Name+"=unix://"+l.Addr)
		} else {
			parts = append(parts, l.Name+"="+l.Network+"://"+l.Addr)
		}
	}
	return strings.Join(parts, " ")
}

// resolveMode is --worker-output's auto: the journal under systemd (when
// sockd's stderr is the journal), json beside sockd's own json logs, else
// prefix.
func resolveMode(c *config.Run, underJournal bool) string {
	switch m := c.WorkerOutput; {
	case m != "" && m != "auto":
		return m
	case underJournal:
		return "journal"
	case c.LogFormat == "json":
		return "json"
	default:
		return "prefix"
	}
}

// apply puts c's --worker-output and --name in force (at start and for
// each configuration a reload brings).
func (o *workerOutput) apply(c *config.Run) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mode := resolveMode(c, journal.Enabled())
	if mode == o.mode && c.Name == o.name {
		return
	}
	sink, err := o.newSink(mode, c.Name)
	if err != nil {
		o.log.Warn("worker output: cannot reach the journal; prefixing lines on stdout and stderr instead", "event", "output", "error", err)
		mode = "prefix"
		sink, _ = o.newSink(mode, c.Name)
	}
	o.sink.Store(sinkBox{sink})
	if o.mode != "" {
		o.log.Info("worker output changed", "event", "output", "mode", mode, "from", o.mode)
	}
	o.mode, o.name = mode, c.Name
}

func (o *workerOutput) newSink(mode, name string) (output.Sink, error) {
	if mode != "journal" {
		return output.NewWriterSink(output.WriterOptions{Mode: output.Mode(mode), Stdout: o.stdout, Stderr: o.stderr, Name: name})
	}
	if o.jconn == nil {
		c, err := journal.Dial("")
		if err != nil {
			return nil, err
		}
		o.jconn = c
	}
	// What journald refuses (an entry over its limits, journald gone)
	// still reaches sockd's stderr, which systemd journals too.
	fallback, _ := output.NewWriterSink(output.WriterOptions{Mode: output.Prefix, Stdout: o.stderr, Stderr: o.stderr, Name: name})
	return output.NewJournalSink(output.JournalOptions{Conn: o.jconn, Name: name, Fallback: fallback}), nil
}

// Mode is the output mode in force.
func (o *workerOutput) Mode() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mode
}

// close delivers what the pipes of the workers (all gone) still hold.
func (o *workerOutput) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.relay.Close(ctx); err != nil {
		o.log.Warn("worker output not all delivered", "event", "output", "error", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.jconn != nil {
		o.jconn.Close()
	}
}

// Logs answers `sockd logs` (the control socket's logs command): line is
// the request as the client sent it.
func (d *Daemon) Logs(ctx context.Context, c net.Conn, line []byte) error {
	var q output.Query
	if err := json.Unmarshal(line, &q); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	return d.out.relay.ServeLogs(ctx, c, q)
}
