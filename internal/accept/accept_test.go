package accept

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

func TestRetryBacksOffAndLogsRarely(t *testing.T) {
	var out bytes.Buffer
	var slept []time.Duration
	b := &Backoff{Log: hclog.New(&hclog.LoggerOptions{Output: &out}), What: "test socket", sleep: func(d time.Duration) { slept = append(slept, d) }}
	emfile := &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", unix.EMFILE)}
	for range 10 {
		if !b.Retry(emfile) {
			t.Fatal("EMFILE is transient")
		}
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, d := range slept {
		if d != want[i]*time.Millisecond {
			t.Fatalf("waits %v", slept)
		}
	}
	if n := strings.Count(out.String(), "accept failed"); n != 1 {
		t.Fatalf("%d log lines for 10 failures within 10 s:\n%s", n, out.String())
	}
	b.OK()
	b.Retry(emfile)
	if slept[len(slept)-1] != 5*time.Millisecond {
		t.Fatalf("after a success: waits %v", slept[len(slept)-1])
	}
	for _, err := range []error{net.ErrClosed, errors.New("bad"), fmt.Errorf("x: %w", unix.EINVAL)} {
		if b.Retry(err) {
			t.Errorf("%v retried", err)
		}
	}
}

// A real listener in a process out of descriptors: Accept fails with
// EMFILE, which Transient recognises, and works again once one is free.
func TestTransientOnRealEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var old unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &old)
	// Use up the descriptors below a low limit.
	var held []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, fd)
		if fd >= 200 {
			break
		}
	}
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	low := unix.Rlimit{Cur: uint64(held[len(held)-1] + 1), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	_, err = ln.Accept()
	unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	if !Transient(err) {
		t.Fatalf("Accept at the limit: %v", err)
	}
	unix.Close(held[len(held)-1])
	held = held[:len(held)-1]
	ac, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept once a descriptor is free: %v", err)
	}
	ac.Close()
}
