// Package ringbuf consumes BPF ring buffers (BPF_MAP_TYPE_RINGBUF) from Go,
// the way libbpf's ring_buffer does in C, with no cgo.
//
// A Manager consumes many independent ring buffers through a single epoll
// instance, each ring with its own Callback. A callback may return an error:
// the read stops and the error comes back to the caller. There are two ways
// to read:
//
//   - Poll waits for a data notification and reads only the rings that were
//     reported: cheap on CPU. Run does the same in a loop until a context is
//     done.
//   - Consume reads every ring now without waiting: the lowest latency, at
//     the price of the CPU spent calling it. ConsumeN bounds the number of
//     records.
//
// Records are handed to callbacks in place, as slices of the ring's memory:
// no copy and no allocation per record. A slice is valid only until its
// callback returns.
//
// Work is bounded per ring per call (WithMaxRecordsPerRing), so a producer
// that never pauses cannot keep one call on its ring forever; the consumer
// position is stored once per batch of records rather than once per record;
// and after a large batch Poll sleeps briefly (WithBatchDelay), so that a
// steady stream costs the producer few kernel wake-ups.
//
// The same Manager also consumes perf buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY,
// the ring buffer's predecessor) added with AddPerf: one ring per CPU, read
// by the same Poll, Consume and Run, with lost-sample accounting.
//
// Errors wrap sentinels that errors.Is recognises: ErrMapType, ErrNotMap,
// ErrCorrupt, os.ErrClosed after Close, os.ErrInvalid for bad arguments, and
// unix.EBADF for a file descriptor that is not open.
package ringbuf
