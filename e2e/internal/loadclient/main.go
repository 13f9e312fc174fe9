//go:build linux

// Command loadclient is the HTTP load generator the end-to-end tests run
// inside the sandbox (see package load).
//
//	loadclient -addr 127.0.0.1:8080 -keepalive 2 -fresh 2 -sporadic 2
//
// prints "running" once the first answer came back, generates load until
// its standard input is closed (or -duration passes, or SIGTERM), lets the
// requests in flight finish and prints the report as one line of JSON.
//
//	loadclient -addr 127.0.0.1:8080 -once
//
// sends one request on a new connection and prints it as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sockd/sockd/e2e/internal/load"
)

func main() {
	var cfg load.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "server `host:port`")
	flag.IntVar(&cfg.KeepAlive, "keepalive", 2, "clients sending back to back on one keep-alive connection")
	flag.IntVar(&cfg.Fresh, "fresh", 2, "clients opening a new connection per request")
	flag.IntVar(&cfg.Sporadic, "sporadic", 2, "keep-alive clients pausing up to -idle-max between requests")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per request")
	flag.DurationVar(&cfg.IdleMax, "idle-max", 300*time.Millisecond, "longest pause of a sporadic client")
	flag.DurationVar(&cfg.Pause, "pause", 0, "pause of keepalive and fresh clients between requests")
	flag.DurationVar(&cfg.Slow, "slow", 0, "list the requests slower than this in the report (0: none)")
	duration := flag.Duration("duration", 0, "stop after this long (0: when stdin is closed)")
	once := flag.Bool("once", false, "send one request and print it")
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	if *once {
		q := load.Once(cfg.Addr, cfg.Timeout)
		out.Encode(q)
		if !q.OK {
			os.Exit(1)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	r := load.Run(ctx, cfg, func() { fmt.Println("running") })
	if err := out.Encode(r); err != nil {
		fmt.Fprintf(os.Stderr, "loadclient: %v\n", err)
		os.Exit(1)
	}
}
