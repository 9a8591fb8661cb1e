package ringbuf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/internal/perf"
	"github.com/bpfring/bpfring/internal/testprog"
)

// hotplugCPU is the CPU TestPerfHotplug takes offline.
const hotplugCPU = 1

// requireHotplug skips unless BPFRING_HOTPLUG=1: taking a CPU offline moves
// every thread pinned to it, which breaks the tests that pin producers to
// CPU 1, so the test runs only alone (.ci/run has a step for it). It
// restores the CPU when the test ends, also on failure.
func requireHotplug(t *testing.T) {
	t.Helper()
	if os.Getenv("BPFRING_HOTPLUG") != "1" {
		t.Skipf("takes CPU %d offline, which disturbs every other test on the machine: set BPFRING_HOTPLUG=1 and run it alone", hotplugCPU)
	}
	testprog.RequireBPF(t)
	cpus, err := perf.OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cpus[:min(len(cpus), 2)], []int{0, 1}) {
		t.Fatalf("BPFRING_HOTPLUG=1 wants CPUs 0 and 1 online, have %v", cpus)
	}
	t.Cleanup(func() {
		if err := setOnline(hotplugCPU, true); err != nil {
			t.Errorf("restore CPU %d: %v", hotplugCPU, err)
		}
	})
}

// setOnline takes cpu offline or brings it back, and checks that the kernel
// lists it accordingly.
func setOnline(cpu int, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", cpu), []byte(v), 0); err != nil {
		return err
	}
	cpus, err := perf.OnlineCPUs()
	if err != nil {
		return err
	}
	if slices.Contains(cpus, cpu) != on {
		return fmt.Errorf("after writing %s for CPU %d, the online CPUs are %v", v, cpu, cpus)
	}
	return nil
}

// hotplugMap is one perf buffer of TestPerfHotplug with its producer and the
// outputs that failed for want of a working event (not losses: the kernel
// reports no PERF_RECORD_LOST for them).
type hotplugMap struct {
	name   string
	opts   []PerfOption
	events *ebpf.Map
	c      *checker
	prod   *testprog.Producer
	p      *PerfMap
	noRing uint64
}

// check verifies the accounting: every output that succeeded was delivered,
// every one that failed was either lost to a full ring (and reported) or
// had no working event.
func (h *hotplugMap) check(t *testing.T) {
	t.Helper()
	counts := h.prod.Counts(t)
	if delivered := uint64(h.c.count()); delivered != counts.Submitted || h.p.Lost()+h.noRing != counts.Dropped {
		t.Fatalf("%s: delivered %d, lost %d, %d outputs without a working event; producer counted %+v",
			h.name, delivered, h.p.Lost(), h.noRing, counts)
	}
}

// produceFailing runs the producer on cpu and checks that every output
// fails: the CPU has no working event in the map.
func (h *hotplugMap) produceFailing(t *testing.T, cpu, runs int) {
	t.Helper()
	before := h.prod.PerCPU(t)[cpu]
	h.prod.RunOnCPU(t, cpu, runs)
	after := h.prod.PerCPU(t)[cpu]
	if after.Submitted != before.Submitted || after.Dropped != before.Dropped+uint64(runs) {
		t.Fatalf("%s: cpu %d without a working event: counts went from %+v to %+v", h.name, cpu, before, after)
	}
	h.noRing += uint64(runs)
}

// replaced reports whether the event stored for cpu is a replacement of the
// one its ring was opened with.
func (h *hotplugMap) replaced(cpu int) bool {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	for _, c := range h.p.rings {
		if c.cpu == cpu {
			return c.live != c.fd
		}
	}
	return false
}

// waitUntil polls cond until it holds, failing after hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(hang); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%v passed waiting for %s", hang, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runInBackground runs m.Run until the returned stop is called.
func runInBackground(t *testing.T, m *Manager) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	}
}

// TestPerfHotplug takes CPU 1 offline before perf buffers are added, brings
// it back, takes it offline again with its rings in place and brings it back
// again: the buffers keep working throughout, pick CPU 1 up on an explicit
// Rescan or on their own, and every byte and every lost sample is accounted
// for.
func TestPerfHotplug(t *testing.T) {
	requireHotplug(t)
	const cpu = hotplugCPU
	spec := func(m *ebpf.Map) testprog.Spec { return testprog.Spec{Ring: m, Size: 16} }
	maps := []*hotplugMap{
		{name: "explicit", opts: []PerfOption{WithPerfRescan(0)}},
		{name: "automatic", opts: []PerfOption{WithPerfRescan(20 * time.Millisecond)}},
	}
	for _, h := range maps {
		h.events = testprog.NewPerfEventArray(t, 0)
		h.c = newPerfChecker(t, spec(h.events))
		h.prod = testprog.NewPerfProducer(t, spec(h.events))
		// One page: 127 records of 32 bytes, so that it overflows.
		h.opts = append(h.opts, WithPerfPages(1))
	}
	// One entry: room for CPU 0 only.
	short := testprog.NewPerfEventArray(t, 1)

	if err := setOnline(cpu, false); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for _, h := range maps {
		if h.p, err = m.AddPerf(h.events, h.c.callback, h.opts...); err != nil {
			t.Fatalf("%s: AddPerf with CPU %d offline: %v", h.name, cpu, err)
		}
	}
	shortMap, err := m.AddPerf(short, func([]byte) error { return nil }, WithPerfRescan(0))
	if err != nil {
		t.Fatalf("AddPerf of a one-entry map with CPU %d offline: %v", cpu, err)
	}
	produced := 0 // records produced per map and CPU 0 or 1, in total
	deliver := func(cpus ...int) {
		t.Helper()
		for _, h := range maps {
			for _, c := range cpus {
				h.prod.RunOnCPU(t, c, 30)
			}
		}
		produced += 30 * len(cpus)
		for _, h := range maps {
			waitUntil(t, fmt.Sprintf("%s: %d samples", h.name, produced), func() bool {
				if _, err := m.Consume(); err != nil {
					t.Fatal(err)
				}
				return h.c.count() >= produced
			})
			h.check(t)
		}
	}

	t.Run("offline at AddPerf", func(t *testing.T) {
		for _, h := range maps {
			if got := h.p.CPUs(); !slices.Equal(got, []int{0}) {
				t.Fatalf("%s: CPUs() = %v with CPU %d offline, want [0]", h.name, got, cpu)
			}
		}
		deliver(0)
	})

	t.Run("online later", func(t *testing.T) {
		if err := setOnline(cpu, true); err != nil {
			t.Fatal(err)
		}
		explicit, automatic := maps[0], maps[1]
		explicit.produceFailing(t, cpu, 5) // no ring yet
		stop := runInBackground(t, m)
		// Nothing to read: the idle Run wakes up for the rescan.
		waitUntil(t, "the automatic rescan to add CPU 1", func() bool {
			return slices.Equal(automatic.p.CPUs(), []int{0, cpu})
		})
		if got := explicit.p.CPUs(); !slices.Equal(got, []int{0}) {
			t.Fatalf("CPUs() = %v without rescans, want [0]", got)
		}
		if err := explicit.p.Rescan(); err != nil {
			t.Fatalf("Rescan: %v", err)
		}
		if got := explicit.p.CPUs(); !slices.Equal(got, []int{0, cpu}) || explicit.p.RescanErr() != nil {
			t.Fatalf("after Rescan: CPUs() = %v, RescanErr() = %v", got, explicit.p.RescanErr())
		}
		stop()
		// The one-entry map cannot take CPU 1: an error for that CPU, and
		// the map goes on.
		err := shortMap.Rescan()
		if !errors.Is(err, ErrMapType) || !errors.Is(shortMap.RescanErr(), ErrMapType) {
			t.Fatalf("Rescan of a one-entry map with CPU %d online: %v (RescanErr %v), want ErrMapType", cpu, err, shortMap.RescanErr())
		}
		if got := shortMap.CPUs(); !slices.Equal(got, []int{0}) {
			t.Fatalf("one-entry map: CPUs() = %v", got)
		}
		deliver(0, cpu)
	})

	t.Run("lost on the new ring", func(t *testing.T) {
		// Nobody reads: CPU 1's one-page ring overflows.
		for _, h := range maps {
			h.prod.RunOnCPU(t, cpu, 200)
		}
		drain(t, m)
		for _, h := range maps {
			h.prod.RunOnCPU(t, cpu, 1) // carries the PERF_RECORD_LOST
		}
		drain(t, m)
		for _, h := range maps {
			if h.p.Lost() == 0 {
				t.Fatalf("%s: nothing lost", h.name)
			}
			h.check(t)
		}
		produced = maps[0].c.count()
		if got := maps[1].c.count(); got != produced {
			t.Fatalf("maps delivered %d and %d samples of the same runs", produced, got)
		}
	})

	t.Run("offline again", func(t *testing.T) {
		if err := setOnline(cpu, false); err != nil {
			t.Fatal(err)
		}
		// The explicit map sees no rescan until CPU 1 is back, as if the
		// CPU went offline and back between two rescans.
		if err := maps[1].p.Rescan(); err != nil {
			t.Fatalf("Rescan with CPU %d offline: %v", cpu, err)
		}
		for _, h := range maps {
			if got := h.p.CPUs(); !slices.Equal(got, []int{0, cpu}) {
				t.Fatalf("%s: CPUs() = %v with CPU %d offline again, want its ring kept", h.name, got, cpu)
			}
		}
		if n, err := m.Poll(10 * time.Millisecond); n != 0 || err != nil {
			t.Fatalf("Poll: %d, %v", n, err)
		}
		deliver(0)
	})

	t.Run("online again", func(t *testing.T) {
		if err := setOnline(cpu, true); err != nil {
			t.Fatal(err)
		}
		explicit, automatic := maps[0], maps[1]
		// The kernel dropped CPU 1's events with the CPU: outputs fail
		// until a rescan replaces them.
		explicit.produceFailing(t, cpu, 5)
		stop := runInBackground(t, m)
		waitUntil(t, "the automatic rescan to replace CPU 1's event", func() bool { return automatic.replaced(cpu) })
		stop()
		if explicit.replaced(cpu) {
			t.Fatal("event replaced without a rescan")
		}
		ring := explicit.p.rings[1]
		tail := *ring.tail
		if err := explicit.p.Rescan(); err != nil || !explicit.replaced(cpu) {
			t.Fatalf("Rescan: %v; event replaced: %v", err, explicit.replaced(cpu))
		}
		deliver(0, cpu)
		// The new event writes into the ring that was there.
		if *ring.tail != tail+30*perfRecordSize(16) {
			t.Fatalf("CPU %d ring: data_tail %d, want %d", cpu, *ring.tail, tail+30*perfRecordSize(16))
		}
		for _, h := range maps {
			if err := h.p.RescanErr(); err != nil {
				t.Fatalf("%s: RescanErr: %v", h.name, err)
			}
		}
	})
}

// TestPerfRescanStable rescans with no CPU changes: nothing changes, no live
// event is replaced, samples flow, and after Close Rescan reports it.
func TestPerfRescanStable(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	spec := testprog.Spec{Ring: events, Size: 16}
	c := newPerfChecker(t, spec)
	m, p := newPerfManager(t, events, c.callback, WithPerfRescan(time.Hour))
	cpus := p.CPUs()
	prod := testprog.NewPerfProducer(t, spec)
	for round := range 3 {
		if err := p.Rescan(); err != nil {
			t.Fatalf("Rescan: %v", err)
		}
		if got := p.CPUs(); !slices.Equal(got, cpus) {
			t.Fatalf("CPUs() = %v after Rescan, was %v", got, cpus)
		}
		for _, r := range p.rings {
			if r.live != r.fd {
				t.Fatalf("round %d: cpu %d: live event replaced", round, r.cpu)
			}
		}
		for _, cpu := range cpus {
			prod.RunOnCPU(t, cpu, 10)
		}
		if n := drain(t, m); n != 10*len(cpus) {
			t.Fatalf("round %d: %d samples, want %d", round, n, 10*len(cpus))
		}
	}
	if counts := prod.Counts(t); counts.Dropped != 0 || uint64(c.count()) != counts.Submitted {
		t.Fatalf("delivered %d, producer counted %+v", c.count(), counts)
	}
	m.Close()
	if err := p.Rescan(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Rescan after Close: %v, want os.ErrClosed", err)
	}
}

// TestPerfRescanIdle checks that Poll and Run, with nothing to read, wake up
// for automatic rescans, and that a Poll does not return before its timeout
// for them.
func TestPerfRescanIdle(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	m, p := newPerfManager(t, events, func([]byte) error { return nil }, WithPerfRescan(time.Millisecond))
	_, off := newPerfManager(t, testprog.NewPerfEventArray(t, 0), func([]byte) error { return nil }, WithPerfRescan(0))
	if next := off.next.Load(); next != 0 {
		t.Fatalf("automatic rescans off, but one is due at %d", next)
	}

	const timeout = 100 * time.Millisecond
	before := p.next.Load()
	start := time.Now()
	if n, err := m.Poll(timeout); n != 0 || err != nil {
		t.Fatalf("Poll: %d, %v", n, err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Fatalf("Poll(%v) returned after %v", timeout, elapsed)
	}
	if p.next.Load() == before {
		t.Fatal("no rescan during an idle Poll")
	}

	stop := runInBackground(t, m)
	defer stop()
	for range 3 {
		before := p.next.Load()
		waitUntil(t, "a rescan during an idle Run", func() bool { return p.next.Load() != before })
	}
}

func TestPerfRescanBadInput(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	m, err := NewManager()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.AddPerf(events, func([]byte) error { return nil }, WithPerfRescan(-time.Second))
	if !errors.Is(err, os.ErrInvalid) {
		t.Fatalf("AddPerf with a negative rescan interval: %v, want os.ErrInvalid", err)
	}
}

// TestPerfRescanAllocs checks that the rescan's time check leaves Consume
// and Poll allocation-free.
func TestPerfRescanAllocs(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	m, _ := newPerfManager(t, events, func([]byte) error { return nil }, WithPerfRescan(time.Hour))
	for _, tt := range []struct {
		name string
		call func() (int, error)
	}{
		{"Consume", m.Consume},
		{"Poll(0)", func() (int, error) { return m.Poll(0) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(100, func() {
				if n, err := tt.call(); n != 0 || err != nil {
					panic(fmt.Sprintf("%s: %d, %v", tt.name, n, err))
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per %s", allocs, tt.name)
			}
		})
	}
}
