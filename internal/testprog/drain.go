package testprog

import (
	"errors"
	"fmt"
	"math/bits"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// MaxDrainSize is the largest sample a [Drainer] can copy: the size of its
// per-CPU scratch value, which the kernel limits to 32 KiB.
const MaxDrainSize = 32 << 10

// DrainCounts are a [Drainer] program's own counters, summed over all CPUs.
type DrainCounts struct {
	Copied         uint64 // samples copied into the output ring
	CallbackFailed uint64 // samples lost: too large, unreadable, or the output ring was full
	DrainFailed    uint64 // bpf_user_ringbuf_drain calls that returned an error
	LastErr        int64  // the last such error (a negative errno), 0 if none
}

// drainStats is the per-CPU value of a Drainer's stats map; see DrainCounts.
type drainStats struct {
	Copied, CallbackFailed, DrainFailed uint64
	LastErr                             int64
}

// Offsets of the drainStats fields.
const (
	offCopied         = 0
	offCallbackFailed = 8
	offDrainFailed    = 16
	offLastErr        = 24
)

// Drainer is a loaded socket filter program that drains a
// BPF_MAP_TYPE_USER_RINGBUF with bpf_user_ringbuf_drain each time it is run,
// and copies every sample it drains into a BPF_MAP_TYPE_RINGBUF, unchanged.
type Drainer struct {
	prog  *ebpf.Program
	stats *ebpf.Map // nil without an output ring
}

// drainContext is the test run context of Drain; a global, like packet.
var drainContext skbContext

// NewUserRingBuf creates a BPF_MAP_TYPE_USER_RINGBUF map of size bytes (a
// power of two and a multiple of the page size), closed when the test ends.
func NewUserRingBuf(tb testing.TB, size int) *ebpf.Map {
	tb.Helper()
	RequireBPF(tb)
	if size <= 0 || size > 1<<31 {
		tb.Fatalf("testprog: user ring buffer size %d out of range", size)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.UserRingbuf, MaxEntries: uint32(size)})
	if err != nil {
		tb.Fatalf("testprog: create user ring buffer of %d bytes: %v", size, err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// NewDrainer loads a program that drains user, a user ring buffer, into out,
// a ring buffer. Samples larger than MaxDrainSize are counted as failed and
// stop the drain; so does a full out, which loses the sample (the kernel has
// consumed it already): size out so that it holds what one Drain can take.
//
// With a nil out the program only drains: its callback returns at once,
// without copying or counting, as a fast consumer for benchmarks.
func NewDrainer(tb testing.TB, user, out *ebpf.Map) *Drainer {
	tb.Helper()
	RequireBPF(tb)
	if user == nil {
		tb.Fatalf("testprog: NewDrainer: nil user ring buffer")
	}
	d := &Drainer{}
	var cb asm.Instructions
	if out != nil {
		d.stats = newPerCPUValue(tb, int(unsafe.Sizeof(drainStats{})))
		scratch := newPerCPUValue(tb, MaxDrainSize)
		cb = copyCallback(scratch, out, d.stats)
	} else {
		cb = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	}
	insns := drainMain(user, d.stats)
	insns = append(insns, cb...)
	// The verifier demands BTF function info for a program with a callback.
	insns[0] = btf.WithFuncMetadata(insns[0], &btf.Func{
		Name:    "drain",
		Type:    &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}},
		Linkage: btf.GlobalFunc,
	})
	first := len(insns) - len(cb)
	insns[first] = btf.WithFuncMetadata(insns[first].WithSymbol("cb"), &btf.Func{
		Name:    "cb",
		Type:    &btf.FuncProto{Return: &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}},
		Linkage: btf.StaticFunc,
	})
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "drain",
		Type:         ebpf.SocketFilter,
		License:      license,
		Instructions: insns,
	})
	if err != nil {
		tb.Fatalf("testprog: load drain program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	d.prog = prog
	return d
}

// newPerCPUValue creates a per-CPU array of one value of size bytes, closed
// when the test ends.
func newPerCPUValue(tb testing.TB, size int) *ebpf.Map {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  uint32(size),
		MaxEntries: 1,
	})
	if err != nil {
		tb.Fatalf("testprog: create per-CPU array of %d bytes: %v", size, err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// drainMain is the main program: r0 = bpf_user_ringbuf_drain(user, cb, NULL,
// 0); a negative result is recorded in stats (when there are stats).
func drainMain(user, stats *ebpf.Map) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMapPtr(asm.R1, user.FD()),
		// A function pointer: resolved to the instruction named "cb".
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("cb"),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnUserRingbufDrain.Call(),
		asm.Mov.Reg(asm.R6, asm.R0),
	}
	if stats != nil {
		insns = append(insns,
			asm.JSGE.Imm(asm.R6, 0, "main_out"),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, stats.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "main_out"),
			asm.LoadMem(asm.R1, asm.R0, offDrainFailed, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, offDrainFailed, asm.R1, asm.DWord),
			asm.StoreMem(asm.R0, offLastErr, asm.R6, asm.DWord),
		)
	}
	return append(insns,
		asm.Mov.Reg(asm.R0, asm.R6).WithSymbol("main_out"),
		asm.Return(),
	)
}

// copyCallback is the drain callback long cb(struct bpf_dynptr *sample, void
// *ctx): it copies the sample into out through the scratch value and returns
// 0 (go on), or counts a failure and returns 1 (stop).
//
// No helper tells a program the size of a dynptr (bpf_dynptr_size is a
// kfunc), so the callback finds it: a read of 1 byte at offset k-1 succeeds
// exactly when the sample holds at least k bytes, and a binary search over k
// takes about 16 such reads. The search is branch-free (the read's result
// selects the new bounds arithmetically), so that the verifier walks one
// path, not one per outcome.
func copyCallback(scratch, out, stats *ebpf.Map) asm.Instructions {
	const (
		rDyn     = asm.R6 // the sample's dynptr
		rScratch = asm.R7
		rLo      = asm.R8 // the sample holds at least lo bytes
		rHi      = asm.R9 // ... and at most hi
		midSlot  = -16    // stack slot of mid across the helper call
	)
	var b builder
	b.emit(asm.Mov.Reg(rDyn, asm.R1))
	b.emit(
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, scratch.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "cb_fail"),
		asm.Mov.Reg(rScratch, asm.R0),
		// A sample of more than MaxDrainSize bytes cannot be copied.
		asm.Mov.Reg(asm.R1, rScratch),
		asm.Mov.Imm(asm.R2, 1),
		asm.Mov.Reg(asm.R3, rDyn),
		asm.Mov.Imm(asm.R4, MaxDrainSize),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnDynptrRead.Call(),
		asm.JEq.Imm(asm.R0, 0, "cb_fail"),
		asm.Mov.Imm(rLo, 0),
		asm.Mov.Imm(rHi, MaxDrainSize),
	)
	// Each step at least halves hi-lo; once lo == hi a step changes nothing.
	for range bits.Len(MaxDrainSize) + 1 {
		b.emit(
			// mid = (lo + hi + 1) / 2
			asm.Mov.Reg(asm.R1, rLo),
			asm.Add.Reg(asm.R1, rHi),
			asm.Add.Imm(asm.R1, 1),
			asm.RSh.Imm(asm.R1, 1),
			asm.StoreMem(asm.RFP, midSlot, asm.R1, asm.DWord),
			// r0 = bpf_dynptr_read(scratch, 1, sample, mid-1, 0)
			asm.Mov.Reg(asm.R4, asm.R1),
			asm.Add.Imm(asm.R4, -1),
			asm.Mov.Reg(asm.R1, rScratch),
			asm.Mov.Imm(asm.R2, 1),
			asm.Mov.Reg(asm.R3, rDyn),
			asm.Mov.Imm(asm.R5, 0),
			asm.FnDynptrRead.Call(),
			// m = r0 >> 63 (arithmetic): 0 if the read worked, all ones if not
			asm.ArSh.Imm(asm.R0, 63),
			asm.LoadMem(asm.R1, asm.RFP, midSlot, asm.DWord),
			// lo ^= (lo ^ mid) & ^m: lo = mid when the read worked
			asm.Mov.Reg(asm.R2, rLo),
			asm.Xor.Reg(asm.R2, asm.R1),
			asm.Mov.Reg(asm.R3, asm.R0),
			asm.Xor.Imm(asm.R3, -1),
			asm.And.Reg(asm.R2, asm.R3),
			asm.Xor.Reg(rLo, asm.R2),
			// hi ^= (hi ^ (mid-1)) & m: hi = mid-1 when it failed
			asm.Add.Imm(asm.R1, -1),
			asm.Mov.Reg(asm.R2, rHi),
			asm.Xor.Reg(asm.R2, asm.R1),
			asm.And.Reg(asm.R2, asm.R0),
			asm.Xor.Reg(rHi, asm.R2),
		)
	}
	b.emit(
		// The bound the verifier needs for the copies below.
		asm.JGT.Imm(rLo, MaxDrainSize, "cb_fail"),
		asm.Mov.Reg(asm.R1, rScratch),
		asm.Mov.Reg(asm.R2, rLo),
		asm.Mov.Reg(asm.R3, rDyn),
		asm.Mov.Imm(asm.R4, 0),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnDynptrRead.Call(),
		asm.JNE.Imm(asm.R0, 0, "cb_fail"),
		asm.LoadMapPtr(asm.R1, out.FD()),
		asm.Mov.Reg(asm.R2, rScratch),
		asm.Mov.Reg(asm.R3, rLo),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JNE.Imm(asm.R0, 0, "cb_fail"),
	)
	b.countStat(stats, offCopied)
	b.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
	b.mark("cb_fail")
	b.countStat(stats, offCallbackFailed)
	b.emit(asm.Mov.Imm(asm.R0, 1), asm.Return())
	return b.insns
}

// countStat emits stats->field++ (per CPU, so no atomics), skipped if the
// lookup fails. It clobbers R0 to R5.
func (b *builder) countStat(stats *ebpf.Map, off int16) {
	skip := fmt.Sprintf("count_skip_%d_%d", off, len(b.insns))
	b.emit(
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, stats.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, off, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, off, asm.R1, asm.DWord),
	)
	b.mark(skip)
}

// Drain runs the program once (BPF_PROG_TEST_RUN) and returns what
// bpf_user_ringbuf_drain returned: the number of samples drained, discarded
// ones not included. It fails the test if the drain returned an error (the
// kernel found a malformed sample, say). A run interrupted by a signal is
// retried, and the count is then that of the retry.
func (d *Drainer) Drain(tb testing.TB) int {
	tb.Helper()
	for {
		ret, err := d.run()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			tb.Fatalf("testprog: BPF_PROG_TEST_RUN of the drain program: %v", err)
		}
		if ret < 0 {
			tb.Fatalf("testprog: bpf_user_ringbuf_drain: %v", unix.Errno(-ret))
		}
		return int(ret)
	}
}

// run test-runs the program once and returns its return value.
func (d *Drainer) run() (int32, error) {
	ret, err := testRun(d.prog.FD(), 1, &drainContext)
	return int32(ret), err
}

// Counts returns the program's counters, summed over all CPUs. A Drainer
// without an output ring counts nothing.
func (d *Drainer) Counts(tb testing.TB) DrainCounts {
	tb.Helper()
	var sum DrainCounts
	if d.stats == nil {
		return sum
	}
	var values []drainStats
	if err := d.stats.Lookup(uint32(0), &values); err != nil {
		tb.Fatalf("testprog: read drain stats: %v", err)
	}
	for _, v := range values {
		sum.Copied += v.Copied
		sum.CallbackFailed += v.CallbackFailed
		sum.DrainFailed += v.DrainFailed
		if v.LastErr != 0 {
			sum.LastErr = v.LastErr
		}
	}
	return sum
}
