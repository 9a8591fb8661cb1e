package testprog

import (
	"fmt"
	"math"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// currentCPU is BPF_F_CURRENT_CPU: bpf_perf_event_output writes to the ring
// of the CPU the program runs on. The upper 32 bits must stay clear.
const currentCPU = 0xffffffff

// offCtx is the stack slot where the perf producer keeps its context
// pointer, which bpf_perf_event_output needs and no register is left for.
const offCtx = -16

// NewPerfEventArray creates a BPF_MAP_TYPE_PERF_EVENT_ARRAY map with the given
// number of entries (0: one per possible CPU), closed when the test ends.
func NewPerfEventArray(tb testing.TB, entries int) *ebpf.Map {
	tb.Helper()
	RequireBPF(tb)
	if entries == 0 {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			tb.Fatalf("testprog: possible CPUs: %v", err)
		}
		entries = n
	}
	if entries < 0 || entries > math.MaxUint32 {
		tb.Fatalf("testprog: perf event array of %d entries", entries)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type:       ebpf.PerfEventArray,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(entries),
	})
	if err != nil {
		tb.Fatalf("testprog: create perf event array of %d entries: %v", entries, err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// NewPerfProducer is NewProducer for a perf buffer: spec.Ring is a
// BPF_MAP_TYPE_PERF_EVENT_ARRAY, and every record is written to a per-CPU
// scratch value and copied with bpf_perf_event_output(ctx, map,
// BPF_F_CURRENT_CPU, ...) to the ring of the CPU the program runs on.
// Flags and DiscardEvery must be 0 and Output is implied. An output that
// fails (the CPU's ring is full, or no ring is stored for the CPU) counts as
// Dropped and does not consume a seq, as with Output.
//
// The consumer receives each record as the kernel pads it: see
// [PerfRawSize] and [Spec.CheckPerf].
func NewPerfProducer(tb testing.TB, spec Spec) *Producer {
	tb.Helper()
	RequireBPF(tb)
	p, err := LoadPerf(spec)
	if err != nil {
		tb.Fatalf("testprog: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// LoadPerf is NewPerfProducer for use outside tests: it returns errors, and
// the caller closes the Producer.
func LoadPerf(spec Spec) (*Producer, error) {
	return load(spec, true)
}

// perfProgram assembles the perf producer for s (with s.Batch >= 1): the
// producer program of Spec.program with Output, but with
// bpf_perf_event_output.
func (s Spec) perfProgram(m maps) asm.Instructions {
	var b builder
	b.emit(asm.StoreMem(asm.RFP, offCtx, asm.R1, asm.DWord))
	b.prologue(m)

	for i := range s.Batch {
		b.mark(recordLabel(i))
		b.emit(asm.LoadMem(rSeq, rState, offSeq, asm.DWord))
		s.write(&b)
		b.emit(
			asm.LoadMem(asm.R1, asm.RFP, offCtx, asm.DWord),
			asm.LoadMapPtr(asm.R2, m.ring.FD()),
			asm.LoadImm(asm.R3, currentCPU, asm.DWord),
			asm.Mov.Reg(asm.R4, rRec),
			asm.Mov.Imm(asm.R5, int32(s.Size)),
			asm.FnPerfEventOutput.Call(),
			asm.JNE.Imm(asm.R0, 0, dropLabel(i)),
		)
		b.outputDone(i)
	}
	b.mark(recordLabel(s.Batch))
	b.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
	return b.insns
}

// PerfRawSize is the length of the raw data a perf buffer delivers for a
// record of size bytes: the kernel pads the raw data so that, with its
// 4-byte size field, it fills whole 8-byte words.
func PerfRawSize(size int) int { return (size+4+7)&^7 - 4 }

// CheckPerf is Check for a record delivered by a perf buffer: raw must be
// PerfRawSize(s.Size) bytes, the record followed by padding. The padding is
// not checked: the kernel skips those bytes of the ring without writing
// them (__output_skip in perf_output_sample), so they hold whatever the ring
// held there before.
func (s Spec) CheckPerf(raw []byte) (Record, error) {
	if want := PerfRawSize(s.Size); len(raw) != want {
		return Record{}, fmt.Errorf("perf sample has %d raw bytes, want %d for a %d-byte record", len(raw), want, s.Size)
	}
	return s.Check(raw[:s.Size])
}
