package ringbuf

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/bpfring/bpfring/internal/ringmap"
)

// The record header (see package ringmap).
const (
	busyBit    = ringmap.BusyBit
	discardBit = ringmap.DiscardBit
	headerSize = ringmap.HeaderSize
)

// ErrCorrupt means the ring's positions or a record header are impossible:
// a record longer than the data the producer published, or a producer
// position more than a ring's size ahead of (or behind) the consumer's. The
// kernel never does this; memory written by something else can.
var ErrCorrupt = errors.New("ringbuf: corrupt ring")

// ring walks the records of one ring buffer laid out as the kernel lays it
// out (kernel/bpf/ringbuf.c): a consumer position, a producer position, and a
// data area of size bytes mapped twice back to back, so that a record that
// wraps past the end still reads as one contiguous slice. It knows nothing
// of mmap or epoll, so it runs just as well over plain memory.
//
// Positions are unsigned long in the kernel, hence uintptr here.
type ring struct {
	cons *uintptr // consumer position: written only by this consumer
	prod *uintptr // producer position: written only by the producer
	data []byte   // the data area, twice: len(data) == 2*size
	mask uintptr  // size-1; size is a power of two
	// commitEvery is how many bytes of records read makes the consumer
	// position be stored within a batch, to free room for the producer
	// before the batch ends.
	commitEvery uintptr
}

// defaultCommitEvery is the default commit interval within a batch: often
// enough that a producer with sampled wake-ups (forced once a threshold of
// bytes waits, commonly a few hundred KiB) sees the ring empty as it is
// read, rarely enough to cost nothing per record (see docs/performance.md).
const defaultCommitEvery = 64 << 10

// newRing builds a ring over the given memory. data must hold the data area
// twice (2*size bytes, size a power of two) and be 8-byte aligned. It stores
// the consumer position once per batch and every 64 KiB or quarter ring,
// whichever is smaller.
func newRing(cons, prod *uintptr, data []byte) ring {
	size := uintptr(len(data) / 2)
	return ring{cons: cons, prod: prod, data: data, mask: size - 1, commitEvery: max(min(size/4, defaultCommitEvery), 1)}
}

func (r *ring) size() uintptr { return r.mask + 1 }

func (r *ring) consumerPos() uintptr { return atomic.LoadUintptr(r.cons) }

func (r *ring) producerPos() uintptr { return atomic.LoadUintptr(r.prod) }

// read hands up to max committed records to fn, in order, and moves the
// consumer position past every record it handed over or skipped. It returns
// the number of records handed to fn; that includes a record for which fn
// returned an error or panicked: such a record counts as consumed and is not
// delivered again. The error from fn comes back unwrapped.
//
// The consumer position is stored once per batch, not once per record: each
// store is a cache line the producer reads, and storing less often is the
// biggest saving available to a consumer. Within a long batch it is also
// stored every commitEvery bytes, so that the producer gets room back. The
// store always happens before read returns, including on error and panic.
func (r *ring) read(fn Callback, max int) (n int, err error) {
	cons := atomic.LoadUintptr(r.cons)
	stored := cons
	defer func() {
		if cons != stored {
			atomic.StoreUintptr(r.cons, cons)
		}
	}()

	for {
		// Pairs with smp_store_release(&rb->producer_pos) in
		// __bpf_ringbuf_reserve: headers up to prod are initialised.
		prod := atomic.LoadUintptr(r.prod)
		if prod-cons > r.size() {
			return n, fmt.Errorf("%w: producer position %d, consumer position %d, size %d",
				ErrCorrupt, prod, cons, r.size())
		}
		for cons != prod {
			if n >= max {
				return n, nil
			}
			// Only records whose callbacks have returned may be freed: the
			// producer may overwrite them at once.
			if cons-stored >= r.commitEvery {
				atomic.StoreUintptr(r.cons, cons)
				stored = cons
			}
			off := cons & r.mask
			// Pairs with the xchg of hdr->len in bpf_ringbuf_commit: once
			// BUSY is clear the payload is complete. A 32-bit atomic load:
			// a torn read of this word corrupted records on arm64.
			hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
			if hdr&busyBit != 0 {
				// Not committed yet, and records become visible strictly in
				// reservation order. Publish our position first: the
				// producer's commit wakes us only if it reads a consumer
				// position equal to this record's (bpf_ringbuf_commit), so
				// either it sees our store and wakes us, or we see its
				// commit when we look again (both sides are sequentially
				// consistent).
				if cons != stored {
					atomic.StoreUintptr(r.cons, cons)
					stored = cons
				}
				hdr = atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
				if hdr&busyBit != 0 {
					return n, nil
				}
			}
			length := uintptr(hdr &^ (busyBit | discardBit))
			total := (length + headerSize + 7) &^ 7
			if total > prod-cons {
				return n, fmt.Errorf("%w: record at position %d of length %d overruns the producer position %d",
					ErrCorrupt, cons, length, prod)
			}
			cons += total
			if hdr&discardBit != 0 {
				continue
			}
			n++
			start := off + headerSize
			// Zero-copy: data points into the mapping. The double mapping
			// makes start+length <= 2*size hold for a wrapping record.
			if err := fn(r.data[start : start+length : start+length]); err != nil {
				return n, err
			}
		}
		// Pairs with smp_load_acquire(&rb->consumer_pos) in
		// bpf_ringbuf_commit and ringbuf_avail_data_sz: frees the space and
		// arms the producer's adaptive wake-up.
		atomic.StoreUintptr(r.cons, cons)
		stored = cons
		// Re-read prod after the store and before the caller sleeps: a
		// record committed before the producer saw our store sent no
		// wake-up, so we must find it now (the lost-wakeup trap).
		if atomic.LoadUintptr(r.prod) == cons {
			return n, nil
		}
	}
}
