package ringbuf

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func pattern(seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq*7 + i)
	}
	return b
}

func collect(got *[][]byte) Callback {
	return func(data []byte) error {
		*got = append(*got, bytes.Clone(data))
		return nil
	}
}

func TestSimRingWrapsAndSizes(t *testing.T) {
	const size = 4096
	s := newSimRing(size)
	seq := 0
	// Every size from 1 to 200 bytes, several times around the ring, read
	// in small batches so records straddle the end of the data area.
	for round := 0; round < 5; round++ {
		var want [][]byte
		for n := 1; n <= 200; n++ {
			p := pattern(seq, n)
			seq++
			if !s.output(p) {
				break
			}
			want = append(want, p)
		}
		var got [][]byte
		for len(got) < len(want) {
			n, err := s.read(collect(&got), 7)
			if err != nil || n == 0 {
				t.Fatalf("read: n=%d err=%v after %d of %d records", n, err, len(got), len(want))
			}
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("round %d record %d: got %x, want %x", round, i, got[i], want[i])
			}
		}
		if c, p := s.consumerPos(), s.producerPos(); c != p {
			t.Fatalf("consumer position %d, producer position %d after draining", c, p)
		}
	}
}

func TestSimRingBusyDiscardAndErrors(t *testing.T) {
	s := newSimRing(4096)
	a, _ := s.reserve(10)
	b, _ := s.reserve(20)
	c, _ := s.reserve(30)
	s.commit(b, pattern(2, 20), true) // discarded, behind a BUSY record
	s.commit(c, pattern(3, 30), false)

	var got [][]byte
	if n, err := s.read(collect(&got), 100); n != 0 || err != nil {
		t.Fatalf("read with first record BUSY: n=%d err=%v, want 0, nil", n, err)
	}
	if s.consumerPos() != 0 {
		t.Fatalf("consumer moved past a BUSY record: %d", s.consumerPos())
	}
	s.commit(a, pattern(1, 10), false)

	errStop := errors.New("stop")
	calls := 0
	n, err := s.read(func(data []byte) error {
		calls++
		return errStop
	}, 100)
	if n != 1 || !errors.Is(err, errStop) || calls != 1 {
		t.Fatalf("failing callback: n=%d calls=%d err=%v", n, calls, err)
	}
	// The failing record counts as consumed; the discarded one is skipped.
	n, err = s.read(collect(&got), 100)
	if n != 1 || err != nil || len(got) != 1 || !bytes.Equal(got[0], pattern(3, 30)) {
		t.Fatalf("after error: n=%d err=%v got=%x", n, err, got)
	}
	if s.consumerPos() != s.producerPos() {
		t.Fatalf("positions differ after draining: %d, %d", s.consumerPos(), s.producerPos())
	}
}

func TestSimRingPanicCommitsPosition(t *testing.T) {
	s := newSimRing(4096)
	s.output([]byte("boom"))
	s.output([]byte("next"))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("callback panic did not reach the caller")
			}
		}()
		s.read(func([]byte) error { panic("callback") }, 10)
	}()
	var got [][]byte
	if n, err := s.read(collect(&got), 10); n != 1 || err != nil || string(got[0]) != "next" {
		t.Fatalf("after panic: n=%d err=%v got=%q", n, err, got)
	}
}

func TestSimRingCorrupt(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *simRing)
	}{
		{"length beyond producer", func(s *simRing) {
			s.output(pattern(0, 16))
			s.setHeader(0, 64)
		}},
		{"length beyond ring", func(s *simRing) {
			s.output(pattern(0, 16))
			s.setHeader(0, 1<<29)
		}},
		{"producer too far ahead", func(s *simRing) {
			*s.ring.prod = 2 * 4096
		}},
		{"producer behind consumer", func(s *simRing) {
			*s.ring.cons = 64
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSimRing(4096)
			tt.setup(s)
			n, err := s.read(func([]byte) error { return nil }, 10)
			if n != 0 || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got n=%d err=%v, want ErrCorrupt", n, err)
			}
		})
	}
}

func TestSimRingReadAllocs(t *testing.T) {
	s := newSimRing(1 << 16)
	var sum int
	fn := func(data []byte) error { sum += len(data); return nil }
	payload := pattern(0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		for range 100 {
			s.output(payload)
		}
		if n, err := s.read(fn, 1000); n != 100 || err != nil {
			panic(fmt.Sprint(n, err))
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of 100 records, want 0", allocs)
	}
}

// TestSimRingCommitEvery checks that a read frees only records whose
// callbacks have returned, and stores as often as commitEvery asks.
func TestSimRingCommitEvery(t *testing.T) {
	for _, every := range []uintptr{1, 64, 4096} {
		t.Run(fmt.Sprint(every), func(t *testing.T) {
			s := newSimRing(4096)
			s.commitEvery = every
			var starts []uintptr
			for s.output(pattern(0, 24)) { // 32 bytes a record, until full
				starts = append(starts, s.prod-32)
			}
			i := 0
			n, err := s.read(func([]byte) error {
				cons := s.consumerPos()
				if cons > starts[i] {
					return fmt.Errorf("record at %d handed over with the consumer position at %d: freed too early", starts[i], cons)
				}
				if lag := starts[i] - cons; lag >= every {
					return fmt.Errorf("record at %d: consumer position %d lags by %d, more than commitEvery %d", starts[i], cons, lag, every)
				}
				i++
				return nil
			}, 1000)
			if err != nil || n != len(starts) || s.consumerPos() != s.prod {
				t.Fatalf("read: %d of %d, %v; consumer position %d, producer %d", n, len(starts), err, s.consumerPos(), s.prod)
			}
		})
	}
}
