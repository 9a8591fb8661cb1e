// Package testprog produces ring buffer records from BPF programs, for the
// tests and benchmarks of the ring buffer consumer.
//
// It creates BPF_MAP_TYPE_RINGBUF maps ([NewRingBuf]) and producer programs
// ([NewProducer]): socket filter programs, assembled with cilium/ebpf's asm
// package (no clang), that write records into a ring each time they are run
// with BPF_PROG_TEST_RUN ([Producer.Run], [Producer.RunOnCPU]). Every byte of
// a record is determined by the CPU that produced it and a per-CPU sequence
// number, so a test can check each record it consumes ([Spec.Check]), that
// none is missing or duplicated (seq counts up from 0 on each CPU), and that
// the consumer saw exactly what the program committed ([Producer.Counts]).
//
// # Record layout
//
// A record of [Spec.Size] bytes holds, little-endian:
//
//	[0:8]   seq, the producing CPU's sequence number
//	[8:12]  CPU, from bpf_get_smp_processor_id
//	[12:16] Size
//	[o:o+8] seq ^ (o * 0x9E3779B97F4A7C15) for every o = 16, 24, ...
//
// truncated to Size bytes: a 1-byte record holds the low byte of seq, a
// 10-byte record seq and the low 2 bytes of the CPU, and the last pattern word
// may be partial. With [Spec.Timestamp] (and Size >= 24), bytes [16:24] hold
// bpf_ktime_get_ns() taken just before the record is committed instead.
//
// Seq counts successful reservations on one CPU, starting at 0: it increments
// for records that are submitted and for records that are discarded, but not
// for reservations that failed because the ring was full. The consumer must
// therefore see, per CPU, seq 0, 1, 2, ... in order with only the discarded
// ones missing (see [Spec.DiscardEvery]).
//
// # Requirements
//
// The package needs a little-endian host and the privileges to create maps
// and load programs (root, or CAP_BPF and CAP_PERFMON); every constructor
// calls [RequireBPF], which skips the test otherwise.
package testprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// RequireBPFEnv is the environment variable that turns [RequireBPF]'s skip
// into a failure when set to "1", so that CI cannot pass by skipping.
const RequireBPFEnv = "BPFRING_REQUIRE_BPF"

var probe struct {
	once sync.Once
	err  error
}

// RequireBPF skips the test with a clear reason when the process cannot run
// the producers of this package: not root (nor CAP_BPF and CAP_PERFMON), a
// kernel without ring buffers or BPF_PROG_TEST_RUN, or a big-endian host. When
// the environment variable BPFRING_REQUIRE_BPF is "1" it fails the test
// instead. The environment is probed once per process.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	probe.once.Do(func() { probe.err = probeBPF() })
	if probe.err == nil {
		return
	}
	if os.Getenv(RequireBPFEnv) == "1" {
		tb.Fatalf("testprog: BPF is unavailable and %s=1: %v", RequireBPFEnv, probe.err)
	}
	tb.Skipf("testprog: skipping, BPF is unavailable (needs root or CAP_BPF+CAP_PERFMON, ring buffers and BPF_PROG_TEST_RUN): %v", probe.err)
}

// probeBPF creates a one-page ring buffer and loads and test-runs a trivial
// socket filter.
func probeBPF() error {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return errors.New("the record layout assumes a little-endian host")
	}
	ring, err := ebpf.NewMap(&ebpf.MapSpec{
		Type:       ebpf.RingBuf,
		MaxEntries: uint32(os.Getpagesize()),
	})
	if err != nil {
		return fmt.Errorf("create ring buffer: %w", err)
	}
	defer ring.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		License:      license,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load socket filter: %w", err)
	}
	defer prog.Close()
	if _, err := prog.Run(&ebpf.RunOptions{Data: packet[:]}); err != nil {
		return fmt.Errorf("test-run socket filter: %w", err)
	}
	return nil
}

// NewRingBuf creates a BPF_MAP_TYPE_RINGBUF map of size bytes (a power of two
// and a multiple of the page size), closed when the test ends.
func NewRingBuf(tb testing.TB, size int) *ebpf.Map {
	tb.Helper()
	RequireBPF(tb)
	if size <= 0 || size > 1<<31 {
		tb.Fatalf("testprog: ring buffer size %d out of range", size)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: uint32(size)})
	if err != nil {
		tb.Fatalf("testprog: create ring buffer of %d bytes: %v", size, err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}
