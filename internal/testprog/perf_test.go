package testprog_test

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/perf"

	"github.com/bpfring/bpfring/internal/testprog"
)

func TestPerfRawSize(t *testing.T) {
	for _, tt := range []struct{ size, want int }{
		{1, 4}, {4, 4}, {5, 12}, {12, 12}, {13, 20}, {100, 100}, {101, 108},
	} {
		if got := testprog.PerfRawSize(tt.size); got != tt.want {
			t.Errorf("PerfRawSize(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}

// TestPerfProducer reads what the perf producer outputs on each CPU with
// cilium/ebpf's perf reader, an independent consumer, and checks every byte
// and the counters.
func TestPerfProducer(t *testing.T) {
	for _, size := range []int{1, 7, 8, 13, 24, 100, 1000} {
		t.Run(fmt.Sprintf("%dB", size), func(t *testing.T) {
			events := testprog.NewPerfEventArray(t, 0)
			spec := testprog.Spec{Ring: events, Size: size, Batch: 3}
			prod := testprog.NewPerfProducer(t, spec)
			rd, err := perf.NewReader(events, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			const runs = 5
			for cpu := range 2 {
				prod.RunOnCPU(t, cpu, runs)
			}
			next := map[uint32]uint64{}
			rd.SetDeadline(time.Now()) // everything is written: never wait
			for {
				rec, err := rd.Read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if rec.LostSamples != 0 {
					t.Fatalf("%d samples lost", rec.LostSamples)
				}
				r, err := spec.CheckPerf(rec.RawSample)
				if err != nil {
					t.Fatal(err)
				}
				if size >= 12 && r.CPU != uint32(rec.CPU) || !seqMatches(size, r.Seq, next[uint32(rec.CPU)]) {
					t.Fatalf("sample from cpu %d: %+v, want seq %d", rec.CPU, r, next[uint32(rec.CPU)])
				}
				next[uint32(rec.CPU)]++
			}
			if next[0] != 3*runs || next[1] != 3*runs {
				t.Fatalf("samples per CPU %v, want %d each", next, 3*runs)
			}
			if c := prod.Counts(t); c.Submitted != 2*3*runs || c.Dropped != 0 {
				t.Fatalf("producer counted %+v", c)
			}
		})
	}
}

// seqMatches compares the seq a record of size bytes holds with want: only
// its low size bytes when size < 8.
func seqMatches(size int, seq, want uint64) bool {
	if size >= 8 {
		return seq == want
	}
	return seq == want%(1<<(8*size))
}

func TestPerfProducerWithoutReader(t *testing.T) {
	events := testprog.NewPerfEventArray(t, 0)
	prod := testprog.NewPerfProducer(t, testprog.Spec{Ring: events, Size: 16})
	prod.Run(t, 10)
	if c := prod.Counts(t); c.Submitted != 0 || c.Dropped != 10 {
		t.Fatalf("producer counted %+v, want 10 dropped: no CPU has a ring", c)
	}
}
