package steering

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/activation"
)

// Defaults of Options.
const (
	DefaultPeriod     = 20 * time.Millisecond
	DefaultQuiet      = time.Second
	DefaultDwell      = time.Second
	DefaultMaxSockets = 2048
)

// ErrUnavailable: steering cannot work on these listeners (none is a
// reuseport group sockd bound, or the group's order is unknown). The
// caller goes on without it: the kernel hashes over every socket.
var ErrUnavailable = errors.New("steering unavailable")

// Options configure Steering. The zero value is usable.
type Options struct {
	Logger hclog.Logger
	// SlowStart is --slow-start: the ramp of a new worker's weight
	// (Ramp.Duration); SlowStartFloor its first share, percent (10).
	SlowStart      time.Duration
	SlowStartFloor int
	// Period is how often the queues are sampled while there is traffic
	// (DefaultPeriod); StallAfter how long a queue must wait untouched to
	// count as stalled (DefaultStallAfter); Quiet how long without
	// traffic before sampling stops until the next connection
	// (DefaultQuiet).
	Period, StallAfter, Quiet time.Duration
	// Dwell is how long a socket must have had no weight before Drained
	// can say it is drained: handshakes under way when it lost its weight
	// still complete into its queue, one round trip later or after a
	// SYN-ACK retransmission (DefaultDwell).
	Dwell time.Duration
	// MaxSockets bounds each group (DefaultMaxSockets: two per slot at
	// 1024 slots).
	MaxSockets int
	// Probe establishes each group's order by probing (activation's
	// Order) before anything else: for sockets back from systemd's fd
	// store.
	Probe bool
	// Passive computes but attaches no program until Activate: the new
	// sockd of a binary upgrade, while the old one still steers.
	Passive bool
	// Grown, if set, is told when Assign has grown the groups (sockd puts
	// the new sockets into systemd's fd store). It runs with Steering's
	// lock held: it must not call Steering.
	Grown func()
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Steering steers the new connections of sockd's reuseport groups among
// its workers. Each worker gets a socket of its own in every group (the
// same index in each); Steering's program gives each socket a weight by
// its worker's state, its ramp and whether it stalled. Its methods are
// safe for concurrent use.
type Steering struct {
	opts Options
	log  hclog.Logger
	ramp Ramp

	mu       sync.Mutex
	groups   []*group
	entries  []Entry
	byWorker map[string]int
	passive  bool
	yielded  bool
	closed   bool
	stats    counters

	diag    *diag // nil: sample with TCP_INFO
	ep      int   // edge-triggered epoll on every socket: the idle wakeup
	wake    int   // eventfd in ep: Close
	kick    int   // eventfd in ep: a ramp began (the idle wait must step it)
	closing chan struct{}
	done    chan struct{}
}

type counters struct {
	decisions        map[Reason]uint64
	samples, updates uint64
	attachErrors     uint64
	sampling         bool
}

// group is one reuseport listener.
type group struct {
	l                   *activation.Listener
	family, proto, port int
	inodes              map[uint64]int
	det                 Detector
	weights             []int
	why                 []Reason
	prog                *Program
	limits              Limits
	attached            bool
}

// New takes over the steering of set's reuseport listeners (the others,
// shared sockets and systemd's, are left alone) and starts sampling.
// Every socket is free: no worker has one yet. It fails with an error
// wrapping ErrUnavailable when there is nothing to steer.
func New(set activation.Set, opts Options) (*Steering, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.Dwell <= 0 {
		opts.Dwell = DefaultDwell
	}
	if opts.MaxSockets <= 0 || opts.MaxSockets > MaxSockets {
		opts.MaxSockets = DefaultMaxSockets
	}
	s := &Steering{
		opts: opts, log: opts.Logger, passive: opts.Passive,
		ramp:     Ramp{Duration: opts.SlowStart, Floor: opts.SlowStartFloor},
		byWorker: map[string]int{}, stats: counters{decisions: map[Reason]uint64{}},
		ep: -1, wake: -1, kick: -1, closing: make(chan struct{}), done: make(chan struct{}),
	}
	limits := Limits{MaxBytes: optmemMax()}
	n := 0
	for _, l := range set {
		if !l.Growable() {
			continue
		}
		if opts.Probe {
			if _, err := l.Order(); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
		g, err := newGroup(l, limits)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		g.det.StallAfter = opts.StallAfter
		s.groups = append(s.groups, g)
		n = max(n, l.Slots())
	}
	if len(s.groups) == 0 {
		return nil, fmt.Errorf("%w: no reuseport listener sockd bound", ErrUnavailable)
	}
	s.entries = make([]Entry, n)
	if err := s.open(); err != nil {
		s.release()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.mu.Lock()
	err := s.grow(n)
	if err == nil {
		s.update(s.opts.Now())
	}
	s.mu.Unlock()
	if err != nil {
		s.release()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	go s.run()
	return s, nil
}

func newGroup(l *activation.Listener, limits Limits) (*group, error) {
	g := &group{l: l, inodes: map[uint64]int{}, limits: limits}
	switch l.Network {
	case "tcp":
		g.family, g.proto = unix.AF_INET, unix.IPPROTO_TCP
	case "tcp6":
		g.family, g.proto = unix.AF_INET6, unix.IPPROTO_TCP
	case "udp":
		g.family, g.proto = unix.AF_INET, unix.IPPROTO_UDP
	case "udp6":
		g.family, g.proto = unix.AF_INET6, unix.IPPROTO_UDP
	default:
		return nil, fmt.Errorf("%s: %w", l, activation.ErrNotSupported)
	}
	ap, err := netip.ParseAddrPort(l.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	g.port = int(ap.Port())
	return g, nil
}

// open makes the epoll set, its close eventfd and the sock_diag socket.
func (s *Steering) open() error {
	var err error
	if s.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, s.wake, &ev); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if s.kick, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: kickFd}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, s.kick, &ev); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if s.diag, err = newDiag(); err != nil {
		s.log.Warn("sampling accept queues with TCP_INFO, one system call a socket", "error", err)
	}
	return nil
}

func (s *Steering) release() {
	for _, fd := range []int{s.ep, s.wake, s.kick} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	if s.diag != nil {
		s.diag.close()
	}
}

// grow makes every group n sockets long and watches the new ones.
func (s *Steering) grow(n int) error {
	for len(s.entries) < n {
		s.entries = append(s.entries, Entry{})
	}
	for gi, g := range s.groups {
		from := len(g.inodes)
		if g.l.Slots() < n {
			var prog []unix.SockFilter
			if g.attached {
				prog = g.prog.Insns
			} else if !s.passive {
				// A program over the sockets the group has now.
				p, err := Compile(equalWeights(g.l.Slots()), g.limits)
				if err != nil {
					return err
				}
				prog = p.Insns
			}
			if _, err := g.l.Extend(n, prog); err != nil {
				return err
			}
		}
		for k := from; k < n; k++ {
			ino, err := g.l.Inode(k)
			if err != nil {
				return err
			}
			g.inodes[ino] = k
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(gi), Pad: int32(k)}
			if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, g.l.FD(k), &ev); err != nil {
				return fmt.Errorf("epoll: %w", err)
			}
		}
	}
	return nil
}

func equalWeights(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = Full
	}
	return w
}

// Assign gives a starting worker its socket index: the worker's
// descriptors are set.FDs(index) (the shared listeners' one socket, the
// reuseport groups' socket index). replaces names the worker it is to
// take the place of, or "". The socket gets no new connection until the
// worker is Ready. A socket whose worker died with connections still
// queued is given first, so that they are served; then a free one; else
// every group grows by a socket.
func (s *Steering) Assign(worker, replaces string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, errors.New("steering closed")
	}
	if _, ok := s.byWorker[worker]; ok {
		return -1, fmt.Errorf("worker %s has a socket already", worker)
	}
	now := s.opts.Now()
	k := s.pick(now)
	if k < 0 {
		if len(s.entries) >= s.opts.MaxSockets {
			return -1, fmt.Errorf("steering: all %d sockets of each group are held", len(s.entries))
		}
		k = len(s.entries)
		if err := s.grow(k + 1); err != nil {
			return -1, fmt.Errorf("steering: %w", err)
		}
		if s.opts.Grown != nil {
			s.opts.Grown()
		}
	}
	if old := s.entries[k].Worker; old != "" && s.byWorker[old] == k {
		delete(s.byWorker, old)
	}
	s.entries[k] = Entry{Worker: worker, State: Starting, Replaces: replaces}
	if j, ok := s.byWorker[replaces]; ok {
		s.entries[k].at = j + 1
	}
	s.byWorker[worker] = k
	for _, g := range s.groups {
		g.det.Forget(k)
	}
	s.update(now)
	return k, nil
}

// pick chooses a socket for a new worker, or -1 to grow.
func (s *Steering) pick(now time.Time) int {
	free := -1
	for k, e := range s.entries {
		switch {
		case (e.State == Gone || e.State == Free) && s.depth(k) > 0:
			// Connections wait there: a worker that died with them, or
			// (Free) a socket back from systemd's fd store that the last
			// sockd's program steered to before it was restarted.
			return k
		case e.State == Free, e.State == Gone && now.Sub(e.Since) >= s.opts.Dwell:
			if free < 0 {
				free = k
			}
		}
	}
	return free
}

// depth is the connections queued on socket k of every group now.
func (s *Steering) depth(k int) int {
	n := 0
	for _, g := range s.groups {
		if d, _, err := g.l.Queue(k); err == nil {
			n += d
		}
	}
	return n
}

// Adopt records that worker, which this Steering did not start, holds
// socket index k and serves (the old sockd's workers during a binary
// upgrade: the new sockd learns their indexes in the hand-off). A worker
// it starts may replace it.
func (s *Steering) Adopt(worker string, k int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k < 0 || k >= len(s.entries) || s.entries[k].State != Free {
		return fmt.Errorf("adopt %s: socket %d is not free", worker, k)
	}
	s.entries[k] = Entry{Worker: worker, State: Ready}
	s.byWorker[worker] = k
	s.update(s.opts.Now())
	return nil
}

// Ready marks worker ready (READY=1): its socket gets new connections,
// ramping up over SlowStart. It returns when the ramp ends: then the
// worker it replaces has no share left and can be asked to drain.
func (s *Steering) Ready(worker string) time.Time {
	return s.set(worker, Ready)
}

// Leave marks worker leaving (asked to drain, or STOPPING=1): its socket
// gets no new connection from now on.
func (s *Steering) Leave(worker string) { s.set(worker, Leaving) }

// Exited marks worker gone (its process group is empty). Its socket keeps
// the connections queued on it until the next worker Assign gives it to.
func (s *Steering) Exited(worker string) { s.set(worker, Gone) }

func (s *Steering) set(worker string, st State) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byWorker[worker]
	if !ok {
		return time.Time{}
	}
	now := s.opts.Now()
	e := &s.entries[k]
	if e.State == st || e.State == Gone || st == Ready && e.State != Starting {
		return e.Since.Add(s.ramp.Duration)
	}
	e.State, e.Since = st, now
	if st == Gone {
		delete(s.byWorker, worker)
	}
	s.update(now)
	if st == Ready && s.ramp.Duration > 0 {
		s.kickSampler()
	}
	return now.Add(s.ramp.Duration)
}

// Drained reports whether a leaving (or gone) worker's sockets have had no
// weight for Dwell and have nothing queued: stopping it leaves no
// connection behind. A socket under SYN_RECV handshakes is not drained
// by an empty queue alone; Dwell covers them.
func (s *Steering) Drained(worker string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byWorker[worker]
	if !ok {
		return true
	}
	e := s.entries[k]
	if e.State != Leaving || s.opts.Now().Sub(e.Since) < s.opts.Dwell {
		return false
	}
	return s.depth(k) == 0
}

// Index returns worker's socket index.
func (s *Steering) Index(worker string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byWorker[worker]
	return k, ok
}

// Held returns the socket indexes held by workers (to hand over in a
// binary upgrade: the new sockd adopts them).
func (s *Steering) Held() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.byWorker))
	for w, k := range s.byWorker {
		out[w] = k
	}
	return out
}

// Activate ends Passive: from now on this Steering attaches its programs.
func (s *Steering) Activate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.passive = false
	s.update(s.opts.Now())
	s.kickSampler()
}

// kickFd marks the kick eventfd's events in the epoll set.
const kickFd = -2

// kickSampler makes an idle sampler compute its wait again: a ramp has
// begun, whose steps it must take.
func (s *Steering) kickSampler() {
	if s.kick >= 0 {
		unix.Write(s.kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// Yield makes this Steering passive for good: the new sockd of a binary
// upgrade has committed and steers from now on. Leave and Drained still
// work, so that this sockd's workers drain before they stop.
func (s *Steering) Yield() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.passive, s.yielded = true, true
}

// Yielded reports whether Yield was called.
func (s *Steering) Yielded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.yielded
}

// Close stops sampling and releases Steering's own descriptors. The
// groups keep the last program (the next sockd attaches its own).
func (s *Steering) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	unix.Write(s.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-s.done
	s.release()
	return nil
}

// optmemMax is net.core.optmem_max, what the kernel may charge for a
// program (a bit less, for the estimate's slack), or 20 KiB, the
// default of kernels before 6.8, when unreadable.
func optmemMax() int {
	b, err := os.ReadFile("/proc/sys/net/core/optmem_max")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n > 0 {
		return n
	}
	return 20480
}
