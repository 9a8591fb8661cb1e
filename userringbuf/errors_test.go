package userringbuf_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/userringbuf"
)

func TestNewBadMap(t *testing.T) {
	page := os.Getpagesize()
	array, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer array.Close()
	closed := testprog.NewUserRingBuf(t, page)
	// A high number, so that no fd the test opens later reuses it.
	closedFD, err := unix.FcntlInt(uintptr(closed.FD()), unix.F_DUPFD_CLOEXEC, 900)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closedFD)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()

	tests := []struct {
		name string
		m    userringbuf.Map
		want error
	}{
		{"nil", nil, os.ErrInvalid},
		{"ring buffer", testprog.NewRingBuf(t, page), userringbuf.ErrMapType},
		{"array", array, userringbuf.ErrMapType},
		{"fd -1", userringbuf.RawFD(-1), unix.EBADF},
		{"closed fd", userringbuf.RawFD(closedFD), unix.EBADF},
		{"pipe", userringbuf.RawFD(pr.Fd()), userringbuf.ErrNotMap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := userringbuf.New(tt.m)
			if !errors.Is(err, tt.want) {
				if p != nil {
					p.Close()
				}
				t.Fatalf("New: %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestBadSizes(t *testing.T) {
	p := newProducer(t, testprog.NewUserRingBuf(t, os.Getpagesize()))
	max := p.MaxRecordSize()
	tests := []struct {
		n    int
		want error
	}{
		{0, os.ErrInvalid},
		{-1, os.ErrInvalid},
		{max + 1, userringbuf.ErrTooLarge},
		{1 << 40, userringbuf.ErrTooLarge},
	}
	for _, tt := range tests {
		if _, err := p.Reserve(tt.n); !errors.Is(err, tt.want) {
			t.Errorf("Reserve(%d): %v, want %v", tt.n, err, tt.want)
		}
		if _, err := p.ReserveWait(context.Background(), tt.n); !errors.Is(err, tt.want) {
			t.Errorf("ReserveWait(%d): %v, want %v", tt.n, err, tt.want)
		}
	}
	if err := p.Write(nil); !errors.Is(err, os.ErrInvalid) {
		t.Errorf("Write(nil): %v, want os.ErrInvalid", err)
	}
	// None of them took any space.
	if cons, prod := positions(t, p); cons != prod {
		t.Errorf("failed reservations moved the producer position: %d, consumer %d", prod, cons)
	}
}

// TestRecordMisuse uses records after Submit and Discard, a zero Record, and
// a stale record whose space the ring has reused for a new record of the
// same size: every use fails cleanly and the new record is left alone.
func TestRecordMisuse(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	var zero userringbuf.Record
	if err := zero.Submit(); !errors.Is(err, os.ErrInvalid) {
		t.Errorf("zero Record Submit: %v, want os.ErrInvalid", err)
	}
	if b := zero.Bytes(); b != nil {
		t.Errorf("zero Record Bytes: %d bytes, want nil", len(b))
	}

	n := size/4 - 8 // four records fill the ring exactly
	stale, err := r.p.Reserve(n)
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Submit(); err != nil {
		t.Fatal(err)
	}
	for name, use := range map[string]func() error{
		"Submit":  stale.Submit,
		"Discard": stale.Discard,
	} {
		if err := use(); !errors.Is(err, userringbuf.ErrCommitted) {
			t.Errorf("%s after Submit: %v, want ErrCommitted", name, err)
		}
	}
	if b := stale.Bytes(); b != nil {
		t.Errorf("Bytes after Submit: %d bytes, want nil", len(b))
	}
	r.drain(t)
	for range 3 {
		if err := r.p.Write(payload(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	r.drain(t)
	// The next record lands where the stale one was, with the same size.
	fresh, err := r.p.Reserve(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, prod := positions(t, r.p); prod != uint64(size+size/4) {
		t.Fatalf("producer position %d, want %d: the test's layout is off", prod, size+size/4)
	}
	if err := stale.Submit(); !errors.Is(err, userringbuf.ErrCommitted) {
		t.Errorf("stale Submit over a reused slot: %v, want ErrCommitted", err)
	}
	if err := stale.Discard(); !errors.Is(err, userringbuf.ErrCommitted) {
		t.Errorf("stale Discard over a reused slot: %v, want ErrCommitted", err)
	}
	if b := stale.Bytes(); b != nil {
		t.Errorf("stale Bytes over a reused slot: %d bytes, want nil", len(b))
	}
	// The fresh record is still reserved: nothing drains until it is submitted.
	if got := r.drain(t); len(got) != 0 {
		t.Fatalf("drained %d records while the fresh one is reserved", len(got))
	}
	data := payload(n, 2)
	copy(fresh.Bytes(), data)
	if err := fresh.Submit(); err != nil {
		t.Fatal(err)
	}
	if got := r.drain(t); len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("the fresh record did not come out intact (%d records)", len(got))
	}
}

// TestClose checks use after Close, and that a record reserved before Close
// can still be filled and submitted, and reaches the BPF program.
func TestClose(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	rec, err := r.p.Reserve(100)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.p.Reserve(8); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Reserve after Close: %v, want os.ErrClosed", err)
	}
	if _, err := r.p.ReserveWait(context.Background(), 8); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReserveWait after Close: %v, want os.ErrClosed", err)
	}
	if err := r.p.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if err := r.p.WriteWait(context.Background(), []byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteWait after Close: %v, want os.ErrClosed", err)
	}
	if _, err := r.p.ConsumerPos(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ConsumerPos after Close: %v, want os.ErrClosed", err)
	}

	// The outstanding record keeps the ring mapped.
	data := payload(100, 3)
	b := rec.Bytes()
	if len(b) != 100 {
		t.Fatalf("Bytes of a record reserved before Close: %d bytes", len(b))
	}
	copy(b, data)
	if err := rec.Submit(); err != nil {
		t.Fatalf("Submit after Close: %v", err)
	}
	// Now it is released; the record is done either way.
	if err := rec.Submit(); !errors.Is(err, userringbuf.ErrCommitted) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Submit after the release: %v, want ErrCommitted and os.ErrClosed", err)
	}
	if got := r.drain(t); len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("the record submitted after Close did not come out intact (%d records)", len(got))
	}
}

// TestCallerClosesMap: the Producer keeps its own fd.
func TestCallerClosesMap(t *testing.T) {
	size := os.Getpagesize()
	r := newRig(t, size)
	fd, err := unix.FcntlInt(uintptr(r.user.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := userringbuf.New(userringbuf.RawFD(fd))
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r.p.Close() // one producer per map
	data := payload(33, 4)
	if err := p.Write(data); err != nil {
		t.Fatal(err)
	}
	if got := r.drain(t); len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("the record did not come out intact (%d records)", len(got))
	}
}

// TestZeroCopyAllocs: Reserve, Bytes, Submit and Write allocate nothing.
func TestZeroCopyAllocs(t *testing.T) {
	r := newRig(t, testprog.MaxDrainSize)
	data := payload(64, 5)
	for _, tt := range []struct {
		name string
		f    func() error
	}{
		{"Reserve+Bytes+Submit", func() error {
			rec, err := r.p.Reserve(64)
			if err != nil {
				return err
			}
			copy(rec.Bytes(), data)
			return rec.Submit()
		}},
		{"Write", func() error { return r.p.Write(data) }},
	} {
		var err error
		allocs := testing.AllocsPerRun(50, func() {
			if err == nil {
				err = tt.f()
			}
		})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if allocs != 0 {
			t.Errorf("%s: %v allocations per record, want 0", tt.name, allocs)
		}
		got := r.drain(t)
		if len(got) != 51 {
			t.Fatalf("%s: drained %d records, want 51", tt.name, len(got))
		}
		for i, rec := range got {
			if !bytes.Equal(rec, data) {
				t.Fatalf("%s: record %d differs", tt.name, i)
			}
		}
	}
}

// TestRacingCommits: goroutines commit copies of one record at once; exactly
// one wins, and the record arrives once or not at all.
func TestRacingCommits(t *testing.T) {
	r := newRig(t, os.Getpagesize())
	for round := range 20 {
		rec, err := r.p.Reserve(24)
		if err != nil {
			t.Fatal(err)
		}
		data := payload(24, uint64(round))
		copy(rec.Bytes(), data)
		const racers = 4
		errs := make(chan error, racers)
		for i := range racers {
			go func() {
				if i%2 == 0 {
					errs <- rec.Submit()
				} else {
					errs <- rec.Discard()
				}
			}()
		}
		wins := 0
		for range racers {
			err := <-errs
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, userringbuf.ErrCommitted):
				t.Fatalf("racing commit: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d commits succeeded, want 1", round, wins)
		}
		if got := r.drain(t); len(got) > 1 || len(got) == 1 && !bytes.Equal(got[0], data) {
			t.Fatalf("round %d: %d records came out", round, len(got))
		}
	}
}
