package userringbuf_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/userringbuf"
)

// BenchmarkProduce measures records per second into a user ring buffer
// drained by a BPF program, for Write (a copy) and for Reserve, Bytes and
// Submit (zero copy), from one goroutine and from several sharing one
// Producer. One op is one record. The BPF side drains with a callback that
// does nothing: whoever finds the ring full runs the drain program (one at a
// time, the kernel allows one drainer) and retries. Time in those drains is
// included in ns/op and reported separately as drain-ns/record.
func BenchmarkProduce(b *testing.B) {
	for _, size := range []int{8, 256} {
		for _, goroutines := range []int{1, 4} {
			for _, mode := range []string{"Write", "Reserve"} {
				name := fmt.Sprintf("%s/%dB/goroutines=%d", mode, size, goroutines)
				b.Run(name, func(b *testing.B) { benchProduce(b, mode, size, goroutines) })
			}
		}
	}
}

func benchProduce(b *testing.B, mode string, size, goroutines int) {
	user := testprog.NewUserRingBuf(b, 4<<20)
	d := testprog.NewDrainer(b, user, nil)
	p := newProducer(b, user)
	data := payload(size, 1)

	var drainMu sync.Mutex
	var drainNs atomic.Int64
	drain := func() {
		drainMu.Lock()
		defer drainMu.Unlock()
		start := time.Now()
		d.Drain(b)
		drainNs.Add(int64(time.Since(start)))
	}
	produce := func() error {
		if mode == "Write" {
			return p.Write(data)
		}
		rec, err := p.Reserve(size)
		if err != nil {
			return err
		}
		copy(rec.Bytes(), data)
		return rec.Submit()
	}
	one := func() {
		for {
			err := produce()
			if err == nil {
				return
			}
			if !errors.Is(err, userringbuf.ErrNoSpace) {
				b.Error(err)
				return
			}
			drain()
		}
	}

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				one()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(drainNs.Load())/float64(b.N), "drain-ns/record")
}
