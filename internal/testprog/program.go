package testprog

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

const license = "Dual MIT/GPL"

// Registers that the producer program keeps across helper calls
// (callee-saved).
const (
	rState = asm.R6 // the CPU's stateValue
	rCPU   = asm.R7 // bpf_get_smp_processor_id()
	rRec   = asm.R8 // the record being written: reservation or scratch value
	rSeq   = asm.R9 // seq of the record being written
)

// stateValue is the per-CPU value of the producer's state map.
type stateValue struct {
	Seq       uint64 // next seq: successful reservations so far
	Submitted uint64
	Discarded uint64
	Dropped   uint64 // reservations (or outputs) that failed: ring full
}

// Offsets of the stateValue fields.
const (
	offSeq       = 0
	offSubmitted = 8
	offDiscarded = 16
	offDropped   = 24
)

// skbMarkOffset is the offset of mark in struct __sk_buff, which carries the
// budget slot of a test run (see Producer.Run).
const skbMarkOffset = 8

// maps are the maps a producer program uses.
type maps struct {
	ring    *ebpf.Map
	state   *ebpf.Map // stateValue per CPU
	budgets *ebpf.Map // budget per slot, see Producer.Run
	scratch *ebpf.Map // per-CPU record buffer, only with Spec.Output
}

// builder assembles a program whose jump targets are named by symbols.
type builder struct {
	insns   asm.Instructions
	label   string // symbol for the next emitted instruction
	sampled int    // sampled-flags blocks emitted, for their labels
}

func (b *builder) emit(insns ...asm.Instruction) {
	for _, ins := range insns {
		if b.label != "" {
			ins = ins.WithSymbol(b.label)
			b.label = ""
		}
		b.insns = append(b.insns, ins)
	}
}

// mark names the next emitted instruction.
func (b *builder) mark(label string) {
	if b.label != "" {
		panic("testprog: two labels on one instruction: " + b.label + ", " + label)
	}
	b.label = label
}

// Labels. Record i starts at recordLabel(i); recordLabel(batch) is the final
// exit. Jumps stay within one record or its neighbours, so their 16-bit
// offsets cannot overflow however large the program is.
const bail = "bail"

func recordLabel(i int) string  { return fmt.Sprintf("record%d", i) }
func discardLabel(i int) string { return fmt.Sprintf("discard%d", i) }
func dropLabel(i int) string    { return fmt.Sprintf("drop%d", i) }

// program assembles the producer for s (with s.Batch >= 1).
func (s Spec) program(m maps) asm.Instructions {
	var b builder
	b.prologue(m)

	for i := range s.Batch {
		b.mark(recordLabel(i))
		if s.Output {
			s.output(&b, m.ring, i)
		} else {
			s.reserve(&b, m.ring, i)
		}
	}
	b.mark(recordLabel(s.Batch))
	b.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
	return b.insns
}

// prologue emits the start of every producer program, with the test run's
// context in R1: take one run from this test run's budget, or exit without
// producing anything (key = skb->mark; if (!budget[key]) return 0;
// budget[key]--); load the CPU's state, the scratch value if there is one,
// and the CPU number; then jump to the first record, past the shared exit.
func (b *builder) prologue(m maps) {
	b.emit(
		asm.LoadMem(asm.R2, asm.R1, skbMarkOffset, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, m.budgets.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, bail),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, bail),
		asm.Add.Imm(asm.R1, -1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	b.lookup0(m.state, rState)
	if m.scratch != nil {
		b.lookup0(m.scratch, rRec)
	}
	b.emit(
		asm.FnGetSmpProcessorId.Call(),
		asm.Mov.Reg(rCPU, asm.R0),
		asm.Ja.Label(recordLabel(0)),
	)
	b.mark(bail)
	b.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
}

// lookup0 emits dst = bpf_map_lookup_elem(m, &(u32){0}), exiting on NULL.
func (b *builder) lookup0(m *ebpf.Map, dst asm.Register) {
	b.emit(
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, bail),
		asm.Mov.Reg(dst, asm.R0),
	)
}

// increment emits state->field++ (the state is per CPU, so no atomics).
func (b *builder) increment(off int16) {
	b.emit(
		asm.LoadMem(asm.R1, rState, off, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(rState, off, asm.R1, asm.DWord),
	)
}

// reserve emits record i with bpf_ringbuf_reserve, then submit or discard.
func (s Spec) reserve(b *builder, ring *ebpf.Map, i int) {
	next := recordLabel(i + 1)
	b.emit(
		asm.LoadMapPtr(asm.R1, ring.FD()),
		asm.Mov.Imm(asm.R2, int32(s.Size)),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, dropLabel(i)),
		asm.Mov.Reg(rRec, asm.R0),
		// seq = state->seq++
		asm.LoadMem(rSeq, rState, offSeq, asm.DWord),
		asm.Mov.Reg(asm.R1, rSeq),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(rState, offSeq, asm.R1, asm.DWord),
	)
	s.write(b)
	if s.DiscardEvery > 0 {
		b.emit(
			asm.Mov.Reg(asm.R1, rSeq),
			asm.Mod.Imm(asm.R1, int32(s.DiscardEvery)),
			asm.JEq.Imm(asm.R1, int32(s.DiscardEvery-1), discardLabel(i)),
		)
	}
	s.commit(b, asm.FnRingbufSubmit, offSubmitted, next)
	if s.DiscardEvery > 0 {
		b.mark(discardLabel(i))
		s.commit(b, asm.FnRingbufDiscard, offDiscarded, next)
	}
	b.mark(dropLabel(i))
	b.increment(offDropped) // falls through to the next record
}

// commit emits fn(rec, flags); state->counter++; goto next.
func (s Spec) commit(b *builder, fn asm.BuiltinFunc, counter int16, next string) {
	s.flags(b, asm.R2)
	b.emit(
		asm.Mov.Reg(asm.R1, rRec),
		fn.Call(),
	)
	b.increment(counter)
	b.emit(asm.Ja.Label(next))
}

// output emits record i written to the scratch value and copied with
// bpf_ringbuf_output. A failed output does not consume a seq: the next
// attempt rewrites the scratch value with the same seq.
func (s Spec) output(b *builder, ring *ebpf.Map, i int) {
	b.emit(asm.LoadMem(rSeq, rState, offSeq, asm.DWord))
	s.write(b)
	b.emit(
		asm.LoadMapPtr(asm.R1, ring.FD()),
		asm.Mov.Reg(asm.R2, rRec),
		asm.Mov.Imm(asm.R3, int32(s.Size)),
	)
	s.flags(b, asm.R4)
	b.emit(
		asm.FnRingbufOutput.Call(),
		asm.JSLT.Imm(asm.R0, 0, dropLabel(i)),
	)
	b.outputDone(i)
}

// outputDone emits the end of record i after an output helper whose failure
// jumped to dropLabel(i): on success the seq is used up and the record
// counted as submitted; on failure it is counted as dropped.
func (b *builder) outputDone(i int) {
	b.emit(
		asm.Mov.Reg(asm.R1, rSeq),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(rState, offSeq, asm.R1, asm.DWord),
	)
	b.increment(offSubmitted)
	b.emit(asm.Ja.Label(recordLabel(i + 1)))
	b.mark(dropLabel(i))
	b.increment(offDropped)
}

// flags emits dst = the commit flags: Spec.Flags, or with SampleBytes,
// BPF_RB_FORCE_WAKEUP once that many bytes wait in the ring and
// BPF_RB_NO_WAKEUP before. It clobbers R0 to R5 (but dst), so it comes
// before the other arguments of the commit are set up, except R1 to R3 of
// bpf_ringbuf_output, which it saves and restores.
func (s Spec) flags(b *builder, dst asm.Register) {
	if s.SampleBytes == 0 {
		b.emit(asm.Mov.Imm(dst, int32(s.Flags)))
		return
	}
	b.sampled++
	done := fmt.Sprintf("sampled%d", b.sampled)
	// bpf_ringbuf_output's first three arguments live in R1-R3 already.
	saved := dst == asm.R4
	if saved {
		b.emit(
			asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
			asm.StoreMem(asm.RFP, -24, asm.R3, asm.DWord),
		)
	}
	b.emit(
		asm.LoadMapPtr(asm.R1, s.Ring.FD()),
		asm.Mov.Imm(asm.R2, 0), // BPF_RB_AVAIL_DATA
		asm.FnRingbufQuery.Call(),
		asm.Mov.Imm(dst, NoWakeup),
		asm.JLT.Imm(asm.R0, int32(s.SampleBytes), done),
		asm.Mov.Imm(dst, ForceWakeup),
	)
	b.mark(done) // names the caller's next instruction
	if saved {
		b.emit(
			asm.LoadMapPtr(asm.R1, s.Ring.FD()),
			asm.LoadMem(asm.R2, asm.RFP, -16, asm.DWord),
			asm.LoadMem(asm.R3, asm.RFP, -24, asm.DWord),
		)
	}
}

// write emits the stores of a record's contents (see Spec.Expected) to rRec,
// for rSeq and rCPU, unrolled.
func (s Spec) write(b *builder) {
	s.store(b, 0, rSeq)
	if s.Size > 8 {
		s.store(b, 8, rCPU)
	}
	if s.Size > 12 {
		b.emit(asm.Mov.Imm(asm.R1, int32(s.Size)))
		s.store(b, 12, asm.R1)
	}
	for o := 16; o < s.Size; o += 8 {
		if o == 16 && s.hasTimestamp() {
			continue
		}
		b.emit(
			asm.LoadImm(asm.R1, int64(uint64(o)*wordMul), asm.DWord),
			asm.Xor.Reg(asm.R1, rSeq),
		)
		s.store(b, o, asm.R1)
	}
	if s.hasTimestamp() {
		b.emit(
			asm.FnKtimeGetNs.Call(),
			asm.StoreMem(rRec, 16, asm.R0, asm.DWord),
		)
	}
}

// store emits the stores of the low bytes of src that fall into the field at
// offset off (8 bytes at 0 and from 16 on, 4 bytes at 8 and 12), cut at
// s.Size. It may clobber R1.
func (s Spec) store(b *builder, off int, src asm.Register) {
	n := min(s.Size-off, 8)
	if off == 8 || off == 12 {
		n = min(n, 4)
	}
	switch n {
	case 8:
		b.emit(asm.StoreMem(rRec, int16(off), src, asm.DWord))
		return
	case 4:
		b.emit(asm.StoreMem(rRec, int16(off), src, asm.Word))
		return
	case 2:
		b.emit(asm.StoreMem(rRec, int16(off), src, asm.Half))
		return
	case 1:
		b.emit(asm.StoreMem(rRec, int16(off), src, asm.Byte))
		return
	}
	// 3, 5, 6 or 7 bytes: store 4, 2 and 1 byte pieces from a copy of src,
	// shifted right past the bytes already stored.
	if src != asm.R1 {
		b.emit(asm.Mov.Reg(asm.R1, src))
	}
	pos, shifted := 0, 0
	for _, piece := range []struct {
		n    int
		size asm.Size
	}{{4, asm.Word}, {2, asm.Half}, {1, asm.Byte}} {
		if n-pos < piece.n {
			continue
		}
		if pos > shifted {
			b.emit(asm.RSh.Imm(asm.R1, int32(8*(pos-shifted))))
			shifted = pos
		}
		b.emit(asm.StoreMem(rRec, int16(off+pos), asm.R1, piece.size))
		pos += piece.n
	}
}
