package suite

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
)

// reloadOnce triggers a reload and waits until it is over: the old
// workers exited, as many new ones run (and said they are ready, for the
// peers with a ready file), and a new one has answered. Times are on the
// load's clock. It returns the reload and the trigger command's CPU time.
func (s *Suite) reloadOnce(in *instance, run *load.Run) (ReloadEvent, time.Duration) {
	w := &reloadWatch{in: in, run: run, old: in.workers(), isOld: map[int]bool{}}
	for _, p := range w.old {
		w.isOld[p] = true
	}
	w.ev.T0 = w.sec()
	cpu, err := in.reloadFn()
	w.ev.Cmd = w.sec()
	w.ev.CmdCPUms = cpu.Seconds() * 1000
	if err != nil {
		w.ev.Err = err.Error()
	}
	w.follow(s.ctx)
	run.Retire(w.old...)
	return w.ev, cpu
}

// reloadWatch follows one reload.
type reloadWatch struct {
	in    *instance
	run   *load.Run
	old   []int
	isOld map[int]bool
	ev    ReloadEvent
}

func (w *reloadWatch) sec() float64 { return w.run.Since().Seconds() }

// follow polls every 2 ms until the reload is over, the load ended, 60 s
// passed or ctx is done.
func (w *reloadWatch) follow(ctx context.Context) {
	deadline := time.Now().Add(60 * time.Second)
	var lastScan time.Time
	lastTrigger := time.Now()
	for {
		now := w.sec()
		if w.in.retrigger && w.ev.Err == "" && w.ev.OldGone == 0 && w.ev.FirstNew == 0 && time.Since(lastTrigger) > time.Second {
			w.in.reloadFn()
			w.ev.Retries++
			lastTrigger = time.Now()
		}
		if w.ev.OldGone == 0 && w.oldGone() {
			w.ev.OldGone = now
		}
		answered := w.newAnswers()
		if w.ev.OldGone > 0 && answered > 0 && time.Since(lastScan) > 10*time.Millisecond {
			lastScan = time.Now()
			if w.newGenerationUp() {
				w.ev.Done = w.sec()
				return
			}
		}
		select {
		case <-w.run.Done():
			if w.ev.Err == "" {
				w.ev.Err = "the load ended before the reload was over"
			}
			deadline = time.Time{}
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if w.ev.Err == "" {
				w.ev.Err = fmt.Sprintf("reload not over after 60s (old gone: %v, new workers answering: %d)", w.ev.OldGone > 0, answered)
			}
			return
		}
		time.Sleep(2 * time.Millisecond) // polling /proc and the load's counters
	}
}

func (w *reloadWatch) oldGone() bool {
	for _, p := range w.old {
		if procfs.Alive(p) {
			return false
		}
	}
	return true
}

// newAnswers notes the first answer of a new worker and of every one of
// them, and returns how many new workers have answered.
func (w *reloadWatch) newAnswers() int {
	var firsts []float64
	for pid, t := range w.run.Seen() {
		if !w.isOld[int(pid)] {
			firsts = append(firsts, t.Seconds())
		}
	}
	sort.Float64s(firsts)
	if len(firsts) > 0 {
		w.ev.FirstNew = firsts[0]
	}
	if len(firsts) >= w.in.n && w.ev.AllNew == 0 {
		w.ev.AllNew = firsts[w.in.n-1]
	}
	return len(firsts)
}

// newGenerationUp reports whether as many workers as before run, none of
// them old, all ready if the peer has a ready file.
func (w *reloadWatch) newGenerationUp() bool {
	cur := w.in.workers()
	ready := w.in.readyPIDs()
	for _, p := range cur {
		if w.isOld[p] || (w.in.readyFile != "" && !ready[p]) {
			return false
		}
	}
	return len(cur) >= w.in.n
}
