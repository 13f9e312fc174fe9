package steering

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A classic BPF interpreter and checker that follow the kernel's
// (net/core/filter.c: bpf_check_classic, check_load_and_stores, and the
// semantics bpf_convert_filter gives each instruction), for the programs
// sockd attaches with SO_ATTACH_REUSEPORT_CBPF. The kernel tests check
// that the kernel agrees with it connection by connection; the property
// tests then check the programs through it.

// pkt is what a reuseport program sees: loads from SKF_NET_OFF on read the
// network header on (IP header, transport header, payload); loads from 0
// read the payload (the kernel pulled the transport header off).
type pkt struct {
	net     []byte
	payload []byte
}

// v4 builds an IPv4 TCP SYN from src:sport to dst:dport with an IP header
// of ihl words (5 plus options).
func v4(src, dst [4]byte, sport, dport uint16, ihl int) pkt {
	h := make([]byte, ihl*4+20)
	h[0] = 0x40 | byte(ihl)
	h[9] = unix.IPPROTO_TCP
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	binary.BigEndian.PutUint16(h[ihl*4:], sport)
	binary.BigEndian.PutUint16(h[ihl*4+2:], dport)
	return pkt{net: h}
}

func v6(src, dst [16]byte, sport, dport uint16) pkt {
	h := make([]byte, 40+20)
	h[0] = 0x60
	h[6] = unix.IPPROTO_TCP
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	binary.BigEndian.PutUint16(h[40:], sport)
	binary.BigEndian.PutUint16(h[42:], dport)
	return pkt{net: h}
}

var errLoad = errors.New("load out of the packet: the program returns 0")

func (p pkt) load(off int32, size int) (uint32, error) {
	buf, o := p.payload, int64(off)
	if off < 0 {
		if int64(off) < skfNetOff {
			return 0, errLoad // SKF_LL_OFF and below: not modelled
		}
		buf, o = p.net, int64(off)-skfNetOff
	}
	if o < 0 || o+int64(size) > int64(len(buf)) {
		return 0, errLoad
	}
	switch size {
	case 1:
		return uint32(buf[o]), nil
	case 2:
		return uint32(binary.BigEndian.Uint16(buf[o:])), nil
	}
	return binary.BigEndian.Uint32(buf[o:]), nil
}

// runFrom runs prog from instruction pc with A preset (the kernel starts
// at 0 with A = X = 0); a failed load returns 0, as the kernel's does.
func runFrom(prog []unix.SockFilter, pc int, a uint32, p pkt) (uint32, error) {
	var x uint32
	var mem [16]uint32
	for steps := 0; steps <= len(prog); steps++ {
		if pc < 0 || pc >= len(prog) {
			return 0, fmt.Errorf("pc %d out of the program", pc)
		}
		in := prog[pc]
		pc++
		k := in.K
		src := k
		if in.Code&unix.BPF_X != 0 {
			src = x
		}
		switch in.Code & 0x07 {
		case unix.BPF_LD, unix.BPF_LDX:
			var v uint32
			var err error
			switch in.Code & 0xe0 {
			case unix.BPF_ABS:
				v, err = p.load(int32(k), loadSize(in.Code))
			case unix.BPF_IND:
				v, err = p.load(int32(x+k), loadSize(in.Code))
			case unix.BPF_MSH:
				v, err = p.load(int32(k), 1)
				v = (v & 0xf) << 2
			case unix.BPF_IMM:
				v = k
			case unix.BPF_MEM:
				v = mem[k]
			case unix.BPF_LEN:
				v = uint32(len(p.payload))
			default:
				return 0, fmt.Errorf("load mode %#x", in.Code)
			}
			if err != nil {
				return 0, nil
			}
			if in.Code&0x07 == unix.BPF_LD {
				a = v
			} else {
				x = v
			}
		case unix.BPF_ST:
			mem[k] = a
		case unix.BPF_STX:
			mem[k] = x
		case unix.BPF_ALU:
			switch in.Code & 0xf0 {
			case unix.BPF_ADD:
				a += src
			case unix.BPF_SUB:
				a -= src
			case unix.BPF_MUL:
				a *= src
			case unix.BPF_DIV:
				if src == 0 {
					return 0, nil
				}
				a /= src
			case unix.BPF_MOD:
				if src == 0 {
					return 0, nil
				}
				a %= src
			case unix.BPF_OR:
				a |= src
			case unix.BPF_AND:
				a &= src
			case unix.BPF_XOR:
				a ^= src
			case unix.BPF_LSH:
				a <<= src & 31
			case unix.BPF_RSH:
				a >>= src & 31
			case unix.BPF_NEG:
				a = -a
			default:
				return 0, fmt.Errorf("alu op %#x", in.Code)
			}
		case unix.BPF_JMP:
			if in.Code&0xf0 == unix.BPF_JA {
				pc += int(k)
				continue
			}
			var ok bool
			switch in.Code & 0xf0 {
			case unix.BPF_JEQ:
				ok = a == src
			case unix.BPF_JGT:
				ok = a > src
			case unix.BPF_JGE:
				ok = a >= src
			case unix.BPF_JSET:
				ok = a&src != 0
			default:
				return 0, fmt.Errorf("jump %#x", in.Code)
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET:
			if in.Code&0x18 == unix.BPF_A {
				return a, nil
			}
			return k, nil
		case unix.BPF_MISC:
			if in.Code&0xf8 == unix.BPF_TAX {
				x = a
			} else {
				a = x
			}
		}
	}
	return 0, errors.New("no return: a loop")
}

func run(prog []unix.SockFilter, p pkt) (uint32, error) { return runFrom(prog, 0, 0, p) }

func loadSize(code uint16) int {
	switch code & 0x18 {
	case unix.BPF_B:
		return 1
	case unix.BPF_H:
		return 2
	}
	return 4
}

// check is bpf_check_classic: every opcode known, constant divisors not
// zero, shifts below 32, scratch memory indexes below 16 and written
// before read on every path, jumps inside the program forward, the last
// instruction a return, at most BPF_MAXINSNS instructions.
func check(prog []unix.SockFilter) error {
	n := len(prog)
	if n == 0 || n > bpfMaxInsns {
		return fmt.Errorf("%d instructions", n)
	}
	valid := map[uint16]bool{}
	for _, c := range []uint16{
		unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, unix.BPF_LD | unix.BPF_B | unix.BPF_ABS,
		unix.BPF_LD | unix.BPF_W | unix.BPF_IND, unix.BPF_LD | unix.BPF_H | unix.BPF_IND, unix.BPF_LD | unix.BPF_B | unix.BPF_IND,
		unix.BPF_LD | unix.BPF_IMM, unix.BPF_LD | unix.BPF_MEM, unix.BPF_LD | unix.BPF_W | unix.BPF_LEN,
		unix.BPF_LDX | unix.BPF_IMM, unix.BPF_LDX | unix.BPF_MEM, unix.BPF_LDX | unix.BPF_W | unix.BPF_LEN, unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH,
		unix.BPF_ST, unix.BPF_STX, unix.BPF_RET | unix.BPF_K, unix.BPF_RET | unix.BPF_A,
		unix.BPF_MISC | unix.BPF_TAX, unix.BPF_MISC | unix.BPF_TXA, unix.BPF_JMP | unix.BPF_JA,
	} {
		valid[c] = true
	}
	for _, op := range []uint16{unix.BPF_ADD, unix.BPF_SUB, unix.BPF_MUL, unix.BPF_DIV, unix.BPF_MOD, unix.BPF_OR, unix.BPF_AND, unix.BPF_XOR, unix.BPF_LSH, unix.BPF_RSH} {
		valid[unix.BPF_ALU|op|unix.BPF_K] = true
		valid[unix.BPF_ALU|op|unix.BPF_X] = true
	}
	valid[unix.BPF_ALU|unix.BPF_NEG] = true
	for _, op := range []uint16{unix.BPF_JEQ, unix.BPF_JGT, unix.BPF_JGE, unix.BPF_JSET} {
		valid[unix.BPF_JMP|op|unix.BPF_K] = true
		valid[unix.BPF_JMP|op|unix.BPF_X] = true
	}
	for pc, in := range prog {
		if !valid[in.Code] {
			return fmt.Errorf("insn %d: unknown opcode %#x", pc, in.Code)
		}
		switch in.Code {
		case unix.BPF_ALU | unix.BPF_DIV | unix.BPF_K, unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K:
			if in.K == 0 {
				return fmt.Errorf("insn %d: division by constant 0", pc)
			}
		case unix.BPF_ALU | unix.BPF_LSH | unix.BPF_K, unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K:
			if in.K >= 32 {
				return fmt.Errorf("insn %d: shift by %d", pc, in.K)
			}
		case unix.BPF_LD | unix.BPF_MEM, unix.BPF_LDX | unix.BPF_MEM, unix.BPF_ST, unix.BPF_STX:
			if in.K >= 16 {
				return fmt.Errorf("insn %d: scratch word %d", pc, in.K)
			}
		case unix.BPF_JMP | unix.BPF_JA:
			if in.K >= uint32(n-pc-1) {
				return fmt.Errorf("insn %d: ja %d past the end", pc, in.K)
			}
		}
		if in.Code&0x07 == unix.BPF_JMP && in.Code&0xf0 != unix.BPF_JA {
			if pc+int(in.Jt)+1 >= n || pc+int(in.Jf)+1 >= n {
				return fmt.Errorf("insn %d: jump past the end (jt %d jf %d of %d)", pc, in.Jt, in.Jf, n)
			}
		}
	}
	if prog[n-1].Code&0x07 != unix.BPF_RET {
		return errors.New("the last instruction is not a return")
	}
	// check_load_and_stores
	masks := make([]uint16, n)
	for i := range masks {
		masks[i] = 0xffff
	}
	var memvalid uint16
	for pc, in := range prog {
		memvalid &= masks[pc]
		switch in.Code {
		case unix.BPF_ST, unix.BPF_STX:
			memvalid |= 1 << in.K
		case unix.BPF_LD | unix.BPF_MEM, unix.BPF_LDX | unix.BPF_MEM:
			if memvalid&(1<<in.K) == 0 {
				return fmt.Errorf("insn %d: scratch word %d read before written", pc, in.K)
			}
		case unix.BPF_JMP | unix.BPF_JA:
			masks[pc+1+int(in.K)] &= memvalid
			memvalid = 0xffff
		case unix.BPF_RET | unix.BPF_K, unix.BPF_RET | unix.BPF_A:
			memvalid = 0xffff
		default:
			if in.Code&0x07 == unix.BPF_JMP {
				masks[pc+1+int(in.Jt)] &= memvalid
				masks[pc+1+int(in.Jf)] &= memvalid
				memvalid = 0xffff
			}
		}
	}
	return nil
}
