// Command steer measures traffic steering side by side (issue 20): sockd
// with one shared socket, sockd with --reuseport before and after
// steering, with --slow-start, nginx with reuseport, Node's cluster module
// (round-robin) and PM2's cluster mode, under an open-loop client that
// opens one new connection per request at a fixed rate, as fresh clients
// do. Two scenarios:
//
//   - stall: 4 workers; 3 s of load to see how evenly new connections are
//     spread (balance), then one worker is stopped with SIGSTOP for 6 s
//     (a blocked event loop, a long GC pause) and resumed: requests that
//     waited over 1 s, p50, p99 and the worst. sockd runs its embedded
//     demo worker, nginx answers from its config, the cluster runs
//     cluster.js.
//   - cold: 2 workers of coldapp.js, which serves from the moment it
//     listens but is ready only 1 s later, and is cold (V8 has not
//     compiled its handler yet); 8 reloads (-reloads), one every 5 s
//     (-every): answers from workers that were not ready yet, p99 in the
//     2 s after each reload against p99 in a steady window of 10 s
//     (-steady) before the first, and against p99 in the last 2 s before
//     each next reload (between: steady windows interleaved with the
//     after windows, once -every leaves the reload time to end). With
//     -keepalive N the load is instead N clients sending back to back on
//     kept-alive connections (closed loop, the kind of load of
//     BENCHMARKS.md's section 2b), through internal/load; -raw then has
//     every request, and -timeline prints where in a reload the slow
//     ones fall (p99 per 500-ms bin after a reload began, and the share
//     of the new workers), to stderr.
//
// Peers (-peers, comma-separated): shared, reuseport, slowstart (sockd
// -sockd, with --reuseport --slow-start 2s), warmup (slowstart's flags and
// --warmup / --warmup-requests -warmup-requests; cold only), old-shared, old-reuseport
// (sockd -sockd-old), nginx, cluster (stall only), pm2 (cold only; -pm2
// names PM2's binary). Every peer binds 127.0.0.1 on a port of its own;
// one peer runs at a time. Example (README of bench/, BENCHMARKS.md):
//
//	go run ./bench/steer -scenario stall -sockd /tmp/sockd-new -sockd-old /tmp/sockd-old \
//	    -peers shared,old-reuseport,reuseport,nginx,cluster
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	loadgen "github.com/sockd/sockd/internal/load"
	"github.com/sockd/sockd/internal/procfs"
)

type options struct {
	sockd, old, pm2, dir string
	raw                  string    // a directory for every request of every peer, as CSV
	logs                 string    // a directory for sockd's own log, per peer
	timeline             io.Writer // the cold scenario's per-bin p99 after a reload (nil: none)
	warmupRequests       int
	every                time.Duration // the cold scenario's time from one reload to the next
	rate, reloads        int
	keepAlive            int // the cold scenario's closed-loop keep-alive clients instead of -rate (0: open loop)
	stall, slowStart     time.Duration
	steady               time.Duration
}

func main() {
	var o options
	scenario := flag.String("scenario", "stall", "stall or cold")
	peers := flag.String("peers", "shared,reuseport", "the peers, in order")
	flag.StringVar(&o.sockd, "sockd", "bin/sockd", "the sockd binary")
	flag.StringVar(&o.old, "sockd-old", "", "the sockd binary before steering (old-* peers)")
	flag.StringVar(&o.pm2, "pm2", "pm2", "PM2's binary (peer pm2)")
	flag.IntVar(&o.rate, "rate", 0, "new connections a second (default 1000 for stall, 500 for cold)")
	flag.IntVar(&o.keepAlive, "keepalive", 0, "cold scenario: N clients sending back to back on kept-alive connections (closed loop, section 2b's kind of load) instead of -rate new connections a second")
	flag.IntVar(&o.reloads, "reloads", 8, "reloads in the cold scenario")
	flag.DurationVar(&o.steady, "steady", 10*time.Second, "the cold scenario's steady window, before the first reload")
	flag.DurationVar(&o.stall, "stall", 6*time.Second, "how long the worker stays stopped")
	flag.StringVar(&o.logs, "log", "", "keep sockd's log of each run in DIR/SCENARIO-PEER.log (steering decisions, reloads)")
	flag.StringVar(&o.raw, "raw", "", "write every request to DIR/SCENARIO-PEER.csv (start ms, latency ms, pid, unready, error)")
	flag.DurationVar(&o.slowStart, "slow-start", 2*time.Second, "--slow-start of the slowstart and warmup peers")
	flag.IntVar(&o.warmupRequests, "warmup-requests", 200, "--warmup-requests of the warmup peer")
	flag.DurationVar(&o.every, "every", 5*time.Second, "the cold scenario's time from one reload's start to the next (the last 2 s before each next reload are its between window)")
	showTimeline := flag.Bool("timeline", false, "cold scenario: also print to stderr, per 500-ms bin after a reload began (all reloads together), p99 against the steady p99 and the share of answers from the reload's new workers")
	flag.Parse()
	if *showTimeline {
		o.timeline = os.Stderr
	}
	src, err := os.Getwd()
	if err == nil {
		o.dir, err = filepath.Abs(filepath.Join(src, "bench", "steer"))
	}
	if _, serr := os.Stat(filepath.Join(o.dir, "coldapp.js")); err == nil && serr != nil {
		err = fmt.Errorf("run it from the repository's top directory: %w", serr)
	}
	if err == nil {
		fmt.Println(headers[*scenario])
	}
	for _, name := range strings.Split(*peers, ",") {
		if err != nil {
			break
		}
		switch *scenario {
		case "stall":
			if o.rate == 0 {
				o.rate = 1000
			}
			err = stall(os.Stdout, o, name)
		case "cold":
			if o.rate == 0 {
				o.rate = 500
			}
			err = cold(os.Stdout, o, name)
		default:
			err = fmt.Errorf("unknown scenario %q (stall, cold)", *scenario)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "steer:", err)
		os.Exit(1)
	}
}

// headers are the tables' first lines, by scenario: requests are every
// request sent; waited is over 1 s; balance is the smallest and largest
// share of a worker before the stall; unready are answers from workers
// before their ready message; after are the requests sent in the 2 s
// after each reload began; between are those sent in the last 2 s before
// each next reload (or the end); during are those sent while a reload
// ran, from its start until `reload --wait` returned (section 2b's
// window: with --slow-start the hand-over falls outside the after
// window); reload is `reload --wait`'s (or `pm2
// reload`'s) median duration; CPU is the supervisor's, per reload
// interval (-every).
var headers = map[string]string{
	"stall": "| peer | requests | failed | waited > 1 s | p50 ms | p99 ms | max ms | balance |\n|---|---:|---:|---:|---:|---:|---:|---:|",
	"cold": "| peer | requests | failed | unready | steady p50 ms | steady p99 ms | after p50 ms | after p99 ms | after / steady p99 | between p99 ms | after / between p99 | during p99 ms | during / steady p99 | reload ms | supervisor CPU ms |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
}

// A peer is a running server under test.
type peer struct {
	addr   string
	sup    int   // the supervisor's pid (0: none)
	pids   []int // its workers, at start
	reload func() error
	stop   func()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start starts the named peer with n workers; app is the Node app for the
// peers that run one (cold), or "" for each one's own hello server.
func start(o options, name string, n int, app string) (*peer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	switch name {
	case "shared", "reuseport", "slowstart", "warmup", "old-shared", "old-reuseport":
		bin, extra := o.sockd, []string(nil)
		if strings.HasPrefix(name, "old-") {
			if o.old == "" {
				return nil, errors.New("peer " + name + " needs -sockd-old")
			}
			bin = o.old
		}
		switch name {
		case "reuseport", "old-reuseport":
			extra = []string{"--reuseport"}
		case "slowstart":
			extra = []string{"--reuseport", "--slow-start", o.slowStart.String()}
		case "warmup":
			if app == "" {
				return nil, errors.New("peer warmup runs the cold scenario only")
			}
			extra = []string{"--reuseport", "--slow-start", o.slowStart.String(), "--warmup", "/", "--warmup-requests", strconv.Itoa(o.warmupRequests)}
		}
		return startSockd(bin, addr, n, app, extra, o.logFile(name, app))
	case "boot":
		if app == "" {
			return nil, errors.New("peer boot runs the cold scenario only")
		}
		p, err := startSockd(o.sockd, addr, n, app, []string{"--reuseport"}, o.logFile(name, app))
		if err == nil {
			p.reload = func() error { return boot(app, n) }
		}
		return p, err
	case "nginx":
		return startNginx(addr, n)
	case "cluster":
		return startCluster(o, port, n)
	case "pm2":
		if app == "" {
			return nil, errors.New("peer pm2 runs the cold scenario only")
		}
		return startPM2(o.pm2, port, n, app)
	}
	return nil, fmt.Errorf("unknown peer %q", name)
}

// logFile is where sockd's log of the named peer goes ("": nowhere).
func (o options) logFile(name, app string) string {
	if o.logs == "" {
		return ""
	}
	scenario := "stall"
	if app != "" {
		scenario = "cold"
	}
	return filepath.Join(o.logs, scenario+"-"+name+".log")
}

func startSockd(bin, addr string, n int, app string, extra []string, logFile string) (*peer, error) {
	var log io.Writer = io.Discard
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own copy
		log = f
	}
	dir, err := os.MkdirTemp("", "steer-sockd")
	if err != nil {
		return nil, err
	}
	ctl := filepath.Join(dir, "ctl.sock")
	args := append([]string{"run", "--control", ctl, "--workers", strconv.Itoa(n), "--listen", "tcp://" + addr, "--worker-output", "raw"}, extra...)
	host, port, _ := net.SplitHostPort(addr)
	env := append(os.Environ(), "PORT="+port, "HOST="+host)
	if app != "" {
		args = append(args, "--ready", "node-ipc", "--stop-signal", "INT", "--", "node", app)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = io.Discard, log
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &peer{addr: addr, sup: cmd.Process.Pid,
		reload: func() error { return exec.Command(bin, "reload", "--wait", "--control", ctl).Run() },
		stop:   func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait(); os.RemoveAll(dir) }}
	var st struct {
		Ready   int `json:"ready"`
		Workers []struct {
			PID int `json:"pid"`
		} `json:"workers"`
	}
	err = until(30*time.Second, "sockd ready", func() bool {
		out, err := exec.Command(bin, "status", "--json", "--control", ctl).Output()
		return err == nil && json.Unmarshal(out, &st) == nil && st.Ready == n && len(st.Workers) == n
	})
	for _, w := range st.Workers {
		p.pids = append(p.pids, w.PID)
	}
	return p, p.ready(err)
}

func (p *peer) ready(err error) error {
	if err == nil {
		err = until(10*time.Second, "the first answer", func() bool { _, _, err := get(p.addr); return err == nil })
	}
	if err != nil {
		p.stop()
	}
	return err
}

func startNginx(addr string, n int) (*peer, error) {
	dir, err := os.MkdirTemp("", "steer-nginx")
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen %s reuseport backlog=4096;
    location / { return 200 "hello from pid=$pid\n"; }
  }
}
`, n, dir, dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peer{addr: addr, stop: func() { cmd.Process.Signal(syscall.SIGQUIT); cmd.Wait(); os.RemoveAll(dir) }}
	err = until(10*time.Second, "nginx's workers", func() bool { p.pids = procfs.Children(cmd.Process.Pid); return len(p.pids) == n })
	return p, p.ready(err)
}

func startCluster(o options, port, n int) (*peer, error) {
	cmd := exec.Command("node", filepath.Join(o.dir, "cluster.js"))
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "WORKERS="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peer{addr: fmt.Sprintf("127.0.0.1:%d", port), stop: func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }}
	line, err := bufio.NewReader(out).ReadString('\n')
	go io.Copy(io.Discard, out)
	for _, f := range strings.Fields(strings.TrimPrefix(line, "workers ")) {
		pid, _ := strconv.Atoi(f)
		p.pids = append(p.pids, pid)
	}
	if err == nil && len(p.pids) != n {
		err = fmt.Errorf("cluster.js said %q", line)
	}
	return p, p.ready(err)
}

func startPM2(pm2 string, port, n int, app string) (*peer, error) {
	home, err := os.MkdirTemp("", "steer-pm2")
	if err != nil {
		return nil, err
	}
	eco := filepath.Join(home, "ecosystem.config.js")
	err = os.WriteFile(eco, []byte(fmt.Sprintf(`module.exports = { apps: [{
  name: 'cold', script: %q, instances: %d, exec_mode: 'cluster',
  wait_ready: true, kill_timeout: 5000, env: { PORT: %d, HOST: '127.0.0.1' },
}] };
`, app, n, port)), 0o644)
	if err != nil {
		return nil, err
	}
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command(pm2, args...)
		cmd.Dir = home
		cmd.Env = append(os.Environ(), "PM2_HOME="+filepath.Join(home, "home"), "PM2_DISABLE_VERSION_CHECK=true")
		return cmd.Output()
	}
	p := &peer{addr: fmt.Sprintf("127.0.0.1:%d", port),
		reload: func() error { _, err := run("reload", "cold"); return err },
		stop:   func() { run("kill"); os.RemoveAll(home) }}
	if _, err := run("start", eco); err != nil {
		p.stop()
		return nil, fmt.Errorf("pm2 start: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(home, "home", "pm2.pid")); err == nil {
		p.sup, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return p, p.ready(nil)
}

// cpu is the CPU time pid has used (user and system), or 0.
func cpu(pid int) time.Duration {
	p, err := procfs.ReadProcess(pid)
	if err != nil || pid == 0 {
		return 0
	}
	return p.CPU()
}

// boot is the boot peer's "reload": no reload at all, but n more
// processes of the app start beside the serving ones, take no traffic,
// and are stopped once they would have been ready: what starting a new
// generation costs the machine, the floor of any reload's p99 on it.
func boot(app string, n int) error {
	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			c.Process.Signal(syscall.SIGINT)
			c.Wait()
		}
	}()
	var ports []int
	for range n { // all at once, as a reload starts them
		port, err := freePort()
		if err != nil {
			return err
		}
		c := exec.Command("node", app)
		c.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
		if err := c.Start(); err != nil {
			return err
		}
		procs, ports = append(procs, c), append(ports, port)
	}
	for _, port := range ports {
		if err := until(10*time.Second, "the booting app", func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
			}
			return err == nil
		}); err != nil {
			return err
		}
	}
	time.Sleep(time.Second) // the app's READY_AFTER_MS: it stays as long as a real new worker would before taking traffic
	return nil
}

func until(d time.Duration, what string, ok func() bool) error {
	for deadline := time.Now().Add(d); !ok(); {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	return nil
}

// A result is one request of the open-loop client.
type result struct {
	at, took time.Duration // start since the load began, latency
	pid      int
	unready  bool // the answer said ready=0
	err      error
}

var bodyRE = regexp.MustCompile(`pid=(\d+)(?: ready=(\d))?`)

// load opens one new connection per request, rate a second, for d; at
// calls each hook once its time has come (from the pacing goroutine).
func load(addr string, rate int, d time.Duration, hooks map[time.Duration]func()) []result {
	var mu sync.Mutex
	var out []result
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	t0 := time.Now()
	for now := range tick.C {
		el := now.Sub(t0)
		if el > d {
			break
		}
		for at, f := range hooks {
			if el >= at {
				f()
				delete(hooks, at)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, body, err := get(addr)
			r := result{at: el, took: took, err: err}
			if m := bodyRE.FindStringSubmatch(body); m != nil {
				r.pid, _ = strconv.Atoi(m[1])
				r.unready = m[2] == "0"
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b result) int { return int(a.at - b.at) })
	return out
}

// loadKeepAlive runs n clients that send back to back on kept-alive
// connections (closed loop: the load takes what the servers give), for d;
// at calls each hook once its time has come. Answers before ready are not
// told apart here (unready stays false).
func loadKeepAlive(addr string, n int, d time.Duration, hooks map[time.Duration]func()) []result {
	run := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, KeepAlive: n, Duration: d, Careful: true, Timeout: 20 * time.Second})
	tick := time.NewTicker(5 * time.Millisecond)
	for len(hooks) > 0 {
		select {
		case <-tick.C:
		case <-run.Done():
			clear(hooks)
		}
		el := run.Since()
		for at, f := range hooks {
			if el >= at {
				f()
				delete(hooks, at)
			}
		}
	}
	tick.Stop()
	res := run.Wait()
	out := make([]result, 0, len(res.Records))
	for _, r := range res.Records {
		x := result{at: r.Start, took: r.Latency, pid: int(r.PID)}
		if r.Kind != loadgen.OK {
			x.err = fmt.Errorf("%s: %s", r.Kind, r.Err)
		}
		out = append(out, x)
	}
	return out
}

// timeline prints one line for the cold scenario: for each 500-ms bin
// after a reload began (all reloads together), p99 against the steady p99
// and the share of the answers that came from workers the reload started
// (a pid first seen after it began): where in a reload the slow answers
// fall, and when the new workers take the traffic.
func timeline(w io.Writer, name string, rs []result, first, every, steadyP99 time.Duration) {
	const bin = 500 * time.Millisecond
	seen := map[int]time.Duration{} // pid → its first answer
	for _, r := range rs {
		if _, ok := seen[r.pid]; r.err == nil && r.pid != 0 && !ok {
			seen[r.pid] = r.at
		}
	}
	n := int(every / bin)
	took, fresh := make([][]time.Duration, n), make([]int, n)
	for _, r := range rs {
		if r.err != nil || r.at < first {
			continue
		}
		start := first + (r.at-first)/every*every
		b := int((r.at - start) / bin)
		if b >= n {
			continue
		}
		took[b] = append(took[b], r.took)
		if at, ok := seen[r.pid]; ok && at >= start {
			fresh[b]++
		}
	}
	fmt.Fprintf(w, "timeline %s (after a reload began: p99 / steady p99, share from its new workers):", name)
	for b, ts := range took {
		if len(ts) == 0 {
			continue
		}
		slices.Sort(ts)
		p := ts[min(len(ts)-1, int(0.99*float64(len(ts))))]
		fmt.Fprintf(w, " %.1fs %.2f×/%d%%", (time.Duration(b) * bin).Seconds(), float64(p)/float64(max(steadyP99, 1)), 100*fresh[b]/len(ts))
	}
	fmt.Fprintln(w)
}

func get(addr string) (time.Duration, string, error) {
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(t0.Add(20 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = errors.New(resp.Status)
	}
	return time.Since(t0), string(body), err
}

// stats sums up the requests keep says yes to.
type stats struct {
	n, failed, slow, unready int
	p50, p99, max            time.Duration
}

func summarize(rs []result, keep func(result) bool) stats {
	var s stats
	var took []time.Duration
	for _, r := range rs {
		if !keep(r) {
			continue
		}
		s.n++
		switch {
		case r.err != nil:
			s.failed++
			continue
		case r.unready:
			s.unready++
		}
		if r.took > time.Second {
			s.slow++
		}
		took = append(took, r.took)
	}
	if len(took) > 0 {
		slices.Sort(took)
		q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
		s.p50, s.p99, s.max = q(0.5), q(0.99), took[len(took)-1]
	}
	return s
}

// writeRaw writes rs to dir/name.csv when dir is set.
func writeRaw(dir, name string, rs []result) error {
	if dir == "" {
		return nil
	}
	var b strings.Builder
	b.WriteString("at_ms,took_ms,pid,unready,error\n")
	for _, r := range rs {
		e := ""
		if r.err != nil {
			e = strings.ReplaceAll(r.err.Error(), ",", ";")
		}
		fmt.Fprintf(&b, "%s,%s,%d,%t,%s\n", ms(r.at), ms(r.took), r.pid, r.unready, e)
	}
	return os.WriteFile(filepath.Join(dir, name+".csv"), []byte(b.String()), 0o644)
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

func stall(w io.Writer, o options, name string) error {
	p, err := start(o, name, 4, "")
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer p.stop()
	victim := p.pids[0]
	window := 3 * time.Second
	rs := load(p.addr, o.rate, window+o.stall+3*time.Second, map[time.Duration]func(){
		window:           func() { syscall.Kill(victim, syscall.SIGSTOP) },
		window + o.stall: func() { syscall.Kill(victim, syscall.SIGCONT) },
	})
	syscall.Kill(victim, syscall.SIGCONT)
	if err := writeRaw(o.raw, "stall-"+name, rs); err != nil {
		return err
	}
	// balance: answers per worker in the window before the stall
	per := map[int]int{}
	before := 0
	for _, r := range rs {
		if r.at < window && r.err == nil {
			per[r.pid]++
			before++
		}
	}
	var shares []float64
	for _, pid := range p.pids {
		shares = append(shares, 100*float64(per[pid])/float64(max(before, 1)))
	}
	slices.Sort(shares)
	s := summarize(rs, func(result) bool { return true })
	fmt.Fprintf(w, "| %s | %d | %d | %d (%.2f %%) | %s | %s | %s | %.1f–%.1f %% |\n", name, s.n, s.failed, s.slow,
		100*float64(s.slow)/float64(max(s.n, 1)), ms(s.p50), ms(s.p99), ms(s.max), shares[0], shares[len(shares)-1])
	return nil
}

func cold(w io.Writer, o options, name string) error {
	p, err := start(o, name, 2, filepath.Join(o.dir, "coldapp.js"))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer p.stop()
	// 3 s of warm-up, -steady (10 s: 5,000 requests, so that its p99 is
	// not the 20th slowest of 2,000), then a reload every 5 s
	warm, steady, every := 3*time.Second, o.steady, o.every
	if every < 4*time.Second {
		every = 5 * time.Second
	}
	first := warm + steady
	hooks := map[time.Duration]func(){}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var reloadErr error
	var reloadTook []time.Duration
	var windows [][2]time.Duration // each reload's start and end, on the load's clock
	next := make(chan struct{}, 1)
	next <- struct{}{}
	for i := range o.reloads {
		at := first + time.Duration(i)*every
		hooks[at] = func() {
			fired := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-next // one reload at a time
				t0 := time.Now()
				err := p.reload()
				took := time.Since(t0)
				begin := at + t0.Sub(fired)
				mu.Lock()
				reloadTook = append(reloadTook, took)
				windows = append(windows, [2]time.Duration{begin, begin + took})
				reloadErr = errors.Join(reloadErr, err)
				mu.Unlock()
				next <- struct{}{}
			}()
		}
	}
	var cpu0 time.Duration
	hooks[first-time.Millisecond] = func() { cpu0 = cpu(p.sup) }
	var rs []result
	if o.keepAlive > 0 {
		rs = loadKeepAlive(p.addr, o.keepAlive, first+time.Duration(o.reloads)*every, hooks)
	} else {
		rs = load(p.addr, o.rate, first+time.Duration(o.reloads)*every, hooks)
	}
	wg.Wait()
	supCPU := (cpu(p.sup) - cpu0) / time.Duration(o.reloads)
	if reloadErr != nil {
		return fmt.Errorf("%s: reload: %w", name, reloadErr)
	}
	if err := writeRaw(o.raw, "cold-"+name, rs); err != nil {
		return err
	}
	afterReload := func(r result) bool {
		return r.at >= first && (r.at-first)%every < 2*time.Second
	}
	st := summarize(rs, func(r result) bool { return r.at >= warm && r.at < first })
	af := summarize(rs, afterReload)
	// between: the last 2 s before the next reload (or the end), steady
	// windows interleaved with the after windows, which a slow drift of
	// the machine's speed affects alike; steady only when the reload is
	// over by then (-every 10s: a reload with --slow-start 2s takes 4.5 s).
	bt := summarize(rs, func(r result) bool {
		return r.at >= first && (r.at-first)%every >= every-2*time.Second
	})
	during := summarize(rs, func(r result) bool {
		for _, w := range windows {
			if r.at >= w[0] && r.at < w[1] {
				return true
			}
		}
		return false
	})
	all := summarize(rs, func(r result) bool { return r.at >= warm })
	if o.timeline != nil {
		timeline(o.timeline, name, rs, first, every, st.p99)
	}
	slices.Sort(reloadTook)
	fmt.Fprintf(w, "| %s | %d | %d | %d | %s | %s | %s | %s | %.2f× | %s | %.2f× | %s | %.2f× | %s | %d |\n", name, all.n, all.failed, all.unready,
		ms(st.p50), ms(st.p99), ms(af.p50), ms(af.p99), float64(af.p99)/float64(max(st.p99, 1)),
		ms(bt.p99), float64(af.p99)/float64(max(bt.p99, 1)), ms(during.p99), float64(during.p99)/float64(max(st.p99, 1)),
		ms(reloadTook[len(reloadTook)/2]), supCPU.Milliseconds())
	return nil
}
