package pool

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The pool as the workers' notifier (the seed's answer to shared state:
// one process watches, tells every worker): a signal or a message to all
// of them, or to some.

// Selector picks workers: a slot, a generation, or both; a negative
// field matches every one.
type Selector struct{ Slot, Generation int }

// All is every worker.
var All = Selector{Slot: -1, Generation: -1}

func (s Selector) matches(w *worker) bool {
	return (s.Slot < 0 || w.slot == s.Slot) && (s.Generation < 0 || w.gen == s.Generation)
}

// ErrNoWorker: no live worker matches (or, for Send, none of those has
// Node's IPC channel).
var ErrNoWorker = errors.New("no such worker")

type (
	signalRequest struct {
		sig   unix.Signal
		sel   Selector
		reply chan tellReply
	}
	sendRequest struct {
		msg   []byte
		sel   Selector
		reply chan tellReply
	}
	tellReply struct {
		n   int
		err error
	}
)

func (r signalRequest) apply(p *Pool) { r.reply <- p.onSignal(r.sig, r.sel) }
func (r sendRequest) apply(p *Pool)   { r.reply <- p.onSend(r.msg, r.sel) }

// Signal sends sig to every live worker sel picks that sockd has not
// asked to stop (with what each started: its process group, its cgroup):
// SIGUSR1 to reopen logs, SIGHUP to re-read an app's own configuration
// without a reload. It returns how many workers got it.
func (p *Pool) Signal(ctx context.Context, sig unix.Signal, sel Selector) (int, error) {
	reply := make(chan tellReply, 1)
	return p.ask(ctx, signalRequest{sig, sel, reply}, reply)
}

// Send writes msg, one JSON value, on the Node IPC channel of every live
// worker sel picks (a Node worker gets it with process.on('message')). It
// returns how many workers it was written to.
func (p *Pool) Send(ctx context.Context, msg []byte, sel Selector) (int, error) {
	reply := make(chan tellReply, 1)
	return p.ask(ctx, sendRequest{msg, sel, reply}, reply)
}

func (p *Pool) ask(ctx context.Context, ev loopEvent, reply chan tellReply) (int, error) {
	if !p.post(ev) {
		return 0, ErrStopping
	}
	select {
	case r := <-reply:
		return r.n, r.err
	case <-p.done:
		return 0, ErrStopping
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *Pool) onSignal(sig unix.Signal, sel Selector) tellReply {
	n := 0
	for _, w := range p.st.byPID {
		if w.stopSent || !sel.matches(w) {
			continue
		}
		if err := p.env.signal(w, sig); err != nil {
			p.wlog(w).Warn("cannot signal worker", "error", err)
			continue
		}
		n++
	}
	if n == 0 {
		return tellReply{err: fmt.Errorf("%w: none %s serves", ErrNoWorker, sel)}
	}
	p.log.Info("signal sent to workers", "event", "worker_signal", "signal", unix.SignalName(sig), "workers", n)
	return tellReply{n: n}
}

func (p *Pool) onSend(msg []byte, sel Selector) tellReply {
	n, matched, backlog := 0, 0, 0
	for _, w := range p.st.byPID {
		if w.stopSent || !sel.matches(w) {
			continue
		}
		matched++
		switch err := p.env.send(w, msg); {
		case err == nil:
			n++
		case errors.Is(err, errBacklog):
			backlog++
			p.wlog(w).Warn("message not sent: the worker reads none", "event", "node_ipc", "error", err)
		}
	}
	switch {
	case matched == 0:
		return tellReply{err: fmt.Errorf("%w: none %s serves", ErrNoWorker, sel)}
	case n == 0 && backlog > 0:
		return tellReply{err: fmt.Errorf("%w: %d match; %d of them read no messages (%v)", ErrNoWorker, matched, backlog, errBacklog)}
	case n == 0:
		return tellReply{err: fmt.Errorf("%w: %d match, and none has Node's IPC channel (run them with --ready node-ipc or node-listen)", ErrNoWorker, matched)}
	}
	return tellReply{n: n}
}

func (s Selector) String() string {
	switch {
	case s.Slot >= 0 && s.Generation >= 0:
		return fmt.Sprintf("in slot %d of generation %d", s.Slot, s.Generation)
	case s.Slot >= 0:
		return fmt.Sprintf("in slot %d", s.Slot)
	case s.Generation >= 0:
		return fmt.Sprintf("of generation %d", s.Generation)
	}
	return "at all"
}
