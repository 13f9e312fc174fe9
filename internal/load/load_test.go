package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawServer serves every connection on 127.0.0.1:0 with handle, which
// gets the connection and a reader on it.
func rawServer(t *testing.T, handle func(c *net.TCPConn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c.(*net.TCPConn), bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one request without a body (the tests send GETs).
func readRequest(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			return nil
		}
	}
}

// answer serves each request on a connection with resp, then does after
// (nil: keeps the connection for the next request).
func answer(resp string, after func(c *net.TCPConn)) func(c *net.TCPConn, br *bufio.Reader) {
	return func(c *net.TCPConn, br *bufio.Reader) {
		for readRequest(br) == nil {
			if _, err := io.WriteString(c, resp); err != nil || after != nil {
				if after != nil {
					after(c)
				}
				return
			}
		}
	}
}

func closeConn(c *net.TCPConn) { c.Close() }

func resetConn(c *net.TCPConn) {
	c.SetLinger(0) // close(2) sends a RST
	c.Close()
}

// refusingAddr is an address that refuses connections: a socket bound to
// it that does not listen, so that no other process can take the port
// while the test runs.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// Every way a server can fail a request ends in its own kind, and every
// request of the run fails that way.
func TestEachFailureKind(t *testing.T) {
	refusing := refusingAddr(t)
	cases := []struct {
		name    string
		addr    string
		want    Kind
		timeout time.Duration
	}{
		{"refused", refusing, Refused, 0},
		{"reset", rawServer(t, answer("", resetConn)), Reset, 0},
		{"closed before answering", rawServer(t, answer("", closeConn)), Closed, 0},
		{"closed mid-response", rawServer(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", closeConn)), Truncated, 0},
		{"closed mid-header", rawServer(t, answer("HTTP/1.1 200 OK\r\nContent-Le", closeConn)), Truncated, 0},
		{"500", rawServer(t, answer("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", nil)), BadStatus, 0},
		{"not HTTP", rawServer(t, answer("SSH-2.0-OpenSSH\r\n", closeConn)), Invalid, 0},
		{"slow", rawServer(t, func(c *net.TCPConn, br *bufio.Reader) { io.Copy(io.Discard, br) }), Timeout, 150 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := Start(context.Background(), Config{Addr: tc.addr, KeepAlive: 2, Fresh: 2, Sporadic: 1, IdleMax: time.Millisecond,
				Duration: 100 * time.Millisecond, Timeout: tc.timeout}).Wait()
			st := res.Window(0, 0)
			if st.Requests == 0 || st.OK != 0 || st.Failed != st.Requests || st.ByKind[tc.want] != st.Requests {
				t.Fatalf("want every request %s: %d requests, %d ok, kinds %v, errors %v", tc.want, st.Requests, st.OK, st.Kinds(), res.Errors(3))
			}
			for _, f := range res.Failures() {
				if f.Err == "" || f.Latency <= 0 {
					t.Fatalf("failure without its error or latency: %+v", f)
				}
			}
		})
	}
}

// A Check that rejects a 200 makes it invalid; the Check sees the headers
// and the body.
func TestCheckRejects(t *testing.T) {
	addr := rawServer(t, answer("HTTP/1.1 200 OK\r\nX-Generation: 3\r\nContent-Length: 5\r\n\r\nhello", nil))
	var calls atomic.Int64
	res := Start(context.Background(), Config{Addr: addr, KeepAlive: 1, Fresh: 1, Duration: 50 * time.Millisecond,
		Check: func(resp *http.Response, body []byte) error {
			calls.Add(1)
			if g := resp.Header.Get("X-Generation"); g != "3" || string(body) != "hello" || resp.StatusCode != 200 {
				return fmt.Errorf("generation %q body %q status %d", g, body, resp.StatusCode)
			}
			return errors.New("generation 3 is not wanted")
		}}).Wait()
	st := res.Window(0, 0)
	if st.Requests == 0 || st.ByKind[Invalid] != st.Requests || int(calls.Load()) != st.Requests {
		t.Fatalf("%d requests, kinds %v, %d checks, errors %v", st.Requests, st.Kinds(), calls.Load(), res.Errors(3))
	}
	if e := res.Errors(1)[Invalid]; len(e) != 1 || e[0] != "generation 3 is not wanted" {
		t.Fatalf("errors %q", e)
	}
}

func TestClosedLoopAnswers(t *testing.T) {
	var posts atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == "POST" && string(b) == "ping" {
			posts.Add(1)
		}
		w.Header().Set("X-Sockd-Pid", "4242")
		w.Header().Set("X-Sockd-Generation", "7")
		fmt.Fprintln(w, "hello")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	run := Start(context.Background(), Config{Addr: ln.Addr().String(), Method: "POST", Body: []byte("ping"),
		KeepAlive: 2, Fresh: 2, Sporadic: 2, IdleMax: 5 * time.Millisecond, Duration: 300 * time.Millisecond, Careful: true})
	select {
	case <-run.Answered():
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s")
	}
	res := run.Wait()
	st := res.Window(0, 0)
	if st.OK == 0 || st.Failed != 0 || int(posts.Load()) != st.OK {
		t.Fatalf("ok=%d failed=%d (%v), the server saw %d POSTs", st.OK, st.Failed, res.Errors(3), posts.Load())
	}
	if st.PerPID[4242] != st.OK || st.Gens[7].Requests != st.OK {
		t.Fatalf("per pid %v, per generation %v, ok %d", st.PerPID, st.Gens, st.OK)
	}
	fresh := 0
	for _, q := range res.Records {
		if q.Mode == Fresh {
			fresh++
			if q.Reused != 0 {
				t.Fatalf("a fresh client reused a connection: %+v", q)
			}
		}
		if q.Conn > q.Start+q.Latency || q.Status != 200 {
			t.Fatalf("record %+v", q)
		}
	}
	if st.PerPIDFresh[4242] != fresh || fresh == 0 || fresh == st.OK {
		t.Fatalf("fresh-connection answers %d (counted %d) of %d: want some but not all", st.PerPIDFresh[4242], fresh, st.OK)
	}
	if res.Conns < int64(fresh) || res.Conns >= int64(st.OK) {
		t.Fatalf("%d connections for %d requests, %d of them fresh", res.Conns, st.OK, fresh)
	}
	if ok, failed := run.Counts(); ok != int64(st.OK) || failed != 0 {
		t.Fatalf("counts %d %d, summary %d", ok, failed, st.OK)
	}
}

func TestPacedRateAndBodyPID(t *testing.T) {
	body := fmt.Sprintf("hello from pid=%d worker=0\n", os.Getpid())
	addr := rawServer(t, answer(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), nil))
	run := Start(context.Background(), Config{Addr: addr, KeepAlive: 2, Fresh: 2, Rate: 400, Duration: time.Second})
	res := run.Wait()
	st := res.Window(0, 0)
	if st.OK < 340 || st.OK > 420 || st.Failed != 0 {
		t.Fatalf("paced at 400/s for 1s: %d answers, %d failed", st.OK, st.Failed)
	}
	me := int32(os.Getpid())
	if _, ok := run.Seen()[me]; !ok || st.PerPID[me] != st.OK {
		t.Fatalf("pid %d not seen in %v / %v", me, run.Seen(), st.PerPID)
	}
	run.Retire(int(me))
	if _, ok := run.Seen()[me]; ok {
		t.Fatal("retired pid still seen")
	}
	bs := res.Buckets(100 * time.Millisecond)
	if len(bs) < 10 || bs[3].OK < 30 || bs[3].P99 <= 0 {
		t.Fatalf("buckets %+v", bs[:4])
	}
	// On schedule: the 4 clients' requests are 10 ms apart each.
	for i := 1; i < 8; i++ {
		if d := res.Records[i].Start - res.Records[i-1].Start; d < 2*time.Millisecond || d > 3*time.Millisecond {
			t.Fatalf("requests %d and %d started %v apart, want 2.5ms", i-1, i, d)
		}
	}
}

// A server that closes every kept-alive connection right after its
// answer, without saying so: a careful client sees it and takes a new
// connection, a naive one sends on the closed one and fails.
func TestCarefulClientSeesIdleClose(t *testing.T) {
	addr := rawServer(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", closeConn))
	// Requests 100 ms apart: the server's close must have happened by the
	// next one, which took longer than 20 ms on a loaded machine (the
	// careful client then rightly reused the connection, and the late
	// close reset it).
	cfg := Config{Addr: addr, KeepAlive: 1, Rate: 10, Duration: 1200 * time.Millisecond}
	naive := Start(context.Background(), cfg).Wait()
	cfg.Careful = true
	careful := Start(context.Background(), cfg).Wait()
	ns, cs := naive.Window(0, 0), careful.Window(0, 0)
	if cs.Failed != 0 || cs.OK < 10 || careful.IdleClosed < int64(cs.OK-1) || careful.Conns != int64(cs.OK) {
		t.Fatalf("careful: %d ok, %d failed %v, %d found closed, %d connections", cs.OK, cs.Failed, careful.Errors(3), careful.IdleClosed, careful.Conns)
	}
	if ns.Failed < 5 || ns.ByKind[Closed]+ns.ByKind[Reset] != ns.Failed || naive.IdleClosed != 0 {
		t.Fatalf("naive: %d ok, failed %v, %d found closed", ns.OK, ns.Kinds(), naive.IdleClosed)
	}
	for _, f := range naive.Failures() {
		if f.Reused != 1 {
			t.Fatalf("a naive failure not on the reused connection: %+v", f)
		}
	}
}

// idle tells an open connection from one the server closed, without
// blocking or consuming anything.
func TestIdleCheck(t *testing.T) {
	closeIt := make(chan struct{})
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		<-closeIt
		c.Close()
	})
	r := newRun(Config{Addr: addr})
	c := r.newClient(0, KeepAlive, 1)
	if err := c.dial(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.closeConn()
	if !c.idle() {
		t.Fatal("an open, quiet connection is not idle")
	}
	close(closeIt)
	deadline := time.Now().Add(10 * time.Second)
	for c.idle() {
		if time.Now().After(deadline) {
			t.Fatal("the server's close was not seen within 10s")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

func TestResponses(t *testing.T) {
	cases := []struct {
		name, resp string
		close      bool // the client must not reuse the connection
		pid, gen   int
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Pid: 12\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", false, 12, 0},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\npid=34 here", true, 34, 0},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nX-Generation: 5\r\nContent-Length: 0\r\n\r\n", false, 0, 5},
		{"no length", "HTTP/1.1 200 OK\r\nX-Sockd-Pid: 56\r\n\r\nuntil the end", true, 56, 0},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nX-Sockd-Generation: 2\r\nContent-Length: 0\r\n\r\n", true, 0, 2},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srvClose := tc.close
			addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				for readRequest(br) == nil {
					io.WriteString(c, tc.resp)
					if srvClose {
						c.CloseWrite()
					}
				}
			})
			res := Start(context.Background(), Config{Addr: addr, KeepAlive: 1, Duration: 50 * time.Millisecond}).Wait()
			st := res.Window(0, 0)
			if st.Failed != 0 || st.OK < 2 {
				t.Fatalf("%d ok, failed %v %v", st.OK, st.Kinds(), res.Errors(3))
			}
			q := res.Records[1]
			if int(q.PID) != tc.pid || int(q.Gen) != tc.gen || (q.Reused > 0) == tc.close {
				t.Fatalf("second request %+v: want pid %d gen %d, connection reused: %v", q, tc.pid, tc.gen, !tc.close)
			}
		})
	}
}

func TestOnce(t *testing.T) {
	addr := rawServer(t, answer("HTTP/1.1 200 OK\r\nX-Sockd-Pid: 9\r\nContent-Length: 0\r\n\r\n", nil))
	res := Once(Config{Addr: addr, Method: "POST", Body: []byte("x")})
	if len(res.Records) != 1 || res.Records[0].Kind != OK || res.Records[0].PID != 9 || res.Conns != 1 {
		t.Fatalf("once: %+v", res)
	}
	rep := res.Report(0, 10)
	if rep.Summary.OK != 1 || len(rep.Failures) != 0 || !rep.At(res.Records[0].Conn).After(res.Started.Add(-time.Nanosecond)) {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(string(request(res.Config, true)), "Content-Length: 1\r\nConnection: close\r\n\r\nx") {
		t.Fatalf("request %q", request(res.Config, true))
	}
}

// The benchmarks' hot path, reading a response without Check, allocates
// nothing: the load generator shares the CPUs with the servers it loads.
func TestReadDoesNotAllocate(t *testing.T) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Sockd-Pid: 31514\r\nX-Sockd-Worker: 1\r\nX-Sockd-Generation: 1\r\nContent-Length: 43\r\n\r\nhello from pid=31514 worker=1 generation=1\n"
	var p response
	src := strings.NewReader("")
	br := bufio.NewReaderSize(src, 4096)
	read := func() {
		src.Reset(resp)
		br.Reset(src)
		if err := p.read(br, false); err != nil || p.pid != 31514 || p.gen != 1 || p.status != 200 {
			t.Fatalf("read: %v %+v", err, p)
		}
	}
	read()
	if n := testing.AllocsPerRun(100, read); n != 0 {
		t.Fatalf("%.1f allocations per response", n)
	}
}
