package suite

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/load"
)

var crashPeers = []string{"sockd-go", "sockd-go-rp", "sockd-node", "sockd-python", "pm2", "cluster-rr", "gunicorn", "nginx"}

// crashes is scenario (5): every worker in turn gets SIGKILL; how soon
// does a replacement answer?
func (s *Suite) crashes() error {
	for _, p := range s.selected(crashPeers...) {
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		c, err := s.crash(p)
		if err != nil {
			s.warnf("crash %s: %v", p.name, err)
		}
		if c == nil {
			continue
		}
		s.res.Crashes = append(s.res.Crashes, *c)
		var serve []float64
		failed := 0
		for _, k := range c.Kills {
			serve = append(serve, k.ServeMS)
			failed += k.Failed
		}
		s.logf("crash %-14s %d kills: replacement answering after %.0f ms (median), %d failed requests", p.name, len(c.Kills), median(serve), failed)
	}
	return nil
}

// kill is one SIGKILL, at seconds since the load started.
type kill struct {
	at float64
	ev CrashEvent
}

func (s *Suite) crash(p *peer) (*CrashRun, error) {
	l, err := s.startLoaded(p, s.P.CrashWorkers, s.P.ReloadClients, s.P.CrashRate)
	if err != nil {
		return nil, err
	}
	defer l.close()
	s.sleep(500 * time.Millisecond)
	victims := l.in.workers()
	known := map[int]bool{}
	for _, v := range victims {
		known[v] = true
	}
	var kills []kill
	for _, victim := range victims {
		if s.ctx.Err() != nil {
			break
		}
		kills = append(kills, s.killOne(l.in, l.run, victim, known))
	}
	res := l.result()
	c := &CrashRun{Peer: p.name, Workers: l.in.n}
	for _, k := range kills {
		k.ev.Failed = res.Window(time.Duration(k.at*float64(time.Second)), time.Duration((k.at+1)*float64(time.Second))).Failed
		c.Kills = append(c.Kills, k.ev)
	}
	return c, nil
}

// killOne kills victim and waits for a replacement (a worker not in
// known) to exist, say it is ready (peers with a ready file) and answer.
func (s *Suite) killOne(in *instance, run *load.Run, victim int, known map[int]bool) kill {
	t0 := time.Now()
	k := kill{at: run.Since().Seconds()}
	if err := unix.Kill(victim, unix.SIGKILL); err != nil {
		k.ev.Err = err.Error()
		return k
	}
	var fresh int
	err := waitFor(30*time.Second, 2*time.Millisecond, func() bool {
		for _, w := range in.workers() {
			if !known[w] {
				fresh = w
				return true
			}
		}
		return false
	})
	if err != nil {
		k.ev.Err = "no replacement within 30s"
		return k
	}
	known[fresh] = true
	k.ev.SpawnMS = ms(time.Since(t0))
	err = waitFor(30*time.Second, 2*time.Millisecond, func() bool {
		if in.readyFile != "" && k.ev.ReadyMS == 0 && in.readyPIDs()[fresh] {
			k.ev.ReadyMS = ms(time.Since(t0))
		}
		_, ok := run.Seen()[int32(fresh)]
		return ok && (in.readyFile == "" || k.ev.ReadyMS > 0)
	})
	if err != nil {
		k.ev.Err = "the replacement answered nothing within 30s"
	} else {
		k.ev.ServeMS = run.Seen()[int32(fresh)].Seconds()*1000 - k.at*1000
	}
	run.Retire(victim)
	s.sleep(time.Second)
	return k
}
