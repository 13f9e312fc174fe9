package steering

import (
	"errors"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Sampling costs nothing while no connection waits: Steering's goroutine
// blocks in epoll_wait on an edge-triggered EPOLLIN of every socket of
// every group. epoll checks a socket again when it delivers the event, so
// it reports a socket only if its queue is not empty when sockd looks: a
// connection a worker took at once never shows, one that waits does,
// which is what a stall is. It then samples every Period (one sock_diag
// dump per group) until Quiet has passed without a connection waiting in
// an eligible or excluded socket's queue, and blocks again. While a
// worker's weight ramps up (slow start) it also wakes every ramp step to
// update the program, for as long as the ramp lasts.
//
// sockd never accepts: its epoll entry sits on each socket's wait queue
// as a non-exclusive waiter, which the kernel wakes besides (not instead
// of) the one exclusive waiter it wakes per connection (a worker in
// accept(2), or an EPOLLEXCLUSIVE epoll): the workers' wakeups are what
// they were. Each new connection does wake sockd's thread inside
// epoll_wait for that check (a few microseconds in the kernel; it does not
// return to Go when the queue is empty again); with no connection at all,
// nothing runs.

func (s *Steering) run() {
	defer close(s.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(s.ep, events, s.idleTimeout())
		// EINTR (a signal: Go's preemption SIGURG, sockd's SIGCHLD) is
		// no event, and events still holds the last wait's: it was
		// taken for traffic and sampled for Quiet, in CI once during
		// a ramp without a connection. It is a ramp step (the timeout
		// restarts, so signals in a row would delay the steps).
		intr := errors.Is(err, unix.EINTR)
		if err != nil && !intr {
			s.log.Error("steering stops sampling", "error", err)
			return
		}
		select {
		case <-s.closing:
			return
		default:
		}
		if intr || n == 0 || onlyKicks(events[:n]) {
			if n > 0 {
				var b [8]byte
				unix.Read(s.kick, b[:])
			}
			s.mu.Lock()
			s.update(s.opts.Now()) // a ramp step
			s.mu.Unlock()
			continue
		}
		if !s.sampleWhileBusy(events) {
			return
		}
	}
}

// onlyKicks: the events are the kick eventfd's alone.
func onlyKicks(events []unix.EpollEvent) bool {
	for _, ev := range events {
		if ev.Fd != kickFd {
			return false
		}
	}
	return len(events) > 0
}

// idleTimeout is how long the idle wait may last, in milliseconds: until
// the next ramp step while a ramp runs, else for ever (-1).
func (s *Steering) idleTimeout() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.ramp.Duration
	if d <= 0 {
		return -1
	}
	now := s.opts.Now()
	for _, e := range s.entries {
		if e.State == Ready && now.Sub(e.Since) < d {
			return int(max(d/50, s.opts.Period) / time.Millisecond)
		}
	}
	return -1
}

// sampleWhileBusy samples every Period until Quiet passes without
// traffic; false when Steering is closing.
func (s *Steering) sampleWhileBusy(events []unix.EpollEvent) bool {
	tick := time.NewTicker(s.opts.Period)
	defer tick.Stop()
	s.setSampling(true)
	defer s.setSampling(false)
	last := s.opts.Now()
	for {
		waiting := s.drainEvents(events)
		now := s.opts.Now()
		if s.sample(now) || waiting {
			last = now
		} else if now.Sub(last) >= s.opts.Quiet {
			return true
		}
		select {
		case <-s.closing:
			return false
		case <-tick.C:
		}
	}
}

func (s *Steering) setSampling(on bool) {
	s.mu.Lock()
	s.stats.sampling = on
	s.mu.Unlock()
}

// drainEvents takes the pending epoll events: whether a connection
// arrived since the last call and still waits.
func (s *Steering) drainEvents(events []unix.EpollEvent) bool {
	arrived := false
	for {
		n, err := unix.EpollWait(s.ep, events, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		for _, ev := range events[:max(n, 0)] {
			arrived = arrived || ev.Fd >= 0
		}
		if n < len(events) {
			return arrived
		}
	}
}

// sample reads every group's queues, lets the detectors judge them and
// updates the programs. It reports whether any eligible or excluded
// socket had connections waiting.
func (s *Steering) sample(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.stats.samples++
	base, why := Weights(s.entries, now, s.ramp, nil)
	eligible := make([]bool, len(s.entries))
	for k := range eligible {
		eligible[k] = base[k] > 0 && why[k] != ReasonFallback
	}
	busy := false
	for _, g := range s.groups {
		depth := s.depths(g)
		before := g.det.Excluded(len(s.entries))
		g.det.Observe(now, depth, eligible)
		after := g.det.Excluded(len(s.entries))
		for k := range depth {
			if (eligible[k] || after[k]) && depth[k] > 0 {
				busy = true
			}
			if before[k] != after[k] {
				msg, event := "worker stalled: no new connections for it until its queue drains", "steer_stalled"
				switch {
				case after[k]:
				case !eligible[k]:
					// Not readmitted: it left (a reload or scale-down
					// retired it), which excludes it for good.
					msg, event = "stalled worker no longer judged: it is leaving", "steer_stall_over"
				default:
					msg, event = "stalled worker took its queue: new connections for it again", "steer_readmitted"
				}
				s.log.Info(msg, "event", event, "worker", s.entries[k].Worker, "listener", g.l.Name, "socket", k, "queued", depth[k])
			}
		}
	}
	s.update(now)
	return busy
}

// depths samples a group's accept queues: sock_diag, or TCP_INFO (or
// SIOCINQ) on the sockets that have a worker when sock_diag fails. -1:
// not sampled.
func (s *Steering) depths(g *group) []int {
	d := make([]int, len(s.entries))
	for k := range d {
		d[k] = -1
	}
	if s.diag != nil {
		err := s.diag.dump(g.family, g.proto, g.port, func(ino uint64, q int) {
			if k, ok := g.inodes[ino]; ok && k < len(d) {
				d[k] = q
			}
		})
		if err == nil {
			return d
		}
		s.log.Warn("sampling accept queues with TCP_INFO, one system call a socket", "error", err)
		s.diag.close()
		s.diag = nil
	}
	for k, e := range s.entries {
		if e.State != Free && k < g.l.Slots() {
			if q, _, err := g.l.Queue(k); err == nil {
				d[k] = q
			}
		}
	}
	return d
}

// update computes every group's weights and attaches a new program where
// they changed.
func (s *Steering) update(now time.Time) {
	for _, g := range s.groups {
		w, why := Weights(s.entries, now, s.ramp, g.det.Excluded(len(s.entries)))
		if g.attached && slices.Equal(w, g.weights) && slices.Equal(why, g.why) {
			continue
		}
		for k := range w {
			if k >= len(g.weights) || w[k] != g.weights[k] || why[k] != g.why[k] {
				s.stats.decisions[why[k]]++
			}
		}
		g.weights, g.why = w, why
		if s.passive {
			continue
		}
		s.attach(g)
	}
}

// attach compiles and attaches g's program; the kernel refusing it for
// its size (ENOMEM: past optmem_max, which our estimate of the kernel's
// charge did not foresee) makes it try again within three quarters of
// what was refused, coarser.
func (s *Steering) attach(g *group) bool {
	for try := 0; ; try++ {
		p, err := Compile(g.weights, g.limits)
		if err == nil {
			err = g.l.AttachProgram(p.Insns)
		}
		if err == nil {
			g.prog, g.attached = p, true
			s.stats.updates++
			return true
		}
		if errors.Is(err, unix.ENOMEM) && p != nil && try < 8 {
			g.limits.MaxBytes = ebpfSize(p.Insns) * 3 / 4
			s.log.Warn("steering program over optmem_max: coarser weights", "listener", g.l.Name, "bytes", g.limits.MaxBytes)
			continue
		}
		s.stats.attachErrors++
		g.weights = nil // try again at the next update
		s.log.Warn("cannot steer connections", "listener", g.l.Name, "error", err)
		return false
	}
}
