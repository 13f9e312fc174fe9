package output

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Passing the pipes to a new sockd (`sockd upgrade`), without losing or
// repeating a line:
//
//	old: ex, _ := relay.Export()        dups of the read ends, the relay goes on reading
//	     send ex.Pipes and ex.FDs (SCM_RIGHTS), ex.Close()
//	new: ad, _ := relay.Adopt(pipes, fds)   holds them, does not read yet
//	     … the new generation gets ready …
//	old: sw := ex.Stop()                stops reading: at most one partial line per pipe is left in its buffer
//	     send sw with the commit
//	new: ad.Start(sw)                   reads on, after the partial lines
//
// Between Stop and Start nobody reads: the pipes buffer (64 KiB each by
// default) and a worker that fills one waits. If the upgrade fails before
// Stop, the old relay never stopped: ex.Close() and nothing happened. If
// the old sockd dies between Stop and the commit, the new one may
// Start(Switch{}): what was lost is the partial lines. The new relay ends
// adopted pipes at their end of file (the old sockd's workers exit), or
// when told with Pipes.Close.
//
// After a SIGKILL of sockd under systemd nothing of a relay survives
// unless the read ends were in systemd's fd store (FDSTORE=1 with
// FDNAME=HandoffPipe.FDName(); FDSTOREREMOVE=1 when the worker's pipes
// end): sockd's guard kills the workers, the kernel keeps what the pipes
// hold (up to their size), and the next sockd adopts them from
// LISTEN_FDS/LISTEN_FDNAMES (ParseFDName) and reads those last lines;
// the partial lines in the dead sockd's buffers are lost.

// HandoffPipe describes one passed read end.
type HandoffPipe struct {
	Worker Worker `json:"worker"`
	Stream string `json:"stream"`
}

// FDName names the pipe for systemd's fd store (FDNAME=):
// "sockd-output.SLOT.GEN.PID.stdout".
func (h HandoffPipe) FDName() string {
	return fmt.Sprintf("sockd-output.%d.%d.%d.%s", h.Worker.Slot, h.Worker.Generation, h.Worker.PID, h.Stream)
}

// ParseFDName reads a name FDName made.
func ParseFDName(name string) (HandoffPipe, bool) {
	f := strings.Split(name, ".")
	if len(f) != 5 || f[0] != "sockd-output" {
		return HandoffPipe{}, false
	}
	var n [3]int
	for i := range n {
		v, err := strconv.Atoi(f[i+1])
		if err != nil || v < 0 {
			return HandoffPipe{}, false
		}
		n[i] = v
	}
	if _, err := ParseStream(f[4]); err != nil {
		return HandoffPipe{}, false
	}
	return HandoffPipe{Worker: Worker{Slot: n[0], Generation: n[1], PID: n[2]}, Stream: f[4]}, true
}

// Export is a relay's pipes on their way to another relay.
type Export struct {
	// Pipes and FDs (close-on-exec dups of the read ends) go together, in
	// the same order.
	Pipes   []HandoffPipe
	FDs     []int
	streams []*stream
	once    sync.Once
}

// Export dups the read end of every pipe the relay reads, to be passed
// on; the relay goes on reading until Stop.
func (r *Relay) Export() (*Export, error) {
	r.mu.Lock()
	var ss []*stream
	for p := range r.pipes {
		for _, s := range p.streams {
			s.mu.Lock()
			if s.state == running {
				ss = append(ss, s)
			}
			s.mu.Unlock()
		}
	}
	r.mu.Unlock()
	ex := &Export{}
	for _, s := range ss {
		fd, err := dupReadEnd(s)
		if err != nil {
			select {
			case <-s.exited: // it reached its end meanwhile: nothing to pass
				continue
			default:
			}
			ex.Close()
			return nil, fmt.Errorf("export output pipe of worker %d: %w", s.w.Slot, err)
		}
		ex.Pipes = append(ex.Pipes, HandoffPipe{Worker: s.w, Stream: s.kind.String()})
		ex.FDs = append(ex.FDs, fd)
		ex.streams = append(ex.streams, s)
	}
	return ex, nil
}

// dupReadEnd dups the stream's read end, close-on-exec.
func dupReadEnd(s *stream) (int, error) {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 3) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// Switch is what a new relay needs to go on where the old one stopped:
// per exported pipe, in order, the partial line left in its buffer.
type Switch struct {
	Pipes []SwitchPipe `json:"pipes"`
}

// SwitchPipe is one pipe's state at the switch.
type SwitchPipe struct {
	// Pending are bytes read and not delivered: the start of a line.
	Pending []byte `json:"pending,omitempty"`
	// Continued: Pending (or the next line) continues a line cut before,
	// of priority Priority.
	Continued bool `json:"continued,omitempty"`
	Priority  int8 `json:"priority,omitempty"`
	// Ended: the old relay had read the end of file; nothing follows.
	Ended bool `json:"ended,omitempty"`
}

// Stop stops reading the exported pipes: each reader delivers the
// complete lines it has (waiting for the sink, if it blocks) and stops
// before its next read. The relay closes its own read ends; the dups in
// FDs are now the only ones. The Switch goes to the new relay.
func (ex *Export) Stop() Switch {
	for _, s := range ex.streams {
		s.mu.Lock()
		if s.state == running || s.state == closing {
			s.state = stopping
			s.f.SetReadDeadline(unixEpoch)
		}
		s.mu.Unlock()
	}
	sw := Switch{Pipes: make([]SwitchPipe, len(ex.streams))}
	for i, s := range ex.streams {
		if !s.stop() {
			sw.Pipes[i].Ended = true
			continue
		}
		sw.Pipes[i] = SwitchPipe{Pending: append([]byte(nil), s.buf[s.start:s.end]...), Continued: s.cont, Priority: s.contPrio}
		s.f.Close()
		s.p.streamEnded()
	}
	return sw
}

// Close closes the dups (once they were sent, or when the upgrade failed).
func (ex *Export) Close() {
	ex.once.Do(func() {
		for _, fd := range ex.FDs {
			unix.Close(fd)
		}
	})
}

// Adoption is pipes taken over from another relay, not read yet.
type Adoption struct {
	r       *Relay
	pipes   []*Pipes
	streams []*stream
	started bool
}

// Adopt takes over the read ends fds described by pipes (both in the
// order of an Export): it owns the descriptors from now on, also when it
// fails. They are read from Start on.
func (r *Relay) Adopt(pipes []HandoffPipe, fds []int) (*Adoption, error) {
	fail := func(err error) (*Adoption, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	if len(pipes) != len(fds) {
		return fail(fmt.Errorf("adopt output pipes: %d descriptions for %d descriptors", len(pipes), len(fds)))
	}
	byWorker := map[Worker]*Pipes{}
	ad := &Adoption{r: r}
	var kinds []Stream
	for i, h := range pipes {
		kind, err := ParseStream(h.Stream)
		if err != nil {
			return fail(fmt.Errorf("adopt output pipe %d: %w", i, err))
		}
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return fail(fmt.Errorf("adopt output pipe %d (%s): descriptor %d is not a pipe", i, h.FDName(), fds[i]))
		}
		if byWorker[h.Worker] == nil {
			p := &Pipes{r: r, w: h.Worker, wfd: [2]int{-1, -1}, done: make(chan struct{}), started: true}
			byWorker[h.Worker] = p
			ad.pipes = append(ad.pipes, p)
		}
		kinds = append(kinds, kind)
	}
	for i, h := range pipes {
		p := byWorker[h.Worker]
		if p.left == 2 {
			return fail(fmt.Errorf("adopt output pipe %d (%s): the worker's third pipe", i, h.FDName()))
		}
		if err := unix.SetNonblock(fds[i], true); err != nil {
			return fail(fmt.Errorf("adopt output pipe %d: %w", i, err))
		}
		s := newStream(p, kinds[i], nil)
		p.streams[p.left] = s
		p.left++
		ad.streams = append(ad.streams, s)
	}
	for i, s := range ad.streams {
		s.f = newFile(fds[i], s.kind)
	}
	return ad, nil
}

// Close closes the adopted descriptors if Start was not called.
func (ad *Adoption) Close() {
	if ad.started {
		return
	}
	ad.started = true
	for _, s := range ad.streams {
		s.f.Close()
	}
}

// Pipes are the adopted workers' pipes (for Close once they are known to
// be gone).
func (ad *Adoption) Pipes() []*Pipes { return ad.pipes }

// Start starts reading after the partial lines of sw (from Export.Stop;
// Switch{} if there is none).
func (ad *Adoption) Start(sw Switch) {
	if ad.started {
		return
	}
	ad.started = true
	r := ad.r
	for _, p := range ad.pipes {
		p.ring = r.ring.open(p.w)
		r.mu.Lock()
		r.pipes[p] = struct{}{}
		r.mu.Unlock()
	}
	for i, s := range ad.streams {
		if i < len(sw.Pipes) {
			sp := sw.Pipes[i]
			s.buf = make([]byte, max(readChunk, 2*len(sp.Pending)))
			s.end = copy(s.buf, sp.Pending)
			s.cont, s.contPrio = sp.Continued, sp.Priority
		}
		s.begin(s.p.w)
	}
}
