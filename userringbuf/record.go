package userringbuf

import (
	"fmt"
	"os"
)

// Record is a record reserved by Producer.Reserve or ReserveWait: fill
// Bytes, then Submit or Discard it, exactly once. It is a small value,
// passed and copied without allocation.
//
// A Record checks its state: after Submit or Discard, Bytes returns nil and
// Submit and Discard fail with an error wrapping ErrCommitted (even if the
// ring has since reused the record's space for other records, and even when
// goroutines race with copies of one Record: only one commit wins). A slice
// obtained from Bytes earlier cannot be revoked, though: it must not be used
// after Submit or Discard.
type Record struct {
	p   *Producer
	pos uintptr // producer position of the header
	n   int
}

// Len returns the record's length in bytes, as reserved.
func (r Record) Len() int { return r.n }

// Bytes returns the record's payload, in place in the ring, for the caller
// to fill: Len bytes, initially holding whatever the ring held there. It
// returns nil for a record that was submitted or discarded, and for the zero
// Record.
func (r Record) Bytes() []byte {
	p := r.p
	if p == nil || !p.acquire() {
		return nil
	}
	defer p.exit(1)
	if !p.outstanding(r.pos, r.n) {
		return nil
	}
	return p.payload(r.pos, r.n)
}

// Submit hands the record to the kernel: the BPF program drains it once
// every record reserved before it is submitted or discarded too. It works
// also after the Producer's Close.
func (r Record) Submit() error { return r.commit(0, "submit") }

// Discard drops the record: the kernel skips it and its space is freed
// when the BPF side drains past it. It works also after Close.
func (r Record) Discard() error { return r.commit(discardBit, "discard") }

func (r Record) commit(flag uint32, op string) error {
	p := r.p
	if p == nil {
		return fmt.Errorf("userringbuf: %s of a zero Record: %w", op, os.ErrInvalid)
	}
	if !p.acquire() {
		// The memory is released only when no record is outstanding.
		return fmt.Errorf("%w (%s at position %d after the producer was closed): %w",
			ErrCommitted, op, r.pos, os.ErrClosed)
	}
	if !p.ring.commit(r.pos, r.n, flag) {
		p.exit(1)
		return fmt.Errorf("%w (%s of the record of %d bytes at position %d)", ErrCommitted, op, r.n, r.pos)
	}
	p.exit(2) // ours and the one the record held
	return nil
}
