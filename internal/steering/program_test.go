package steering

import (
	"encoding/binary"
	"math"
	"math/rand"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// hashRef is the flow hash the programs compute, written in Go.
func hashRef(p pkt) uint32 {
	var addr, ports uint32
	if p.net[0]>>4 == 6 {
		ports = binary.BigEndian.Uint32(p.net[40:])
		addr = binary.BigEndian.Uint32(p.net[20:])
	} else {
		ihl := int(p.net[0]&0xf) * 4
		ports = binary.BigEndian.Uint32(p.net[ihl:])
		addr = binary.BigEndian.Uint32(p.net[12:])
	}
	x := addr ^ ports
	x ^= x >> 16
	return (x * 0x9E3779B1) >> 1
}

// pick runs the part of prog after the hash for a given h.
func pick(t testing.TB, prog []unix.SockFilter, h uint32) uint32 {
	i, err := runFrom(prog, len(hashInsns), h, pkt{})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// measure returns, exactly, how much of the hash space prog sends to each
// socket. Between two consecutive comparison constants the path through
// the program is fixed and its leaf non-decreasing in h, so bisection
// finds every point where the answer changes.
func measure(t testing.TB, prog []unix.SockFilter) map[uint32]uint64 {
	bounds := []uint64{0, hashSpace}
	for _, in := range prog[len(hashInsns):] {
		if in.Code == unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K {
			bounds = append(bounds, uint64(in.K))
		} else if in.Code&0x07 == unix.BPF_JMP && in.Code&0xf0 != unix.BPF_JA {
			t.Fatalf("unexpected jump %#x after the hash", in.Code)
		}
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i] < bounds[j] })
	got := map[uint32]uint64{}
	var seg func(lo, hi uint64, flo, fhi uint32)
	seg = func(lo, hi uint64, flo, fhi uint32) { // [lo, hi], f(lo)=flo, f(hi)=fhi
		if flo == fhi {
			got[flo] += hi - lo + 1
			return
		}
		if hi == lo+1 {
			got[flo]++
			got[fhi]++
			return
		}
		mid := (lo + hi) / 2
		fm := pick(t, prog, uint32(mid))
		seg(lo, mid, flo, fm)
		got[fm]-- // mid counted twice
		seg(mid, hi, fm, fhi)
	}
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i], bounds[i+1]-1
		if bounds[i+1] <= lo {
			continue
		}
		seg(lo, hi, pick(t, prog, uint32(lo)), pick(t, prog, uint32(hi)))
	}
	return got
}

// verify checks a compiled program against its weights: the kernel's
// checker accepts it, it answers only sockets with a positive weight,
// each exactly its Units of the hash space, all of them adding up to the
// whole space, and Units follow the weights to one unit when Exact.
func verify(t testing.TB, weights []int, p *Program, lim Limits) {
	t.Helper()
	if err := check(p.Insns); err != nil {
		t.Fatalf("%d sockets: the kernel would refuse the program: %v", len(weights), err)
	}
	if lim.MaxInsns > 0 && len(p.Insns) > lim.MaxInsns || lim.MaxBytes > 0 && ebpfSize(p.Insns) > lim.MaxBytes {
		t.Fatalf("program of %d instructions (%d bytes) over %+v", len(p.Insns), ebpfSize(p.Insns), lim)
	}
	got := measure(t, p.Insns)
	var total, wsum uint64
	for _, w := range weights {
		wsum += uint64(w)
	}
	for i, n := range got {
		if int(i) >= len(weights) || weights[i] == 0 {
			t.Fatalf("program answers socket %d (weight %v) for %d hashes", i, at(weights, int(i)), n)
		}
		total += n
	}
	if total != hashSpace {
		t.Fatalf("measured %d hashes, want %d", total, uint64(hashSpace))
	}
	for i := range weights {
		if got[uint32(i)] != uint64(p.Units[i]) {
			t.Fatalf("socket %d: program gives %d hashes, Units says %d", i, got[uint32(i)], p.Units[i])
		}
		if p.Exact && weights[i] > 0 {
			want := float64(weights[i]) * hashSpace / float64(wsum)
			if d := float64(p.Units[i]) - want; d < -1 || d > float64(len(weights)) {
				t.Fatalf("socket %d weight %d: %d units, want %.1f", i, weights[i], p.Units[i], want)
			}
		}
	}
}

func at(w []int, i int) any {
	if i < len(w) {
		return w[i]
	}
	return "out of range"
}

func compileOK(t testing.TB, weights []int, lim Limits) *Program {
	t.Helper()
	p, err := Compile(weights, lim)
	if err != nil {
		t.Fatalf("Compile(%d sockets): %v", len(weights), err)
	}
	verify(t, weights, p, lim)
	return p
}

// Patterns of weights steering meets: one generation at full weight, a
// reload ramping the next one in beside it, crash gaps, scale-downs, and
// arbitrary vectors.
func patterns(n int, r *rand.Rand) map[string][]int {
	ps := map[string][]int{}
	fill := func(name string, f func(i int) int) {
		w := make([]int, n)
		for i := range w {
			w[i] = f(i)
		}
		ps[name] = w
	}
	fill("equal", func(int) int { return 1000 })
	fill("last only", func(i int) int { return b2i(i == n-1) * 1000 })
	fill("even slots", func(i int) int { return b2i(i%2 == 0) * 1000 })
	fill("reload ramp", func(i int) int {
		if i%2 == 0 {
			return 900
		}
		return 100
	})
	fill("halves ramp", func(i int) int {
		if i < n/2 {
			return 1000 - 37
		}
		return 37
	})
	fill("random 0..1000", func(int) int { return r.Intn(1001) * b2i(r.Intn(4) > 0) })
	fill("random gaps", func(int) int { return 1000 * b2i(r.Intn(10) > 0) })
	fill("ones and max", func(i int) int {
		if i%3 == 0 {
			return MaxWeight
		}
		return 1
	})
	for name, w := range ps {
		if !anyPositive(w) {
			w[0] = 1
			ps[name] = w
		}
	}
	return ps
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func anyPositive(w []int) bool {
	for _, v := range w {
		if v > 0 {
			return true
		}
	}
	return false
}

// Every program for 1..2048 sockets (and the most a program addresses)
// passes the kernel's checks and gives each socket exactly its units.
func TestCompilePatterns(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 16, 63, 100, 256, 1000, 1024, 2047, 2048, MaxSockets} {
		for name, w := range patterns(n, r) {
			p := compileOK(t, w, Limits{})
			if n <= 2048 && name != "random 0..1000" && name != "ones and max" && !p.Exact {
				t.Errorf("%d sockets, %s: not exact (%d instructions)", n, name, len(p.Insns))
			}
			if n == 2048 {
				t.Logf("%4d sockets %-15s %4d instructions, ~%5d bytes, exact %v", n, name, len(p.Insns), ebpfSize(p.Insns), p.Exact)
			}
		}
	}
}

// Tighter limits (an optmem_max of 20 KiB or 10 KiB, as older kernels
// have) still give a valid program: coarser weights, or fewer sockets.
func TestCompileWithinLimits(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for _, lim := range []Limits{{MaxBytes: 20480}, {MaxBytes: 10240}, {MaxInsns: 200}, {MaxInsns: 40}} {
		for _, n := range []int{8, 1024, 2048} {
			for name, w := range patterns(n, r) {
				p := compileOK(t, w, lim)
				worst := shareError(w, p)
				if n == 2048 {
					t.Logf("%+v %4d sockets %-15s exact %-5v worst share error %.2f%%", lim, n, name, p.Exact, 100*worst)
				}
			}
		}
	}
}

// shareError is the largest difference between a socket's share of the
// hash space and its share of the weights.
func shareError(w []int, p *Program) float64 {
	var sum float64
	for _, v := range w {
		sum += float64(v)
	}
	worst := 0.0
	for i, v := range w {
		worst = math.Max(worst, math.Abs(p.Share(i)-float64(v)/sum))
	}
	return worst
}

func TestCompileRefuses(t *testing.T) {
	for _, w := range [][]int{nil, {0}, {0, 0, 0}, {1, -1}, {MaxWeight + 1}, make([]int, MaxSockets+1)} {
		if p, err := Compile(w, Limits{}); err == nil {
			t.Errorf("Compile(%v...) = %d instructions, want an error", w[:min(len(w), 4)], len(p.Insns))
		}
	}
}

// The whole program on real packet shapes: IPv4 with and without IP
// options, IPv6; it hashes as hashRef says and answers as the search does.
func TestProgramHashesFlows(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	w := []int{1000, 0, 250, 1000, 3, 0, 700}
	p := compileOK(t, w, Limits{})
	for i := 0; i < 20000; i++ {
		var pk pkt
		sport, dport := uint16(r.Intn(65536)), uint16(r.Intn(65536))
		switch i % 3 {
		case 0:
			pk = v4(rnd4(r), rnd4(r), sport, dport, 5)
		case 1:
			pk = v4(rnd4(r), rnd4(r), sport, dport, 5+r.Intn(11))
		case 2:
			pk = v6(rnd16(r), rnd16(r), sport, dport)
		}
		got, err := run(p.Insns, pk)
		if err != nil {
			t.Fatal(err)
		}
		if want := pick(t, p.Insns, hashRef(pk)); got != want {
			t.Fatalf("packet %d: program answers %d, the search on hashRef %d", i, got, want)
		}
		if w[got] == 0 {
			t.Fatalf("packet %d went to socket %d of weight 0", i, got)
		}
	}
}

func rnd4(r *rand.Rand) (a [4]byte) {
	r.Read(a[:])
	return a
}

func rnd16(r *rand.Rand) (a [16]byte) {
	r.Read(a[:])
	return a
}

// Connections from one address with the ports the kernel hands out
// spread in proportion to the weights (the hash's distribution over the
// flows steering sees in the kernel tests and on a loopback benchmark).
func TestProgramSpreadsLoopbackPorts(t *testing.T) {
	for _, w := range [][]int{
		{1000, 1000, 1000, 1000},
		{1000, 0, 1000, 100, 0, 0, 1000, 500},
		{100, 1000, 100, 1000, 100, 1000, 100, 1000, 100, 1000, 100, 1000, 100, 1000, 100, 1000},
	} {
		p := compileOK(t, w, Limits{})
		counts := make([]int, len(w))
		flows := 0
		for _, dst := range []uint16{80, 8080, 41234} {
			for sport := 32768; sport <= 60999; sport++ {
				i, err := run(p.Insns, v4([4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 1}, uint16(sport), dst, 5))
				if err != nil {
					t.Fatal(err)
				}
				counts[i]++
				flows++
			}
		}
		for i, c := range counts {
			e := p.Share(i) * float64(flows)
			if math.Abs(float64(c)-e) > 4*math.Sqrt(e)+3 {
				t.Errorf("weights %v: socket %d got %d of %d flows, want about %.0f", w, i, c, flows, e)
			}
		}
		t.Logf("weights %v: flows per socket %v", w, counts)
	}
}

func FuzzCompile(f *testing.F) {
	f.Add([]byte{1, 0, 3, 255, 0, 7}, uint16(0))
	f.Add([]byte{0, 0, 0, 1}, uint16(100))
	f.Fuzz(func(t *testing.T, b []byte, maxInsns uint16) {
		if len(b) == 0 {
			return
		}
		n := 1 + int(b[0])*8 // up to 2041 sockets
		w := make([]int, n)
		for i := range w {
			v := int(b[0])
			if len(b) > 1 {
				v = int(b[1+i%(len(b)-1)])
			}
			w[i] = v * v
		}
		lim := Limits{MaxInsns: int(maxInsns % 4200)}
		if lim.MaxInsns > 0 && lim.MaxInsns < 40 {
			lim.MaxInsns = 40
		}
		p, err := Compile(w, lim)
		if !anyPositive(w) {
			if err == nil {
				t.Fatal("no positive weight compiled")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		verify(t, w, p, lim)
	})
}
