package workertest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/load"
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
	// Check validates a 2xx response and its body; nil accepts any.
	Check func(resp *http.Response, body []byte) error
}

// SporadicPause is the longest pause of a sporadic client.
const SporadicPause = 20 * time.Millisecond

// requestTimeout bounds one request, generous for -race on small machines.
const requestTimeout = 20 * time.Second

// Stats counts a load's outcomes. The load is package internal/load's
// careful client, and a failed request is what that package says it is.
//
// Errors counts the failed requests: refused, reset, closed before or
// during the response, timed out, answered with a status other than 2xx,
// or rejected by Check. Requests are POSTs and are never sent twice: a
// connection closed under a request that was sent is an error here.
// Retries counts the kept-alive connections the client found closed by
// the server before reusing them (the careful client looks first, as
// browsers and net/http do); the request then went out on a new
// connection, the server never saw the closed one carry it, so no request
// is lost.
type Stats struct {
	OK, Errors, Retries int64
	Samples             []string // the first few errors
}

func (s Stats) String() string {
	return fmt.Sprintf("ok=%d errors=%d retries=%d samples=%q", s.OK, s.Errors, s.Retries, s.Samples)
}

// Load is a running load.
type Load struct {
	run    *load.Run
	cancel context.CancelFunc
}

// StartLoad starts the clients.
func StartLoad(cfg LoadConfig) *Load {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		panic(fmt.Sprintf("workertest: load URL %q: %v", cfg.URL, err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := load.Start(ctx, load.Config{
		Addr: u.Host, Method: http.MethodPost, Path: u.RequestURI(), Body: []byte("ping"),
		KeepAlive: cfg.KeepAlive, Fresh: cfg.NewConns, Sporadic: cfg.Sporadic, IdleMax: SporadicPause,
		Timeout: requestTimeout, Careful: true, Check: cfg.Check,
	})
	return &Load{run: run, cancel: cancel}
}

// OK returns the number of successful requests so far.
func (l *Load) OK() int64 {
	ok, _ := l.run.Counts()
	return ok
}

// WaitOK waits until n more requests succeeded, failing t after timeout.
func (l *Load) WaitOK(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	target := l.OK() + n
	Eventually(t, timeout, fmt.Sprintf("%d successful requests", target),
		func() bool { return l.OK() >= target })
}

// Stop stops the clients, lets in-flight requests finish, closes the
// connections and returns the counts.
func (l *Load) Stop() Stats {
	l.cancel()
	res := l.run.Wait()
	st := res.Window(0, 0)
	s := Stats{OK: int64(st.OK), Errors: int64(st.Failed), Retries: res.IdleClosed}
	for _, f := range res.Failures() {
		if len(s.Samples) == 5 {
			break
		}
		s.Samples = append(s.Samples, f.Kind.String()+": "+f.Err)
	}
	return s
}
