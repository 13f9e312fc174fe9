package pool

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/cgroup"
	"github.com/sockd/sockd/internal/nodeshim"
	"golang.org/x/sys/unix"
)

// reloadWith asks for a reload that brings cfg.
func (s *sim) reloadWith(edit func(*Config)) chan error {
	c := s.p.cfg.Config
	c.Env = append([]string(nil), c.Env...)
	edit(&c)
	reply := make(chan error, 1)
	s.step(reloadRequest{reply: reply, cfg: &conf{Config: c, command: c.Command[0]}})
	return reply
}

func (s *sim) cfgOf(pid int) *conf { return s.p.st.byPID[pid].cfg }

// A reload with a new configuration: the new generation runs it, the
// serving configuration becomes it once the batch took over; restarts
// after that run it too.
func TestSimReloadAppliesConfig(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	old := s.p.cfg
	res := s.reloadWith(func(c *Config) { c.Env = append(c.Env, "APP_COLOR=green"); c.Command = []string{"/bin/true", "--v2"} })
	next := s.starting()
	if len(next) != 2 {
		t.Fatalf("starting %v", next)
	}
	for _, pid := range next {
		if c := s.cfgOf(pid); c == old || strings.Join(c.Command, " ") != "/bin/true --v2" {
			t.Fatalf("new worker %d runs %v", pid, c.Command)
		}
	}
	if s.p.cfg != old {
		t.Fatal("the configuration changed before the new generation took over")
	}
	s.ready(next...)
	s.exitStopped()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.p.Config().Command, " ") != "/bin/true --v2" {
		t.Fatalf("in force: %v", s.p.Config().Command)
	}
	s.exit(next[0]) // a crash: the restart runs the new configuration
	if c := s.cfgOf(s.starting()[0]); strings.Join(c.Command, " ") != "/bin/true --v2" {
		t.Fatalf("restart runs %v", c.Command)
	}
}

// A reload whose new workers fail rolls back: the old configuration
// stays in force, and a slot restarted afterwards runs it.
func TestSimReloadConfigRollsBack(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	old := s.p.cfg
	olds := s.livePIDs()
	res := s.reloadWith(func(c *Config) { c.Command = []string{"/bin/true", "--broken"} })
	s.exit(s.starting()[0])
	s.exitStopped()
	var re *ReloadError
	if err := reply(t, res); !errors.As(err, &re) {
		t.Fatalf("reload: %v", err)
	}
	if s.p.cfg != old || s.p.st.slots[0].cfg != old || s.p.st.slots[1].cfg != old {
		t.Fatal("a failed reload's configuration stayed")
	}
	s.exit(olds[0])
	if c := s.cfgOf(s.starting()[0]); c != old {
		t.Fatalf("restart after the rollback runs %v", c.Command)
	}
}

// The configured number of workers changes with a reload: more slots
// join the new generation (and are gone again if it fails); fewer are
// retired once it took over.
func TestSimReloadChangesSize(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	res := s.reloadWith(func(c *Config) { c.Workers = 3 })
	if got := s.starting(); len(got) != 3 {
		t.Fatalf("starting %v, want 3 new workers", got)
	}
	s.readyAll()
	s.exitStopped()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.Size != 3 || st.Ready != 3 {
		t.Fatalf("after growing: %+v", st)
	}

	res = s.reloadWith(func(c *Config) { c.Workers = 5 })
	s.exit(s.starting()[4])
	s.exitStopped()
	if err := reply(t, res); err == nil {
		t.Fatal("failed reload succeeded")
	}
	if st := s.status(); st.Size != 3 || st.Ready != 3 || len(s.starting()) != 0 {
		t.Fatalf("after a failed grow: %+v, starting %v", st, s.starting())
	}

	res = s.reloadWith(func(c *Config) { c.Workers = 2 })
	if got := s.starting(); len(got) != 3 {
		t.Fatalf("starting %v: the reload replaces every slot, then shrinks", got)
	}
	s.readyAll()
	s.exitStopped()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
	s.exitStopped()
	if st := s.status(); st.Size != 2 || st.Ready != 2 {
		t.Fatalf("after shrinking: %+v", st)
	}
}

// Reloads queued behind a running one share one generation: the newest
// configuration asked for.
func TestSimQueuedReloadsTakeTheNewestConfig(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	first := s.reloadWith(func(c *Config) { c.Command = []string{"/bin/true", "1"} })
	second := s.reloadWith(func(c *Config) { c.Command = []string{"/bin/true", "2"} })
	third := s.reloadWith(func(c *Config) { c.Command = []string{"/bin/true", "3"} })
	s.readyAll()
	s.exitStopped()
	if err := reply(t, first); err != nil {
		t.Fatal(err)
	}
	got := s.starting()
	if len(got) != 2 || s.cfgOf(got[0]).Command[1] != "3" {
		t.Fatalf("the queued reload runs %v", s.cfgOf(got[0]).Command)
	}
	s.readyAll()
	s.exitStopped()
	for _, c := range []chan error{second, third} {
		if err := reply(t, c); err != nil {
			t.Fatal(err)
		}
	}
}

// An invalid configuration fails the reload before anything starts.
func TestNewConfRefuses(t *testing.T) {
	for _, c := range []Config{
		{Command: []string{"/nonexistent/app"}},
		{Command: []string{"/bin/true"}, Workers: 5000},
		{},
		{Command: []string{"/bin/true"}, Limits: cgroup.Limits{PidsMax: 5}}, // no cgroups
	} {
		if _, err := newConf(c, Deps{Trampoline: "/proc/self/exe"}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// Signal and Send reach the live workers a selector picks, never those
// sockd is stopping; Send only those with a channel.
func TestSimSignalAndSend(t *testing.T) {
	s := newSim(t, func(o *simOpts) { o.Workers = 3 })
	s.readyAll()
	pids := s.livePIDs()
	if r := s.p.onSignal(unix.SIGUSR1, All); r.err != nil || r.n != 3 {
		t.Fatalf("signal all: %+v", r)
	}
	if r := s.p.onSignal(unix.SIGUSR2, Selector{Slot: 1, Generation: -1}); r.n != 1 || !s.signalled(pids[1], unix.SIGUSR2) || s.signalled(pids[0], unix.SIGUSR2) {
		t.Fatalf("signal slot 1: %+v", r)
	}
	if r := s.p.onSignal(unix.SIGUSR1, Selector{Slot: 7, Generation: -1}); !errors.Is(r.err, ErrNoWorker) {
		t.Fatalf("signal slot 7: %+v", r)
	}
	if r := s.p.onSend([]byte(`{"a":1}`), All); !errors.Is(r.err, ErrNoWorker) || !strings.Contains(r.err.Error(), "IPC channel") {
		t.Fatalf("send without channels: %+v", r)
	}
	s.channels = true
	res := s.reload()
	if r := s.p.onSend([]byte(`"hi"`), Selector{Slot: -1, Generation: 1}); r.n != 3 {
		t.Fatalf("send to generation 1 during a reload: %+v (sent %q)", r, s.sentTo)
	}
	s.readyAll() // generation 2 takes over; generation 1 is being stopped
	if r := s.p.onSignal(unix.SIGUSR1, Selector{Slot: -1, Generation: 1}); !errors.Is(r.err, ErrNoWorker) {
		t.Fatalf("signal to a retiring generation: %+v", r)
	}
	s.exitStopped()
	reply(t, res)
	// A worker that reads no messages: the others get theirs, and when
	// none can, the error says why (not "no channel").
	s.unread = map[int]bool{}
	for _, pid := range s.livePIDs() {
		s.unread[pid] = true
	}
	if r := s.p.onSend([]byte(`"x"`), All); !errors.Is(r.err, ErrNoWorker) || !strings.Contains(r.err.Error(), "read no messages") {
		t.Fatalf("send to workers that read nothing: %+v", r)
	}
	delete(s.unread, s.livePIDs()[0])
	if r := s.p.onSend([]byte(`"y"`), All); r.err != nil || r.n != 1 {
		t.Fatalf("send with one worker reading: %+v", r)
	}
}

// A warm-up needs the preload and a ready on Node's channel; its timeout
// is half the ready timeout unless set.
func TestConfigWarmup(t *testing.T) {
	base := Config{Command: []string{"node"}, NodePreload: true, Ready: ReadyRule{NodeIPC: true}, ReadyTimeout: 4 * time.Second}
	c := base
	c.Warmup = nodeshim.Warmup{Path: "/warm"}
	if got, err := c.WithDefaults(); err != nil || got.Warmup.Timeout != 2*time.Second {
		t.Fatalf("warm-up timeout %s, %v; want 2s", got.Warmup.Timeout, err)
	}
	c.Warmup.Timeout = time.Second
	if got, err := c.WithDefaults(); err != nil || got.Warmup.Timeout != time.Second {
		t.Fatalf("warm-up timeout %s, %v; want 1s as set", got.Warmup.Timeout, err)
	}
	for name, change := range map[string]func(*Config){
		"no preload":     func(c *Config) { c.NodePreload = false },
		"ready notify":   func(c *Config) { c.Ready = ReadyRule{} },
		"not a path":     func(c *Config) { c.Warmup.Path = "warm" },
		"a space":        func(c *Config) { c.Warmup.Path = "/a b" },
		"too many":       func(c *Config) { c.Warmup.Requests = nodeshim.MaxWarmupRequests + 1 },
		"negative count": func(c *Config) { c.Warmup.Requests = -1 },
	} {
		c := base
		c.Warmup = nodeshim.Warmup{Path: "/warm"}
		change(&c)
		if _, err := c.WithDefaults(); err == nil || !strings.Contains(err.Error(), "warm-up") {
			t.Errorf("%s: %v, want a warm-up error", name, err)
		}
	}
}

// A reload runs by the reload settings it brings: a deploy that adds
// --reload-batch 1, --reload-soak and a longer ready timeout (which
// --reload-timeout follows by default) gets one slot at a time, a canary
// that soaks, and the new timeout, not the old one.
func TestSimReloadRunsByItsOwnReloadSettings(t *testing.T) {
	s := newSim(t, nil)
	s.readyAll()
	old := s.p.cfg.ReloadTimeout
	res := s.reloadWith(func(c *Config) {
		c.ReloadBatch, c.ReloadSoak = 1, time.Minute
		c.ReadyTimeout, c.ReloadTimeout = old+time.Hour, old+time.Hour
	})
	next := s.starting()
	if len(next) != 1 {
		t.Fatalf("the first batch starts %d workers, want 1 (the reload's --reload-batch)", len(next))
	}
	s.advance(old + time.Second)
	select {
	case err := <-res:
		t.Fatalf("the reload ended at the old timeout: %v", err)
	default:
	}
	s.ready(next...)
	if st := s.status(); st.State != StateReloading || len(st.Workers) != 3 {
		t.Fatalf("the canary does not soak beside the old workers (the reload's --reload-soak): %+v", st)
	}
	s.advance(time.Minute)
	s.exitStopped()
	second := s.starting()
	if len(second) != 1 || second[0] == next[0] {
		t.Fatalf("the second batch: %v", second)
	}
	s.ready(second...)
	s.exitStopped()
	if err := reply(t, res); err != nil {
		t.Fatal(err)
	}
}
