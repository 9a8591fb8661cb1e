package testprog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

// ringSize returns a ring buffer size that holds n records of size bytes.
func ringSize(n, size int) int {
	need := n * ((size + 8 + 7) &^ 7)
	r := os.Getpagesize()
	for r <= need { // the kernel keeps the producer less than a full ring ahead
		r *= 2
	}
	return r
}

// drain reads every record now in ring with cilium/ebpf's reader, checks
// each against spec and returns them in ring order.
func drain(t *testing.T, ring *ebpf.Map, spec testprog.Spec) []testprog.Record {
	t.Helper()
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now()) // everything is committed: read it, never wait
	var (
		recs []testprog.Record
		rec  ringbuf.Record
	)
	for {
		err := rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := spec.Check(rec.RawSample)
		if err != nil {
			t.Fatalf("record %d: %v", len(recs), err)
		}
		recs = append(recs, r)
	}
}

// lowBytes keeps the low n bytes of v (all of them for n >= 8, none for n <= 0).
func lowBytes(v uint64, n int) uint64 {
	switch {
	case n >= 8:
		return v
	case n <= 0:
		return 0
	}
	return v & (1<<(8*n) - 1)
}

// verify checks that recs, all records the producer delivered, hold for each
// CPU exactly seq 0, 1, ... up to the CPU's count, in order, without the
// discarded ones, and that the producer's per-CPU counters agree.
func verify(t *testing.T, spec testprog.Spec, recs []testprog.Record, counts []testprog.CPUCounts) {
	t.Helper()
	got := map[uint32][]uint64{}
	for _, r := range recs {
		got[r.CPU] = append(got[r.CPU], r.Seq)
	}
	want := map[uint32][]uint64{}
	for cpu, c := range counts {
		if c.Seq != c.Submitted+c.Discarded {
			t.Errorf("cpu %d: seq %d != submitted %d + discarded %d", cpu, c.Seq, c.Submitted, c.Discarded)
		}
		var discarded uint64
		for seq := range c.Seq {
			if d := uint64(spec.DiscardEvery); d > 0 && seq%d == d-1 {
				discarded++
				continue
			}
			// What a record of this size can tell (see testprog.Record).
			key := uint32(lowBytes(uint64(cpu), spec.Size-8))
			want[key] = append(want[key], lowBytes(seq, spec.Size))
		}
		if discarded != c.Discarded {
			t.Errorf("cpu %d: %d discarded, want %d", cpu, c.Discarded, discarded)
		}
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		for cpu := range maps.Keys(want) {
			g, w := got[cpu], want[cpu]
			i := 0
			for i < min(len(g), len(w)) && g[i] == w[i] {
				i++
			}
			if i < len(g) || i < len(w) {
				t.Errorf("cpu %d: got %d records, want %d; first difference at record %d", cpu, len(g), len(w), i)
			}
		}
		t.Fatalf("delivered seqs per CPU differ from the producer's counts; got CPUs %v, want %v",
			slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}

func TestProduce(t *testing.T) {
	type tc struct {
		name string
		spec testprog.Spec
		runs int
	}
	var cases []tc
	for _, size := range []int{1, 7, 8, 15, 16, 17, 100, 4088} {
		cases = append(cases,
			tc{fmt.Sprintf("reserve/size%d", size), testprog.Spec{Size: size, Batch: 2}, 30},
			tc{fmt.Sprintf("output/size%d", size), testprog.Spec{Size: size, Batch: 2, Output: true}, 30},
		)
	}
	cases = append(cases,
		tc{"discard3/size16", testprog.Spec{Size: 16, Batch: 4, DiscardEvery: 3}, 25},
		tc{"discard3/size17", testprog.Spec{Size: 17, Batch: 4, DiscardEvery: 3}, 25},
		tc{"discard3/size5", testprog.Spec{Size: 5, Batch: 4, DiscardEvery: 3}, 25},
		tc{"discard1", testprog.Spec{Size: 8, DiscardEvery: 1}, 10},
		tc{"batch100/size256", testprog.Spec{Size: 256, Batch: 100}, 20},
		tc{"batch100/output/size256", testprog.Spec{Size: 256, Batch: 100, Output: true}, 20},
		tc{"batch100/discard7/size24", testprog.Spec{Size: 24, Batch: 100, DiscardEvery: 7}, 20},
		tc{"maxbatch/discard3/size8", testprog.Spec{Size: 8, Batch: testprog.MaxBatch, DiscardEvery: 3}, 2},
		tc{"maxbatch/output/size12", testprog.Spec{Size: 12, Batch: testprog.MaxBatch, Output: true}, 2},
		tc{"timestamp/size24", testprog.Spec{Size: 24, Timestamp: true}, 10},
		tc{"timestamp/output/size45", testprog.Spec{Size: 45, Timestamp: true, Output: true}, 10},
		tc{"timestamp/size20", testprog.Spec{Size: 20, Timestamp: true}, 10}, // too short: pattern
		tc{"nowakeup", testprog.Spec{Size: 32, Batch: 3, Flags: testprog.NoWakeup}, 10},
		tc{"forcewakeup", testprog.Spec{Size: 32, Batch: 3, Flags: testprog.ForceWakeup}, 10},
		tc{"sampled", testprog.Spec{Size: 32, Batch: 3, SampleBytes: 200}, 10},
		tc{"sampled/output", testprog.Spec{Size: 32, Batch: 3, SampleBytes: 200, Output: true}, 10},
		tc{"output/forcewakeup", testprog.Spec{Size: 32, Flags: testprog.ForceWakeup, Output: true}, 10},
		tc{"maxsize-8", testprog.Spec{Size: testprog.MaxSize - 8, Batch: 2}, 3},
		tc{"maxsize", testprog.Spec{Size: testprog.MaxSize}, 3},
		tc{"output/maxsize", testprog.Spec{Size: testprog.MaxSize, Output: true}, 3},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attempts := c.runs * max(c.spec.Batch, 1)
			c.spec.Ring = testprog.NewRingBuf(t, ringSize(attempts, c.spec.Size))
			p := testprog.NewProducer(t, c.spec)
			p.RunOnCPU(t, 0, c.runs)

			recs := drain(t, c.spec.Ring, c.spec)
			verify(t, c.spec, recs, p.PerCPU(t))
			got := p.Counts(t)
			var discarded int
			if d := c.spec.DiscardEvery; d > 0 {
				discarded = attempts / d
			}
			want := testprog.Counts{Submitted: uint64(attempts - discarded), Discarded: uint64(discarded)}
			if got != want {
				t.Errorf("counts %+v, want %+v", got, want)
			}
			if len(recs) != int(got.Submitted) {
				t.Errorf("%d records delivered, %d submitted", len(recs), got.Submitted)
			}
		})
	}
}

// TestOverfill produces into a one-page ring until it is full: the failed
// reservations are counted as dropped and use no seq, and the ring delivers
// exactly the submitted records.
func TestOverfill(t *testing.T) {
	for _, output := range []bool{false, true} {
		t.Run(fmt.Sprintf("output=%v", output), func(t *testing.T) {
			const size, runs = 100, 100
			spec := testprog.Spec{Ring: testprog.NewRingBuf(t, os.Getpagesize()), Size: size, Output: output}
			if runs*(size+8) <= os.Getpagesize() {
				t.Skip("page too large to overfill")
			}
			p := testprog.NewProducer(t, spec)
			p.RunOnCPU(t, 0, runs)
			c := p.Counts(t)
			if c.Submitted+c.Dropped != runs || c.Discarded != 0 || c.Submitted == 0 || c.Dropped == 0 {
				t.Fatalf("counts %+v: want submitted + dropped = %d, both non-zero", c, runs)
			}
			recs := drain(t, spec.Ring, spec)
			if len(recs) != int(c.Submitted) {
				t.Fatalf("%d records delivered, %d submitted", len(recs), c.Submitted)
			}

			// With the ring drained, production continues at the next seq.
			p.RunOnCPU(t, 0, 10)
			recs = append(recs, drain(t, spec.Ring, spec)...)
			verify(t, spec, recs, p.PerCPU(t))
			if got := p.Counts(t); got.Submitted != c.Submitted+10 || got.Dropped != c.Dropped {
				t.Fatalf("counts %+v after 10 more runs, want submitted %d, dropped %d", got, c.Submitted+10, c.Dropped)
			}
		})
	}
}

// TestRunOnCPUConcurrent produces on CPUs 0 and 1 at once.
func TestRunOnCPUConcurrent(t *testing.T) {
	testprog.RequireBPF(t)
	if n, err := ebpf.PossibleCPU(); err != nil || n < 2 || runtime.NumCPU() < 2 {
		t.Skipf("needs 2 CPUs (possible: %d, %v; usable: %d)", n, err, runtime.NumCPU())
	}
	const runs, batch = 2000, 10
	spec := testprog.Spec{Size: 24, Batch: batch, DiscardEvery: 5}
	spec.Ring = testprog.NewRingBuf(t, ringSize(2*runs*batch, spec.Size))
	p := testprog.NewProducer(t, spec)
	var wg sync.WaitGroup
	for cpu := range 2 {
		wg.Go(func() { p.RunOnCPU(t, cpu, runs) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	counts := p.PerCPU(t)
	for cpu := range 2 {
		if counts[cpu].Seq != runs*batch || counts[cpu].Dropped != 0 {
			t.Errorf("cpu %d: counts %+v, want seq %d and nothing dropped", cpu, counts[cpu], runs*batch)
		}
	}
	verify(t, spec, drain(t, spec.Ring, spec), counts)
}

// TestRunExactUnderSignals interrupts test runs with signals: Run must still
// run the program exactly as often as asked.
func TestRunExactUnderSignals(t *testing.T) {
	spec := testprog.Spec{Ring: testprog.NewRingBuf(t, os.Getpagesize()), Size: 8}
	p := testprog.NewProducer(t, spec)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	stop := testprog.SignalStorm(t, unix.Gettid(), 200*time.Microsecond)
	const runs = 3_000_000
	p.Run(t, runs)
	sent := stop()

	c := p.Counts(t)
	if c.Submitted+c.Discarded+c.Dropped != runs {
		t.Fatalf("counts %+v add up to %d attempts, want %d", c, c.Submitted+c.Discarded+c.Dropped, runs)
	}
	t.Logf("%d signals sent during the runs; counts %+v", sent, c)
	verify(t, spec, drain(t, spec.Ring, spec), p.PerCPU(t))
}

func TestExpected(t *testing.T) {
	const cpu, seq = 0x01020304, 0x1122334455667788
	var mul uint64 = 0x9E3779B97F4A7C15
	le := binary.LittleEndian
	full := make([]byte, 40)
	le.PutUint64(full[0:], seq)
	le.PutUint32(full[8:], cpu)
	le.PutUint32(full[12:], 30)
	le.PutUint64(full[16:], seq^16*mul)
	le.PutUint64(full[24:], seq^24*mul)
	if got := (testprog.Spec{Size: 30}).Expected(cpu, seq); !slices.Equal(got, full[:30]) {
		t.Errorf("size 30:\n got %x\nwant %x", got, full[:30])
	}
	if got := (testprog.Spec{Size: 10}).Expected(cpu, seq); !slices.Equal(got, full[:10]) {
		t.Errorf("size 10:\n got %x\nwant %x", got, full[:10])
	}
	if got := (testprog.Spec{Size: 1}).Expected(cpu, seq); !slices.Equal(got, []byte{0x88}) {
		t.Errorf("size 1: got %x, want 88", got)
	}
	clear(full[16:24])
	if got := (testprog.Spec{Size: 30, Timestamp: true}).Expected(cpu, seq); !slices.Equal(got, full[:30]) {
		t.Errorf("size 30 with timestamp:\n got %x\nwant %x", got, full[:30])
	}
}

func TestCheck(t *testing.T) {
	const cpu, seq = 1, 0x1234
	for size := 1; size <= 40; size++ {
		spec := testprog.Spec{Size: size}
		rec := spec.Expected(cpu, seq)
		r, err := spec.Check(rec)
		want := testprog.Record{CPU: uint32(lowBytes(cpu, size-8)), Seq: lowBytes(seq, size)}
		if err != nil || r != want {
			t.Fatalf("size %d: Check = %+v, %v; want %+v", size, r, err, want)
		}
		// Corrupting any byte past those that name the record is detected.
		for i := min(size, 12); i < size; i++ {
			bad := slices.Clone(rec)
			bad[i] ^= 0x40
			if _, err := spec.Check(bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("byte %d ", i)) {
				t.Fatalf("size %d, byte %d corrupted: error %v", size, i, err)
			}
		}
		if _, err := spec.Check(rec[:size-1]); err == nil {
			t.Fatalf("size %d: short record accepted", size)
		}
	}

	spec := testprog.Spec{Size: 32, Timestamp: true}
	rec := spec.Expected(cpu, seq)
	if _, err := spec.Check(rec); err == nil {
		t.Error("zero timestamp accepted")
	}
	binary.LittleEndian.PutUint64(rec[16:], 12345)
	if r, err := spec.Check(rec); err != nil || r.Time != 12345 {
		t.Errorf("Check = %+v, %v; want time 12345", r, err)
	}
}
