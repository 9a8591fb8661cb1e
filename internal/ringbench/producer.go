package ringbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

// chunkRecords is about how many records one BPF_PROG_TEST_RUN call
// produces when the producer runs flat out: enough that the system call's
// cost (a few microseconds) is small, few enough that it stops promptly.
const chunkRecords = 10_000

// burstRecords is how many records a paced producer emits per tick: a test
// run costs a few microseconds, too much to pay per record at 100k
// records/s. Each record carries its own timestamp, so latency is still
// measured per record.
const burstRecords = 10

// producer runs a testprog producer program the way a scenario asks.
type producer struct {
	p          *testprog.Producer
	sc         scenario
	batch      int
	consPage   []byte // read-only, for back-to-back
	prodPage   []byte
	cons, prod *uintptr
}

func newProducer(rb *ebpf.Map, cfg Config, sc scenario) (*producer, error) {
	spec := testprog.Spec{Ring: rb, Size: sc.size, Batch: sc.batch, Timestamp: sc.rate > 0}
	if sc.wakeup == Sampled && sc.consumer != Perf { // a perf buffer samples with its watermark
		spec.SampleBytes = cfg.SampleBytes
	}
	load := testprog.Load
	if sc.consumer == Perf {
		load = testprog.LoadPerf
	}
	p, err := load(spec)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	prod := &producer{p: p, sc: sc, batch: sc.batch}
	if sc.wakeup == B2B {
		page := os.Getpagesize()
		if prod.consPage, err = unix.Mmap(rb.FD(), 0, page, unix.PROT_READ, unix.MAP_SHARED); err != nil {
			p.Close()
			return nil, fmt.Errorf("mmap consumer page: %w", err)
		}
		if prod.prodPage, err = unix.Mmap(rb.FD(), int64(page), page, unix.PROT_READ, unix.MAP_SHARED); err != nil {
			unix.Munmap(prod.consPage)
			p.Close()
			return nil, fmt.Errorf("mmap producer page: %w", err)
		}
		prod.cons = (*uintptr)(unsafe.Pointer(&prod.consPage[0]))
		prod.prod = (*uintptr)(unsafe.Pointer(&prod.prodPage[0]))
	}
	return prod, nil
}

// produce runs on a thread pinned to cpu until stop is set.
func (p *producer) produce(cpu int, stop *atomic.Bool) error {
	restore, err := testprog.PinThread(cpu)
	if err != nil {
		return err
	}
	defer restore()
	switch {
	case p.sc.rate > 0:
		tick := time.Duration(float64(burstRecords) / float64(p.sc.rate) * float64(time.Second))
		next := time.Now()
		for !stop.Load() {
			if err := p.p.Produce(burstRecords); err != nil {
				return err
			}
			next = next.Add(tick)
			for time.Now().Before(next) && !stop.Load() {
				// Spin: this CPU is the producer's alone, and sleeping is
				// far coarser than the tick.
			}
		}
	case p.sc.wakeup == B2B:
		for !stop.Load() {
			if err := p.p.Produce(1); err != nil {
				return err
			}
			// The consumer triggers the next batch by catching up.
			for atomic.LoadUintptr(p.cons) != atomic.LoadUintptr(p.prod) && !stop.Load() {
				time.Sleep(time.Microsecond)
			}
		}
	default:
		runs := max(chunkRecords/p.batch, 1)
		for !stop.Load() {
			if err := p.p.Produce(runs); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *producer) counts() (testprog.Counts, error) { return p.p.Totals() }

func (p *producer) close() error {
	errs := []error{p.p.Close()}
	for _, page := range [][]byte{p.consPage, p.prodPage} {
		if page != nil {
			errs = append(errs, unix.Munmap(page))
		}
	}
	return errors.Join(errs...)
}

// timestamp returns the bpf_ktime_get_ns() a timestamped testprog record
// carries in bytes [16:24].
func timestamp(data []byte) uint64 {
	if len(data) < 24 {
		return 0
	}
	return binary.LittleEndian.Uint64(data[16:])
}
