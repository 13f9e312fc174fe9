// Package metrics is sockd's Prometheus endpoint (--metrics): GET /metrics
// in the text exposition format, or OpenMetrics when the scraper asks for
// it (Accept: application/openmetrics-text). It is served off the
// supervisor loop: a scrape costs the loop one status snapshot, so a slow
// scraper cannot delay a reload.
//
// It exposes what the pool does (counted from its events: worker starts,
// exits and restarts by reason, recycles, reloads and upgrades by result,
// time to ready and reload durations as histograms), what it is now (from
// its status: workers by state, target size, generation, per worker CPU
// time, resident memory, requests and uptime, per listening socket the
// accept queue's depth and limit), sockd's own process metrics, and the
// workers' own metrics (workers.go), each sample labelled with the slot,
// generation and pid of the worker it came from.
//
// Per-worker series exist only for live workers: their number does not
// grow with the number of reloads.
package metrics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
	"github.com/sockd/sockd/internal/accept"
	"github.com/sockd/sockd/internal/http1"
	"github.com/sockd/sockd/internal/procfs"
	"github.com/sockd/sockd/pool"
)

// Buckets of the histograms, in seconds.
var (
	readyBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	reloadBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// The exposition is written by families (expfmt.go), not with a client
// library: both candidates, prometheus/client_golang and the much smaller
// VictoriaMetrics/metrics, bring net/http and crypto/tls into sockd's one
// binary, and VictoriaMetrics/metrics reads /proc and cgroup files when it
// is initialised, which every process that binary starts (each worker's
// LISTEN_PID trampoline, the guard) would pay. Measured in BENCHMARKS.md.

// Exporter serves the metrics.
type Exporter struct {
	mu         sync.Mutex
	counters   map[string]*counter // by family name
	histograms map[string]*histogram
	status     func(context.Context) (pool.Status, error)
	log        hclog.Logger
	started    time.Time
	// WorkerTimeout bounds the scrape of one worker's own metrics.
	WorkerTimeout time.Duration
	// Extra are more of sockd's own metrics, each written in the text
	// format (0.0.4) at every scrape: the worker output relay's.
	Extra []func(io.Writer) error
	// Name, if set, is the application's name in force (--name): the
	// name label of sockd_info.
	Name func() string
}

// counter is a counter family with at most one label.
type counter struct {
	help, label string
	values      map[string]float64 // by label value ("" without a label)
}

// histogram is a histogram with fixed buckets.
type histogram struct {
	help   string
	bounds []float64
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

// New makes an exporter of the pool whose status status returns.
func New(status func(context.Context) (pool.Status, error), log hclog.Logger) *Exporter {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	e := &Exporter{counters: map[string]*counter{}, histograms: map[string]*histogram{}, status: status, log: log,
		started: time.Now(), WorkerTimeout: 2 * time.Second}
	// Every series a dashboard may ask for exists from the start, at 0.
	e.counter("sockd_worker_starts_total", "Worker processes started.", "")
	e.counter("sockd_worker_spawn_failures_total", "Workers sockd could not start (fork or exec failed), by why: resources (out of descriptors, processes or memory) or error.", "reason", "resources", "error")
	e.counter("sockd_give_ups_total", "Times sockd gave up: workers crashed beyond the restart limit.", "")
	e.counter("sockd_scales_total", "Changes of the number of workers.", "")
	e.counter("sockd_worker_exits_total", "Worker exits, by why.", "reason",
		pool.ExitCrash, pool.ExitReadyTimeout, pool.ExitWatchdog, pool.ExitEarlyStopping, pool.ExitAnnounced, pool.ExitRetired, pool.ExitStopped)
	e.counter("sockd_worker_restarts_total", "Workers restarted after a crash, by why they ended.", "reason",
		pool.ExitCrash, pool.ExitReadyTimeout, pool.ExitWatchdog, pool.ExitEarlyStopping)
	e.counter("sockd_worker_recycles_total", "Workers replaced for being over a recycle limit, by limit.", "reason", "memory", "requests", "age")
	e.counter("sockd_reloads_total", "Reloads, by result.", "result", "done", "rolled_back", "halted", "refused")
	e.counter("sockd_upgrades_total", "Binary upgrades, by result.", "result", "done", "failed", "refused")
	e.histograms["sockd_worker_ready_seconds"] = newHistogram("Time from a worker's start to its readiness.", readyBuckets)
	e.histograms["sockd_reload_duration_seconds"] = newHistogram("Duration of reloads that took over.", reloadBuckets)
	return e
}

func newHistogram(help string, bounds []float64) *histogram {
	return &histogram{help: help, bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

// counter declares a counter family and its label values.
func (e *Exporter) counter(name, help, label string, values ...string) {
	c := &counter{help: help, label: label, values: map[string]float64{}}
	if label == "" {
		c.values[""] = 0
	}
	for _, v := range values {
		c.values[v] = 0
	}
	e.counters[name] = c
}

func (e *Exporter) inc(name, value string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.counters[name]; c != nil {
		c.values[value]++
	}
}

func (e *Exporter) observe(name string, v float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.histograms[name]
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v
	h.counts[i]++
	h.sum += v
	h.count++
}

// OnEvent counts a pool event (pool.Options.OnEvent).
func (e *Exporter) OnEvent(ev pool.Event) {
	switch ev.Kind {
	case pool.EventStart:
		e.inc("sockd_worker_starts_total", "")
	case pool.EventSpawnFailed:
		e.inc("sockd_worker_spawn_failures_total", ev.Reason)
	case pool.EventReady:
		e.observe("sockd_worker_ready_seconds", ev.Seconds)
	case pool.EventExit:
		e.inc("sockd_worker_exits_total", ev.Reason)
	case pool.EventRestart:
		e.inc("sockd_worker_restarts_total", ev.Reason)
	case pool.EventRecycle:
		e.inc("sockd_worker_recycles_total", ev.Reason)
	case pool.EventReloadDone:
		e.Reload("done")
		e.observe("sockd_reload_duration_seconds", ev.Seconds)
	case pool.EventReloadFailed:
		e.Reload(ev.Reason)
	case pool.EventGiveUp:
		e.inc("sockd_give_ups_total", "")
	case pool.EventScale:
		e.inc("sockd_scales_total", "")
	}
}

// Reload counts a reload by result: done, rolled_back, halted, refused.
func (e *Exporter) Reload(result string) { e.inc("sockd_reloads_total", result) }

// Upgrade counts an upgrade by result: done, failed, refused.
func (e *Exporter) Upgrade(result string) { e.inc("sockd_upgrades_total", result) }

// num formats a sample value.
func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func lbl(kv ...string) [][2]string {
	var l [][2]string
	for i := 0; i+1 < len(kv); i += 2 {
		l = append(l, [2]string{kv[i], kv[i+1]})
	}
	return l
}

// cumulative adds the counters and histograms to fs.
func (e *Exporter) cumulative(fs *families) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, c := range e.counters {
		f := fs.get(name)
		f.help, f.typ = c.help, "counter"
		keys := make([]string, 0, len(c.values))
		for k := range c.values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			var l [][2]string
			if c.label != "" {
				l = lbl(c.label, k)
			}
			f.samples = append(f.samples, sample{name, l, num(c.values[k])})
		}
	}
	for name, h := range e.histograms {
		f := fs.get(name)
		f.help, f.typ = h.help, "histogram"
		var cum uint64
		for i, b := range h.bounds {
			cum += h.counts[i]
			f.samples = append(f.samples, sample{name + "_bucket", lbl("le", num(b)), strconv.FormatUint(cum, 10)})
		}
		f.samples = append(f.samples, sample{name + "_bucket", lbl("le", "+Inf"), strconv.FormatUint(h.count, 10)},
			sample{name + "_sum", nil, num(h.sum)}, sample{name + "_count", nil, strconv.FormatUint(h.count, 10)})
	}
}

// gauge adds one gauge sample to fs.
func gauge(fs *families, name, help string, v float64, labels ...string) {
	f := fs.get(name)
	f.help, f.typ = help, "gauge"
	f.samples = append(f.samples, sample{name, lbl(labels...), num(v)})
}

// counterNow adds one sample of a counter whose value sockd reads (not
// counts) to fs.
func counterNow(fs *families, name, help string, v float64, labels ...string) {
	f := fs.get(name)
	f.help, f.typ = help, "counter"
	f.samples = append(f.samples, sample{name, lbl(labels...), num(v)})
}

// Write writes one scrape.
func (e *Exporter) Write(ctx context.Context, w *bytes.Buffer, openMetrics bool) {
	fs := newFamilies()
	gauge(fs, "sockd_start_time_seconds", "When sockd started, in seconds since the epoch.", float64(e.started.UnixNano())/1e9)
	gauge(fs, "sockd_uptime_seconds", "How long sockd has been running.", time.Since(e.started).Seconds())
	if e.Name != nil {
		gauge(fs, "sockd_info", "The application sockd runs, by its name (--name); always 1.", 1, "name", e.Name())
	}
	e.cumulative(fs)
	process(fs)
	for _, write := range e.Extra {
		var b bytes.Buffer
		if err := write(&b); err != nil {
			e.log.Debug("metrics: a source failed", "error", err)
		}
		fs.add(&b, nil)
	}
	st, err := e.status(ctx)
	if err != nil {
		e.log.Debug("metrics without the pool's status", "error", err)
		fs.write(w, openMetrics)
		return
	}
	workers := newFamilies()
	up := e.scrapeWorkers(ctx, st.Workers, workers)
	statusGauges(fs, st, up)
	fs.merge(workers)
	fs.write(w, openMetrics)
}

// process adds sockd's own process metrics.
func process(fs *families) {
	pid := os.Getpid()
	if u, err := procfs.ProcUsage(pid); err == nil {
		counterNow(fs, "process_cpu_seconds_total", "User and system CPU time of sockd itself (a sample with slot and generation labels: a worker's own, merged in).", u.CPU.Seconds())
		gauge(fs, "process_resident_memory_bytes", "Resident memory of sockd itself (a sample with slot and generation labels: a worker's own, merged in).", float64(u.RSS))
	}
	if fds, err := procfs.FDs(pid); err == nil {
		gauge(fs, "process_open_fds", "Open descriptors of sockd itself (a sample with slot and generation labels: a worker's own, merged in).", float64(len(fds)))
	}
}

// statusGauges turns a status snapshot into gauges.
func statusGauges(fs *families, st pool.Status, up map[int]bool) {
	gauge(fs, "sockd_generation", "The serving generation.", float64(st.Generation))
	gauge(fs, "sockd_workers_target", "The number of workers asked for.", float64(st.Size))
	gauge(fs, "sockd_workers_current", "Worker slots with a worker, and retired ones still draining.", float64(st.Current))
	reloading := 0.0
	if st.State == pool.StateReloading {
		reloading = 1
	}
	gauge(fs, "sockd_reloading", "1 while a reload runs.", reloading)
	byState := map[string]int{pool.Starting: 0, pool.Ready: 0, pool.Stopping: 0}
	now := time.Now()
	for _, w := range st.Workers {
		byState[w.State]++
		l := []string{"slot", strconv.Itoa(w.Slot), "generation", strconv.Itoa(w.Generation), "pid", strconv.Itoa(w.PID)}
		ready := 0.0
		if w.State == pool.Ready {
			ready = 1
		}
		gauge(fs, "sockd_worker_ready", "1 for a worker that is ready, 0 while it starts or stops.", ready, l...)
		gauge(fs, "sockd_worker_uptime_seconds", "How long the worker has been running.", now.Sub(w.StartedAt).Seconds(), l...)
		if w.RSSBytes > 0 {
			gauge(fs, "sockd_worker_resident_memory_bytes", "Resident memory of the worker's processes (its cgroup's memory with the memory controller).", float64(w.RSSBytes), l...)
			counterNow(fs, "sockd_worker_cpu_seconds_total", "CPU time of the worker's processes (its cgroup's).", w.CPUSeconds, l...)
		}
		if w.Requests != nil {
			counterNow(fs, "sockd_worker_requests_total", "Requests the worker reported (SOCKD_REQUESTS=).", float64(*w.Requests), l...)
		}
		if w.MetricsSocket != "" {
			v := 0.0
			if up[w.PID] {
				v = 1
			}
			gauge(fs, "sockd_worker_metrics_up", "1 if the worker's own metrics were scraped this time.", v, l...)
		}
	}
	for _, state := range []string{pool.Starting, pool.Ready, pool.Stopping} {
		gauge(fs, "sockd_workers", "Workers by state.", float64(byState[state]), "state", state)
	}
	for _, l := range st.Listeners {
		for i := range l.QueueDepth {
			kv := []string{"listener", l.Name, "socket", strconv.Itoa(i)}
			gauge(fs, "sockd_listener_queue_depth", "Connections waiting in the socket's accept queue, not yet taken by a worker.", float64(l.QueueDepth[i]), kv...)
			gauge(fs, "sockd_listener_queue_limit", "The length of the socket's accept queue (its backlog).", float64(l.QueueLimit[i]), kv...)
		}
	}
}

// Serve answers GET /metrics on ln until it is closed: a connection per
// request (Connection: close), never keeping the supervisor waiting.
func (e *Exporter) Serve(ln net.Listener) error {
	backoff := accept.Backoff{Log: e.log, What: "metrics"}
	for {
		c, err := ln.Accept()
		if err != nil {
			if backoff.Retry(err) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		backoff.OK()
		go e.serveConn(c)
	}
}

func (e *Exporter) serveConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	budget := 16 << 10
	line, err := http1.ReadLine(br, &budget)
	if err != nil {
		return
	}
	accept := ""
	for {
		h, err := http1.ReadLine(br, &budget)
		if err != nil {
			return
		}
		if h == "" {
			break
		}
		if name, value, err := http1.Header(h); err == nil && name == "accept" {
			accept = value
		}
	}
	f := strings.Fields(line)
	switch {
	case len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1."):
		respond(c, 400, "text/plain; charset=utf-8", []byte("bad request\n"), false)
	case f[0] != "GET" && f[0] != "HEAD":
		respond(c, 405, "text/plain; charset=utf-8", []byte("only GET\n"), false)
	case strings.SplitN(f[1], "?", 2)[0] != "/metrics":
		respond(c, 404, "text/plain; charset=utf-8", []byte("not found: try /metrics\n"), false)
	default:
		om := acceptsOpenMetrics(accept)
		ct := "text/plain; version=0.0.4; charset=utf-8"
		if om {
			ct = "application/openmetrics-text; version=1.0.0; charset=utf-8"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var buf bytes.Buffer
		e.Write(ctx, &buf, om)
		cancel()
		respond(c, 200, ct, buf.Bytes(), f[0] == "HEAD")
	}
}

func respond(c net.Conn, code int, ctype string, body []byte, head bool) {
	text := map[int]string{200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", code, text, ctype, len(body))
	if !head {
		c.Write(body)
	}
}

// Listen opens the endpoint at u: tcp://HOST:PORT or unix:///PATH (mode
// 0600 for a unix socket; a stale one is replaced).
func Listen(u string) (net.Listener, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w", u, err)
	}
	switch p.Scheme {
	case "tcp", "tcp4", "tcp6":
		if p.Host == "" || p.Path != "" && p.Path != "/" {
			return nil, fmt.Errorf("metrics address %q: want tcp://HOST:PORT", u)
		}
		return net.Listen(activation.IPv4Only(p.Scheme, p.Host), p.Host)
	case "unix":
		if p.Host != "" || !strings.HasPrefix(p.Path, "/") {
			return nil, fmt.Errorf("metrics address %q: want unix:///ABSOLUTE/PATH", u)
		}
		if err := activation.RemoveStale(p.Path); errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("metrics socket %s is in use", p.Path)
		} else if err != nil {
			return nil, fmt.Errorf("metrics socket: %w", err)
		}
		ln, err := net.Listen("unix", p.Path)
		if err == nil {
			os.Chmod(p.Path, 0o600)
		}
		return ln, err
	}
	return nil, fmt.Errorf("metrics address %q: want tcp://HOST:PORT or unix:///PATH", u)
}

// acceptsOpenMetrics reads an Accept header: OpenMetrics is asked for
// with a quality above 0 (a q=0 refuses it, RFC 9110 12.4.2).
func acceptsOpenMetrics(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		params := strings.Split(part, ";")
		if strings.TrimSpace(strings.ToLower(params[0])) != "application/openmetrics-text" {
			continue
		}
		q := 1.0
		for _, p := range params[1:] {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		return q > 0
	}
	return false
}

// Serves reports whether ln listens where Listen(u) would: the same unix
// path, or the same TCP address (a host name is looked up; port 0 matches
// any port). An upgrade keeps the old sockd's metrics socket only then.
func Serves(ln net.Listener, u string) bool {
	p, err := url.Parse(u)
	if err != nil || ln == nil {
		return false
	}
	switch a := ln.Addr().(type) {
	case *net.UnixAddr:
		return p.Scheme == "unix" && a.Name == p.Path
	case *net.TCPAddr:
		if p.Scheme != "tcp" && p.Scheme != "tcp4" && p.Scheme != "tcp6" {
			return false
		}
		return activation.BoundAt(a, p.Scheme, p.Host)
	}
	return false
}

// ParseAddr checks a --metrics address without listening.
func ParseAddr(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", u, err)
	}
	switch {
	case (p.Scheme == "tcp" || p.Scheme == "tcp4" || p.Scheme == "tcp6") && p.Host != "" && (p.Path == "" || p.Path == "/"):
		_, port, err := net.SplitHostPort(p.Host)
		if err != nil {
			return fmt.Errorf("metrics address %q: want tcp://HOST:PORT", u)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("metrics address %q: port %q: want 0 to 65535", u, port)
		}
		return nil
	case p.Scheme == "unix" && p.Host == "" && strings.HasPrefix(p.Path, "/"):
		if err := activation.CheckUnixPath(p.Path); err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		return nil
	}
	return fmt.Errorf("metrics address %q: want tcp://HOST:PORT or unix:///PATH", u)
}
