//go:build linux

// Command loadclient is the HTTP load generator the end-to-end tests run
// inside the sandbox: package internal/load's careful client sending POST
// requests to sockd's demo worker, every answer checked (a generation and
// a pid in the headers, "hello from pid=N " in the body; anything else is
// an invalid, failed request).
//
//	loadclient -addr 127.0.0.1:8080 -keepalive 2 -fresh 2 -sporadic 2
//
// prints "running" once the first answer came back, generates load until
// its standard input is closed (or -duration passes, or SIGTERM), lets the
// requests in flight finish and prints the report (load.Report) as one
// line of JSON.
//
// With -rate N the clients send N requests per second in total, each
// request due at a fixed time and its latency counted from then, so a
// stall is charged to every request it delayed; -records puts every
// request in the report.
//
//	loadclient -addr 127.0.0.1:8080 -once
//
// sends one request on a new connection and prints its report, with the
// request in Records; it exits 1 if the request failed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockd/sockd/internal/load"
)

// listed bounds the failed and the slow requests in the report.
const listed = 5000

func main() {
	cfg := load.Config{Method: http.MethodPost, Body: []byte("ping"), Careful: true, Check: checkHello}
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "server `host:port`")
	flag.IntVar(&cfg.KeepAlive, "keepalive", 2, "clients sending back to back on one keep-alive connection")
	flag.IntVar(&cfg.Fresh, "fresh", 2, "clients opening a new connection per request")
	flag.IntVar(&cfg.Sporadic, "sporadic", 2, "keep-alive clients pausing up to -idle-max between requests")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per request")
	flag.DurationVar(&cfg.IdleMax, "idle-max", 300*time.Millisecond, "longest pause of a sporadic client")
	flag.DurationVar(&cfg.Pause, "pause", 0, "pause of keepalive and fresh clients between requests")
	flag.Float64Var(&cfg.Rate, "rate", 0, "total requests per second, paced, latency counted from when each was due (0: closed loop)")
	records := flag.Bool("records", false, "list every request in the report (Records)")
	slow := flag.Duration("slow", 0, "list the requests slower than this (from their connection's start) in the report (0: none)")
	duration := flag.Duration("duration", 0, "stop after this long (0: when stdin is closed)")
	once := flag.Bool("once", false, "send one request and print it")
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	if *once {
		res := load.Once(cfg)
		rep := res.Report(0, listed)
		rep.Records = res.Records
		out.Encode(rep)
		if rep.Summary.OK != 1 {
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *duration > 0 {
		cfg.Duration = *duration
	} else {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	run := load.Start(ctx, cfg)
	select {
	case <-run.Answered():
		fmt.Println("running")
	case <-run.Done():
	}
	res := run.Wait()
	rep := res.Report(*slow, listed)
	if *records {
		rep.Records = res.Records
	}
	if err := out.Encode(rep); err != nil {
		fmt.Fprintf(os.Stderr, "loadclient: %v\n", err)
		os.Exit(1)
	}
}

// checkHello accepts an answer of sockd's demo worker.
func checkHello(resp *http.Response, body []byte) error {
	gen, _ := strconv.Atoi(resp.Header.Get("X-Sockd-Generation"))
	pid, _ := strconv.Atoi(resp.Header.Get("X-Sockd-Pid"))
	if gen <= 0 || pid <= 0 || !strings.HasPrefix(string(body), "hello from pid="+strconv.Itoa(pid)+" ") {
		return fmt.Errorf("headers %v body %.80q", resp.Header, body)
	}
	return nil
}
