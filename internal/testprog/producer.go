package testprog

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// maxInsns is the kernel's limit on the length of a privileged program.
const maxInsns = 1_000_000

// numSlots is the number of budget slots, which bounds the number of
// concurrent Run calls on one Producer (more wait for a free slot).
const numSlots = 64

// budget is one slot's value in the budget map: the runs left for the test
// run that holds the slot. A whole cache line, so that concurrent runs on
// different CPUs do not share one.
type budget [8]uint64

// skbContext is the start of struct __sk_buff, passed as the test run's
// context to set skb->mark.
type skbContext struct {
	Len, PktType, Mark uint32
}

// packet is the input of every test run: a zeroed minimal Ethernet frame. A
// global, so that the memory the kernel reads never moves.
var packet [64]byte

// slotContexts[i] is the test run context for budget slot i (a global, like
// packet).
var slotContexts = func() (c [numSlots]skbContext) {
	for i := range c {
		c[i].Mark = uint32(i)
	}
	return c
}()

// Producer is a loaded producer program with its per-CPU state map.
//
// At most one run of a Producer's program may execute on a CPU at a time:
// the kernel may preempt a test run, and two runs interleaved on one CPU
// would break the per-CPU seq order. Use RunOnCPU with distinct CPUs to
// produce concurrently, not concurrent Run calls.
type Producer struct {
	prog    *ebpf.Program
	state   *ebpf.Map
	budgets *ebpf.Map
	scratch *ebpf.Map   // nil without Output
	slots   chan uint32 // free budget slots
}

// Counts are the producer program's own counters.
type Counts struct {
	Submitted uint64 // records submitted (or output), so deliverable
	Discarded uint64 // reservations discarded
	Dropped   uint64 // reservations or outputs that failed: ring full
}

// CPUCounts are the counters of one CPU.
type CPUCounts struct {
	Counts
	// Seq is the next seq the CPU will use, i.e. the number of successful
	// reservations: Submitted + Discarded.
	Seq uint64
}

// NewProducer validates spec, assembles its program (a socket filter) and
// loads it with fresh per-CPU counters. Everything is closed when the test
// ends.
func NewProducer(tb testing.TB, spec Spec) *Producer {
	tb.Helper()
	RequireBPF(tb)
	p, err := Load(spec)
	if err != nil {
		tb.Fatalf("testprog: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// Load is NewProducer for use outside tests, such as a benchmark tool: it
// returns errors, and the caller closes the Producer.
func Load(spec Spec) (*Producer, error) {
	return load(spec, false)
}

// load validates spec and loads its ring buffer or perf buffer producer.
func load(spec Spec, perf bool) (*Producer, error) {
	if err := spec.validate(perf); err != nil {
		return nil, err
	}
	spec.Batch = max(spec.Batch, 1)
	if perf {
		spec.Output = true
	}
	p := &Producer{slots: make(chan uint32, numSlots)}
	var err error
	if p.state, err = newMap(ebpf.PerCPUArray, int(unsafe.Sizeof(stateValue{})), 1); err != nil {
		return nil, err
	}
	if p.budgets, err = newMap(ebpf.Array, int(unsafe.Sizeof(budget{})), numSlots); err != nil {
		p.Close()
		return nil, err
	}
	if spec.Output {
		if p.scratch, err = newMap(ebpf.PerCPUArray, (spec.Size+7)&^7, 1); err != nil {
			p.Close()
			return nil, err
		}
	}
	m := maps{ring: spec.Ring, state: p.state, budgets: p.budgets, scratch: p.scratch}
	name, insns := "testprog", spec.program(m)
	if perf {
		name, insns = "testprog_perf", spec.perfProgram(m)
	}
	if n := insns.Size() / asm.InstructionSize; n > maxInsns {
		p.Close()
		return nil, fmt.Errorf("the program for Size %d and Batch %d needs %d instructions, more than the kernel's %d; lower Batch",
			spec.Size, spec.Batch, n, maxInsns)
	}
	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SocketFilter,
		License:      license,
		Instructions: insns,
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("load producer program: %w", err)
	}
	for i := range uint32(numSlots) {
		p.slots <- i
	}
	return p, nil
}

// validate checks a Spec for a ring buffer (or, with perf, a perf buffer)
// producer.
func (s Spec) validate(perf bool) error {
	switch {
	case s.Ring == nil:
		return errors.New("Spec.Ring is nil")
	case perf && s.Ring.Type() != ebpf.PerfEventArray:
		return fmt.Errorf("Spec.Ring is a %s, want a PerfEventArray", s.Ring.Type())
	case s.Size < 1 || s.Size > MaxSize:
		return fmt.Errorf("Spec.Size %d out of range [1, %d]", s.Size, MaxSize)
	case s.Batch < 0 || s.Batch > MaxBatch:
		return fmt.Errorf("Spec.Batch %d out of range [0, %d]", s.Batch, MaxBatch)
	case perf && (s.Flags != 0 || s.DiscardEvery != 0 || s.SampleBytes != 0):
		return fmt.Errorf("a perf producer takes no Flags (%#x), DiscardEvery (%d) or SampleBytes (%d)", s.Flags, s.DiscardEvery, s.SampleBytes)
	case s.Flags != 0 && s.Flags != NoWakeup && s.Flags != ForceWakeup:
		return fmt.Errorf("Spec.Flags %#x is not 0, NoWakeup or ForceWakeup", s.Flags)
	case s.SampleBytes < 0 || s.SampleBytes > math.MaxInt32 || s.SampleBytes > 0 && s.Flags != 0:
		return fmt.Errorf("Spec.SampleBytes %d out of range, or given with Flags %#x", s.SampleBytes, s.Flags)
	case s.DiscardEvery < 0 || s.DiscardEvery > math.MaxInt32:
		return fmt.Errorf("Spec.DiscardEvery %d out of range", s.DiscardEvery)
	case s.Output && s.DiscardEvery != 0:
		return fmt.Errorf("Spec.Output cannot discard (DiscardEvery %d)", s.DiscardEvery)
	}
	return nil
}

func newMap(typ ebpf.MapType, valueSize, entries int) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type:       typ,
		KeySize:    4,
		ValueSize:  uint32(valueSize),
		MaxEntries: uint32(entries),
	})
	if err != nil {
		return nil, fmt.Errorf("create %s map: %w", typ, err)
	}
	return m, nil
}

// Close unloads the program and closes its maps (not Spec.Ring).
func (p *Producer) Close() error {
	var errs []error
	if p.prog != nil {
		errs = append(errs, p.prog.Close())
	}
	for _, m := range []*ebpf.Map{p.state, p.budgets, p.scratch} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Run runs the program exactly runs times (BPF_PROG_TEST_RUN with a repeat
// count) on whatever CPU the calling thread is on; the kernel may migrate it
// between runs, and records carry their CPU. It fails the test on error.
//
// Exactness: a signal interrupts a test run with EINTR without saying how many
// runs were done, and cilium/ebpf's Program.Run then restarts the whole count
// transparently, so it may run the program more often than asked (and never
// finish under frequent signals). Run therefore gives each call a budget
// slot, passed to the program in skb->mark: every run takes one from the
// budget and does nothing once it is spent, and after EINTR Run asks the
// kernel only for the runs the budget still holds.
func (p *Producer) Run(tb testing.TB, runs int) {
	tb.Helper()
	if err := p.Produce(runs); err != nil {
		tb.Fatalf("testprog: %v", err)
	}
}

// Produce is Run for use outside tests: it returns errors.
func (p *Producer) Produce(runs int) error {
	if runs < 0 {
		return fmt.Errorf("Run(%d): negative count", runs)
	}
	if runs == 0 {
		return nil
	}
	slot := <-p.slots
	defer func() { p.slots <- slot }()

	if err := p.budgets.Update(slot, budget{uint64(runs)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set run budget: %w", err)
	}
	for left := uint64(runs); left > 0; {
		repeat := uint32(min(left, math.MaxUint32))
		_, err := testRun(p.prog.FD(), repeat, &slotContexts[slot])
		switch {
		case err == nil:
			left -= uint64(repeat)
		case errors.Is(err, unix.EINTR):
			var b budget
			if err := p.budgets.Lookup(slot, &b); err != nil {
				return fmt.Errorf("read run budget: %w", err)
			}
			left = b[0]
		default:
			return fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
		}
	}
	return nil
}

// testRun issues BPF_PROG_TEST_RUN for the program fd with the package's
// packet as data and ctx as context, and returns the program's return value
// (of the last run).
func testRun(fd int, repeat uint32, ctx *skbContext) (uint32, error) {
	// The test member of union bpf_attr. Pointers are passed as integers:
	// packet and slotContexts are globals, which never move.
	attr := struct {
		progFD, retval, dataSizeIn, dataSizeOut uint32
		dataIn, dataOut                         uint64
		repeat, duration, ctxSizeIn, ctxSizeOut uint32
		ctxIn, ctxOut                           uint64
		flags, cpu, batchSize, _                uint32
	}{
		progFD:     uint32(fd),
		dataSizeIn: uint32(len(packet)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&packet[0]))),
		repeat:     repeat,
		ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(ctx))),
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN,
		uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return 0, errno
	}
	return attr.retval, nil
}

// RunOnCPU runs the program exactly runs times on the given CPU: it locks the
// goroutine to its thread, pins the thread to cpu, runs, then restores the
// thread's affinity and unlocks it. Calls for different CPUs may run
// concurrently. Like every testing.TB failure, a failure called from a
// goroutine other than the test's ends only that goroutine.
func (p *Producer) RunOnCPU(tb testing.TB, cpu, runs int) {
	tb.Helper()
	restore, err := PinThread(cpu)
	if err != nil {
		tb.Fatalf("testprog: %v", err)
	}
	defer restore()
	p.Run(tb, runs)
}

// PinThread locks the calling goroutine to its OS thread and pins the thread
// to cpu. restore gives the thread its former affinity back and unlocks it;
// should that fail, the thread stays locked, so that the runtime discards it
// with its wrong affinity when the goroutine exits.
func PinThread(cpu int) (restore func(), err error) {
	var old, set unix.CPUSet
	if cpu < 0 || cpu >= len(set)*64 {
		return nil, fmt.Errorf("CPU %d out of range", cpu)
	}
	runtime.LockOSThread()
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("get CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
	}
	return func() {
		if unix.SchedSetaffinity(0, &old) == nil {
			runtime.UnlockOSThread()
		}
	}, nil
}

// PerCPU returns the program's counters for each possible CPU.
func (p *Producer) PerCPU(tb testing.TB) []CPUCounts {
	tb.Helper()
	counts, err := p.CPUTotals()
	if err != nil {
		tb.Fatalf("testprog: %v", err)
	}
	return counts
}

// CPUTotals is PerCPU for use outside tests: it returns errors.
func (p *Producer) CPUTotals() ([]CPUCounts, error) {
	var values []stateValue
	if err := p.state.Lookup(uint32(0), &values); err != nil {
		return nil, fmt.Errorf("read producer state: %w", err)
	}
	counts := make([]CPUCounts, len(values))
	for i, v := range values {
		counts[i] = CPUCounts{
			Counts: Counts{Submitted: v.Submitted, Discarded: v.Discarded, Dropped: v.Dropped},
			Seq:    v.Seq,
		}
	}
	return counts, nil
}

// Counts returns the program's counters summed over all CPUs.
func (p *Producer) Counts(tb testing.TB) Counts {
	tb.Helper()
	sum, err := p.Totals()
	if err != nil {
		tb.Fatalf("testprog: %v", err)
	}
	return sum
}

// Totals is Counts for use outside tests: it returns errors.
func (p *Producer) Totals() (Counts, error) {
	perCPU, err := p.CPUTotals()
	if err != nil {
		return Counts{}, err
	}
	var sum Counts
	for _, c := range perCPU {
		sum.Submitted += c.Submitted
		sum.Discarded += c.Discarded
		sum.Dropped += c.Dropped
	}
	return sum, nil
}
