package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/notify"
)

// startDirect runs the peer's app without a supervisor: the runner binds
// the sockets with sockd's own package activation (Go's listener,
// SO_REUSEADDR, backlog somaxconn, one SO_REUSEPORT socket per worker in
// reuseport mode) and starts n workers on fd 3 itself.
//
// The restart-* peers (peer.reload) also reload, by hand the way sockd
// does it: start n new workers on the same sockets, wait for their
// READY=1, then SIGTERM the old ones. They show what reloads cost an app
// without sockd (its start-up, its warm-up), to compare sockd's reloads
// with.
func (s *Suite) startDirect(p *peer, n int) (*instance, error) {
	in, err := s.newInstance(p, n)
	if err != nil {
		return nil, err
	}
	d := &direct{s: s, in: in, stopped: make(chan struct{})}
	if err := d.bind(); err != nil {
		return nil, err
	}
	// The restart peers, like sockd, wait for READY=1 on a notify socket
	// (the Node app then runs systemd-notify(1), as under sockd); the
	// plain direct peers only need it for the Go demo worker, which writes
	// no ready file.
	in.readyFile = filepath.Join(in.dir, "ready")
	if p.app == "go" || p.reload {
		if p.app == "go" {
			in.readyFile = ""
		}
		if err := d.listenNotify(); err != nil {
			in.stop()
			return nil, err
		}
	}
	if err := d.spawnGen(); err != nil {
		in.stop()
		return nil, err
	}
	in.workers, in.stopFn = d.workers, d.stop
	if p.reload {
		in.reloadFn = d.reload
	}
	return in.ready(in.waitReady(30*time.Second, "workers ready", func() bool { return d.ready() >= n }))
}

// direct is a direct peer's workers.
type direct struct {
	s       *Suite
	in      *instance
	fds     []int          // the listening sockets, one per worker in reuseport mode
	ns      *notify.Server // nil: readiness from the ready file
	readies atomic.Int64   // READY=1 messages so far
	stopped chan struct{}  // closed by stop: pending reloads give up
	stop1   sync.Once

	mu    sync.Mutex
	gen   int
	procs []*proc // the workers not reaped yet
}

func (d *direct) bind() error {
	spec := activation.Spec{Name: "http", Network: "tcp", Address: d.in.addr}
	set, err := activation.Bind(context.Background(), []activation.Spec{spec},
		activation.BindOptions{ReusePort: d.in.peer.mode == "reuseport", Slots: d.in.n})
	if err != nil {
		return err
	}
	d.fds = set[0].FDs()
	d.in.closers = append(d.in.closers, func() { set.Close() })
	return nil
}

// listenNotify serves a NOTIFY_SOCKET for the workers and counts their
// READY=1 messages.
func (d *direct) listenNotify() error {
	ns, err := notify.Listen(fmt.Sprintf("@sockd-bench/%d/%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		return err
	}
	d.ns = ns
	d.in.closers = append(d.in.closers, func() { ns.Close() })
	go func() {
		for {
			m, err := ns.Receive()
			var drop *notify.DropError
			if err != nil && !errors.As(err, &drop) {
				return
			}
			if err == nil && m.Ready() {
				d.readies.Add(1)
			}
		}
	}()
	return nil
}

// ready is the number of workers that said they are ready so far.
func (d *direct) ready() int {
	if d.ns != nil {
		return int(d.readies.Load())
	}
	return len(d.in.readyPIDs())
}

// spawnGen starts the next generation of workers. LISTEN_PID must be the
// worker's own pid: a shell sets it and execs.
func (d *direct) spawnGen() error {
	d.mu.Lock()
	d.gen++
	gen := d.gen
	d.mu.Unlock()
	in, s := d.in, d.s
	var prs []*proc
	for i := 0; i < in.n; i++ {
		argv := append([]string{"/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`}, s.appCommand(in.peer.app)...)
		if i == 0 && gen == 1 {
			s.note(in.peer.name, argv)
		}
		env := []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "SOCKD_WORKER=" + strconv.Itoa(i), "SOCKD_GENERATION=" + strconv.Itoa(gen),
			"BENCH_READY_FILE=" + in.readyFile}
		if d.ns != nil {
			env = append(env, "NOTIFY_SOCKET="+d.ns.Addr())
		}
		pr, err := s.procs.spawn(spawnSpec{name: fmt.Sprintf("%s[%d.%d]", in.peer.name, gen, i), argv: argv, env: env,
			extra: []int{d.fds[i%len(d.fds)]}, log: filepath.Join(in.dir, "workers.log"), server: true, pgrp: true})
		if err != nil {
			for _, pr := range prs {
				unix.Kill(pr.pid, unix.SIGKILL)
			}
			return err
		}
		prs = append(prs, pr)
	}
	d.mu.Lock()
	d.procs = append(d.procs, prs...)
	d.mu.Unlock()
	return nil
}

// live returns the workers not reaped yet: a reaped worker's pid may be
// another process's by now.
func (d *direct) live() []*proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*proc
	for _, pr := range d.procs {
		if !pr.exited() {
			out = append(out, pr)
		}
	}
	d.procs = out
	return append([]*proc(nil), out...)
}

func (d *direct) workers() []int {
	var pids []int
	for _, pr := range d.live() {
		pids = append(pids, pr.pid)
	}
	return pids
}

// reload starts a new generation and, once all of it said READY=1,
// SIGTERMs the old one; it returns at once (reloadOnce watches).
func (d *direct) reload() (time.Duration, error) {
	old := d.live()
	want := d.ready() + d.in.n // this generation's READY=1s on top of all so far
	if err := d.spawnGen(); err != nil {
		return 0, err
	}
	go func() {
		deadline := time.Now().Add(60 * time.Second)
		for d.ready() < want {
			select {
			case <-d.stopped:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return // the reload is not over: reloadOnce reports it
			}
		}
		for _, pr := range old {
			if !pr.exited() {
				unix.Kill(pr.pid, unix.SIGTERM)
			}
		}
	}()
	return 0, nil
}

func (d *direct) stop() error {
	d.stop1.Do(func() { close(d.stopped) })
	procs := d.live()
	for _, pr := range procs {
		unix.Kill(pr.pid, unix.SIGTERM)
	}
	var err error
	for _, pr := range procs {
		select {
		case <-pr.done:
		case <-time.After(30 * time.Second):
			unix.Kill(pr.pid, unix.SIGKILL)
			<-pr.done
			err = fmt.Errorf("%s: a worker did not stop", d.in.peer.name)
		}
	}
	return err
}
