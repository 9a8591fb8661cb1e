package ringbuf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

// newPerfManager returns a manager holding the perf buffer pm alone.
func newPerfManager(t testing.TB, pm Map, fn Callback, opts ...PerfOption) (*Manager, *PerfMap) {
	t.Helper()
	m, err := NewManager()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	p, err := m.AddPerf(pm, fn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}

// perfRecordSize is the size of the perf record that carries a sample of
// size bytes: header, raw size field, padded raw data.
func perfRecordSize(size int) uint64 { return uint64(8 + 4 + testprog.PerfRawSize(size)) }

func TestPerfSampleSizes(t *testing.T) {
	pages := 1
	events := testprog.NewPerfEventArray(t, 0)
	var sizes []int
	for n := 1; n <= 64; n++ {
		sizes = append(sizes, n)
	}
	sizes = append(sizes, 100, 255, 256, 257, 1000, 1500, 2000)
	for _, size := range sizes {
		spec := testprog.Spec{Ring: events, Size: size}
		// A checker per CPU: short records do not say their CPU.
		var c *checker
		checked := 0
		m, p := newPerfManager(t, events, func(data []byte) error { return c.callback(data) }, WithPerfPages(pages))
		if got := p.CPUs(); len(got) != 2 {
			t.Fatalf("CPUs() = %v, want 2 CPUs", got)
		}
		prod := testprog.NewPerfProducer(t, spec)
		rec := perfRecordSize(size)
		// Enough rounds of as many samples as fit to go round the ring
		// several times, so that samples wrap at different offsets.
		perRound := max(1, int(uint64(p.Size())/rec)-1)
		rounds := max(3, int(3*uint64(p.Size())/(uint64(perRound)*rec)))
		wrapped := 0
		for cpuIdx, cpu := range p.CPUs() {
			if c != nil {
				checked += c.count()
			}
			c = newPerfChecker(t, spec)
			ring := p.rings[cpuIdx]
			for round := range rounds {
				pos := *ring.tail
				prod.RunOnCPU(t, cpu, perRound)
				if got := drain(t, m); got != perRound {
					t.Fatalf("size %d cpu %d round %d: consumed %d samples, want %d", size, cpu, round, got, perRound)
				}
				for range perRound {
					if off := pos % uint64(p.Size()); off+rec > uint64(p.Size()) {
						wrapped++
					}
					pos += rec
				}
				if *ring.tail != pos || *ring.head != pos {
					t.Fatalf("size %d cpu %d: data_tail %d, data_head %d, want both %d", size, cpu, *ring.tail, *ring.head, pos)
				}
			}
		}
		if checked += c.count(); checked != 2*rounds*perRound {
			t.Fatalf("size %d: %d samples checked, want %d", size, checked, 2*rounds*perRound)
		}
		// Records of a power-of-two size never straddle the end.
		if uint64(p.Size())%rec != 0 && wrapped == 0 {
			t.Fatalf("size %d: no sample wrapped", size)
		}
		if counts := prod.Counts(t); counts.Dropped != 0 || p.Lost() != 0 {
			t.Fatalf("size %d: producer counted %+v, %d lost", size, counts, p.Lost())
		}
		m.Close()
	}
}

// TestPerfLost overflows small perf rings on purpose: every sample the
// producer output arrives, every one it failed to output is reported lost.
func TestPerfLost(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	spec := testprog.Spec{Ring: events, Size: 100, Batch: 10}
	c := newPerfChecker(t, spec)
	var lostMu sync.Mutex
	lostPerCPU := map[int]uint64{}
	onLost := func(cpu int, n uint64) {
		lostMu.Lock()
		lostPerCPU[cpu] += n
		lostMu.Unlock()
	}
	m, p := newPerfManager(t, events, c.callback, WithPerfPages(1), WithPerfLost(onLost))
	prod := testprog.NewPerfProducer(t, spec)

	// The kernel reports a loss with the next sample that fits, so every
	// phase ends with one more run on each CPU once the rings are drained.
	flush := func() {
		drain(t, m)
		for _, cpu := range p.CPUs() {
			prod.RunOnCPU(t, cpu, 1)
		}
		drain(t, m)
	}
	check := func(attempts uint64) {
		t.Helper()
		counts := prod.Counts(t)
		delivered := uint64(c.count())
		if counts.Submitted+counts.Dropped != attempts || delivered != counts.Submitted ||
			p.Lost() != counts.Dropped || delivered+p.Lost() != attempts {
			t.Fatalf("%d attempts: delivered %d, lost %d, producer counted %+v", attempts, delivered, p.Lost(), counts)
		}
		lostMu.Lock()
		defer lostMu.Unlock()
		sum := uint64(0)
		for _, cpu := range p.CPUs() {
			sum += lostPerCPU[cpu]
		}
		if sum != p.Lost() || len(lostPerCPU) > len(p.CPUs()) {
			t.Fatalf("lost callback counted %v, Lost() %d", lostPerCPU, p.Lost())
		}
	}

	// Nobody reading: 4096 bytes hold 36 samples of 112 bytes per CPU.
	for _, cpu := range p.CPUs() {
		prod.RunOnCPU(t, cpu, 20)
	}
	if counts := prod.Counts(t); counts.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", counts)
	}
	flush()
	check(2*20*10 + 2*10)
	if p.Lost() == 0 || len(lostPerCPU) != 2 {
		t.Fatalf("lost %d, per CPU %v: want losses on both CPUs", p.Lost(), lostPerCPU)
	}

	// A live consumer racing both CPUs: whatever the timing, delivered +
	// lost == produced.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	const runs = 2000
	var wg sync.WaitGroup
	for _, cpu := range p.CPUs() {
		wg.Go(func() { prod.RunOnCPU(t, cpu, runs) })
	}
	wg.Wait()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	flush()
	check(2*20*10 + 2*10 + 2*runs*10 + 2*10)
}

// TestMixedManager puts two ring buffers and a perf buffer on one manager:
// each callback gets its own records only, through Poll, Consume and Run.
func TestMixedManager(t *testing.T) {
	// Room for every record: a consumer slowed down by -race drops nothing.
	ring0 := testprog.Spec{Ring: testprog.NewRingBuf(t, 64<<10), Size: 16}
	ring1 := testprog.Spec{Ring: testprog.NewRingBuf(t, 64<<10), Size: 24}
	perfSpec := testprog.Spec{Ring: testprog.NewPerfEventArray(t, 0), Size: 40}
	c0, c1 := newChecker(t, ring0), newChecker(t, ring1)
	cp := newPerfChecker(t, perfSpec)

	m, err := NewManager(WithMaxRecordsPerRing(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n, err := m.Consume(); n != 0 || err != nil {
		t.Fatalf("Consume on an empty manager: %d, %v", n, err)
	}
	if _, err := m.Add(ring0.Ring, c0.callback); err != nil {
		t.Fatal(err)
	}
	p, err := m.AddPerf(perfSpec.Ring, cp.callback)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := m.Add(ring1.Ring, c1.callback); err != nil || r.Index() != 1 {
		t.Fatalf("second ring: %v, %v", r, err)
	}
	if m.NumRings() != 2 || p.Index() != 0 {
		t.Fatalf("NumRings() = %d, perf map index %d", m.NumRings(), p.Index())
	}
	p0, p1, pp := testprog.NewProducer(t, ring0), testprog.NewProducer(t, ring1), testprog.NewPerfProducer(t, perfSpec)

	counts := func() []int { return []int{c0.count(), c1.count(), cp.count()} }
	// Poll reads what was reported: the perf buffer alone here.
	pp.RunOnCPU(t, 1, 6)
	if n, err := m.Poll(hang); err != nil || n != 6 {
		t.Fatalf("Poll: %d, %v; want the 6 perf samples", n, err)
	}
	if got := counts(); !slices.Equal(got, []int{0, 0, 6}) {
		t.Fatalf("records per callback %v", got)
	}
	p0.Run(t, 5)
	p1.Run(t, 7)
	pp.RunOnCPU(t, 0, 3)
	if got := drain(t, m); got != 15 || !slices.Equal(counts(), []int{5, 7, 9}) {
		t.Fatalf("Consume: %d records, per callback %v", got, counts())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var wg sync.WaitGroup
	wg.Go(func() { p0.RunOnCPU(t, 0, 300) })
	wg.Go(func() { p1.RunOnCPU(t, 1, 200) })
	wg.Go(func() { pp.RunOnCPU(t, 0, 100); pp.RunOnCPU(t, 1, 100) })
	wg.Wait()
	want := []int{305, 207, 209}
	for _, prod := range []*testprog.Producer{p0, p1, pp} {
		if c := prod.Counts(t); c.Dropped != 0 {
			t.Fatalf("a producer dropped records: %+v", c)
		}
	}
	waitFor(t, func() bool { return slices.Equal(counts(), want) })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if got := pp.Counts(t); got.Dropped != 0 || p.Lost() != 0 {
		t.Fatalf("perf producer counted %+v, lost %d", got, p.Lost())
	}
}

// TestPerfClose closes a manager while a Poll waits on its perf buffer:
// the Poll returns os.ErrClosed, and the map no longer holds the perf events,
// so the program's outputs fail instead of going to rings nobody reads.
func TestPerfClose(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	spec := testprog.Spec{Ring: events, Size: 8}
	delivered := atomic.Int64{}
	m, p := newPerfManager(t, events, func([]byte) error { delivered.Add(1); return nil })
	prod := testprog.NewPerfProducer(t, spec)
	done := make(chan error, 1)
	go func() {
		_, err := m.Poll(-1)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block; a late start only weakens the test
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("blocked Poll returned %v, want os.ErrClosed", err)
		}
	case <-time.After(hang):
		t.Fatal("blocked Poll did not return after Close")
	}
	prod.Run(t, 5)
	if c := prod.Counts(t); c.Submitted != 0 || c.Dropped != 5 || delivered.Load() != 0 {
		t.Fatalf("after Close the producer counted %+v: the map still holds perf events", c)
	}
	if _, err := m.AddPerf(events, func([]byte) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("AddPerf after Close: %v", err)
	}
	if p.Lost() != 0 {
		t.Fatalf("Lost() after Close = %d", p.Lost())
	}
}

// TestPerfCloseFromCallback closes the manager from a perf callback: the
// ring stays mapped until the read returns.
func TestPerfCloseFromCallback(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	spec := testprog.Spec{Ring: events, Size: 8}
	var m *Manager
	delivered := 0
	m, _ = newPerfManager(t, events, func(data []byte) error {
		delivered++
		if err := m.Close(); err != nil {
			return err
		}
		_, err := spec.CheckPerf(data)
		return err
	})
	testprog.NewPerfProducer(t, spec).RunOnCPU(t, 0, 3)
	n, err := m.Consume()
	if !errors.Is(err, os.ErrClosed) || n != delivered || n == 0 {
		t.Fatalf("Consume: n=%d err=%v, delivered %d", n, err, delivered)
	}
}

func TestPerfBadInput(t *testing.T) {
	ok := func([]byte) error { return nil }
	events := testprog.NewPerfEventArray(t, 0)
	m, err := NewManager()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range []struct {
		name string
		pm   Map
		fn   Callback
		opts []PerfOption
		want error
		msg  string
	}{
		{"fewer entries than CPUs", testprog.NewPerfEventArray(t, 1), ok, nil, ErrMapType, "max_entries 1, too few for online CPU 1"},
		{"ring buffer", testprog.NewRingBuf(t, 4096), ok, nil, ErrMapType, "type RingBuf, want PerfEventArray"},
		{"fd -1", RawFD(-1), ok, nil, unix.EBADF, "fd -1"},
		{"nil map", nil, ok, nil, os.ErrInvalid, "nil map"},
		{"nil callback", events, nil, nil, os.ErrInvalid, "nil callback"},
		{"zero pages", events, ok, []PerfOption{WithPerfPages(0)}, os.ErrInvalid, "power of two"},
		{"three pages", events, ok, []PerfOption{WithPerfPages(3)}, os.ErrInvalid, "power of two"},
		{"zero wake-up events", events, ok, []PerfOption{WithPerfWakeupEvents(0)}, os.ErrInvalid, "must be positive"},
		{"zero wake-up bytes", events, ok, []PerfOption{WithPerfWakeupBytes(0)}, os.ErrInvalid, "must be positive"},
		{"both wake-ups", events, ok, []PerfOption{WithPerfWakeupEvents(2), WithPerfWakeupBytes(64)}, os.ErrInvalid, "both given"},
		{"watermark beyond the ring", events, ok, []PerfOption{WithPerfPages(1), WithPerfWakeupBytes(8192)}, os.ErrInvalid, "exceeds the ring"},
		{"nil lost callback", events, ok, []PerfOption{WithPerfLost(nil)}, os.ErrInvalid, "nil perf lost callback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := m.AddPerf(tt.pm, tt.fn, tt.opts...)
			if err == nil {
				t.Fatalf("AddPerf succeeded: %v", p.CPUs())
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("AddPerf: %v; want an error wrapping %v that says %q", err, tt.want, tt.msg)
			}
		})
	}
	// A perf map is not a ring buffer.
	if _, err := m.Add(events, ok); !errors.Is(err, ErrMapType) {
		t.Fatalf("Add(perf map): %v, want ErrMapType", err)
	}
	// The failed calls left the manager usable and the map unused.
	if _, err := m.AddPerf(events, ok); err != nil {
		t.Fatalf("AddPerf after the failures: %v", err)
	}
}

func TestPerfWakeupOptions(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opt   PerfOption
		quiet int // samples that send no wake-up
	}{
		{"every 5 samples", WithPerfWakeupEvents(5), 4},
		// 24-byte records: the 6th passes 128 bytes.
		{"128 bytes", WithPerfWakeupBytes(128), 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			events := testprog.NewPerfEventArray(t, 0)
			spec := testprog.Spec{Ring: events, Size: 8}
			c := newPerfChecker(t, spec)
			m, _ := newPerfManager(t, events, c.callback, tt.opt)
			prod := testprog.NewPerfProducer(t, spec)
			prod.RunOnCPU(t, 0, tt.quiet)
			if n, err := m.Poll(200 * time.Millisecond); n != 0 || err != nil {
				t.Fatalf("Poll before the wake-up: %d, %v; want a timeout", n, err)
			}
			prod.RunOnCPU(t, 0, 1)
			if n, err := m.Poll(hang); n != tt.quiet+1 || err != nil {
				t.Fatalf("Poll: %d, %v; want %d", n, err, tt.quiet+1)
			}
			if c.count() != tt.quiet+1 {
				t.Fatalf("%d samples checked", c.count())
			}
		})
	}
}

// TestPerfPending bounds each read of a perf ring: the rest is read by the
// following Polls although the kernel sends no new wake-up, and the epoll
// fd stays readable for an outside event loop meanwhile.
func TestPerfPending(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	spec := testprog.Spec{Ring: events, Size: 8}
	c := newPerfChecker(t, spec)
	m, err := NewManager(WithMaxRecordsPerRing(10))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.AddPerf(events, c.callback); err != nil {
		t.Fatal(err)
	}
	epfd, _ := m.EpollFD()
	readable := func() bool {
		ev := make([]unix.EpollEvent, 1)
		n, err := unix.EpollWait(epfd, ev, 0)
		return err == nil && n > 0
	}
	testprog.NewPerfProducer(t, spec).RunOnCPU(t, 1, 25)
	for i, want := range []int{10, 10, 5} {
		n, err := m.Poll(hang)
		if n != want || err != nil {
			t.Fatalf("Poll %d: %d, %v; want %d", i, n, err, want)
		}
		if i < 2 && !readable() {
			t.Fatalf("after Poll %d the epoll fd is not readable, with samples left", i)
		}
	}
	if n, err := m.Poll(100 * time.Millisecond); n != 0 || err != nil {
		t.Fatalf("Poll with nothing left: %d, %v", n, err)
	}
	if c.count() != 25 {
		t.Fatalf("%d samples checked", c.count())
	}
}

func TestPerfConsumeAllocs(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	// 100-byte samples (112-byte records) in a 4 KiB ring: many wrap.
	spec := testprog.Spec{Ring: events, Size: 100, Batch: 30}
	sum := 0
	m, _ := newPerfManager(t, events, func(data []byte) error { sum += int(data[0]); return nil }, WithPerfPages(1))
	prod := testprog.NewPerfProducer(t, spec)
	allocs := testing.AllocsPerRun(50, func() {
		prod.RunOnCPU(t, 0, 1)
		if n, err := m.Consume(); n != 30 || err != nil {
			panic(fmt.Sprintf("Consume: %d, %v", n, err))
		}
	})
	// RunOnCPU itself allocates; measure it alone and compare.
	base := testing.AllocsPerRun(50, func() {
		prod.RunOnCPU(t, 1, 1)
		m.Consume()
	})
	if allocs > base {
		t.Errorf("%v allocations per producer run and Consume of 30 samples, %v for the run alone", allocs, base)
	}
}
