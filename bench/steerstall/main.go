// Command steerstall measures what one stalled worker costs the clients:
// sockd runs 4 demo workers, an open-loop client opens one new connection
// per request at a fixed rate, and one worker is stopped (SIGSTOP) for a
// while in the middle. It prints how many requests waited more than 1 s,
// p50, p99 and the worst. Run it once per binary and mode, side by side:
//
//	go run ./bench/steerstall -sockd bin/sockd -reuseport
//	go run ./bench/steerstall -sockd bin/sockd
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("sockd", "bin/sockd", "the sockd binary")
	reuseport := flag.Bool("reuseport", false, "run sockd with --reuseport")
	rate := flag.Int("rate", 1000, "new connections a second")
	stall := flag.Duration("stall", 6*time.Second, "how long the worker stays stopped")
	workers := flag.Int("workers", 4, "workers")
	flag.Parse()
	if err := run(*bin, *reuseport, *rate, *stall, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "steerstall:", err)
		os.Exit(1)
	}
}

type status struct {
	Ready     int `json:"ready"`
	Listeners []struct {
		Address string `json:"address"`
	} `json:"listeners"`
	Workers []struct {
		Slot int `json:"slot"`
		PID  int `json:"pid"`
	} `json:"workers"`
}

func run(bin string, reuseport bool, rate int, stall time.Duration, workers int) error {
	dir, err := os.MkdirTemp("", "steerstall")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "ctl.sock")
	args := []string{"run", "--control", ctl, "--workers", fmt.Sprint(workers), "--listen", "tcp://127.0.0.1:0", "--worker-output", "raw"}
	if reuseport {
		args = append(args, "--reuseport")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var st status
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, err := exec.Command(bin, "status", "--json", "--control", ctl).Output()
		if err == nil && json.Unmarshal(out, &st) == nil && st.Ready == workers {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sockd not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	addr, victim := st.Listeners[0].Address, st.Workers[0].PID
	var mu sync.Mutex
	var took []time.Duration
	failed := 0
	var wg sync.WaitGroup
	total := stall + 4*time.Second
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	stopped, resumed := false, false
	for now := range tick.C {
		el := now.Sub(start)
		if el > total {
			break
		}
		if !stopped && el > time.Second {
			syscall.Kill(victim, syscall.SIGSTOP)
			stopped = true
		}
		if stopped && !resumed && el > time.Second+stall {
			syscall.Kill(victim, syscall.SIGCONT)
			resumed = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := get(addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			took = append(took, d)
		}()
	}
	tick.Stop()
	syscall.Kill(victim, syscall.SIGCONT)
	wg.Wait()
	slices.Sort(took)
	slow := 0
	for _, d := range took {
		if d > time.Second {
			slow++
		}
	}
	n := len(took) + failed
	pct := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	mode := "shared"
	if reuseport {
		mode = "reuseport"
	}
	fmt.Printf("%s %s: %d requests, %d failed, %d (%.2f %%) waited > 1 s, p50 %v, p99 %v, max %v\n",
		filepath.Base(bin), mode, n, failed, slow, 100*float64(slow)/float64(n), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	return nil
}

func get(addr string) (time.Duration, error) {
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(t0.Add(20 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t0), nil
}
