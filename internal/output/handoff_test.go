package output_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/output"
	"github.com/sockd/sockd/worker/workertest"
)

// passFDs sends fds over a real unix socketpair with SCM_RIGHTS, as the
// handoff package does, and returns what arrived (the sent ones closed).
func passFDs(t *testing.T, fds []int) []int {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	if err := unix.Sendmsg(sp[0], []byte("x"), unix.UnixRights(fds...), nil, 0); err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, unix.CmsgSpace(4*len(fds)))
	_, oobn, _, _, err := unix.Recvmsg(sp[1], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != len(fds) {
		t.Fatalf("received %v, %v", got, err)
	}
	return got
}

// A flood of lines of 0 to 3000 bytes (cut at 1000: partial lines and
// cut lines sit in the buffers at every switch) passes through three
// relays, handed over twice while it runs: every line arrives once, whole,
// in order.
func TestHandoffDuringFlood(t *testing.T) {
	check := fdtest.Track(t, "handoff")
	const n = 20_000
	sinks := []*memSink{{}, {}, {}}
	relays := make([]*output.Relay, 3)
	for i := range relays {
		relays[i] = output.New(output.Options{Sink: sinks[i], MaxLine: 1000})
	}
	p, pid := spawn(t, relays[0], 4, 7, "varflood", fmt.Sprint(n))
	var last *output.Adoption
	for i := range 2 {
		from, to := relays[i], relays[i+1]
		workertest.Eventually(t, 30*time.Second, "lines flow", func() bool { return sinks[i].len() > 2000 })
		ex, err := from.Export()
		if err != nil {
			t.Fatal(err)
		}
		if len(ex.Pipes) != 2 || ex.Pipes[0].Worker != (output.Worker{Slot: 4, Generation: 7, PID: pid}) {
			t.Fatalf("exported %+v", ex.Pipes)
		}
		for _, fd := range ex.FDs {
			if !fdtest.Cloexec(fd) {
				t.Fatalf("exported fd %d not close-on-exec", fd)
			}
		}
		desc, _ := json.Marshal(ex.Pipes)
		fds := passFDs(t, ex.FDs)
		ex.Close()
		var pipes []output.HandoffPipe
		json.Unmarshal(desc, &pipes)
		ad, err := to.Adopt(pipes, fds)
		if err != nil {
			t.Fatal(err)
		}
		sw := ex.Stop()
		b, _ := json.Marshal(sw)
		var sw2 output.Switch
		json.Unmarshal(b, &sw2)
		ad.Start(sw2)
		last = ad
	}
	if st := reap(pid); st != 0 {
		t.Fatalf("worker exited %d", st)
	}
	select {
	case <-p.Done(): // the first relay's pipes ended at the switch
	default:
		t.Fatal("first relay's pipes not done")
	}
	for _, ap := range last.Pipes() {
		waitDone(t, ap, 30*time.Second)
	}
	var all []got
	for _, s := range sinks {
		all = append(all, s.all()...)
	}
	var joined []string
	for _, l := range all {
		if l.stream != output.Stdout {
			continue
		}
		if l.flags&output.Continued != 0 {
			joined[len(joined)-1] += l.data
		} else {
			joined = append(joined, l.data)
		}
	}
	if len(joined) != n {
		t.Fatalf("%d lines, want %d (relays got %d, %d, %d)", len(joined), n, sinks[0].len(), sinks[1].len(), sinks[2].len())
	}
	for i, l := range joined {
		if want := fmt.Sprintf("%d:%s", i, longPayload(i)); l != want {
			t.Fatalf("line %d: %.40q… (%d bytes), want %.40q… (%d bytes)", i, l, len(l), want, len(want))
		}
	}
	for i, s := range sinks {
		if s.len() == 0 {
			t.Errorf("relay %d got no line", i)
		}
	}
	check()
}

// Adopt refuses what is not a pipe, and closes what it was given.
func TestAdoptRefusesBadInput(t *testing.T) {
	check := fdtest.Track(t, "adopt")
	r := output.New(output.Options{})
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := unix.Dup(int(f.Fd()))
	f.Close()
	_, err = r.Adopt([]output.HandoffPipe{{Stream: "stdout"}}, []int{fd})
	if err == nil || !strings.Contains(err.Error(), "not a pipe") {
		t.Fatalf("err = %v", err)
	}
	var pp [2]int
	unix.Pipe2(pp[:], unix.O_CLOEXEC)
	unix.Close(pp[1])
	_, err = r.Adopt([]output.HandoffPipe{{Stream: "stdin"}}, []int{pp[0]})
	if err == nil || !strings.Contains(err.Error(), "want stdout or stderr") {
		t.Fatalf("err = %v", err)
	}
	check()
	if _, err := r.Adopt(nil, []int{-1}); err == nil {
		t.Fatal("mismatched lengths accepted")
	}
}

func TestFDName(t *testing.T) {
	h := output.HandoffPipe{Worker: output.Worker{Slot: 2, Generation: 14, PID: 31337}, Stream: "stderr"}
	name := h.FDName()
	if name != "sockd-output.2.14.31337.stderr" || len(name) > 255 {
		t.Fatalf("name %q", name)
	}
	if back, ok := output.ParseFDName(name); !ok || back != h {
		t.Fatalf("parsed %+v %v", back, ok)
	}
	for _, bad := range []string{"sockd.http.0", "sockd-output.1.2.3.stdin", "sockd-output.-1.2.3.stdout", "sockd-output.1.2.stdout"} {
		if _, ok := output.ParseFDName(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
