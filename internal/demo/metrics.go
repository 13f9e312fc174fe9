package demo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/sockd/sockd/internal/http1"
)

// serveMetrics serves the worker's own metrics (GET /metrics, the
// Prometheus text format) on the unix socket sockd names in
// SOCKD_METRICS_SOCKET (with --metrics), the way an application with
// prom-client or prometheus_client would; sockd adds them to its own
// scrape with this worker's slot and generation. HELLO_METRICS_HANG=1
// makes it accept and never answer (tests: a hung worker must not stall
// sockd's scrape). It returns a function that closes the socket.
func serveMetrics(srv *server) func() {
	path := os.Getenv("SOCKD_METRICS_SOCKET")
	if path == "" {
		return func() {}
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		srv.log.Printf("no metrics socket: %v", err)
		return func() {}
	}
	hang := os.Getenv("HELLO_METRICS_HANG") == "1"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if hang { // read the request and never answer
					c.SetReadDeadline(time.Now().Add(time.Minute))
					io.Copy(io.Discard, c)
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				budget := 16 << 10
				for {
					line, err := http1.ReadLine(br, &budget)
					if err != nil {
						return
					}
					if line == "" {
						break
					}
				}
				body := fmt.Sprintf("# HELP hello_requests_total Requests this worker answered.\n# TYPE hello_requests_total counter\nhello_requests_total %d\n"+
					"# HELP hello_info The demo worker.\n# TYPE hello_info gauge\nhello_info{version=\"1\"} 1\n", srv.requests.Load())
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	return func() { ln.Close() }
}
