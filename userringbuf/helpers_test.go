package userringbuf_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/ringbuf"
	"github.com/bpfring/bpfring/userringbuf"
)

// hang is how long a test waits for something that should happen at once
// before it calls it a hang. It is not a performance bound.
const hang = 10 * time.Second

// rig is a user ring buffer with a Producer, a BPF program that drains the
// ring into a kernel ring buffer, and a ringbuf.Manager that reads that one
// back.
type rig struct {
	user *ebpf.Map
	p    *userringbuf.Producer
	d    *testprog.Drainer
	mgr  *ringbuf.Manager
	got  [][]byte // records read back, in order; copies
}

// newRig builds a rig around a user ring buffer of size bytes.
func newRig(t testing.TB, size int) *rig {
	t.Helper()
	r := &rig{user: testprog.NewUserRingBuf(t, size)}
	// One drain takes at most size bytes of records, each the same size in
	// the output ring; the kernel keeps its producer less than a ring ahead.
	out := testprog.NewRingBuf(t, 2*size)
	r.d = testprog.NewDrainer(t, r.user, out)
	var err error
	r.mgr, err = ringbuf.New(out, func(data []byte) error {
		r.got = append(r.got, append([]byte(nil), data...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.mgr.Close() })
	r.p = newProducer(t, r.user)
	t.Cleanup(func() {
		if c := r.d.Counts(t); c.CallbackFailed != 0 || c.DrainFailed != 0 {
			t.Errorf("drain program failures: %+v", c)
		}
	})
	return r
}

func newProducer(t testing.TB, m userringbuf.Map) *userringbuf.Producer {
	t.Helper()
	p, err := userringbuf.New(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// drain runs the drain program once, reads everything it copied and
// returns those records (also appended to r.got). It checks that the program
// copied exactly the records it reported drained.
func (r *rig) drain(t testing.TB) [][]byte {
	t.Helper()
	before := len(r.got)
	n := r.d.Drain(t)
	if _, err := r.mgr.Consume(); err != nil {
		t.Fatal(err)
	}
	if got := len(r.got) - before; got != n {
		t.Fatalf("drain reported %d samples, %d came out", n, got)
	}
	return r.got[before:]
}

// positions returns the producer's consumer and producer positions.
func positions(t testing.TB, p *userringbuf.Producer) (cons, prod uint64) {
	t.Helper()
	cons, err := p.ConsumerPos()
	if err != nil {
		t.Fatal(err)
	}
	prod, err = p.ProducerPos()
	if err != nil {
		t.Fatal(err)
	}
	return cons, prod
}

// pattern fills b with bytes determined by key and the offset, different
// for every key and every 8-byte word.
func pattern(b []byte, key uint64) {
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		x := key + uint64(i)*0x9E3779B97F4A7C15
		x ^= x >> 31
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 29
		binary.LittleEndian.PutUint64(w[:], x)
		copy(b[i:], w[:])
	}
}

// payload returns a record of n bytes for key.
func payload(n int, key uint64) []byte {
	b := make([]byte, n)
	pattern(b, key)
	return b
}

// total is the space a record of n bytes takes in the ring.
func total(n int) int { return (n + 8 + 7) &^ 7 }
