package ringbuf

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Perf record types and sizes (include/uapi/linux/perf_event.h).
const (
	perfRecordLost   = 2 // PERF_RECORD_LOST: {header; u64 id; u64 lost}
	perfRecordSample = 9 // PERF_RECORD_SAMPLE: {header; u32 size; u8 data[size]} with PERF_SAMPLE_RAW alone
	perfHeaderSize   = 8 // struct perf_event_header: u32 type, u16 misc, u16 size
	perfLostSize     = perfHeaderSize + 16
	perfRawOffset    = perfHeaderSize + 4
	maxPerfRecord    = 1<<16 - 1 // header.size is 16 bits
)

// perfRing walks the records of one perf event ring as the kernel lays it
// out (kernel/events/ring_buffer.c): data_head and data_tail in the metadata
// page, and a data area of a power-of-two size mapped once, so that a record
// can wrap past its end. Like ring, it knows nothing of mmap or epoll.
type perfRing struct {
	head   *uint64 // data_head: written only by the kernel
	tail   *uint64 // data_tail: written only by this consumer
	data   []byte  // the data area
	mask   uint64  // len(data)-1
	stitch []byte  // a wrapping record, copied whole: reused, never reallocated
	lost   func(count uint64)
}

// newPerfRing builds a perf ring over the given memory; data's length must be
// a power of two and a multiple of 8, and data 8-byte aligned. lost receives
// the count of every PERF_RECORD_LOST.
func newPerfRing(head, tail *uint64, data []byte, lost func(count uint64)) perfRing {
	return perfRing{
		head:   head,
		tail:   tail,
		data:   data,
		mask:   uint64(len(data) - 1),
		stitch: make([]byte, min(len(data), maxPerfRecord)),
		lost:   lost,
	}
}

// more reports whether records wait to be read.
func (r *perfRing) more() bool { return atomic.LoadUint64(r.head) != atomic.LoadUint64(r.tail) }

// read hands the raw data of up to max samples to fn, in order, passes lost
// counts to r.lost, skips other record types, and moves data_tail past every
// record it handled. Like ring.read, it returns the number of samples handed
// to fn, the one whose callback failed included; fn's error comes back
// unwrapped; data_tail is stored once per batch and always before read
// returns, so a failing sample is never delivered again.
//
// A sample that wraps past the end of the data area is copied whole into a
// buffer reused for every wrapping record; the others are handed over in
// place.
func (r *perfRing) read(fn Callback, max int) (n int, err error) {
	tail := atomic.LoadUint64(r.tail)
	stored := tail
	defer func() {
		if tail != stored {
			atomic.StoreUint64(r.tail, tail)
		}
	}()

	size := r.mask + 1
	for {
		// Pairs with the kernel's smp_store_release of data_head in
		// perf_output_put_handle: records up to head are complete.
		head := atomic.LoadUint64(r.head)
		// The kernel keeps both positions 8-byte aligned; the code below
		// relies on it to read a header without wrapping.
		if head-tail > size || (head|tail)%8 != 0 {
			return n, fmt.Errorf("%w: perf data_head %d, data_tail %d, size %d", ErrCorrupt, head, tail, size)
		}
		for tail != head {
			if n >= max {
				return n, nil
			}
			// Records are 8-byte aligned and the area is a multiple of 8
			// bytes, so a header never wraps.
			off := tail & r.mask
			typ := binary.NativeEndian.Uint32(r.data[off:])
			length := uint64(binary.NativeEndian.Uint16(r.data[off+6:]))
			if length < perfHeaderSize || length%8 != 0 || length > head-tail {
				return n, fmt.Errorf("%w: perf record at %d of size %d (data_head %d)", ErrCorrupt, tail, length, head)
			}
			var rec []byte
			if off+length <= size {
				rec = r.data[off : off+length]
			} else {
				k := copy(r.stitch, r.data[off:])
				copy(r.stitch[k:length], r.data)
				rec = r.stitch[:length]
			}
			tail += length
			switch typ {
			case perfRecordSample:
				raw := uint64(0)
				if length >= perfRawOffset {
					raw = uint64(binary.NativeEndian.Uint32(rec[perfHeaderSize:]))
				}
				if length < perfRawOffset || raw > length-perfRawOffset {
					return n, fmt.Errorf("%w: perf sample at %d of size %d holds %d raw bytes", ErrCorrupt, tail-length, length, raw)
				}
				n++
				end := perfRawOffset + raw
				if err := fn(rec[perfRawOffset:end:end]); err != nil {
					return n, err
				}
			case perfRecordLost:
				if length < perfLostSize {
					return n, fmt.Errorf("%w: perf lost record at %d of size %d", ErrCorrupt, tail-length, length)
				}
				r.lost(binary.NativeEndian.Uint64(rec[16:]))
			}
		}
		// Pairs with the kernel's READ_ONCE of data_tail in
		// perf_output_begin: frees the space read so far.
		atomic.StoreUint64(r.tail, tail)
		stored = tail
		if atomic.LoadUint64(r.head) == tail {
			return n, nil
		}
	}
}
