// Command hello is a small sockd worker in Go, written the way any
// socket-activated Go server is written: go-systemd's activation package
// takes the sockets (LISTEN_FDS, checked against LISTEN_PID), so the same
// binary runs under sockd, under a systemd .socket unit, or under any other
// sd_listen_fds(3) parent, unchanged.
//
// Every response says which process, slot and generation served it:
//
//	hello from pid=<pid> worker=<slot> generation=<gen>
//
// with headers X-Sockd-Pid, X-Sockd-Worker and X-Sockd-Generation.
//
// Package worker does the part a plain http.Server gets wrong on a reload:
// it sends READY=1 once every socket accepts, and on SIGTERM it stops
// accepting (the sockets stay open in sockd for the next generation),
// answers requests that still arrive with "Connection: close", closes
// idle keep-alive connections only after a grace, and returns when no
// connection is open. Then hello exits 0.
//
// Run it under sockd:
//
//	go build -o hello ./examples/hello
//	sockd run --workers 4 --listen http=tcp://127.0.0.1:8080 -- ./hello
//
// (sockd run without a command runs sockd's own built-in demo worker,
// which is this program with a few flags for testing: see internal/demo.)
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"

	"github.com/sockd/sockd/worker"
)

func main() {
	logger := log.New(os.Stderr, fmt.Sprintf("hello[%d]: ", os.Getpid()), 0)
	// Listeners returns one entry per passed descriptor, nil for the ones
	// that are not stream sockets. It never makes the sockets blocking,
	// which matters: every worker shares them.
	all, err := sdactivation.Listeners()
	if err != nil {
		logger.Fatal(err)
	}
	var ls []net.Listener
	for _, l := range all {
		if l != nil {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		logger.Print("no listening sockets: run it under sockd or a systemd .socket unit (it binds no port itself)")
		os.Exit(2)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 10 * time.Second}
	if err := worker.ServeHTTP(context.Background(), srv, ls, worker.Options{Logger: logger}); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

func hello(w http.ResponseWriter, _ *http.Request) {
	pid, slot, gen := strconv.Itoa(os.Getpid()), os.Getenv("SOCKD_WORKER"), os.Getenv("SOCKD_GENERATION")
	w.Header().Set("X-Sockd-Pid", pid)
	w.Header().Set("X-Sockd-Worker", slot)
	w.Header().Set("X-Sockd-Generation", gen)
	fmt.Fprintf(w, "hello from pid=%s worker=%s generation=%s\n", pid, slot, gen)
}
