package steering

import "golang.org/x/sys/unix"

// skfNetOff is SKF_NET_OFF: classic BPF loads at it and above read from
// the packet's network header (a reuseport program otherwise sees the
// payload, the kernel having pulled the TCP or UDP header off).
const skfNetOff = -0x100000

func netOff(off int) uint32 { return uint32(int32(skfNetOff + off)) }

// hashInsns computes h, the flow's hash, into A: the source address (its
// last word for IPv6) xor the ports, folded, times 2^32/phi (Fibonacci
// hashing), halved to 31 bits. It is the hash sockd has steered by since
// the first reuseport release, so a flow hashes the same across a
// program change; only the mapping from h to a socket changes.
var hashInsns = []unix.SockFilter{
	/* 0 */ {Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: netOff(0)}, // A = version<<4 | IHL
	/* 1 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 4},
	/* 2 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 6, Jt: 5, Jf: 0},
	/* 3 */ {Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: netOff(0)}, // X = IPv4 header length
	/* 4 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_IND, K: netOff(0)}, // A = source port<<16 | destination port
	/* 5 */ {Code: unix.BPF_ST, K: 0},
	/* 6 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: netOff(12)}, // A = IPv4 source address
	/* 7 */ {Code: unix.BPF_JMP | unix.BPF_JA, K: 3},
	/* 8 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: netOff(40)}, // IPv6: the ports
	/* 9 */ {Code: unix.BPF_ST, K: 0},
	/* 10 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: netOff(20)}, // the source address's last word
	/* 11 */ {Code: unix.BPF_LDX | unix.BPF_MEM, K: 0},
	/* 12 */ {Code: unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X}, // A = address ^ ports
	/* 13 */ {Code: unix.BPF_MISC | unix.BPF_TAX}, // fold the ports' high half in: A ^= A >> 16
	/* 14 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 16},
	/* 15 */ {Code: unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X},
	/* 16 */ {Code: unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K, K: 0x9E3779B1},
	/* 17 */ {Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 1},
}

// ebpfCost estimates, from above, what the kernel's translation to eBPF
// (bpf_convert_filter) makes of the classic instructions: the size that
// SO_ATTACH_REUSEPORT_CBPF compares with optmem_max is 8 bytes an eBPF
// instruction plus the program's header. A packet load becomes a helper
// call with its checks; a conditional jump with both branches taken one
// jump more; a return a move and an exit.
const (
	ebpfHeader   = 128 // bytes, with the prologue that clears A and X
	ebpfPrologue = 8
	ebpfLoad     = 12
	ebpfMSH      = 16
)

func ebpfInsns(in unix.SockFilter) int {
	switch {
	case in.Code == unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH:
		return ebpfMSH
	case in.Code&0x07 == unix.BPF_LD && (in.Code&0xe0 == unix.BPF_ABS || in.Code&0xe0 == unix.BPF_IND):
		return ebpfLoad
	case in.Code&0x07 == unix.BPF_RET:
		return 2
	case in.Code&0x07 == unix.BPF_JMP && in.Code&0xf0 != unix.BPF_JA:
		n := 1
		if in.Jt != 0 && in.Jf != 0 {
			n++
		}
		if in.K >= 1<<31 {
			n++
		}
		return n
	}
	return 1
}

var hashBytes = func() int {
	n := ebpfPrologue
	for _, in := range hashInsns {
		n += ebpfInsns(in)
	}
	return n
}()

// ebpfSize is what the kernel will charge for prog, by our estimate.
func ebpfSize(prog []unix.SockFilter) int {
	n := ebpfPrologue
	for _, in := range prog {
		n += ebpfInsns(in)
	}
	return ebpfHeader + 8*n
}

// tree is the program after the hash: a balanced binary search on h over
// the runs (one comparison a level), each leaf answering its run's socket.
type tree struct {
	runs []span
	// tail answers h past the last run (the units rounding left over).
	tail int
	end  uint64 // where the last run ends
}

func newTree(runs []span, tail int) *tree {
	t := &tree{runs: runs, tail: tail}
	if len(runs) > 0 {
		last := runs[len(runs)-1]
		t.end = uint64(last.lo) + last.total()
	}
	return t
}

// maxJump is the farthest a conditional jump reaches (8-bit jt and jf);
// farther, the comparison falls through to an unconditional jump (32-bit).
const maxJump = 255

func leafInsns(r span) []unix.SockFilter {
	if r.n == 1 {
		return []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(r.first)}}
	}
	var out []unix.SockFilter
	if r.lo > 0 {
		out = append(out, unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_SUB | unix.BPF_K, K: r.lo})
	}
	out = append(out, unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_DIV | unix.BPF_K, K: r.q})
	if r.stride > 1 {
		out = append(out, unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K, K: uint32(r.stride)})
	}
	if r.first > 0 {
		out = append(out, unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K, K: uint32(r.first)})
	}
	return append(out, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_A})
}

// size returns the program's instructions and its estimated eBPF bytes.
func (t *tree) size() (insns, bytes int) {
	n, e := len(hashInsns), hashBytes
	if t.end < hashSpace {
		n, e = n+2, e+1+2
	}
	tn, te := t.sub(0, len(t.runs), nil)
	return n + tn, ebpfHeader + 8*(e+te)
}

// sub lays out the search over runs[a:b], appending it to out when out is
// not nil, and returns its size in classic and (estimated) eBPF
// instructions.
func (t *tree) sub(a, b int, out *[]unix.SockFilter) (insns, ebpf int) {
	if b-a == 1 {
		leaf := leafInsns(t.runs[a])
		for _, in := range leaf {
			ebpf += ebpfInsns(in)
		}
		if out != nil {
			*out = append(*out, leaf...)
		}
		return len(leaf), ebpf
	}
	mid := (a + b) / 2
	ln, le := t.sub(a, mid, nil)
	cmp := unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: t.runs[mid].lo}
	var head []unix.SockFilter
	if ln <= maxJump {
		cmp.Jt = uint8(ln)
		head = []unix.SockFilter{cmp}
	} else {
		// h >= K: fall through to a long jump over the left half.
		cmp.Jf = 1
		head = []unix.SockFilter{cmp, {Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(ln)}}
	}
	for _, in := range head {
		ebpf += ebpfInsns(in)
	}
	if out != nil {
		*out = append(*out, head...)
		t.sub(a, mid, out)
	}
	rn, re := t.sub(mid, b, out)
	return len(head) + ln + rn, ebpf + le + re
}

// emit returns the whole program.
func (t *tree) emit() []unix.SockFilter {
	out := append([]unix.SockFilter(nil), hashInsns...)
	if t.end < hashSpace {
		out = append(out,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: uint32(t.end), Jf: 1},
			unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(t.tail)})
	}
	t.sub(0, len(t.runs), &out)
	return out
}
