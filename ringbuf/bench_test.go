package ringbuf_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/ringbuf"
)

// A reader under benchmark: setup returns a function that reads some
// records and returns how many.
type benchReader struct {
	name  string
	setup func(b *testing.B, rb *ebpf.Map) func() (int, error)
}

var benchReaders = []benchReader{
	{"Consume", func(b *testing.B, rb *ebpf.Map) func() (int, error) {
		// Consume on a timer: spinning on an empty ring would drag the
		// producer position's cache line to this CPU for every record.
		m := newBenchManager(b, rb)
		return func() (int, error) {
			n, err := m.Consume()
			if n == 0 && err == nil {
				time.Sleep(100 * time.Microsecond)
			}
			return n, err
		}
	}},
	{"Poll", func(b *testing.B, rb *ebpf.Map) func() (int, error) {
		m := newBenchManager(b, rb)
		return func() (int, error) {
			// 0 records is fine (a wake-up that found a record still
			// being written); a timeout is not.
			start := time.Now()
			n, err := m.Poll(time.Second)
			if err == nil && n == 0 && time.Since(start) >= time.Second {
				err = errors.New("no record within a second")
			}
			return n, err
		}
	}},
	{"cilium-ReadInto", func(b *testing.B, rb *ebpf.Map) func() (int, error) {
		r, err := ciliumringbuf.NewReader(rb)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		var rec ciliumringbuf.Record
		sum := 0
		return func() (int, error) {
			if err := r.ReadInto(&rec); err != nil {
				return 0, err
			}
			sum += int(rec.RawSample[0]) // touch the record, as the others do
			return 1, nil
		}
	}},
}

func newBenchManager(b *testing.B, rb *ebpf.Map) *ringbuf.Manager {
	sum := 0
	m, err := ringbuf.New(rb, func(data []byte) error {
		sum += int(data[0])
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkReaders drains records that a BPF program produces nonstop on
// CPU 1 (100 records per program run, adaptive wake-ups) from CPU 0, with
// each reader in turn. An op is one record delivered.
func BenchmarkReaders(b *testing.B) {
	for _, size := range []int{8, 256} {
		for _, reader := range benchReaders {
			b.Run(fmt.Sprintf("%dB/%s", size, reader.name), func(b *testing.B) {
				benchRead(b, size, reader)
			})
		}
	}
}

func benchRead(b *testing.B, size int, reader benchReader) {
	rb := testprog.NewRingBuf(b, 4<<20)
	prod := testprog.NewProducer(b, testprog.Spec{Ring: rb, Size: size, Batch: 100})
	measureReader(b, prod, 100, reader.setup(b, rb))
}

// measureReader pins the benchmark to CPU 0, runs prod nonstop on CPU 1
// (runs program runs per call) and calls read until b.N records arrived;
// it reports records per second, ns per record and the share of records
// the producer dropped.
func measureReader(b *testing.B, prod *testprog.Producer, runs int, read func() (int, error)) {
	restore, err := testprog.PinThread(0)
	if err != nil {
		b.Fatal(err)
	}
	defer restore()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			prod.RunOnCPU(b, 1, runs)
		}
	})
	b.ReportAllocs()
	b.ResetTimer()
	got := 0
	for got < b.N {
		n, err := read()
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	b.StopTimer()
	cancel()
	wg.Wait()

	elapsed := b.Elapsed().Seconds()
	counts := prod.Counts(b)
	b.ReportMetric(float64(got)/elapsed, "records/s")
	b.ReportMetric(elapsed*1e9/float64(got), "ns/record")
	b.ReportMetric(100*float64(counts.Dropped)/float64(max(1, counts.Submitted+counts.Dropped)), "%dropped")
}
