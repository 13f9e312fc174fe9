package workertest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LoadConfig describes a load: clients that each send POST requests back
// to back, on keep-alive connections or on a new connection every time,
// and sporadic clients pausing between requests on keep-alive connections,
// which are then often idle when a drain begins.
type LoadConfig struct {
	URL       string
	KeepAlive int // clients reusing their keep-alive connection
	NewConns  int // clients opening a connection per request
	Sporadic  int // keep-alive clients pausing up to SporadicPause
	// Check validates a 200 response and its body; nil accepts any.
	Check func(resp *http.Response, body []byte) error
}

// SporadicPause is the longest pause of a sporadic client.
const SporadicPause = 20 * time.Millisecond

// Stats counts a load's outcomes.
//
// Errors counts every request whose outcome the client cannot know: an
// error from Client.Do (after the Transport's own retries), a status other
// than 200, a failed body read or a failed Check. Requests are POSTs, which
// the Transport never retries once it wrote any of the request: a
// connection closed under a request that was sent is an error here.
// Retries counts the requests the Transport sent again on a fresh
// connection because the reused one was found closed before anything was
// written; the server never saw the first attempt, so no request is lost.
type Stats struct {
	OK, Errors, Retries int64
	Samples             []string // the first few errors
}

func (s Stats) String() string {
	return fmt.Sprintf("ok=%d errors=%d retries=%d samples=%q", s.OK, s.Errors, s.Retries, s.Samples)
}

// Load is a running load.
type Load struct {
	cfg     LoadConfig
	cancel  context.CancelFunc
	trs     []*http.Transport
	wg      sync.WaitGroup
	ok, bad atomic.Int64
	retries atomic.Int64
	mu      sync.Mutex
	samples []string
}

// StartLoad starts the clients.
func StartLoad(cfg LoadConfig) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, cancel: cancel}
	ka := &http.Transport{MaxIdleConnsPerHost: cfg.KeepAlive + 1}
	fresh := &http.Transport{DisableKeepAlives: true}
	sporadic := &http.Transport{MaxIdleConnsPerHost: cfg.Sporadic + 1}
	l.trs = []*http.Transport{ka, fresh, sporadic}
	l.start(ctx, ka, cfg.KeepAlive, 0)
	l.start(ctx, fresh, cfg.NewConns, 0)
	l.start(ctx, sporadic, cfg.Sporadic, SporadicPause)
	return l
}

func (l *Load) start(ctx context.Context, tr *http.Transport, n int, pause time.Duration) {
	for range n {
		c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		l.wg.Add(1)
		go l.client(ctx, c, pause)
	}
}

func (l *Load) client(ctx context.Context, c *http.Client, pause time.Duration) {
	defer l.wg.Done()
	for ctx.Err() == nil {
		if pause > 0 {
			time.Sleep(rand.N(pause)) // load shaping, not synchronisation
		}
		if err := l.do(c); err != nil {
			l.bad.Add(1)
			l.mu.Lock()
			if len(l.samples) < 5 {
				l.samples = append(l.samples, err.Error())
			}
			l.mu.Unlock()
			continue
		}
		l.ok.Add(1)
	}
}

func (l *Load) do(c *http.Client) error {
	var conns atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	req, err := http.NewRequest("POST", l.cfg.URL, strings.NewReader("ping"))
	if err != nil {
		return err
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := c.Do(req)
	if n := conns.Load(); n > 1 {
		l.retries.Add(n - 1)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if l.cfg.Check != nil {
		return l.cfg.Check(resp, body)
	}
	return nil
}

// OK returns the number of successful requests so far.
func (l *Load) OK() int64 { return l.ok.Load() }

// WaitOK waits until n more requests succeeded, failing t after timeout.
func (l *Load) WaitOK(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	target := l.OK() + n
	Eventually(t, timeout, fmt.Sprintf("%d successful requests", target),
		func() bool { return l.OK() >= target })
}

// Stop stops the clients, lets in-flight requests finish, closes the idle
// connections and returns the counts.
func (l *Load) Stop() Stats {
	l.cancel()
	l.wg.Wait()
	for _, tr := range l.trs {
		tr.CloseIdleConnections()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{OK: l.ok.Load(), Errors: l.bad.Load(), Retries: l.retries.Load(),
		Samples: append([]string(nil), l.samples...)}
}
