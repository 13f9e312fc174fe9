package metrics

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sockd/sockd/internal/http1"
	"github.com/sockd/sockd/pool"
)

// The workers' own metrics. Every worker sockd starts with --metrics on
// gets SOCKD_METRICS_SOCKET: the path of a unix socket on which it may
// serve its own metrics (GET /metrics, the Prometheus text format: what
// prom-client, prometheus_client or client_golang write). At each scrape
// sockd asks every live worker that listens there, all at once, each for
// at most WorkerTimeout, and adds their samples to its own with the
// worker's slot, generation and pid as labels. A worker that does not
// listen, answers garbage or is too slow is left out of that scrape
// (sockd_worker_metrics_up is 0 for it); the scrape goes on.

// maxWorkerMetrics bounds one worker's answer.
const maxWorkerMetrics = 16 << 20

// scrapeWorkers reads the metrics of every worker that has a socket and
// adds them to fs; it returns which workers answered.
func (e *Exporter) scrapeWorkers(ctx context.Context, ws []pool.WorkerStatus, fs *families) map[int]bool {
	type answer struct {
		w    pool.WorkerStatus
		body []byte
		err  error
	}
	answers := make(chan answer, len(ws))
	var wg sync.WaitGroup
	for _, w := range ws {
		if w.MetricsSocket == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := fetch(ctx, w.MetricsSocket, e.WorkerTimeout)
			answers <- answer{w, body, err}
		}()
	}
	wg.Wait()
	close(answers)
	up := map[int]bool{}
	for a := range answers {
		if a.err != nil {
			e.log.Debug("worker metrics not scraped", "worker_pid", a.w.PID, "error", a.err)
			continue
		}
		labels := [][2]string{{"slot", fmt.Sprint(a.w.Slot)}, {"generation", fmt.Sprint(a.w.Generation)}, {"pid", fmt.Sprint(a.w.PID)}}
		if _, err := fs.add(bytes.NewReader(a.body), labels); err != nil {
			e.log.Debug("worker metrics partly unreadable", "worker_pid", a.w.PID, "error", err)
		}
		up[a.w.PID] = true
	}
	return up
}

// fetch gets http://worker/metrics over the unix socket at path.
func fetch(ctx context.Context, path string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	code, body, err := http1.Get(c, "worker", "/metrics", map[string]string{"Accept": "text/plain; version=0.0.4"}, maxWorkerMetrics)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("status %d", code)
	}
	return body, nil
}
