package userringbuf

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"github.com/bpfring/bpfring/internal/bpf"
	"github.com/bpfring/bpfring/internal/ringmap"
)

// Map is a BPF map: anything with an FD method, such as *ebpf.Map from
// github.com/cilium/ebpf. Use RawFD for a plain file descriptor.
type Map interface {
	FD() int
}

// RawFD is a Map for a plain file descriptor.
type RawFD int

// FD returns the file descriptor.
func (fd RawFD) FD() int { return int(fd) }

var (
	// ErrMapType means a map is not a BPF_MAP_TYPE_USER_RINGBUF map.
	ErrMapType = errors.New("userringbuf: wrong map type")
	// ErrNotMap means a file descriptor is open but is not a BPF map.
	ErrNotMap = bpf.ErrNotMap
	// ErrNoSpace means the ring has no room for the record now; the BPF
	// program has to drain it first.
	ErrNoSpace = errors.New("userringbuf: no space in the ring")
	// ErrTooLarge means a record is larger than the ring can ever hold
	// (see Producer.MaxRecordSize).
	ErrTooLarge = errors.New("userringbuf: record too large for the ring")
	// ErrCommitted means a Record was used after Submit or Discard.
	ErrCommitted = errors.New("userringbuf: record already submitted or discarded")
	// ErrCorrupt means the ring's positions are impossible: something other
	// than this Producer wrote to them.
	ErrCorrupt = errors.New("userringbuf: corrupt ring")

	errClosed = fmt.Errorf("userringbuf: producer is closed: %w", os.ErrClosed)
)

// maxDynptrSize is the largest sample the kernel hands to a BPF program: a
// bpf_dynptr holds a 24-bit size (DYNPTR_MAX_SIZE); __bpf_user_ringbuf_peek
// rejects a larger sample with E2BIG and the ring stalls.
const maxDynptrSize = 1<<24 - 1

// dead is the reference count of a Producer whose memory is released; far
// enough below zero that no number of racing acquires brings it back to 0.
const dead = math.MinInt64 / 2

// Producer writes records into one user ring buffer map. Create it with New;
// see the package documentation for the order and concurrency guarantees.
//
// Only one producer may write to a map at a time: two Producers (in one
// process or two) on the same map would hand out the same positions.
type Producer struct {
	ring

	mu sync.Mutex // serializes reservations: only its holder moves the producer position

	// The map, mapped: the consumer page read-only, the producer page and
	// the data area writable (ringbuf_map_mmap_user).
	mapping *ringmap.Mapping

	// refs counts calls in progress and outstanding records; the memory is
	// released when it drops to 0 after Close (then it becomes dead), so
	// that no record is ever unmapped while a goroutine fills it.
	refs   atomic.Int64
	closed atomic.Bool
	done   chan struct{} // closed by Close

	waiter waiter // the blocking reserve's epoll, see wait.go
}

// New creates a Producer for m, which must be a BPF_MAP_TYPE_USER_RINGBUF
// map. The Producer does not take ownership of the map: it keeps a
// duplicate of the fd, so the caller may close m at any time and must still
// close it itself.
func New(m Map) (*Producer, error) {
	if m == nil {
		return nil, fmt.Errorf("userringbuf: nil map: %w", os.ErrInvalid)
	}
	mapping, err := ringmap.Open(m.FD(), bpf.UserRingBuf, ErrMapType, "userringbuf")
	if err != nil {
		return nil, err
	}
	p := &Producer{mapping: mapping, done: make(chan struct{})}
	p.ring = newRing(mapping.Cons, mapping.Prod, mapping.Data)
	// A pinned map keeps its positions from an earlier producer: check them.
	if err := p.check(); err != nil {
		p.free()
		return nil, err
	}
	if err := p.waiter.init(mapping.FD); err != nil {
		p.free()
		return nil, fmt.Errorf("userringbuf: %w", err)
	}
	return p, nil
}

// Size returns the size of the ring's data area in bytes: the map's
// max_entries.
func (p *Producer) Size() int { return int(p.size()) }

// MaxRecordSize returns the largest record the ring can hold: the ring's
// size minus the 8-byte record header, and at most 16 MiB - 1 (the largest
// sample the kernel hands to a BPF program).
func (p *Producer) MaxRecordSize() int { return p.maxLen() }

// Reserve reserves a record of n bytes and returns it for the caller to
// fill through its Bytes, then Submit or Discard. It does not wait: when the
// ring has no room now it fails with an error wrapping ErrNoSpace. n must be
// between 1 and MaxRecordSize (ErrTooLarge above).
//
// Every reserved record must be submitted or discarded: the BPF program
// reads no record past one that is still reserved, and Close keeps the
// ring mapped until all are done.
func (p *Producer) Reserve(n int) (Record, error) {
	if err := p.checkLen(n); err != nil {
		return Record{}, err
	}
	if err := p.enter(); err != nil {
		return Record{}, err
	}
	p.mu.Lock()
	pos, err := p.reserve(n)
	p.mu.Unlock()
	if err != nil {
		p.exit(1)
		return Record{}, err
	}
	return Record{p: p, pos: pos, n: n}, nil // the record now holds the reference
}

// ReserveWait is Reserve, waiting for room when the ring is full until ctx
// is done (it returns ctx.Err(), wrapped) or the Producer is closed (an
// error wrapping os.ErrClosed). The wait blocks no OS thread: it parks in
// Go's network poller on the map's writability, which the kernel signals
// when a bpf_user_ringbuf_drain call has consumed records (unless the
// program passes BPF_RB_NO_WAKEUP: then only ctx ends the wait).
//
// Waiting calls are served in the order they started waiting; a Reserve
// from another goroutine may take the space first.
func (p *Producer) ReserveWait(ctx context.Context, n int) (Record, error) {
	if err := p.checkLen(n); err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, fmt.Errorf("userringbuf: reserve %d bytes: %w", n, err)
	}
	if err := p.enter(); err != nil {
		return Record{}, err
	}
	rec, err := p.reserveWait(ctx, n)
	if err != nil {
		p.exit(1)
		return Record{}, err
	}
	return rec, nil
}

// Write copies data into a new record and submits it. Like Reserve it does
// not wait: it fails with an error wrapping ErrNoSpace when the ring is full.
func (p *Producer) Write(data []byte) error {
	rec, err := p.Reserve(len(data))
	if err != nil {
		return err
	}
	p.fill(rec, data)
	return nil
}

// WriteWait is Write, waiting for room like ReserveWait.
func (p *Producer) WriteWait(ctx context.Context, data []byte) error {
	rec, err := p.ReserveWait(ctx, len(data))
	if err != nil {
		return err
	}
	p.fill(rec, data)
	return nil
}

// fill copies data into rec, which the caller just reserved and nobody else
// has seen, and submits it.
func (p *Producer) fill(rec Record, data []byte) {
	copy(p.payload(rec.pos, rec.n), data)
	p.commitOwned(rec.pos, rec.n)
	p.exit(1)
}

// ConsumerPos returns the ring's consumer position: the count of bytes the
// BPF side has drained (or skipped) since the map was created.
func (p *Producer) ConsumerPos() (uint64, error) {
	if err := p.enter(); err != nil {
		return 0, err
	}
	defer p.exit(1)
	return uint64(p.consumerPos()), nil
}

// ProducerPos returns the ring's producer position: the count of bytes
// reserved since the map was created.
func (p *Producer) ProducerPos() (uint64, error) {
	if err := p.enter(); err != nil {
		return 0, err
	}
	defer p.exit(1)
	return uint64(p.producerPos()), nil
}

// Close closes the Producer. It is idempotent and returns at once: a
// ReserveWait or WriteWait blocked in another goroutine returns an error
// wrapping os.ErrClosed, and so does every later reservation.
//
// Records reserved before Close stay usable: they may still be filled and
// submitted (the BPF program drains them) or discarded. The ring is unmapped
// and the duplicated fd closed when the last of them is done, at once when
// there is none, so that Close never unmaps a record that another goroutine
// is filling. Close returns the error of that release when it happens within
// Close.
func (p *Producer) Close() error {
	if !p.acquire() {
		return nil // released already
	}
	if !p.closed.CompareAndSwap(false, true) {
		p.exit(1)
		return nil
	}
	close(p.done)
	err := p.waiter.close()
	return errors.Join(err, p.exit(1))
}

// acquire takes a reference that keeps the memory mapped; it fails once the
// memory is released.
func (p *Producer) acquire() bool {
	if p.refs.Add(1) < 0 {
		p.refs.Add(-1) // still far below zero: cannot trigger a release
		return false
	}
	return true
}

// enter takes a reference for a call that needs an open Producer.
func (p *Producer) enter() error {
	if !p.acquire() {
		return errClosed
	}
	if p.closed.Load() {
		p.exit(1)
		return errClosed
	}
	return nil
}

// exit drops k references; the last one out after Close releases the memory
// and returns the error of that release.
func (p *Producer) exit(k int64) error {
	if p.refs.Add(-k) != 0 || !p.closed.Load() {
		return nil
	}
	if !p.refs.CompareAndSwap(0, dead) {
		return nil // someone took a reference meanwhile: they release
	}
	return p.free()
}

// free unmaps the ring and closes the duplicated fd.
func (p *Producer) free() error {
	return errors.Join(p.waiter.close(), p.mapping.Close())
}

// checkLen checks a requested record size.
func (p *Producer) checkLen(n int) error {
	switch {
	case n <= 0:
		return fmt.Errorf("userringbuf: record of %d bytes: %w", n, os.ErrInvalid)
	case n > p.maxLen():
		return fmt.Errorf("%w: %d bytes, the ring of %d bytes holds records of at most %d",
			ErrTooLarge, n, p.size(), p.maxLen())
	}
	return nil
}
