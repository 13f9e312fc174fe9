package steering

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpuTicks is this process's user+system time in clock ticks.
func cpuTicks(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// The idle cost, measured (STEERING_MEASURE_IDLE=seconds): Steering over
// 1024 ready sockets, no traffic; the process's CPU time and the samples
// taken over that time. Run: STEERING_MEASURE_IDLE=60 go test -run
// IdleCPU -v ./internal/steering/
func TestIdleCPU(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("STEERING_MEASURE_IDLE"))
	if secs <= 0 {
		t.Skip("set STEERING_MEASURE_IDLE=seconds to measure")
	}
	p := newPool(t, 2, Options{})
	for k := 2; k < 1024; k++ {
		if _, err := p.s.Assign(strconv.Itoa(k), ""); err != nil {
			t.Fatal(err)
		}
		p.s.Ready(strconv.Itoa(k))
	}
	n, c := p.s.Stats().Samples, cpuTicks(t)
	<-time.After(time.Duration(secs) * time.Second)
	dc, dn := cpuTicks(t)-c, p.s.Stats().Samples-n
	t.Logf("idle %ds with %d sockets: %.2f s CPU (whole test process), %d samples", secs, p.s.Stats().Sockets, float64(dc)/100, dn)
	if dn != 0 {
		t.Fatalf("%d samples while idle", dn)
	}
}
