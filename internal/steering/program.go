package steering

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
)

// The hash space: the program maps a flow to h in [0, hashSpace) and h to a
// socket. 2^31 rather than 2^32 keeps every comparison constant below
// 2^31, which the kernel's translation to eBPF compares in one instruction
// (a larger one costs a second, to zero-extend it).
const hashSpace = 1 << 31

// MaxWeight bounds one socket's weight, MaxSockets the sockets a program
// addresses (sockd's limit is 1024 slots, two sockets each, so 2048; the
// kernel counts a group's sockets in 16 bits). Together they keep every
// positive weight's part of the hash space at one unit or more:
// MaxWeight*MaxSockets = 2^31.
const (
	MaxWeight  = 1 << 19
	MaxSockets = 4096
)

// Limits bound a program.
type Limits struct {
	// MaxInsns is the most classic BPF instructions (the kernel's
	// BPF_MAXINSNS, 4096, when zero).
	MaxInsns int
	// MaxBytes is the most bytes the kernel may charge for the program
	// once translated to eBPF: SO_ATTACH_REUSEPORT_CBPF fails with ENOMEM
	// past net.core.optmem_max. Zero: no limit besides MaxInsns.
	MaxBytes int
}

const bpfMaxInsns = 4096

// ErrNoWeight: no socket has a positive weight, so there is nothing to
// steer to (a program must never answer an index out of range: the kernel
// would then hash over every socket of the group, unready ones included).
var ErrNoWeight = errors.New("no socket has a positive weight")

// Program is a compiled steering program and what it does.
type Program struct {
	Insns []unix.SockFilter
	// Units is each socket's part of the hash space (out of 2^31): its
	// share of new flows is Units[i] / 2^31. Zero for a socket the program
	// never answers.
	Units []uint32
	// Exact is false when the weights had to be coarsened (or the
	// lightest sockets dropped) for the program to fit Limits.
	Exact bool
}

// Share is socket i's part of new flows.
func (p *Program) Share(i int) float64 { return float64(p.Units[i]) / hashSpace }

// Compile returns a classic BPF program for SO_ATTACH_REUSEPORT_CBPF
// (socket(7)) that hands a new flow to socket i of the group with
// probability weights[i] / sum(weights), by a hash of the flow's source
// address and ports (IPv4, and IPv6 without extension headers), so a flow
// keeps its socket while the weights stay. It answers only indexes with a
// positive weight, never one out of range. When the exact program does not
// fit lim, the weights are coarsened, then the lightest sockets dropped,
// until it does (Exact is false then).
func Compile(weights []int, lim Limits) (*Program, error) {
	if len(weights) == 0 || len(weights) > MaxSockets {
		return nil, fmt.Errorf("steering program for %d sockets: want 1 to %d", len(weights), MaxSockets)
	}
	positive := false
	for i, w := range weights {
		if w < 0 || w > MaxWeight {
			return nil, fmt.Errorf("weight %d of socket %d: want 0 to %d", w, i, MaxWeight)
		}
		positive = positive || w > 0
	}
	if !positive {
		return nil, ErrNoWeight
	}
	if lim.MaxInsns <= 0 || lim.MaxInsns > bpfMaxInsns {
		lim.MaxInsns = bpfMaxInsns
	}
	fits := func(n, bytes int) bool {
		return n <= lim.MaxInsns && (lim.MaxBytes <= 0 || bytes <= lim.MaxBytes)
	}
	w := weights
	for _, levels := range []int{0, 64, 16, 4, 1} {
		if levels > 0 {
			w = coarsen(weights, levels)
		}
		if p := build(w, fits); p != nil {
			p.Exact = levels == 0
			return p, nil
		}
	}
	// Every socket has the same weight now and the runs of sockets still
	// do not fit (their indexes are scattered): keep the largest runs.
	_, runs, _ := layout(w)
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].n > runs[j].n })
	for k := len(runs) - 1; k >= 1; k-- {
		if p := build(keepRuns(w, runs[:k]), fits); p != nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("steering program does not fit %d instructions and %d bytes", lim.MaxInsns, lim.MaxBytes)
}

// build compiles weights if the program fits, else returns nil.
func build(weights []int, fits func(insns, bytes int) bool) *Program {
	units, runs, tail := layout(weights)
	t := newTree(runs, tail)
	if n, b := t.size(); !fits(n, b) {
		return nil
	}
	return &Program{Insns: t.emit(), Units: units}
}

// coarsen maps the weights onto levels steps of the largest one, rounding
// up so that no positive weight becomes zero; equal weights make runs.
func coarsen(weights []int, levels int) []int {
	top := 0
	for _, w := range weights {
		top = max(top, w)
	}
	out := make([]int, len(weights))
	for i, w := range weights {
		if w > 0 {
			out[i] = (w*levels + top - 1) / top
		}
	}
	return out
}

// keepRuns keeps the weights of the sockets in runs, zeroing the others.
func keepRuns(w []int, runs []span) []int {
	out := make([]int, len(w))
	for _, r := range runs {
		for j := 0; j < r.n; j++ {
			i := r.first + j*r.stride
			out[i] = w[i]
		}
	}
	return out
}

// span is n sockets first, first+stride, … that each own q units of the
// hash space from lo on: h in [lo, lo+n*q) goes to first +
// stride*((h-lo)/q).
type span struct {
	lo, q            uint32
	first, stride, n int
}

func (r span) total() uint64 { return uint64(r.q) * uint64(r.n) }

// layout gives each socket floor(w*2^31/sum) units of the hash space (equal
// weights get equal units) and cuts the sockets into runs: sockets of
// equal units whose indexes step evenly, laid out one after another from
// 0. The units left over by rounding down (fewer than the sockets) go to
// tail, the heaviest socket: the program sends h >= sum(units) there.
func layout(weights []int) (units []uint32, runs []span, tail int) {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	units = make([]uint32, len(weights))
	byUnits := map[uint32][]int{}
	var keys []uint32
	for i, w := range weights {
		if w == 0 {
			continue
		}
		u := uint32(uint64(w) * hashSpace / total) // >= 1: see MaxWeight
		units[i] = u
		if _, ok := byUnits[u]; !ok {
			keys = append(keys, u)
		}
		byUnits[u] = append(byUnits[u], i)
		if units[i] > units[tail] {
			tail = i
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] > keys[j] })
	for _, u := range keys {
		idx := byUnits[u]
		for a := 0; a < len(idx); {
			b := a + 1
			stride := 1
			if b < len(idx) {
				stride = idx[b] - idx[a]
				for b < len(idx) && idx[b]-idx[b-1] == stride {
					b++
				}
			}
			if b-a < 4 {
				// Up to three single leaves cost no more than one
				// arithmetic leaf, and need no division; the next
				// socket may start a longer run.
				runs = append(runs, span{q: u, first: idx[a], stride: 1, n: 1})
				a++
				continue
			}
			runs = append(runs, span{q: u, first: idx[a], stride: stride, n: b - a})
			a = b
		}
	}
	var lo uint64
	for i := range runs {
		runs[i].lo = uint32(lo)
		lo += runs[i].total()
	}
	units[tail] += uint32(hashSpace - lo)
	return units, runs, tail
}
