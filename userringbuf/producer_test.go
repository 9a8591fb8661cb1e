package userringbuf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/userringbuf"
)

// TestRoundTrip writes records of many sizes, up to the largest the ring
// holds, through Write and through Reserve and Submit, and checks every byte
// that the BPF program drains and copies back, in order. The sizes make
// records wrap past the end of the ring.
func TestRoundTrip(t *testing.T) {
	const size = testprog.MaxDrainSize
	r := newRig(t, size)
	if got, want := r.p.MaxRecordSize(), size-8; got != want {
		t.Fatalf("MaxRecordSize = %d, want %d", got, want)
	}
	if got := r.p.Size(); got != size {
		t.Fatalf("Size = %d, want %d", got, size)
	}
	sizes := []int{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 100, 255, 256, 257,
		1000, 4088, 4089, 4096, 10000, size/2 - 8, size / 2, size - 16, size - 9, size - 8}
	var want [][]byte
	wrapped := false
	key := uint64(0)
	// check drains and compares what came out with what went in.
	check := func() {
		t.Helper()
		r.drain(t)
		if len(r.got) != len(want) {
			t.Fatalf("%d records came out, want %d", len(r.got), len(want))
		}
		for i := range want {
			if !bytes.Equal(r.got[i], want[i]) {
				t.Fatalf("record %d (%d bytes): got %d bytes %x..., want %x...",
					i, len(want[i]), len(r.got[i]), head(r.got[i]), head(want[i]))
			}
		}
	}
	for _, n := range sizes {
		for k := range 3 {
			key++
			data := payload(n, key)
			for {
				_, prod := positions(t, r.p)
				var err error
				if k%2 == 0 {
					err = r.p.Write(data)
				} else {
					err = reserveCopySubmit(r.p, data)
				}
				if errors.Is(err, userringbuf.ErrNoSpace) {
					check()
					continue
				}
				if err != nil {
					t.Fatalf("record %d of %d bytes: %v", key, n, err)
				}
				if int(prod%size)+total(n) > size {
					wrapped = true
				}
				break
			}
			want = append(want, data)
		}
	}
	check()
	if !wrapped {
		t.Error("no record wrapped past the end of the ring: the sizes test less than they should")
	}
	if cons, prod := positions(t, r.p); cons != prod {
		t.Errorf("after the last drain: consumer position %d, producer position %d", cons, prod)
	}
}

func head(b []byte) []byte { return b[:min(len(b), 16)] }

func reserveCopySubmit(p *userringbuf.Producer, data []byte) error {
	rec, err := p.Reserve(len(data))
	if err != nil {
		return err
	}
	if rec.Len() != len(data) {
		return fmt.Errorf("Len = %d, want %d", rec.Len(), len(data))
	}
	b := rec.Bytes()
	if len(b) != len(data) {
		return fmt.Errorf("Bytes has %d bytes, want %d", len(b), len(data))
	}
	copy(b, data)
	return rec.Submit()
}

// TestDiscard checks that discarded records are never drained, that they
// free their space, and that a record submitted after a discarded one still
// arrives.
func TestDiscard(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	var recs []userringbuf.Record
	for i := range 5 {
		rec, err := r.p.Reserve(100 + i)
		if err != nil {
			t.Fatal(err)
		}
		pattern(rec.Bytes(), uint64(i))
		recs = append(recs, rec)
	}
	// Commit out of order: 4 and 3 wait behind the reserved 0.
	for _, i := range []int{4, 3, 1, 0, 2} {
		var err error
		if i%2 == 1 {
			err = recs[i].Discard()
		} else {
			err = recs[i].Submit()
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	got := r.drain(t)
	if len(got) != 3 {
		t.Fatalf("drained %d records, want 3 (0, 2, 4)", len(got))
	}
	for j, i := range []int{0, 2, 4} {
		if !bytes.Equal(got[j], payload(100+i, uint64(i))) {
			t.Errorf("record %d came out as %x...", i, head(got[j]))
		}
	}

	// A ring full of discarded records: nothing comes out, all space comes back.
	for {
		rec, err := r.p.Reserve(64)
		if errors.Is(err, userringbuf.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Discard(); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.drain(t); len(got) != 0 {
		t.Fatalf("drained %d discarded records", len(got))
	}
	if cons, prod := positions(t, r.p); cons != prod {
		t.Fatalf("space not reclaimed: consumer position %d, producer position %d", cons, prod)
	}
	big := payload(r.p.MaxRecordSize(), 99)
	if err := r.p.Write(big); err != nil {
		t.Fatalf("the largest record after reclaiming: %v", err)
	}
	if got := r.drain(t); len(got) != 1 || !bytes.Equal(got[0], big) {
		t.Fatalf("the largest record did not come out intact (%d records)", len(got))
	}
}

// fill reserves and submits records of n bytes until the ring is full and
// returns how many fit; the error that stopped it must wrap ErrNoSpace.
func fill(t *testing.T, p *userringbuf.Producer, n int) int {
	t.Helper()
	for i := 0; ; i++ {
		err := p.Write(payload(n, uint64(i)))
		if errors.Is(err, userringbuf.ErrNoSpace) {
			return i
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestFull fills the ring: Reserve fails with ErrNoSpace, ReserveWait waits
// until the BPF side drains and then succeeds.
func TestFull(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	const n = 120
	if got, want := fill(t, r.p, n), size/total(n); got != want {
		t.Fatalf("%d records of %d bytes fit in %d bytes, want %d", got, n, size, want)
	}
	if _, err := r.p.Reserve(1); !errors.Is(err, userringbuf.ErrNoSpace) {
		t.Fatalf("Reserve(1) on a full ring: %v, want ErrNoSpace", err)
	}

	type result struct {
		rec userringbuf.Record
		err error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	go func() {
		rec, err := r.p.ReserveWait(ctx, r.p.MaxRecordSize())
		done <- result{rec, err}
	}()
	// The ring is still full, so the waiter cannot have succeeded. (If this
	// runs before the waiter parks, the check proves less, never fails.)
	select {
	case res := <-done:
		t.Fatalf("ReserveWait returned on a full ring: %v", res.err)
	default:
	}
	if got := r.drain(t); len(got) != size/total(n) {
		t.Fatalf("drained %d records, want %d", len(got), size/total(n))
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("ReserveWait after the drain: %v", res.err)
	}
	data := payload(res.rec.Len(), 7)
	copy(res.rec.Bytes(), data)
	if err := res.rec.Submit(); err != nil {
		t.Fatal(err)
	}
	if got := r.drain(t); len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("the record reserved by ReserveWait did not come out intact (%d records)", len(got))
	}
}

// TestReserveWaitNeedsMoreSpace: a waiter whose record does not fit in the
// space one drain frees keeps waiting, and succeeds once enough is free.
func TestReserveWaitNeedsMoreSpace(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	// Half the ring: one reserved record that holds up the drain, and
	// records behind it.
	blocker, err := r.p.Reserve(size/2 - 8)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, r.p, 8)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		rec, err := r.p.ReserveWait(ctx, size/2)
		if err == nil {
			err = rec.Discard()
		}
		done <- err
	}()
	// Drains find the blocker still reserved: nothing frees, the waiter waits.
	for range 3 {
		if got := r.drain(t); len(got) != 0 {
			t.Fatalf("drained %d records behind a reserved one", len(got))
		}
	}
	select {
	case err := <-done:
		t.Fatalf("ReserveWait returned while the ring was full: %v", err)
	default:
	}
	if err := blocker.Submit(); err != nil {
		t.Fatal(err)
	}
	r.drain(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReserveWaitEnds checks that a waiting reserve returns promptly when
// its context is cancelled or expires, or the Producer closes.
func TestReserveWaitEnds(t *testing.T) {
	size := os.Getpagesize()
	tests := []struct {
		name string
		end  func(cancel context.CancelFunc, p *userringbuf.Producer)
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func(cancel context.CancelFunc, _ *userringbuf.Producer) { cancel() },
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			context.Canceled},
		{"deadline", func(context.CancelFunc, *userringbuf.Producer) {},
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			context.DeadlineExceeded},
		{"close", func(_ context.CancelFunc, p *userringbuf.Producer) { p.Close() },
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			os.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProducer(t, testprog.NewUserRingBuf(t, size))
			fill(t, p, 50)
			ctx, cancel := tt.ctx()
			defer cancel()
			// Several waiters: one in the poller, the others queued.
			const waiters = 3
			errs := make(chan error, waiters)
			for range waiters {
				go func() {
					_, err := p.ReserveWait(ctx, 8)
					errs <- err
				}()
			}
			tt.end(cancel, p)
			timeout := time.After(hang)
			for range waiters {
				select {
				case err := <-errs:
					if !errors.Is(err, tt.want) {
						t.Errorf("ReserveWait: %v, want %v", err, tt.want)
					}
				case <-timeout:
					t.Fatal("ReserveWait hangs")
				}
			}
		})
	}
}
