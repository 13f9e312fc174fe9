package steering

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sockd/sockd/activation"
)

// benchSteering is a Steering over n sockets, each held by a ready
// worker (adopted: no process needed to sample an empty queue).
func benchSteering(b *testing.B, n int) *Steering {
	b.Helper()
	set, err := activation.Bind(context.Background(), []activation.Spec{{Name: "web", Network: "tcp", Address: "127.0.0.1:0"}}, activation.BindOptions{ReusePort: true, Slots: n})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { set.Close() })
	s, err := New(set, Options{Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn})})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for k := 0; k < n; k++ {
		if err := s.Adopt(fmt.Sprint(k), k); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// One sample while traffic flows: every socket's queue (sock_diag), the
// detector, the weights (the program is unchanged). Times 50 a second
// (DefaultPeriod) is sampling's CPU cost. The sock_diag cost grows faster
// than linearly past ~1,000 sockets (the dump restarts its walk of the
// listening hash for each 64 KiB of reply).
func BenchmarkSample(b *testing.B) {
	for _, n := range []int{8, 1024, 2048} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := benchSteering(b, n)
			now := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.sample(now)
			}
		})
	}
}

// The same sample's queue reading with TCP_INFO, one call a socket: the
// fallback when sock_diag is unavailable.
func BenchmarkSampleTCPInfo(b *testing.B) {
	for _, n := range []int{8, 1024} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := benchSteering(b, n)
			s.diag.close()
			s.diag = nil
			now := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.sample(now)
			}
		})
	}
}

// A program update: compile for 2048 sockets and attach it.
func BenchmarkUpdate(b *testing.B) {
	r := rand.New(rand.NewSource(11))
	l := bindGroup(b, "127.0.0.1:0", 2048)
	for _, name := range []string{"equal", "reload ramp", "random 0..1000"} {
		w := patterns(2048, r)[name]
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				p, err := Compile(w, Limits{})
				if err != nil {
					b.Fatal(err)
				}
				if err := l.AttachProgram(p.Insns); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
