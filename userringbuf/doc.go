// Package userringbuf produces records into a BPF user ring buffer
// (BPF_MAP_TYPE_USER_RINGBUF, Linux 6.1) from Go, with no cgo: user space
// writes records and a BPF program drains them with bpf_user_ringbuf_drain.
// It is the counterpart of libbpf's user_ring_buffer, but a Producer is safe
// to share between goroutines.
//
// There are two ways to produce a record:
//
//   - Write copies a byte slice into a new record and submits it.
//   - Reserve returns a Record whose Bytes the caller fills in place (zero
//     copy, no allocation), then Submit hands it to the kernel, or Discard
//     drops it.
//
// Reserve and Write fail at once with an error wrapping ErrNoSpace when the
// ring is full; ReserveWait and WriteWait wait for the BPF side to free space
// instead, until their context is done or the Producer is closed.
//
// # Order and concurrency
//
// Every method is safe for concurrent use. Reservations are serialized by a
// mutex, which hands out ring positions in order; Submit and Discard take no
// lock (one compare-and-swap on the record's header). The kernel reads
// records strictly in position order and stops at the first record that is
// still reserved, so records become visible to the BPF program in
// reservation order, whatever the order of their Submit calls. The price: a
// record that is reserved and never submitted or discarded holds up every
// record after it.
//
// # Errors
//
// Errors wrap sentinels that errors.Is recognises: ErrMapType, ErrNotMap and
// unix.EBADF from New; ErrNoSpace, ErrTooLarge and os.ErrInvalid from a
// reservation; ErrCommitted for a Record used after Submit or Discard;
// os.ErrClosed after Close; context.Canceled and context.DeadlineExceeded
// from the waiting calls; ErrCorrupt when the ring's positions are
// impossible (memory written by something else).
package userringbuf
