package ringbuf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

func TestCloseWakesBlockedCalls(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	for _, wait := range []struct {
		name string
		call func(m *Manager) error
	}{
		{"Poll", func(m *Manager) error { _, err := m.Poll(-1); return err }},
		{"Run", func(m *Manager) error { return m.Run(context.Background()) }},
	} {
		t.Run(wait.name, func(t *testing.T) {
			m := newManager(t, rb, func([]byte) error { return nil })
			done := make(chan error, 1)
			go func() { done <- wait.call(m) }()
			time.Sleep(20 * time.Millisecond)
			if err := m.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("blocked %s returned %v, want os.ErrClosed", wait.name, err)
				}
			case <-time.After(hang):
				t.Fatalf("blocked %s did not return after Close", wait.name)
			}
		})
	}
}

func TestCallsAfterClose(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	m := newManager(t, rb, func([]byte) error { return nil })
	r, _ := m.Ring(0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"Poll":                func() error { _, err := m.Poll(0); return err },
		"Consume":             func() error { _, err := m.Consume(); return err },
		"ConsumeN":            func() error { _, err := m.ConsumeN(1); return err },
		"Run":                 func() error { return m.Run(context.Background()) },
		"Add":                 func() error { _, err := m.Add(rb, func([]byte) error { return nil }); return err },
		"Ring":                func() error { _, err := m.Ring(0); return err },
		"EpollFD":             func() error { _, err := m.EpollFD(); return err },
		"Ring.Consume":        func() error { _, err := r.Consume(); return err },
		"Ring.ConsumeN":       func() error { _, err := r.ConsumeN(1); return err },
		"Ring.ConsumerPos":    func() error { _, err := r.ConsumerPos(); return err },
		"Ring.ProducerPos":    func() error { _, err := r.ProducerPos(); return err },
		"Ring.AvailableBytes": func() error { _, err := r.AvailableBytes(); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s after Close: %v, want os.ErrClosed", name, err)
		}
	}
}

func TestCloseFromCallback(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8}
	var m *Manager
	delivered := 0
	m = newManager(t, rb, func(data []byte) error {
		delivered++
		if err := m.Close(); err != nil {
			return err
		}
		// The ring stays mapped until the read returns.
		_, err := spec.Check(data)
		return err
	})
	testprog.NewProducer(t, spec).RunOnCPU(t, 0, 3)
	n, err := m.Consume()
	if !errors.Is(err, os.ErrClosed) || n != delivered || n == 0 {
		t.Fatalf("Consume: n=%d err=%v, delivered %d", n, err, delivered)
	}
}

func TestRunCancel(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	m := newManager(t, rb, func([]byte) error { return nil })
	for _, tt := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) {
					t.Fatalf("Run returned %v, want %v", err, tt.want)
				}
			case <-time.After(hang):
				t.Fatal("Run did not return after its context ended")
			}
		})
	}
	// The manager is still usable, and stale wake-ups do not end a Poll early.
	start := time.Now()
	if n, err := m.Poll(50 * time.Millisecond); n != 0 || err != nil || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Poll after Run: n=%d err=%v after %v", n, err, time.Since(start))
	}
}

func TestSecondManagerContinues(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 40}
	var seqs []uint64
	record := func(data []byte) error {
		rec, err := spec.Check(data)
		seqs = append(seqs, rec.Seq)
		return err
	}
	prod := testprog.NewProducer(t, spec)
	for round := range 3 { // 40 records of 48 bytes: later rounds wrap
		prod.RunOnCPU(t, 0, 40)
		m1 := newManager(t, rb, record)
		if n, err := m1.ConsumeN(25); n != 25 || err != nil {
			t.Fatalf("first manager: %d, %v", n, err)
		}
		r1, _ := m1.Ring(0)
		pos, _ := r1.ConsumerPos()
		m1.Close()

		m2 := newManager(t, RawFD(rb.FD()), record)
		r2, _ := m2.Ring(0)
		if got, _ := r2.ConsumerPos(); got != pos || pos == 0 {
			t.Fatalf("round %d: second manager starts at %d, first stopped at %d", round, got, pos)
		}
		if got := drain(t, m2); got != 15 {
			t.Fatalf("round %d: second manager consumed %d, want 15", round, got)
		}
		m2.Close()
	}
	for i, seq := range seqs {
		if seq != uint64(i) {
			t.Fatalf("seqs %v: not every record exactly once, in order", seqs)
		}
	}
}

func TestTwoProducersTwoCPUs(t *testing.T) {
	// Room for every record: a consumer slowed down by -race must still
	// see both CPUs' sequences whole.
	rb := testprog.NewRingBuf(t, 4<<20)
	spec := testprog.Spec{Ring: rb, Size: 48, Batch: 10}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	const runs = 2000
	var wg sync.WaitGroup
	prod := testprog.NewProducer(t, spec)
	for cpu := range 2 {
		wg.Go(func() { prod.RunOnCPU(t, cpu, runs) })
	}
	wg.Wait()
	counts := prod.Counts(t)
	waitFor(t, func() bool { return c.count() == int(counts.Submitted) })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if counts.Submitted != 2*runs*10 || counts.Dropped != 0 || c.count() != int(counts.Submitted) {
		t.Fatalf("consumed %d, producer counted %+v for %d attempts", c.count(), counts, 2*runs*10)
	}
	if len(c.next) != 2 {
		t.Fatalf("records came from CPUs %v, want 2 CPUs", c.next)
	}
}

func TestConsumeAllocs(t *testing.T) {
	rb := testprog.NewRingBuf(t, 1<<20)
	spec := testprog.Spec{Ring: rb, Size: 8, Batch: 100}
	sum := 0
	fn := func(data []byte) error { sum += int(data[0]); return nil }
	m := newManager(t, rb, fn, WithMaxRecordsPerRing(100))
	busy := newManager(t, rb, fn, WithMaxRecordsPerRing(100), WithBusyPoll(time.Millisecond), WithCommitEvery(64))
	testprog.NewProducer(t, spec).RunOnCPU(t, 0, 300) // 30000 records, 16 bytes each
	r, _ := m.Ring(0)
	for _, read := range []struct {
		name string
		call func() (int, error)
	}{
		{"Consume", m.Consume},
		{"ConsumeN", func() (int, error) { return m.ConsumeN(100) }},
		{"Poll", func() (int, error) { return m.Poll(0) }},
		{"Ring.Consume", r.Consume},
		{"Poll with busy polling and commits every 64 bytes", func() (int, error) { return busy.Poll(time.Second) }},
	} {
		allocs := testing.AllocsPerRun(50, func() {
			if n, err := read.call(); n != 100 || err != nil {
				panic(fmt.Sprintf("%s: %d, %v", read.name, n, err))
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per batch of 100 records, want 0", read.name, allocs)
		}
	}
}

func TestBadInput(t *testing.T) {
	testprog.RequireBPF(t)
	ok := func([]byte) error { return nil }
	newMap := func(typ ebpf.MapType, key, value, entries uint32) *ebpf.Map {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: key, ValueSize: value, MaxEntries: entries})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	closedFD := func() int {
		fd, err := unix.Dup(testprog.NewRingBuf(t, 4096).FD())
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		return fd
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	rb := testprog.NewRingBuf(t, 4096)

	for _, tt := range []struct {
		name string
		rb   Map
		fn   Callback
		opts []Option
		want error
		msg  string
	}{
		{"array map", newMap(ebpf.Array, 4, 4, 1), ok, nil, ErrMapType, "type Array, want RingBuf"},
		{"hash map", newMap(ebpf.Hash, 4, 4, 1), ok, nil, ErrMapType, "type Hash, want RingBuf"},
		{"perf event array", newMap(ebpf.PerfEventArray, 4, 4, 2), ok, nil, ErrMapType, "type PerfEventArray, want RingBuf"},
		{"fd -1", RawFD(-1), ok, nil, unix.EBADF, "fd -1"},
		{"closed fd", RawFD(closedFD()), ok, nil, unix.EBADF, "is not open"},
		{"not a map: /dev/null", RawFD(devNull.Fd()), ok, nil, ErrNotMap, "/dev/null"},
		{"not a map: a program", prog, ok, nil, ErrNotMap, "bpf-prog"},
		{"nil map", nil, ok, nil, os.ErrInvalid, "nil map"},
		{"nil callback", rb, nil, nil, os.ErrInvalid, "nil callback"},
		{"zero records per ring", rb, ok, []Option{WithMaxRecordsPerRing(0)}, os.ErrInvalid, "must be positive"},
		{"zero busy poll", rb, ok, []Option{WithBusyPoll(0)}, os.ErrInvalid, "busy poll 0s: must be positive"},
		{"negative commit interval", rb, ok, []Option{WithCommitEvery(-8)}, os.ErrInvalid, "commit every -8 bytes"},
		{"negative batch delay", rb, ok, []Option{WithBatchDelay(-time.Second)}, os.ErrInvalid, "batch delay -1s: negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.rb, tt.fn, tt.opts...)
			if err == nil {
				m.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("New: %v; want an error wrapping %v that says %q", err, tt.want, tt.msg)
			}
		})
	}

	m := newManager(t, rb, ok)
	r, _ := m.Ring(0)
	for name, call := range map[string]func() error{
		"Ring(-1)":          func() error { _, err := m.Ring(-1); return err },
		"Ring(1)":           func() error { _, err := m.Ring(1); return err },
		"ConsumeN(-1)":      func() error { _, err := m.ConsumeN(-1); return err },
		"Ring.ConsumeN(-1)": func() error { _, err := r.ConsumeN(-1); return err },
		"Add(nil callback)": func() error { _, err := m.Add(rb, nil); return err },
	} {
		if err := call(); !errors.Is(err, os.ErrInvalid) {
			t.Errorf("%s: %v, want os.ErrInvalid", name, err)
		}
	}
}

func TestEpollFDInOutsideLoop(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback)
	epfd, err := m.EpollFD()
	if err != nil {
		t.Fatal(err)
	}
	// An outside event loop waits on the manager's epoll fd with its own
	// epoll instance, then reads without waiting.
	outer, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(outer)
	if err := unix.EpollCtl(outer, unix.EPOLL_CTL_ADD, epfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 1)
	if n, err := unix.EpollWait(outer, events, 0); n != 0 || err != nil {
		t.Fatalf("epoll fd readable with an empty ring: %d, %v", n, err)
	}
	testprog.NewProducer(t, spec).RunOnCPU(t, 0, 4)
	if n, err := unix.EpollWait(outer, events, int(hang/time.Millisecond)); n != 1 || err != nil {
		t.Fatalf("epoll fd not readable after records arrived: %d, %v", n, err)
	}
	if n, err := m.Poll(0); n != 4 || err != nil || c.count() != 4 {
		t.Fatalf("Poll(0) after the outside loop's wake-up: %d, %v", n, err)
	}
}
