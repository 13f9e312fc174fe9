package procfs

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestReadProcessSelf(t *testing.T) {
	p, err := ReadProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.PPID != os.Getppid() || p.Gone() || p.Threads < 1 || p.RSS() <= 0 || p.Comm == "" {
		t.Fatalf("self: %+v", p)
	}
	peak, err := PeakRSS(os.Getpid())
	if err != nil || peak < p.RSS()/2 {
		t.Fatalf("VmHWM %d (%v), RSS %d", peak, err, p.RSS())
	}
}

func TestParseProcessOddName(t *testing.T) {
	stat := "42 (a) b (c) S 7 42 42 0 -1 4194560 100 0 0 0 250 130 20 10 20 0 3 0 12345 1000000 300 18446744073709551615\n"
	p, err := ParseProcess(42, []byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	want := Process{PID: 42, PPID: 7, Comm: "a) b (c", State: 'S', UTime: 250, STime: 130, CUTime: 20, CSTime: 10, Threads: 3, RSSPages: 300}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if p.CPU() != 3800*time.Millisecond || p.TreeCPU() != 4100*time.Millisecond {
		t.Fatalf("cpu %v tree %v", p.CPU(), p.TreeCPU())
	}
	if _, err := ParseProcess(1, []byte("1 (x) S 0")); err == nil {
		t.Fatal("a short line parsed")
	}
}

// A child shows up among Processes with this process as its parent, and
// as a zombie once it exited and before it is waited for.
func TestProcessesSeesChild(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "read x")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	find := func() (Process, bool) {
		for _, p := range Processes() {
			if p.PID == cmd.Process.Pid {
				return p, true
			}
		}
		return Process{}, false
	}
	if p, ok := find(); !ok || p.PPID != os.Getpid() || p.Gone() {
		t.Fatalf("child %d: %+v %v", cmd.Process.Pid, p, ok)
	}
	stdin.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p, ok := find(); ok && p.Gone() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child did not become a zombie within 10s")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}
