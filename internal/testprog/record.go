package testprog

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
)

// Commit flags for bpf_ringbuf_submit, bpf_ringbuf_discard and
// bpf_ringbuf_output.
const (
	NoWakeup    = 1 // BPF_RB_NO_WAKEUP: never wake the consumer
	ForceWakeup = 2 // BPF_RB_FORCE_WAKEUP: always wake the consumer
)

// MaxSize is the largest supported [Spec.Size]: the largest per-CPU scratch
// value [Spec.Output] can copy from, and the reach of a store instruction's
// 16-bit offset.
const MaxSize = 32 << 10

// MaxBatch is the largest supported [Spec.Batch]. The verifier walks the
// unrolled program depth first, keeping every branch not yet taken (up to two
// per record) pending, and fails with EFAULT past 8192 of them.
const MaxBatch = 4000

// wordMul is multiplied by a pattern word's offset; the word holds the
// product XOR seq, so no two words of a record are alike.
const wordMul = 0x9E3779B97F4A7C15

// Spec describes a producer program and the records it writes (see the
// package documentation for the record layout).
type Spec struct {
	// Ring is the ring buffer to produce into.
	Ring *ebpf.Map
	// Size is the payload size of every record, 1 to MaxSize bytes.
	Size int
	// Batch is the number of records per program run, 0 (meaning 1) to
	// MaxBatch, unrolled in the program. The program must also stay within
	// the kernel's 1M instructions: about 30 per record plus 4 per 8 bytes
	// of it, so Batch × Size up to about 1.5 MB.
	Batch int
	// Flags are the commit flags: 0 (adaptive wakeup), NoWakeup or
	// ForceWakeup.
	Flags uint64
	// SampleBytes, if > 0, replaces Flags with sampled wake-ups: each
	// record is committed with BPF_RB_NO_WAKEUP while fewer than SampleBytes
	// bytes wait in the ring (bpf_ringbuf_query), else BPF_RB_FORCE_WAKEUP.
	SampleBytes int
	// DiscardEvery, if > 0, makes the program discard instead of submit every
	// reservation whose seq % DiscardEvery == DiscardEvery-1 (so 1 discards
	// everything). Discarded records take ring space but are never delivered.
	DiscardEvery int
	// Output makes the program write each record into a per-CPU scratch map
	// value and copy it with bpf_ringbuf_output instead of using
	// bpf_ringbuf_reserve and bpf_ringbuf_submit. DiscardEvery must be 0.
	Output bool
	// Timestamp makes bytes [16:24] of each record hold bpf_ktime_get_ns(),
	// read just before the record is committed, instead of the pattern, for
	// latency measurements. It has no effect when Size < 24.
	Timestamp bool
}

// Record is what [Spec.Check] learns from a record.
type Record struct {
	// CPU is the producing CPU. Records shorter than 12 bytes carry only
	// its low Size-8 bytes (nothing, so 0, when Size <= 8).
	CPU uint32
	// Seq is the producing CPU's sequence number. Records shorter than 8
	// bytes carry only its low Size bytes: compare Seq with the expected
	// value modulo 1<<(8*Size).
	Seq uint64
	// Time is the bpf_ktime_get_ns() timestamp, or 0 without a timestamp.
	Time uint64
}

func (s Spec) hasTimestamp() bool { return s.Timestamp && s.Size >= 24 }

// Expected returns the bytes the program writes into the record with the
// given CPU and seq; the timestamp bytes, if any, are zero.
func (s Spec) Expected(cpu uint32, seq uint64) []byte {
	if s.Size <= 0 {
		return nil
	}
	// Lay out the full header and whole words, then truncate.
	buf := make([]byte, (max(s.Size, 16)+7)&^7)
	binary.LittleEndian.PutUint64(buf[0:], seq)
	binary.LittleEndian.PutUint32(buf[8:], cpu)
	binary.LittleEndian.PutUint32(buf[12:], uint32(s.Size))
	for o := 16; o < s.Size; o += 8 {
		binary.LittleEndian.PutUint64(buf[o:], seq^uint64(o)*wordMul)
	}
	if s.hasTimestamp() {
		clear(buf[16:24])
	}
	return buf[:s.Size]
}

// Check verifies a delivered record byte for byte and returns the CPU, seq
// and timestamp it carries. CPU and seq are read from the record itself, as
// far as its size allows (see [Record]); the remaining bytes must then match
// [Spec.Expected] exactly, and a timestamp must be non-zero. The error
// describes the first mismatching byte.
func (s Spec) Check(rec []byte) (Record, error) {
	if len(rec) != s.Size {
		return Record{}, fmt.Errorf("record has %d bytes, want %d", len(rec), s.Size)
	}
	var head [12]byte // zero where the record is too short to carry seq or CPU
	copy(head[:], rec)
	r := Record{
		Seq: binary.LittleEndian.Uint64(head[0:]),
		CPU: binary.LittleEndian.Uint32(head[8:]),
	}
	want := s.Expected(r.CPU, r.Seq)
	if s.hasTimestamp() {
		r.Time = binary.LittleEndian.Uint64(rec[16:])
		if r.Time == 0 {
			return r, fmt.Errorf("record of cpu %d seq %d: timestamp (bytes 16:24) is zero", r.CPU, r.Seq)
		}
		copy(want[16:24], rec[16:24])
	}
	for i := range rec {
		if rec[i] != want[i] {
			return r, fmt.Errorf("record of cpu %d seq %d (%d bytes): byte %d is %#02x, want %#02x",
				r.CPU, r.Seq, s.Size, i, rec[i], want[i])
		}
	}
	return r, nil
}
