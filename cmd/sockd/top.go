package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/pool"
)

const topHelp = `A live view of a running sockd, refreshed every --interval: per worker its slot,
generation, pid, state, uptime, CPU %, resident memory, requests per second and restarts;
per listening socket the accept queue (connections no worker has taken yet); the last
events (restarts, reloads, recycles). On a terminal it redraws the screen and q or Ctrl-C
ends it; otherwise it prints a block of plain lines per refresh (-n sets how many).
`

// topCommand is `sockd top`.
func topCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockd top", flag.ContinueOnError)
	tgt := addTarget(fs)
	interval := fs.Duration("interval", time.Second, "refresh every `D`")
	count := fs.Int("n", 0, "stop after `N` refreshes (0: until q, Ctrl-C or SIGTERM)")
	fs.Usage = usageFunc(fs, "sockd top [--interval D] [-n N] [--control PATH|--pid PID]", topHelp)
	if err := parseFlags(fs, args, getenv, stdout); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sockd top: unexpected argument %q", fs.Arg(0))
	}
	if *interval < 10*time.Millisecond {
		return usagef("--interval %s: want at least 10ms", *interval)
	}
	path, err := tgt.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	t := &top{path: path, check: tgt.check, out: stdout, prev: map[int]pool.WorkerStatus{}}
	if f, ok := stdout.(*os.File); ok && isTerminal(f) && isTerminal(os.Stdin) {
		restore, err := rawMode(os.Stdin)
		if err != nil {
			return err
		}
		defer restore()
		t.screen = f
		io.WriteString(f, "\x1b[?1049h\x1b[?25l") // alternate screen, no cursor
		defer io.WriteString(f, "\x1b[?25h\x1b[?1049l")
		keys := make(chan byte, 8)
		go readKeys(os.Stdin, keys)
		// q or Ctrl-C (raw mode: a key, not a signal) ends top at once,
		// also while it waits for a sockd that does not answer.
		ctx, quit := context.WithCancel(ctx)
		defer quit()
		go func() {
			for k := range keys {
				if k == 'q' || k == 'Q' || k == 3 {
					quit()
					return
				}
			}
		}()
		t.resize = make(chan os.Signal, 1)
		signal.Notify(t.resize, syscall.SIGWINCH)
		defer signal.Stop(t.resize)
		return t.run(ctx, *interval, *count)
	}
	return t.run(ctx, *interval, *count)
}

type top struct {
	path   string
	check  func(*net.UnixConn) error
	out    io.Writer
	screen *os.File // set on a terminal
	resize chan os.Signal
	last   string // the last view drawn on the screen, before fitting
	prev   map[int]pool.WorkerStatus
	prevAt time.Time
}

// firstGap is how long after a first, silent sample the first refresh
// comes: CPU% and REQ/S are rates, which need two samples, and sockd reads
// the workers' usage at most twice a second.
const firstGap = 600 * time.Millisecond

func (t *top) run(ctx context.Context, interval time.Duration, count int) error {
	if s, err := t.fetch(ctx); ctx.Err() != nil {
		return nil
	} else if err == nil {
		t.remember(s, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(firstGap, interval)):
		}
	} else if errors.Is(err, control.ErrUnreachable) {
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		s, err := t.fetch(ctx)
		if ctx.Err() != nil {
			return nil // q, Ctrl-C, SIGINT or SIGTERM
		}
		if err != nil {
			return err
		}
		if err == nil {
			t.draw(s)
		}
		if count > 0 && n >= count {
			return nil
		}
		if !t.wait(ctx, tick.C) {
			return nil
		}
	}
}

// wait waits for the next refresh; a resize meanwhile redraws the last
// view at the new size (a new sample so soon would show rates over a
// moment: CPU 0.0). It reports false once ctx is done.
func (t *top) wait(ctx context.Context, tick <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case <-t.resize: // nil off a terminal
			t.redraw()
		}
	}
}

// redraw shows the last view again, fitted to the terminal as it is now.
func (t *top) redraw() {
	if t.screen == nil || t.last == "" {
		return
	}
	rows, cols := 0, 0
	if ws, err := unix.IoctlGetWinsize(int(t.screen.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 && ws.Col > 0 {
		rows, cols = int(ws.Row), int(ws.Col)
	}
	fmt.Fprintf(t.screen, "\x1b[H%s\x1b[J", fitScreen(t.last, rows, cols))
}

func (t *top) fetch(ctx context.Context) (pool.Status, error) {
	var s pool.Status
	// A sockd that does not answer (stopped, out of descriptors) ends top
	// as it ends sockd status.
	ctx, cancel := context.WithTimeout(ctx, defaultClientTimeout)
	defer cancel()
	resp, err := control.CallChecked(ctx, t.path, control.Request{Command: "status"}, t.check)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(resp.Status, &s); err != nil {
		return s, fmt.Errorf("bad status from sockd: %w", err)
	}
	return s, nil
}

// draw shows one refresh: the whole screen on a terminal, else a block
// of lines.
func (t *top) draw(s pool.Status) {
	var b strings.Builder
	now := time.Now()
	dt := now.Sub(t.prevAt).Seconds()
	fmt.Fprintf(&b, "sockd pid %d: %s, up %s, ready rule %s\n%s\n\n", s.PID, s.State, round(now.Sub(s.StartedAt)), s.ReadyRule, s.Summary)
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tGEN\tPID\tSTATE\tUPTIME\tCPU%\tRSS\tREQ/S\tRESTARTS")
	cur := map[int]pool.WorkerStatus{}
	for _, w := range s.Workers {
		cur[w.PID] = w
		cpu, rate := "-", "-"
		if p, ok := t.prev[w.PID]; ok && dt > 0 {
			if w.CPUSeconds > 0 || p.CPUSeconds > 0 {
				cpu = fmt.Sprintf("%.1f", 100*(w.CPUSeconds-p.CPUSeconds)/dt)
			}
			if w.Requests != nil && p.Requests != nil {
				rate = fmt.Sprintf("%.0f", float64(*w.Requests-*p.Requests)/dt)
			}
		}
		rss := "-"
		if w.RSSBytes > 0 {
			rss = fmt.Sprintf("%.1fM", float64(w.RSSBytes)/(1<<20))
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", w.Slot, w.Generation, w.PID, w.State,
			round(time.Duration(w.UptimeSeconds*float64(time.Second))), cpu, rss, rate, w.Restarts)
	}
	tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTENER\tADDRESS\tQUEUED (per socket)\tLIMIT")
	for _, l := range s.Listeners {
		q, lim := "-", "-"
		if len(l.QueueDepth) > 0 {
			q, lim = ints(l.QueueDepth), fmt.Sprint(l.QueueLimit[0])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, l.Address, q, lim)
	}
	tw.Flush()
	b.WriteString("\nRECENT EVENTS\n")
	evs := s.Events
	room := 8
	rows, cols := 0, 0
	if t.screen != nil {
		if ws, err := unix.IoctlGetWinsize(int(t.screen.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 && ws.Col > 0 {
			rows, cols = int(ws.Row), int(ws.Col)
			room = max(0, rows-1-strings.Count(b.String(), "\n"))
		}
	}
	if len(evs) > room {
		evs = evs[len(evs)-room:]
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.After(evs[j].Time) })
	for _, e := range evs {
		fmt.Fprintf(&b, "%s  %s\n", e.Time.Local().Format("15:04:05.000"), describeEvent(e))
	}
	t.prevAt = now
	t.prev = cur
	if t.screen != nil {
		t.last = b.String()
		fmt.Fprintf(t.screen, "\x1b[H%s\x1b[J", fitScreen(t.last, rows, cols))
		return
	}
	fmt.Fprintf(t.out, "%s--- %s\n", b.String(), now.Format(time.RFC3339))
}

// fitScreen makes text fit a terminal of rows × cols (0: unknown): every
// line cut to the width, so that none wraps, and no more lines than leave
// the cursor on the last row, so that the header never scrolls away; what
// is cut below says how many lines a taller terminal would show. Lines end
// with erase-to-end-of-line.
func fitScreen(text string, rows, cols int) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if rows > 0 && len(lines) > rows-1 {
		keep := max(rows-2, 0)
		more := len(lines) - keep
		lines = append(lines[:keep:keep], fmt.Sprintf("… %d more lines: a taller terminal shows them", more))
	}
	var b strings.Builder
	for _, l := range lines {
		if cols > 0 && utf8.RuneCountInString(l) > cols {
			r := []rune(l)
			l = string(r[:cols])
		}
		b.WriteString(l)
		b.WriteString("\x1b[K\r\n")
	}
	return b.String()
}

func describeEvent(e pool.Event) string {
	w := fmt.Sprintf("worker %d of generation %d", e.Slot, e.Generation)
	switch e.Kind {
	case pool.EventStart:
		return fmt.Sprintf("%s started (pid %d)", w, e.PID)
	case pool.EventReady:
		return fmt.Sprintf("%s ready in %.3fs (pid %d)", w, e.Seconds, e.PID)
	case pool.EventExit:
		return fmt.Sprintf("%s exited: %s, %s (pid %d)", w, e.Reason, e.Detail, e.PID)
	case pool.EventRestart:
		return fmt.Sprintf("%s restarted after a %s (%s)", w, e.Reason, e.Detail)
	case pool.EventRecycle:
		return fmt.Sprintf("%s recycled: %s", w, e.Detail)
	case pool.EventReloadDone:
		return fmt.Sprintf("reload to generation %d done in %.3fs", e.Generation, e.Seconds)
	case pool.EventReloadFailed:
		return fmt.Sprintf("reload to generation %d %s: %s", e.Generation, strings.ReplaceAll(e.Reason, "_", " "), e.Detail)
	case pool.EventScale:
		return "scaled: " + e.Detail
	case pool.EventGiveUp:
		return "gave up: " + e.Detail
	}
	return e.Kind
}

func round(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, " ")
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// rawMode puts the terminal in raw mode (keys arrive one by one, unechoed)
// and returns what restores it.
func rawMode(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Iflag &^= unix.IXON | unix.ICRNL
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func readKeys(f *os.File, keys chan<- byte) {
	var b [1]byte
	for {
		if n, err := f.Read(b[:]); err != nil || n == 0 {
			return
		}
		keys <- b[0]
	}
}

// remember keeps s as the sample the next refresh's rates start from.
func (t *top) remember(s pool.Status, at time.Time) {
	t.prev, t.prevAt = map[int]pool.WorkerStatus{}, at
	for _, w := range s.Workers {
		t.prev[w.PID] = w
	}
}
