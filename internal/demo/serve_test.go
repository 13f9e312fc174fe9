package demo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

// startHello runs the demo worker as sockd would: the shared socket on
// fd 3, slot and generation set, a notify socket served by the test.
func startHello(args ...string) workertest.Starter {
	return func(t testing.TB, gen int, f *os.File) *workertest.Proc {
		return workertest.Start(t, workertest.Config{
			Argv:       append([]string{os.Args[0]}, args...),
			Files:      []*os.File{f},
			Env:        []string{helperEnv + "=1"},
			Notify:     true,
			Slot:       3,
			Generation: gen,
		})
	}
}

// checkHello checks the body and headers of a demo response.
func checkHello(gen int) func(*http.Response, []byte) error {
	return func(resp *http.Response, body []byte) error {
		pid := resp.Header.Get("X-Sockd-Pid")
		if _, err := strconv.Atoi(pid); err != nil {
			return fmt.Errorf("X-Sockd-Pid %q", pid)
		}
		g := resp.Header.Get("X-Sockd-Generation")
		if gen > 0 && g != strconv.Itoa(gen) {
			return fmt.Errorf("X-Sockd-Generation %q, want %d", g, gen)
		}
		want := fmt.Sprintf("hello from pid=%s worker=3 generation=%s\n", pid, g)
		if string(body) != want || resp.Header.Get("X-Sockd-Worker") != "3" {
			return fmt.Errorf("body %q worker %q, want %q worker 3", body, resp.Header.Get("X-Sockd-Worker"), want)
		}
		return nil
	}
}

func TestServeAndDrain(t *testing.T) {
	l := workertest.Listen(t)
	f, err := workertest.File(l, "http")
	if err != nil {
		t.Fatal(err)
	}
	p := startHello()(t, 7, f)
	p.WaitReady(t, workertest.ReadyTimeout)
	resp, err := http.Get("http://" + l.Addr().String() + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := checkHello(7)(resp, body); err != nil {
		t.Fatal(err)
	}
	if pid := resp.Header.Get("X-Sockd-Pid"); pid != strconv.Itoa(p.Pid()) {
		t.Errorf("X-Sockd-Pid %s, want the worker's pid %d", pid, p.Pid())
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, workertest.ExitTimeout); code != ExitOK {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	workertest.CheckAlive(t, l)
}

// TestReloadWithDelay reloads the demo worker under load while requests
// are in flight (--delay): no request may fail.
func TestReloadWithDelay(t *testing.T) {
	l := workertest.Listen(t)
	load := workertest.LoadConfig{
		URL: "http://" + l.Addr().String() + "/", KeepAlive: 8, NewConns: 4, Sporadic: 8, Check: checkHello(0),
	}
	r := workertest.ReloadUnderLoad(t, l, startHello("--delay", "2ms"), load)
	t.Logf("demo reload: %v, drain took %v", r.Stats, r.DrainDuration)
	if r.OldExit != ExitOK || r.NewExit != ExitOK {
		t.Errorf("exit codes %d %d, want 0 0", r.OldExit, r.NewExit)
	}
	if r.Stats.Errors != 0 {
		t.Errorf("%d requests failed during the reload: %v", r.Stats.Errors, r.Stats.Samples)
	}
}

// The demo's own HTTP/1.1 reader and writer, on a raw connection: what
// clients send that net/http would have handled for it.
func TestHTTPConformance(t *testing.T) {
	l := workertest.Listen(t)
	f, err := workertest.File(l, "http")
	if err != nil {
		t.Fatal(err)
	}
	p := startHello()(t, 2, f)
	p.WaitReady(t, workertest.ReadyTimeout)
	addr := l.Addr().String()
	exchange := func(t *testing.T, raw string, n int) ([]*http.Response, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var out []*http.Response
		for i := 0; i < n; i++ {
			resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(raw)[0]})
			if err != nil {
				return out, err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Header.Set("X-Body", string(body))
			out = append(out, resp)
		}
		return out, nil
	}
	cases := []struct {
		name  string
		raw   string
		n     int
		check func(rs []*http.Response) error
	}{
		{"keep-alive, two requests back to back", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\n\r\n", 2,
			func(rs []*http.Response) error {
				if rs[0].Close || rs[1].Close || rs[0].Header.Get("X-Sockd-Generation") != "2" {
					return fmt.Errorf("%v %v", rs[0].Header, rs[1].Header)
				}
				return nil
			}},
		{"POST with a body, then Connection: close", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2,
			func(rs []*http.Response) error {
				if rs[0].Close || !rs[1].Close {
					return fmt.Errorf("close flags %v %v", rs[0].Close, rs[1].Close)
				}
				return nil
			}},
		{"chunked body with a trailer", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", 1,
			func(rs []*http.Response) error { return checkHello(2)(rs[0], []byte(rs[0].Header.Get("X-Body"))) }},
		{"HEAD has no body", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 1,
			func(rs []*http.Response) error {
				if rs[0].Header.Get("X-Body") != "" || rs[0].ContentLength <= 0 {
					return fmt.Errorf("HEAD: body %q, length %d", rs[0].Header.Get("X-Body"), rs[0].ContentLength)
				}
				return nil
			}},
		{"HTTP/1.0 closes unless keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n", 2,
			func(rs []*http.Response) error {
				if rs[0].Close || !rs[1].Close {
					return fmt.Errorf("close flags %v %v", rs[0].Close, rs[1].Close)
				}
				return nil
			}},
		{"malformed request line", "NONSENSE\r\n\r\n", 1,
			func(rs []*http.Response) error {
				if rs[0].StatusCode != 400 || !rs[0].Close {
					return fmt.Errorf("status %d close %v", rs[0].StatusCode, rs[0].Close)
				}
				return nil
			}},
		{"oversized body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 1,
			func(rs []*http.Response) error {
				if rs[0].StatusCode != 400 {
					return fmt.Errorf("status %d", rs[0].StatusCode)
				}
				return nil
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs, err := exchange(t, c.raw, c.n)
			if err != nil {
				t.Fatalf("after %d responses: %v", len(rs), err)
			}
			if err := c.check(rs); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Expect: 100-continue is answered before the body is sent.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("Expect: 100-continue answered with %q %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "ping")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after 100-continue: %v %v", resp, err)
	}
}
