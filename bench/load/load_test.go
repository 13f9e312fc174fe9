package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestClosedLoopCountsAndPIDs(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", "4242")
		fmt.Fprintln(w, "hello")
	}))
	res := Start(context.Background(), Config{Addr: addr, Clients: 4, Duration: 300 * time.Millisecond}).Wait()
	st := res.Window(0, 0)
	if st.OK == 0 || st.Failed != 0 {
		t.Fatalf("ok=%d failed=%d, errors %v", st.OK, st.Failed, res.ErrorText)
	}
	if st.PerPID[4242] != st.OK {
		t.Fatalf("per pid %v, ok %d", st.PerPID, st.OK)
	}
	if st.PerPIDNew[4242] == 0 || st.PerPIDNew[4242] == st.OK {
		t.Fatalf("new-connection answers %d of %d: want some but not all", st.PerPIDNew[4242], st.OK)
	}
}

func TestPacedRateAndBodyPID(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid=%d worker=0\n", os.Getpid())
	}))
	run := Start(context.Background(), Config{Addr: addr, Clients: 4, Rate: 400, Duration: time.Second})
	res := run.Wait()
	st := res.Window(0, 0)
	if st.OK < 340 || st.OK > 420 {
		t.Fatalf("paced at 400/s for 1s: %d answers", st.OK)
	}
	if _, ok := run.Seen()[int32(os.Getpid())]; !ok {
		t.Fatalf("pid %d not seen in %v", os.Getpid(), run.Seen())
	}
	bs := res.Buckets(100 * time.Millisecond)
	if len(bs) < 10 || bs[3].OK < 30 || bs[3].P99 <= 0 {
		t.Fatalf("buckets %+v", bs[:4])
	}
}

func TestFailuresAreClassified(t *testing.T) {
	// Nothing listens: every request is refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	st := Start(context.Background(), Config{Addr: addr, Clients: 2, Rate: 100, Duration: 200 * time.Millisecond}).Wait().Window(0, 0)
	if st.OK != 0 || st.ByKind[Refused] == 0 || st.ByKind[Refused] != st.Failed {
		t.Fatalf("refused: %+v", st.ByKind)
	}
	// A server that answers 503 then one that closes without answering.
	var n atomic.Int64
	addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(503)
			return
		}
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		c.Close()
	}))
	st = Start(context.Background(), Config{Addr: addr, Clients: 2, Rate: 200, Duration: 300 * time.Millisecond}).Wait().Window(0, 0)
	if st.OK != 0 || st.ByKind[BadStatus] == 0 || st.ByKind[Closed]+st.ByKind[Reset] == 0 {
		t.Fatalf("503 and close: %+v", st.ByKind)
	}
	// A server that never answers: timeouts.
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	st = Start(context.Background(), Config{Addr: ln.Addr().String(), Clients: 2, Duration: 100 * time.Millisecond, Timeout: 200 * time.Millisecond}).Wait().Window(0, 0)
	if st.ByKind[Timeout] != 2 || st.Failed != 2 {
		t.Fatalf("timeouts: %+v", st.ByKind)
	}
}
