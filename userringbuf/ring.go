package userringbuf

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/bpfring/bpfring/internal/ringmap"
)

// The record header (package ringmap): the kernel reads only its length
// word for a user ring buffer (__bpf_user_ringbuf_peek).
const (
	busyBit    = ringmap.BusyBit
	discardBit = ringmap.DiscardBit
	headerSize = ringmap.HeaderSize
)

// bigEndian says where the length word sits in the 64-bit header.
var bigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

// header returns the 64-bit header of the record at pos with the given
// length word. The other 32 bits hold a tag derived from pos, so that a
// stale Record can never mistake a later record at the same offset (from a
// later lap around the ring) for its own: the tags of two records at one
// offset differ unless 32 GiB went through the ring between them.
func header(pos uintptr, lenWord uint32) uint64 {
	tag := uint32(pos / 8)
	if bigEndian {
		return uint64(lenWord)<<32 | uint64(tag)
	}
	return uint64(lenWord) | uint64(tag)<<32
}

// ring is the producer's view of a user ring buffer laid out as the kernel
// lays it out (kernel/bpf/ringbuf.c): a consumer position that the BPF side
// advances, a producer position that only we advance, and a data area of
// size bytes mapped twice back to back, so that a record that wraps past the
// end is one contiguous slice.
//
// Positions are unsigned long in the kernel, hence uintptr here; they only
// grow (modulo the word size).
type ring struct {
	cons *uintptr // consumer position: written by the kernel's drain
	prod *uintptr // producer position: written by us under Producer.mu
	data []byte   // the data area, twice: len(data) == 2*size
	mask uintptr  // size-1; size is a power of two
}

// newRing builds a ring over the given memory. data must hold the data area
// twice (2*size bytes, size a power of two) and be 8-byte aligned.
func newRing(cons, prod *uintptr, data []byte) ring {
	return ring{cons: cons, prod: prod, data: data, mask: uintptr(len(data)/2 - 1)}
}

func (r *ring) size() uintptr { return r.mask + 1 }

// maxLen is the largest record length: one record filling the whole ring,
// and no more than a dynptr can describe.
func (r *ring) maxLen() int { return int(min(r.size()-headerSize, maxDynptrSize)) }

func (r *ring) consumerPos() uintptr { return atomic.LoadUintptr(r.cons) }

func (r *ring) producerPos() uintptr { return atomic.LoadUintptr(r.prod) }

// check verifies that the positions are possible: the producer at most a
// ring ahead of the consumer and 8-byte aligned, as __bpf_user_ringbuf_peek
// demands.
func (r *ring) check() error {
	cons, prod := r.consumerPos(), r.producerPos()
	if prod-cons > r.size() || prod%8 != 0 {
		return fmt.Errorf("%w: producer position %d, consumer position %d, size %d",
			ErrCorrupt, prod, cons, r.size())
	}
	return nil
}

// hdr returns the header word of the record at pos.
func (r *ring) hdr(pos uintptr) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.data[pos&r.mask]))
}

// payload returns the n bytes of the record at pos. The double mapping
// keeps a record that wraps past the end of the ring contiguous.
func (r *ring) payload(pos uintptr, n int) []byte {
	start := pos&r.mask + headerSize
	return r.data[start : start+uintptr(n) : start+uintptr(n)]
}

// reserve reserves a record of n bytes (1 <= n <= maxLen) and returns its
// position. The caller holds Producer.mu.
func (r *ring) reserve(n int) (uintptr, error) {
	total := (uintptr(n) + headerSize + 7) &^ 7
	// Pairs with smp_store_release(&rb->consumer_pos) in
	// __bpf_user_ringbuf_sample_release: the space before cons is free.
	cons := atomic.LoadUintptr(r.cons)
	prod := atomic.LoadUintptr(r.prod)
	used := prod - cons
	if used > r.size() {
		return 0, fmt.Errorf("%w: producer position %d, consumer position %d, size %d",
			ErrCorrupt, prod, cons, r.size())
	}
	if total > r.size()-used {
		return 0, fmt.Errorf("%w: record of %d bytes needs %d, %d of %d free",
			ErrNoSpace, n, total, r.size()-used, r.size())
	}
	// The header first, BUSY, then the position that covers it: the kernel
	// reads the length of a record below prod even while it is BUSY, and
	// fails the whole drain with EINVAL if it overruns prod. Go's atomics
	// are sequentially consistent, so the store of prod is the release
	// that pairs with smp_load_acquire(&rb->producer_pos).
	atomic.StoreUint64(r.hdr(prod), header(prod, uint32(n)|busyBit))
	atomic.StoreUintptr(r.prod, prod+total)
	return prod, nil
}

// outstanding reports whether the record of n bytes at pos is reserved and
// neither submitted nor discarded. The caller holds a reference.
func (r *ring) outstanding(pos uintptr, n int) bool {
	// A record the kernel has passed (pos before cons) was committed; one
	// it has not reached is still in the ring, so its header is its own.
	if pos-atomic.LoadUintptr(r.cons) >= r.size() {
		return false
	}
	return atomic.LoadUint64(r.hdr(pos)) == header(pos, uint32(n)|busyBit)
}

// commit clears BUSY in the header of the record of n bytes at pos, setting
// flag (0 or discardBit), if the record is still outstanding, and reports
// whether it did. The compare-and-swap makes commits lock-free and makes a
// second commit of the same record fail, also when two goroutines race with
// copies of one Record. It is the release that pairs with the kernel's
// smp_load_acquire of the header: the payload is complete before the BPF
// program can see the record. The caller holds a reference.
func (r *ring) commit(pos uintptr, n int, flag uint32) bool {
	if pos-atomic.LoadUintptr(r.cons) >= r.size() {
		return false
	}
	return atomic.CompareAndSwapUint64(r.hdr(pos), header(pos, uint32(n)|busyBit), header(pos, uint32(n)|flag))
}

// commitOwned submits the record of n bytes at pos, which only the caller
// knows of: a plain store suffices.
func (r *ring) commitOwned(pos uintptr, n int) {
	atomic.StoreUint64(r.hdr(pos), header(pos, uint32(n)))
}
