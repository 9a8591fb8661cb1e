package ringbuf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

// soakRecords is how many records each soak phase attempts to produce. The
// full count runs without the race detector (.ci/run has a step for it);
// under -race or -short the consumer is too slow for tens of millions.
func soakRecords() int {
	if testing.Short() || raceEnabled {
		return 300_000
	}
	return 30_000_000
}

// mixedProducers are producers of several record sizes, batch sizes,
// discard patterns and wake-up flags into one ring, each with its checker.
// Records are told apart by the size they carry in bytes [12:16].
type mixedProducers struct {
	prods    []*testprog.Producer
	batches  []int
	checkers []*checker
	bySize   map[uint32]*checker
}

func newMixedProducers(t *testing.T, rb *ebpf.Map) *mixedProducers {
	mp := &mixedProducers{bySize: map[uint32]*checker{}}
	for _, spec := range []testprog.Spec{
		{Ring: rb, Size: 16, Batch: 20},
		{Ring: rb, Size: 61, Batch: 10, DiscardEvery: 3},
		{Ring: rb, Size: 200, Batch: 5, DiscardEvery: 7},
		{Ring: rb, Size: 1000, Batch: 1, Flags: testprog.ForceWakeup},
	} {
		c := newChecker(t, spec)
		mp.prods = append(mp.prods, testprog.NewProducer(t, spec))
		mp.batches = append(mp.batches, spec.Batch)
		mp.checkers = append(mp.checkers, c)
		mp.bySize[uint32(spec.Size)] = c
	}
	return mp
}

func (mp *mixedProducers) callback(data []byte) error {
	if len(data) < 16 {
		return fmt.Errorf("record of %d bytes", len(data))
	}
	c, ok := mp.bySize[binary.LittleEndian.Uint32(data[12:])]
	if !ok {
		return fmt.Errorf("record of unknown size %d", len(data))
	}
	return c.callback(data)
}

// produce runs the producers on both CPUs at once, in random order and
// random amounts, until about records were attempted. It mostly waits while
// the ring is more than half full, so that most records get through, but one
// burst in ten ignores that and overfills the ring, so that some are dropped.
func (mp *mixedProducers) produce(t *testing.T, r *Ring, records int) {
	var wg sync.WaitGroup
	for cpu := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(cpu), 1))
			for left := records / 2; left > 0; {
				for rng.IntN(10) != 0 {
					avail, err := r.AvailableBytes()
					if err != nil {
						t.Error(err)
						return
					}
					if avail < uint64(r.Size()/2) {
						break
					}
					time.Sleep(20 * time.Microsecond)
				}
				i := rng.IntN(len(mp.prods))
				runs := 1 + rng.IntN(2000)
				mp.prods[i].RunOnCPU(t, cpu, runs)
				left -= runs * mp.batches[i]
			}
		})
	}
	wg.Wait()
}

// waitConsumed waits until every record the producers submitted arrived.
func (mp *mixedProducers) waitConsumed(t *testing.T) {
	t.Helper()
	for i, p := range mp.prods {
		submitted := int(p.Counts(t).Submitted)
		waitFor(t, func() bool { return mp.checkers[i].count() >= submitted })
	}
}

// check verifies, per producer, that the consumer got exactly what the
// program submitted, and returns the totals.
func (mp *mixedProducers) check(t *testing.T) (consumed, dropped uint64) {
	t.Helper()
	for i, p := range mp.prods {
		counts := p.Counts(t)
		if got := uint64(mp.checkers[i].count()); got != counts.Submitted {
			t.Fatalf("size %d: consumed %d records, producer counted %+v", mp.checkers[i].spec.Size, got, counts)
		}
		consumed += counts.Submitted
		dropped += counts.Dropped
	}
	return consumed, dropped
}

func TestSoak(t *testing.T) {
	for _, mode := range []string{"Poll", "Consume"} {
		t.Run(mode, func(t *testing.T) {
			rb := testprog.NewRingBuf(t, 1<<20)
			mp := newMixedProducers(t, rb)
			m := newManager(t, rb, mp.callback)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				if mode == "Poll" {
					done <- m.Run(ctx)
					return
				}
				for ctx.Err() == nil {
					if _, err := m.Consume(); err != nil {
						done <- err
						return
					}
				}
				done <- ctx.Err()
			}()
			start := time.Now()
			r, _ := m.Ring(0)
			mp.produce(t, r, soakRecords())
			mp.waitConsumed(t)
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("consumer: %v", err)
			}
			consumed, dropped := mp.check(t)
			t.Logf("%s: %d records consumed (every byte checked), %d dropped by the producers, in %v",
				mode, consumed, dropped, time.Since(start).Round(time.Millisecond))
		})
	}
}

// onLockedThread runs fn on a goroutine locked to its thread and returns
// the thread's id at once, and a channel that yields fn's error.
func onLockedThread(fn func() error) (tid int, result chan error) {
	tids := make(chan int)
	result = make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		result <- fn()
	}()
	return <-tids, result
}

func TestSignals(t *testing.T) {
	rb := testprog.NewRingBuf(t, 1<<20)
	spec := testprog.Spec{Ring: rb, Size: 32, Batch: 10}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	prod := testprog.NewProducer(t, spec)
	var signals int64

	t.Run("timeout kept while waiting", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		start := time.Now()
		tid, result := onLockedThread(func() error {
			n, err := m.Poll(timeout)
			if n != 0 || err != nil {
				return fmt.Errorf("Poll = %d, %v; want 0, nil", n, err)
			}
			if elapsed := time.Since(start); elapsed < timeout {
				return fmt.Errorf("Poll(%v) returned after %v: EINTR ended the wait early", timeout, elapsed)
			}
			return nil
		})
		stop := testprog.SignalStorm(t, tid, 100*time.Microsecond)
		err := <-result
		signals += stop()
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wake-up arrives through the storm", func(t *testing.T) {
		tid, result := onLockedThread(func() error {
			n, err := m.Poll(hang)
			if n == 0 || err != nil {
				return fmt.Errorf("Poll = %d, %v; want records", n, err)
			}
			return nil
		})
		stop := testprog.SignalStorm(t, tid, 100*time.Microsecond)
		time.Sleep(100 * time.Millisecond)
		prod.RunOnCPU(t, 0, 1)
		err := <-result
		signals += stop()
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reading through the storm", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		tid, result := onLockedThread(func() error { return m.Run(ctx) })
		stop := testprog.SignalStorm(t, tid, 100*time.Microsecond)
		var wg sync.WaitGroup
		for cpu := range 2 {
			wg.Go(func() { prod.RunOnCPU(t, cpu, 20_000) })
		}
		wg.Wait()
		counts := prod.Counts(t)
		waitFor(t, func() bool { return c.count() == int(counts.Submitted) })
		cancel()
		err := <-result
		signals += stop()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		if c.count() != int(counts.Submitted) || counts.Submitted+counts.Dropped != 10*(1+2*20_000) {
			t.Fatalf("consumed %d, producer counted %+v", c.count(), counts)
		}
	})
	t.Logf("%d signals sent", signals)
}

// TestConcurrentCalls runs every entry point from several goroutines at
// once, over and over, with Close at a random moment: no race report, no
// panic, no deadlock, and every call returns either success or the error
// that its situation calls for.
func TestConcurrentCalls(t *testing.T) {
	rings := []*ebpf.Map{testprog.NewRingBuf(t, 4096), testprog.NewRingBuf(t, 4096)}
	prod := testprog.NewProducer(t, testprog.Spec{Ring: rings[0], Size: 8})
	iterations := 2000
	if raceEnabled || testing.Short() {
		iterations = 500
	}
	ok := func(err error) bool {
		return err == nil || errors.Is(err, os.ErrClosed) || errors.Is(err, context.Canceled)
	}
	for i := range iterations {
		m, err := New(rings[0], func([]byte) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error, 16)
		var wg sync.WaitGroup
		calls := []func() error{
			func() error { _, err := m.Poll(time.Duration(rand.IntN(3)-1) * time.Millisecond); return err },
			func() error { _, err := m.Consume(); return err },
			func() error { _, err := m.ConsumeN(rand.IntN(3)); return err },
			func() error { return m.Run(ctx) },
			func() error { _, err := m.Add(rings[1], func([]byte) error { return nil }); return err },
			func() error {
				r, err := m.Ring(0)
				if err == nil {
					_, err = r.AvailableBytes()
				}
				return err
			},
		}
		for _, call := range calls {
			wg.Go(func() {
				for range 3 {
					if err := call(); !ok(err) {
						errs <- err
						return
					}
				}
			})
		}
		if i%10 == 0 {
			prod.RunOnCPU(t, 0, 1)
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		if rng.IntN(2) == 0 {
			cancel()
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		waitGroupOrHang(t, &wg)
		cancel()
		close(errs)
		for err := range errs {
			t.Fatalf("iteration %d: %v", i, err)
		}
	}
}

func waitGroupOrHang(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(hang):
		t.Fatal("calls did not return after Close: hang")
	}
}

func TestCallbackPanics(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8}
	var seqs []uint64
	m := newManager(t, rb, func(data []byte) error {
		rec, err := spec.Check(data)
		if err != nil {
			return err
		}
		seqs = append(seqs, rec.Seq)
		if rec.Seq%3 == 1 {
			panic(fmt.Sprintf("callback panics on seq %d", rec.Seq))
		}
		return nil
	})
	prod := testprog.NewProducer(t, spec)
	for _, read := range []struct {
		name string
		call func() error
	}{
		{"Consume", func() error { _, err := m.Consume(); return err }},
		{"Poll", func() error { _, err := m.Poll(hang); return err }},
		{"Run", func() error { return m.Run(context.Background()) }},
	} {
		t.Run(read.name, func(t *testing.T) {
			prod.RunOnCPU(t, 0, 3)
			first := uint64(len(seqs))
			var recovered any
			func() {
				defer func() { recovered = recover() }()
				read.call()
			}()
			if want := fmt.Sprintf("callback panics on seq %d", first+1); recovered != want {
				t.Fatalf("recovered %v, want %q", recovered, want)
			}
			// Still usable; the record that panicked is not delivered again.
			if n, err := m.Consume(); n != 1 || err != nil {
				t.Fatalf("Consume after the panic: %d, %v", n, err)
			}
		})
	}
	for i, seq := range seqs {
		if seq != uint64(i) {
			t.Fatalf("delivered seqs %v: not each exactly once", seqs)
		}
	}
}

func TestCallbackBlocksClose(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 64}
	entered := make(chan struct{})
	release := make(chan struct{})
	var checked []error
	m := newManager(t, rb, func(data []byte) error {
		if len(checked) == 0 {
			close(entered)
			<-release
		}
		// Close has returned by now; the records must still be readable.
		_, err := spec.Check(data)
		checked = append(checked, err)
		return nil
	})
	testprog.NewProducer(t, spec).RunOnCPU(t, 0, 2)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := m.Poll(hang)
		done <- result{n, err}
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Close waited for a blocked callback")
	}
	if _, err := m.Consume(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Consume after Close: %v", err)
	}
	close(release)
	// The Poll finishes the ring it was reading, then reports the Close.
	if r := <-done; r.n != 2 || !errors.Is(r.err, os.ErrClosed) {
		t.Fatalf("Poll whose callback blocked during Close: %d, %v; want 2, os.ErrClosed", r.n, r.err)
	}
	for i, err := range checked {
		if err != nil {
			t.Fatalf("record %d read after Close returned: %v", i, err)
		}
	}
}

func TestRecordLargerThanRing(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	delivered := 0
	m := newManager(t, rb, func([]byte) error { delivered++; return nil })
	prod := testprog.NewProducer(t, testprog.Spec{Ring: rb, Size: 5000})
	prod.RunOnCPU(t, 0, 10)
	if n, err := m.Poll(100 * time.Millisecond); n != 0 || err != nil || delivered != 0 {
		t.Fatalf("Poll: %d, %v", n, err)
	}
	if counts := prod.Counts(t); counts.Dropped != 10 || counts.Submitted != 0 {
		t.Fatalf("producer counted %+v, want every reservation dropped", counts)
	}
}
