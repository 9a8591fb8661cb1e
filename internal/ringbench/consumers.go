package ringbench

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/ringbuf"
)

// Consumer names, as the -consumers flag takes them.
const (
	Poll     = "poll"     // ringbuf.Manager.Poll
	Consume  = "consume"  // ringbuf.Manager.Consume, sleeping when the ring is empty
	BusyPoll = "busypoll" // ringbuf.Manager.Poll with ringbuf.WithBusyPoll
	Cilium   = "cilium"   // cilium/ebpf ringbuf.Reader.ReadInto
	Ceiling  = "ceiling"  // moves the consumer position to the producer's once a millisecond

	// Perf reads a perf buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY, written with
	// bpf_perf_event_output) with ringbuf.Manager.AddPerf and Poll: the
	// ring buffer's predecessor, on the same scenarios but back to back.
	Perf = "perf"

	// Variants of Poll for before/after comparisons of its defaults.
	PollEager   = "poll-eager"   // ringbuf.WithBatchDelay(0): no sleep after a large batch
	PollCommit1 = "poll-commit1" // ringbuf.WithCommitEvery(1): the position stored after every record
)

// AllConsumers lists the consumers a run measures by default, in the order
// they are run.
var AllConsumers = []string{Poll, Consume, BusyPoll, Cilium, Perf, Ceiling}

// KnownConsumers lists every consumer a run can measure.
var KnownConsumers = append(slices.Clone(AllConsumers), PollEager, PollCommit1)

// slice is how long a consumer waits at most before it looks at its stop
// flag again.
const slice = 20 * time.Millisecond

// consumeIdle is how long the consume consumer sleeps when it finds the
// ring empty. Spinning instead drags the producer position's cache line to
// the consumer's CPU for every record and slows the producer down.
const consumeIdle = 100 * time.Microsecond

// consumer reads one ring until stopped.
type consumer interface {
	// consume reads until stop is set, then whatever is left in the ring
	// (records sent without a wake-up included), and returns the records
	// it delivered to the record hook.
	consume(stop *atomic.Bool) (int, error)
	close() error
}

// newConsumer creates the named consumer of rb (a perf event array for
// Perf); it calls rec for each record it reads (the ceiling consumer reads
// none and counts them from the positions, recordSize bytes each).
func newConsumer(name string, rb *ebpf.Map, cfg Config, sc scenario, rec func([]byte)) (consumer, error) {
	callback := func(data []byte) error { rec(data); return nil }
	switch name {
	case Perf:
		// Per-CPU rings as large as the ring buffer, woken per sample or at
		// the sampled policy's watermark.
		opts := []ringbuf.PerfOption{ringbuf.WithPerfPages(cfg.RingSize / os.Getpagesize())}
		if sc.wakeup == Sampled {
			opts = append(opts, ringbuf.WithPerfWakeupBytes(min(cfg.SampleBytes, cfg.RingSize)))
		}
		m, err := ringbuf.NewManager()
		if err != nil {
			return nil, err
		}
		if _, err := m.AddPerf(rb, callback, opts...); err != nil {
			m.Close()
			return nil, err
		}
		return &managerConsumer{m: m}, nil
	case Poll, Consume, BusyPoll, PollEager, PollCommit1:
		var opts []ringbuf.Option
		switch name {
		case BusyPoll:
			opts = append(opts, ringbuf.WithBusyPoll(cfg.BusySpin))
		case PollEager:
			opts = append(opts, ringbuf.WithBatchDelay(0))
		case PollCommit1:
			opts = append(opts, ringbuf.WithCommitEvery(1))
		}
		m, err := ringbuf.New(rb, callback, opts...)
		if err != nil {
			return nil, err
		}
		return &managerConsumer{m: m, spin: name == Consume}, nil
	case Cilium:
		r, err := ciliumringbuf.NewReader(rb)
		if err != nil {
			return nil, err
		}
		return &ciliumConsumer{r: r, rec: rec}, nil
	case Ceiling:
		return newCeiling(rb, sc.size)
	}
	return nil, fmt.Errorf("unknown consumer %q (want one of %v)", name, KnownConsumers)
}

type managerConsumer struct {
	m    *ringbuf.Manager
	spin bool // Consume instead of Poll
}

func (c *managerConsumer) consume(stop *atomic.Bool) (int, error) {
	total := 0
	for !stop.Load() {
		var n int
		var err error
		if c.spin {
			if n, err = c.m.Consume(); n == 0 && err == nil {
				time.Sleep(consumeIdle)
			}
		} else {
			n, err = c.m.Poll(slice)
		}
		total += n
		if err != nil {
			return total, err
		}
	}
	for {
		n, err := c.m.Consume()
		total += n
		if n == 0 || err != nil {
			return total, err
		}
	}
}

func (c *managerConsumer) close() error { return c.m.Close() }

type ciliumConsumer struct {
	r   *ciliumringbuf.Reader
	rec func([]byte)
	buf ciliumringbuf.Record
}

func (c *ciliumConsumer) consume(stop *atomic.Bool) (int, error) {
	total := 0
	for draining := false; !draining; {
		draining = stop.Load()
		// Once stopped, a deadline in the past reads what is there.
		deadline := time.Now().Add(slice)
		if draining {
			deadline = time.Now()
		}
		c.r.SetDeadline(deadline)
		for {
			if err := c.r.ReadInto(&c.buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return total, err
			}
			c.rec(c.buf.RawSample)
			total++
		}
	}
	return total, nil
}

func (c *ciliumConsumer) close() error { return c.r.Close() }

// ceiling is not a real consumer: once a millisecond it moves the consumer
// position to the producer position without reading a record, which gives
// the producer's own rate. Doing that in a busy loop would not be a ceiling
// on a small machine: it would drag the positions' cache lines across CPUs
// for every record.
type ceiling struct {
	consPage, prodPage []byte
	cons, prod         *uintptr
	recordSize         uintptr // bytes a record takes in the ring, header included
}

func newCeiling(rb *ebpf.Map, recordSize int) (*ceiling, error) {
	page := os.Getpagesize()
	consPage, err := unix.Mmap(rb.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap consumer page: %w", err)
	}
	prodPage, err := unix.Mmap(rb.FD(), int64(page), page, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(consPage)
		return nil, fmt.Errorf("mmap producer page: %w", err)
	}
	return &ceiling{
		consPage:   consPage,
		prodPage:   prodPage,
		cons:       (*uintptr)(unsafe.Pointer(&consPage[0])),
		prod:       (*uintptr)(unsafe.Pointer(&prodPage[0])),
		recordSize: uintptr(recordBytes(recordSize)),
	}, nil
}

func (c *ceiling) consume(stop *atomic.Bool) (int, error) {
	var moved uintptr
	for {
		done := stop.Load()
		prod := atomic.LoadUintptr(c.prod)
		moved += prod - atomic.LoadUintptr(c.cons)
		atomic.StoreUintptr(c.cons, prod)
		if done {
			return int(moved / c.recordSize), nil
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *ceiling) close() error {
	return errors.Join(unix.Munmap(c.consPage), unix.Munmap(c.prodPage))
}

// recordBytes is the room a record of size bytes takes in a ring buffer:
// its 8-byte header and the payload, rounded up to 8.
func recordBytes(size int) int { return (size + 8 + 7) &^ 7 }
