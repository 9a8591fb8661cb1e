package userringbuf_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bpfring/bpfring/userringbuf"
)

// TestConcurrentProducers has many goroutines produce at once, through
// Write, WriteWait and Reserve (submitting or discarding), while the BPF side
// drains: every submitted record arrives exactly once and intact, no
// discarded one arrives, and each goroutine's records arrive in its order.
func TestConcurrentProducers(t *testing.T) {
	const (
		goroutines = 8
		perG       = 1500
		size       = 16 << 10
	)
	r := newRig(t, size)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	// A record: goroutine (4 bytes), seq (4 bytes), then the pattern of
	// both. Every 5th seq is discarded.
	discarded := func(seq int) bool { return seq%5 == 4 }
	var wg sync.WaitGroup
	var producing atomic.Int32
	producing.Store(goroutines)
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			defer producing.Add(-1)
			for seq := range perG {
				n := 8 + (g*131+seq*17)%300
				data := payload(n, uint64(g)<<32|uint64(seq))
				binary.LittleEndian.PutUint32(data, uint32(g))
				binary.LittleEndian.PutUint32(data[4:], uint32(seq))
				var err error
				switch {
				case discarded(seq):
					var rec userringbuf.Record
					if rec, err = r.p.ReserveWait(ctx, n); err == nil {
						copy(rec.Bytes(), data)
						err = rec.Discard()
					}
				case seq%3 == 0:
					err = r.p.WriteWait(ctx, data)
				case seq%3 == 1:
					var rec userringbuf.Record
					if rec, err = r.p.ReserveWait(ctx, n); err == nil {
						copy(rec.Bytes(), data)
						err = rec.Submit()
					}
				default:
					// The non-waiting Write, retried: ErrNoSpace is expected.
					for err = r.p.Write(data); errors.Is(err, userringbuf.ErrNoSpace) && ctx.Err() == nil; err = r.p.Write(data) {
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}

	// Drain while they produce, then once more after the last one is done.
	for producing.Load() > 0 && ctx.Err() == nil {
		r.drain(t)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("producer: %v", err)
	}
	r.drain(t)

	next := make([]int, goroutines)
	for i, rec := range r.got {
		if len(rec) < 8 {
			t.Fatalf("record %d has %d bytes", i, len(rec))
		}
		g := int(binary.LittleEndian.Uint32(rec))
		seq := int(binary.LittleEndian.Uint32(rec[4:]))
		if g >= goroutines {
			t.Fatalf("record %d: goroutine %d", i, g)
		}
		want := next[g]
		for discarded(want) {
			want++
		}
		if seq != want {
			t.Fatalf("record %d: goroutine %d seq %d, want %d", i, g, seq, want)
		}
		next[g] = seq + 1
		data := payload(len(rec), uint64(g)<<32|uint64(seq))
		binary.LittleEndian.PutUint32(data, uint32(g))
		binary.LittleEndian.PutUint32(data[4:], uint32(seq))
		if string(data) != string(rec) {
			t.Fatalf("record %d: goroutine %d seq %d: bytes differ", i, g, seq)
		}
	}
	for g, n := range next {
		if n != perG && !(n == perG-1 && discarded(perG-1)) {
			t.Errorf("goroutine %d: last seq %d arrived, want %d", g, n-1, perG-1)
		}
	}
	if cons, prod := positions(t, r.p); cons != prod {
		t.Errorf("consumer position %d, producer position %d after the last drain", cons, prod)
	}
}
