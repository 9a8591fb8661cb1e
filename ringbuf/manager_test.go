package ringbuf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/testprog"
)

// Tests produce with RunOnCPU(t, 0, n) rather than Run: sequence numbers
// are per CPU, and a run that migrated between CPUs would restart them.

// hang is how long a test waits for something that should happen at once
// before it calls it a hang. It is not a performance bound.
const hang = 10 * time.Second

// checker verifies records of one producer spec as they arrive: every byte,
// and per-CPU sequence numbers complete and in order. Records shorter than
// 12 bytes do not say their CPU in full: those must come from one CPU.
type checker struct {
	t     testing.TB
	spec  testprog.Spec
	check func([]byte) (testprog.Record, error) // spec.Check or spec.CheckPerf
	mu    sync.Mutex
	next  map[uint32]uint64 // next expected seq per CPU
	n     int
	err   error
}

func newChecker(t testing.TB, spec testprog.Spec) *checker {
	return &checker{t: t, spec: spec, check: spec.Check, next: map[uint32]uint64{}}
}

// newPerfChecker is newChecker for the samples of a perf buffer, checked
// with their padding.
func newPerfChecker(t testing.TB, spec testprog.Spec) *checker {
	return &checker{t: t, spec: spec, check: spec.CheckPerf, next: map[uint32]uint64{}}
}

func (c *checker) callback(data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, err := c.check(data)
	if err == nil {
		want := c.next[rec.CPU]
		// Discarded records never arrive, so their seqs are skipped.
		for c.spec.DiscardEvery > 0 && want%uint64(c.spec.DiscardEvery) == uint64(c.spec.DiscardEvery-1) {
			want++
		}
		seq := want
		if c.spec.Size < 8 { // the record holds the low bytes of its seq only
			seq %= 1 << (8 * c.spec.Size)
		}
		if rec.Seq != seq {
			err = fmt.Errorf("cpu %d: seq %d, want %d", rec.CPU, rec.Seq, seq)
		}
		c.next[rec.CPU] = want + 1
	}
	if err != nil && c.err == nil {
		c.err = fmt.Errorf("record %d: %w", c.n, err)
	}
	c.n++
	return nil
}

func (c *checker) count() int {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		c.t.Fatal(c.err)
	}
	return c.n
}

func newManager(t testing.TB, rb Map, fn Callback, opts ...Option) *Manager {
	t.Helper()
	m, err := New(rb, fn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// drain consumes until want records arrived or a call finds nothing.
func drain(t testing.TB, m *Manager) int {
	t.Helper()
	total := 0
	for {
		n, err := m.Consume()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}

func positions(t testing.TB, r *Ring) (cons, prod uint64) {
	t.Helper()
	cons, err := r.ConsumerPos()
	if err != nil {
		t.Fatal(err)
	}
	prod, err = r.ProducerPos()
	if err != nil {
		t.Fatal(err)
	}
	return cons, prod
}

func TestRecordSizes(t *testing.T) {
	const ringSize = 16 << 10
	rb := testprog.NewRingBuf(t, ringSize)
	var sizes []int
	for n := 1; n <= 64; n++ {
		sizes = append(sizes, n)
	}
	for n := 128; n <= ringSize/2; n *= 2 {
		sizes = append(sizes, n-1, n, n+1)
	}
	sizes = slices.DeleteFunc(sizes, func(n int) bool { return n > ringSize/2 })
	for _, size := range sizes {
		spec := testprog.Spec{Ring: rb, Size: size}
		c := newChecker(t, spec)
		m := newManager(t, rb, c.callback)
		testprog.NewProducer(t, spec).RunOnCPU(t, 0, 1)
		if got := drain(t, m); got != 1 || c.count() != 1 {
			t.Fatalf("size %d: consumed %d records, want 1", size, got)
		}
		m.Close()
	}
}

func TestWrapAround(t *testing.T) {
	const ringSize = 4096
	rb := testprog.NewRingBuf(t, ringSize)
	// 100-byte records take 112 bytes: they straddle the end of the ring
	// at different offsets round after round.
	spec := testprog.Spec{Ring: rb, Size: 100}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	r, _ := m.Ring(0)
	prod := testprog.NewProducer(t, spec)
	wrapped := 0
	for round := range 40 {
		cons, _ := positions(t, r)
		prod.RunOnCPU(t, 0, 30)
		if got := drain(t, m); got != 30 {
			t.Fatalf("round %d: consumed %d records, want 30", round, got)
		}
		for pos := cons; pos < cons+30*112; pos += 112 {
			if pos%ringSize+112 > ringSize && pos%ringSize != 0 {
				wrapped++
			}
		}
	}
	if c.count() != 40*30 || wrapped == 0 {
		t.Fatalf("consumed %d records, %d of them wrapping", c.count(), wrapped)
	}
	if cons, p := positions(t, r); cons != p || cons != 40*30*112 {
		t.Fatalf("positions %d/%d, want both %d", cons, p, 40*30*112)
	}
}

func TestDiscard(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	// Submit, discard, submit, discard, ...
	spec := testprog.Spec{Ring: rb, Size: 24, DiscardEvery: 2}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	prod := testprog.NewProducer(t, spec)
	prod.RunOnCPU(t, 0, 3)
	if got := drain(t, m); got != 2 || c.count() != 2 {
		t.Fatalf("consumed %d records, want 2", got)
	}
	r, _ := m.Ring(0)
	if cons, p := positions(t, r); cons != 3*32 || p != 3*32 {
		t.Fatalf("positions %d/%d, want %d: a discarded record still takes room", cons, p, 3*32)
	}
	if counts := prod.Counts(t); counts.Submitted != 2 || counts.Discarded != 1 {
		t.Fatalf("producer counted %+v", counts)
	}
}

// TestCallbackError fails the callback on two records, of a ring buffer and
// of a perf buffer: the error comes back wrapped with the failing ring's
// name, the failing record counts as consumed, and the next call goes on
// after it.
func TestCallbackError(t *testing.T) {
	for _, kind := range []struct {
		name string
		// open returns a manager reading one ring with fn, a function that
		// produces 10 records of spec's size on CPU 0, and spec's check.
		open func(t *testing.T, size int, fn Callback) (*Manager, func(), func([]byte) (testprog.Record, error))
		ring string // how errors name the ring
	}{
		{"ring buffer", func(t *testing.T, size int, fn Callback) (*Manager, func(), func([]byte) (testprog.Record, error)) {
			spec := testprog.Spec{Ring: testprog.NewRingBuf(t, 4096), Size: size}
			prod := testprog.NewProducer(t, spec)
			return newManager(t, spec.Ring, fn), func() { prod.RunOnCPU(t, 0, 10) }, spec.Check
		}, "ring 0"},
		{"perf buffer", func(t *testing.T, size int, fn Callback) (*Manager, func(), func([]byte) (testprog.Record, error)) {
			spec := testprog.Spec{Ring: testprog.NewPerfEventArray(t, 0), Size: size}
			prod := testprog.NewPerfProducer(t, spec)
			m, _ := newPerfManager(t, spec.Ring, fn)
			return m, func() { prod.RunOnCPU(t, 0, 10) }, spec.CheckPerf
		}, "perf map 0: cpu 0"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			errStop := errors.New("stop here")
			var seqs []uint64
			var check func([]byte) (testprog.Record, error)
			m, produce, check := kind.open(t, 16, func(data []byte) error {
				rec, err := check(data)
				if err != nil {
					return err
				}
				seqs = append(seqs, rec.Seq)
				if rec.Seq == 3 || rec.Seq == 6 {
					return errStop
				}
				return nil
			})
			produce()

			n, err := m.Consume()
			if !errors.Is(err, errStop) || n != 4 || !strings.Contains(err.Error(), kind.ring) {
				t.Fatalf("Consume: n=%d err=%v, want 4 records and the callback's error naming %q", n, err, kind.ring)
			}
			// The failing record counts as consumed: the next call goes on after it.
			n, err = m.Poll(hang)
			if !errors.Is(err, errStop) || n != 3 {
				t.Fatalf("Poll: n=%d err=%v, want 3 records and the callback's error", n, err)
			}
			n, err = m.Consume()
			if err != nil || n != 3 {
				t.Fatalf("Consume after the errors: n=%d err=%v, want 3", n, err)
			}
			if want := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(seqs, want) {
				t.Fatalf("delivered seqs %v, want %v", seqs, want)
			}
		})
	}
}

func TestThreeRingsPollReadsOnlyReported(t *testing.T) {
	specs := make([]testprog.Spec, 3)
	checkers := make([]*checker, 3)
	var m *Manager
	for i := range specs {
		specs[i] = testprog.Spec{Ring: testprog.NewRingBuf(t, 4096), Size: 8 + 8*i}
		checkers[i] = newChecker(t, specs[i])
		if i == 0 {
			m = newManager(t, specs[i].Ring, checkers[i].callback)
		} else if r, err := m.Add(specs[i].Ring, checkers[i].callback); err != nil || r.Index() != i {
			t.Fatalf("Add ring %d: index %v, %v", i, r, err)
		}
	}
	if m.NumRings() != 3 {
		t.Fatalf("NumRings() = %d", m.NumRings())
	}
	// Ring 0 gets records that send no wake-up, ring 1 records that do, and
	// ring 2 nothing: Poll must read ring 1 alone.
	quiet := specs[0]
	quiet.Flags = testprog.NoWakeup
	testprog.NewProducer(t, quiet).RunOnCPU(t, 0, 5)
	testprog.NewProducer(t, specs[1]).RunOnCPU(t, 0, 7)

	n, err := m.Poll(hang)
	if err != nil || n != 7 {
		t.Fatalf("Poll: n=%d err=%v, want the 7 records of ring 1", n, err)
	}
	if got := []int{checkers[0].count(), checkers[1].count(), checkers[2].count()}; !slices.Equal(got, []int{0, 7, 0}) {
		t.Fatalf("records per ring after Poll: %v", got)
	}
	r0, _ := m.Ring(0)
	if avail, err := r0.AvailableBytes(); err != nil || avail != 5*16 {
		t.Fatalf("ring 0 AvailableBytes = %d, %v; want %d", avail, err, 5*16)
	}
	// Consume reads every ring, reported or not.
	if n, err := m.Consume(); err != nil || n != 5 {
		t.Fatalf("Consume: n=%d err=%v, want ring 0's 5 records", n, err)
	}
	if checkers[0].count() != 5 {
		t.Fatalf("ring 0 callback got %d records", checkers[0].count())
	}
}

func TestFullRing(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 100} // 112 bytes a record: 36 fit
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	prod := testprog.NewProducer(t, spec)
	prod.RunOnCPU(t, 0, 100)
	got := drain(t, m)
	counts := prod.Counts(t)
	if counts.Submitted != 36 || counts.Dropped != 64 || got != 36 || c.count() != 36 {
		t.Fatalf("consumed %d, producer counted %+v; want 36 submitted and consumed, 64 dropped", got, counts)
	}

	// The same under a live consumer: whatever the timing, nothing is lost
	// that the producer did not count as dropped.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	const attempts = 20000
	prod.RunOnCPU(t, 0, attempts)
	counts = prod.Counts(t)
	waitFor(t, func() bool { return c.count() == int(counts.Submitted) })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if counts.Submitted+counts.Dropped != 100+attempts || c.count() != int(counts.Submitted) {
		t.Fatalf("consumed %d, producer counted %+v, attempts %d", c.count(), counts, 100+attempts)
	}
}

// waitFor polls cond until it holds, failing the test after hang.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met: hang")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWakeups(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8}
	delivered := 0
	m := newManager(t, rb, func(data []byte) error {
		delivered++
		_, err := spec.Check(data)
		return err
	})

	pollInBackground := func(timeout time.Duration) chan error {
		done := make(chan error, 1)
		go func() {
			n, err := m.Poll(timeout)
			if err == nil && n == 0 {
				err = os.ErrDeadlineExceeded
			}
			done <- err
		}()
		time.Sleep(50 * time.Millisecond) // let it block; a late start only weakens the test
		return done
	}
	for _, tt := range []struct {
		name    string
		flags   uint64
		sample  int // SampleBytes
		timeout time.Duration
		want    error
		total   int // records delivered so far
	}{
		{"no wakeup", testprog.NoWakeup, 0, 300 * time.Millisecond, os.ErrDeadlineExceeded, 0},
		{"sampled, below the threshold", 0, 1 << 20, 300 * time.Millisecond, os.ErrDeadlineExceeded, 0},
		{"forced wakeup", testprog.ForceWakeup, 0, hang, nil, 9}, // the quiet records come along
		{"sampled, at the threshold", 0, 3 * 16, hang, nil, 12},  // the third record finds 48 bytes waiting
		{"default wakes a caught-up consumer", 0, 0, hang, nil, 15},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := pollInBackground(tt.timeout)
			testprog.NewProducer(t, testprog.Spec{Ring: rb, Size: 8, Flags: tt.flags, SampleBytes: tt.sample}).RunOnCPU(t, 0, 3)
			if err := <-done; !errors.Is(err, tt.want) {
				t.Fatalf("blocked Poll returned %v, want %v", err, tt.want)
			}
			if tt.want == nil { // the wake-up may come before all 3 are there
				drain(t, m)
			}
			if delivered != tt.total {
				t.Fatalf("%d records delivered, want %d", delivered, tt.total)
			}
		})
	}
}

func TestConsumeN(t *testing.T) {
	var m *Manager
	var perRing [3]int
	for i := range perRing {
		spec := testprog.Spec{Ring: testprog.NewRingBuf(t, 4096), Size: 8}
		count := func([]byte) error { perRing[i]++; return nil }
		if i == 0 {
			m = newManager(t, spec.Ring, count)
		} else if _, err := m.Add(spec.Ring, count); err != nil {
			t.Fatal(err)
		}
		testprog.NewProducer(t, spec).RunOnCPU(t, 0, 10)
	}
	total := func() int { return perRing[0] + perRing[1] + perRing[2] }
	r2, _ := m.Ring(2)
	for _, step := range []struct {
		ring2 bool // Ring(2).ConsumeN instead of Manager.ConsumeN
		n     int
	}{
		{false, 0}, {false, 7}, {false, 1}, {true, 4}, {false, 13}, {true, 100}, {false, 100}, {false, 100},
	} {
		call, left := m.ConsumeN, 30-total()
		if step.ring2 {
			call, left = r2.ConsumeN, 10-perRing[2]
		}
		before := total()
		n, err := call(step.n)
		if want := min(step.n, left); err != nil || n != want || total()-before != n {
			t.Fatalf("ConsumeN(%d) on ring 2 only: %v: got %d, %v (callbacks ran %d times); want %d",
				step.n, step.ring2, n, err, total()-before, want)
		}
	}
	if perRing != [3]int{10, 10, 10} {
		t.Fatalf("records per ring %v, want 10 each", perRing)
	}
}

func TestFairness(t *testing.T) {
	busy := testprog.Spec{Ring: testprog.NewRingBuf(t, 64<<10), Size: 8}
	calm := testprog.Spec{Ring: testprog.NewRingBuf(t, 4096), Size: 8}
	perRing := map[int]int{}
	m := newManager(t, busy.Ring, func([]byte) error { perRing[0]++; return nil }, WithMaxRecordsPerRing(50))
	if _, err := m.Add(calm.Ring, func([]byte) error { perRing[1]++; return nil }); err != nil {
		t.Fatal(err)
	}
	testprog.NewProducer(t, busy).RunOnCPU(t, 0, 1000)
	testprog.NewProducer(t, calm).RunOnCPU(t, 0, 5)
	for _, read := range []func() (int, error){m.Consume, func() (int, error) { return m.Poll(hang) }} {
		clear(perRing)
		n, err := read()
		if err != nil || n != 55 && n != 50 || perRing[0] != 50 {
			t.Fatalf("read %d records (%v) per ring %v; want at most 50 from the busy ring", n, err, perRing)
		}
	}

	// A producer that never pauses cannot hold a Consume on its ring.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		prod := testprog.NewProducer(t, busy)
		for ctx.Err() == nil {
			prod.RunOnCPU(t, 0, 1000)
		}
	})
	for range 100 {
		if n, err := m.Consume(); err != nil || n > 100 {
			t.Fatalf("Consume under a nonstop producer: %d records, %v", n, err)
		}
	}
	cancel()
	wg.Wait()
}
