package ringbuf_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/ringbuf"
)

// perfSampleRate is how many records make one wake-up in the sampled
// scenarios, as in the kernel's ring buffer benchmark
// (tools/testing/selftests/bpf/benchs/bench_ringbufs.c).
const perfSampleRate = 500

// BenchmarkPerfVsRing compares a perf buffer with a ring buffer on one
// Manager, on the same scenarios: 8-byte records produced nonstop on CPU 1
// by a socket filter (1 or 100 records per program run), consumed with Poll
// on CPU 0. An op is one record delivered.
//
//   - default: the ring buffer producer commits with flags 0 (adaptive
//     wake-ups), the perf buffer wakes the consumer on every sample
//     (wakeup_events 1, libbpf's default).
//   - sampled: the perf buffer wakes the consumer every perfSampleRate
//     samples; the ring buffer producer sends no wake-ups (BPF_RB_NO_WAKEUP).
//     The consumer polls with a 1 ms timeout and calls Consume after each
//     timeout, for both kinds.
//     (The kernel's benchmark forces a wake-up every 500 records instead,
//     which the test producer cannot do.)
//
// Both rings hold 4 MiB. Lost records are those the producer failed to
// output because the ring was full.
func BenchmarkPerfVsRing(b *testing.B) {
	for _, sampled := range []bool{false, true} {
		for _, batch := range []int{1, 100} {
			for _, kind := range []string{"ring", "perf"} {
				mode := "default"
				if sampled {
					mode = "sampled"
				}
				b.Run(fmt.Sprintf("%s/batch%d/%s", mode, batch, kind), func(b *testing.B) {
					benchPerfVsRing(b, kind == "perf", sampled, batch)
				})
			}
		}
	}
}

func benchPerfVsRing(b *testing.B, perf, sampled bool, batch int) {
	const size = 8
	sum := 0
	count := func(data []byte) error { sum += int(data[0]); return nil }
	m, err := ringbuf.NewManager()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	var prod *testprog.Producer
	if perf {
		events := testprog.NewPerfEventArray(b, 0)
		opts := []ringbuf.PerfOption{ringbuf.WithPerfPages((4 << 20) / 4096)}
		if sampled {
			opts = append(opts, ringbuf.WithPerfWakeupEvents(perfSampleRate))
		}
		if _, err := m.AddPerf(events, count, opts...); err != nil {
			b.Fatal(err)
		}
		prod = testprog.NewPerfProducer(b, testprog.Spec{Ring: events, Size: size, Batch: batch})
	} else {
		rb := testprog.NewRingBuf(b, 4<<20)
		if _, err := m.Add(rb, count); err != nil {
			b.Fatal(err)
		}
		spec := testprog.Spec{Ring: rb, Size: size, Batch: batch}
		if sampled {
			spec.Flags = testprog.NoWakeup
		}
		prod = testprog.NewProducer(b, spec)
	}
	timeout := time.Second
	if sampled {
		timeout = time.Millisecond
	}
	measureReader(b, prod, 10000/batch, func() (int, error) {
		n, err := m.Poll(timeout)
		if err == nil && n == 0 && sampled {
			// A timeout: read what came without a wake-up.
			n, err = m.Consume()
		}
		return n, err
	})
}
