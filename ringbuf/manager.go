package ringbuf

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/bpf"

	"github.com/bpfring/bpfring/internal/epoll"
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

// Callback receives one record. data points into the ring's memory
// (zero-copy) and is valid only until the callback returns: copy what must
// outlive the call. A non-nil error stops the read; Poll, Consume, ConsumeN or
// Run return it wrapped (errors.Is finds it). The record counts as consumed
// either way and is never delivered again.
type Callback func(data []byte) error

var (
	// ErrMapType means a map is not of the type the call needs
	// (BPF_MAP_TYPE_RINGBUF for New and Add, BPF_MAP_TYPE_PERF_EVENT_ARRAY
	// for AddPerf), or has an unusable size: a perf map with fewer entries
	// than CPUs, for one.
	ErrMapType = errors.New("ringbuf: wrong map type")
	// ErrNotMap means a file descriptor is open but is not a BPF map.
	ErrNotMap = bpf.ErrNotMap

	errClosed = fmt.Errorf("ringbuf: manager is closed: %w", os.ErrClosed)
)

// DefaultMaxRecordsPerRing is how many records one call reads from one ring
// before it moves on to the next ring (or returns), unless
// WithMaxRecordsPerRing says otherwise.
const DefaultMaxRecordsPerRing = 1 << 16

// maxEvents is how many ready rings one epoll_wait reports. More ready rings
// are reported by the following calls: epoll is level-triggered and
// re-queues a reported ring behind the others.
const maxEvents = 64

// Option configures a Manager.
type Option func(*Manager) error

// WithMaxRecordsPerRing bounds the records one Poll, Consume or ConsumeN
// reads from one ring per call, so that a producer that never pauses cannot
// keep the call on its ring forever: the other rings and the caller get
// their turn. n must be positive.
func WithMaxRecordsPerRing(n int) Option {
	return func(m *Manager) error {
		if n <= 0 {
			return fmt.Errorf("ringbuf: max records per ring %d: must be positive: %w", n, os.ErrInvalid)
		}
		m.maxPerRing = n
		return nil
	}
}

// WithCommitEvery makes a read store a ring's consumer position every n
// bytes of records, besides once at the end of each batch. A store frees
// room for the producer but costs a cache line that the producer's CPU
// must fetch back; the default, 64 KiB (or a quarter of a smaller ring), costs
// nothing measurable per record and keeps a producer with sampled wake-ups
// from forcing them while a large batch is read. n = 1 stores after every
// record, as libbpf does. n must be positive.
func WithCommitEvery(n int) Option {
	return func(m *Manager) error {
		if n <= 0 {
			return fmt.Errorf("ringbuf: commit every %d bytes: must be positive: %w", n, os.ErrInvalid)
		}
		m.commitEvery = n
		return nil
	}
}

// DefaultBatchDelay is how long a Poll that follows a large batch sleeps
// before it reads, unless WithBatchDelay says otherwise.
const DefaultBatchDelay = 50 * time.Microsecond

// batchDelayRecords is the batch size, in records, that makes the next Poll
// sleep first: at a rate that fills such batches, the delay costs little
// latency and saves many wake-ups.
const batchDelayRecords = 256

// WithBatchDelay sets how long a Poll (or Run) sleeps before it reads when
// the previous Poll read a large batch (256 records or more); 0 turns the
// delay off.
//
// Why: with adaptive wake-ups (a producer's flags 0) the kernel wakes the
// consumer for the first record committed after the consumer caught up, and
// a wake-up costs the producer's CPU a few microseconds, about a hundred
// times the record itself. A consumer that reads each record as soon as it
// can is caught up all the time and makes the producer pay that for a large
// share of its records. Under a steady stream, sleeping a little between
// batches lets records accumulate, so the producer pays once per batch; at a
// low rate batches stay small and Poll reacts at once. The sleep blocks the
// calling thread (a nanosleep), like the wait in epoll it precedes, and
// counts against Poll's timeout.
func WithBatchDelay(d time.Duration) Option {
	return func(m *Manager) error {
		if d < 0 {
			return fmt.Errorf("ringbuf: batch delay %v: negative: %w", d, os.ErrInvalid)
		}
		m.batchDelay = d
		return nil
	}
}

// nanosleep sleeps for d on the calling thread, to the timer's precision
// (a Go timer would round a short sleep up to a millisecond when the
// runtime has nothing else to do).
func nanosleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for {
		var rem unix.Timespec
		if err := unix.Nanosleep(&ts, &rem); !errors.Is(err, unix.EINTR) {
			return
		}
		ts = rem
	}
}

// WithBusyPoll makes Poll and Run spin for up to d before they sleep in
// epoll, watching the rings' positions, and read as soon as one has
// records. That saves the wake-up: a few microseconds of the producer's time
// in the kernel per notification, and the scheduler's latency on the
// consumer's side. The cost is CPU: a Poll that finds nothing burns up to d
// of one core before it sleeps, and while it spins it keeps the producer
// position's cache line busy, which slows a producer on another CPU. Use it
// for the lowest latency with a core to spare; d must be positive.
func WithBusyPoll(d time.Duration) Option {
	return func(m *Manager) error {
		if d <= 0 {
			return fmt.Errorf("ringbuf: busy poll %v: must be positive: %w", d, os.ErrInvalid)
		}
		m.busyPoll = d
		return nil
	}
}

// Manager consumes many ring buffers through one epoll instance, each ring
// with its own callback.
//
// Concurrency: every method is safe to call from any goroutine. Reads are
// serialized: while one goroutine waits in Poll or Run, others that want to
// wait queue behind it, and a Consume from another goroutine goes ahead
// without waiting for data; ring reads themselves never overlap, so a
// callback is never called concurrently with another callback of the same
// manager. Add may be called while another goroutine polls. A call that
// queues gives up when the manager is closed, its context is done or its
// timeout expires.
//
// Close may be called at any time, from any goroutine, also from a callback.
type Manager struct {
	poller     *epoll.Poller
	maxPerRing int
	busyPoll   time.Duration
	batchDelay time.Duration
	lastPoll   int // records the last Poll read; guarded by pollSem
	// commitEvery, if set, overrides each ring's default; see
	// WithCommitEvery.
	commitEvery int

	pollSem chan struct{}     // held while waiting in epoll; guards events
	readSem chan struct{}     // held while reading; guards next, serial and cpuRing.queued
	events  []unix.EpollEvent // epoll_wait results, reused
	next    int               // source Consume starts with, for fairness
	serial  uint64            // counts readReported calls, see cpuRing.readAt

	// pending counts perf rings left with records by a bounded read: their
	// fds do not poll readable again until the kernel's next wake-up (unlike
	// ring buffer fds, which poll readable while data waits), so Poll reads
	// them without a report.
	pending atomic.Int32

	addMu    sync.Mutex                 // serializes Add and AddPerf
	sources  atomic.Pointer[[]source]   // copy-on-write; the index is the epoll token
	rings    atomic.Pointer[[]*Ring]    // copy-on-write, the ring buffers
	perfMaps atomic.Pointer[[]*PerfMap] // copy-on-write, the perf buffers

	// users counts calls in progress; the last one out after Close releases
	// the mappings and fds, so that no callback ever reads unmapped memory.
	users   atomic.Int64
	closed  atomic.Bool
	done    chan struct{} // closed by Close
	release sync.Once
}

// New creates a Manager that consumes rb with fn. rb must be a
// BPF_MAP_TYPE_RINGBUF map. The Manager does not take ownership of the map:
// it keeps a duplicate of the fd for as long as it needs it, so the caller may
// close the map at any time and must still close it itself.
func New(rb Map, fn Callback, opts ...Option) (*Manager, error) {
	m, err := makeManager(opts)
	if err != nil {
		return nil, err
	}
	// Check the map before creating fds of our own, so that an error about
	// a stale fd number cannot end up describing one of ours.
	kr, err := openKernelRing(rb, fn)
	if err != nil {
		return nil, err
	}
	if err := m.start(); err != nil {
		kr.close()
		return nil, err
	}
	if _, err := m.add(kr, rb.FD(), fn); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// NewManager creates a Manager with nothing to consume yet: add ring buffers
// with Add and perf buffers with AddPerf. Until then Poll only waits and
// Consume returns 0.
func NewManager(opts ...Option) (*Manager, error) {
	m, err := makeManager(opts)
	if err != nil {
		return nil, err
	}
	if err := m.start(); err != nil {
		return nil, err
	}
	return m, nil
}

func makeManager(opts []Option) (*Manager, error) {
	m := &Manager{
		maxPerRing: DefaultMaxRecordsPerRing,
		batchDelay: DefaultBatchDelay,
		pollSem:    make(chan struct{}, 1),
		readSem:    make(chan struct{}, 1),
		events:     make([]unix.EpollEvent, maxEvents),
		done:       make(chan struct{}),
	}
	for _, opt := range opts {
		if err := opt(m); err != nil {
			return nil, err
		}
	}
	m.sources.Store(new([]source))
	m.rings.Store(new([]*Ring))
	m.perfMaps.Store(new([]*PerfMap))
	return m, nil
}

// start creates the epoll instance.
func (m *Manager) start() error {
	p, err := epoll.New()
	if err != nil {
		return fmt.Errorf("ringbuf: %w", err)
	}
	m.poller = p
	return nil
}

// Add adds another ring buffer, consumed with its own callback fn, and
// returns it. Rings are numbered in the order they were added, from 0 (the
// ring passed to New). As with New, the Manager does not own rb.
func (m *Manager) Add(rb Map, fn Callback) (*Ring, error) {
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.exit()
	kr, err := openKernelRing(rb, fn)
	if err != nil {
		return nil, err
	}
	return m.add(kr, rb.FD(), fn)
}

// add registers an opened ring with epoll and publishes it; on failure it
// closes kr.
func (m *Manager) add(kr *kernelRing, mapFD int, fn Callback) (*Ring, error) {
	m.addMu.Lock()
	defer m.addMu.Unlock()
	old := *m.rings.Load()
	if m.commitEvery > 0 {
		kr.commitEvery = uintptr(m.commitEvery)
	}
	r := &Ring{m: m, index: len(old), mapFD: mapFD, fn: fn, kr: kr}
	if err := m.register([]source{r}, []int{kr.FD}); err != nil {
		kr.close()
		return nil, err
	}
	rings := append(old[:len(old):len(old)], r)
	m.rings.Store(&rings)
	return r, nil
}

// register adds srcs, with their fds, to epoll and publishes them. The caller
// holds addMu and closes the sources on failure.
func (m *Manager) register(srcs []source, fds []int) error {
	old := *m.sources.Load()
	// Register before publishing: a Poll that hears of a source it does not
	// know yet skips it, and level-triggered epoll reports it again (perf
	// fds: the kernel's poll flag stays set until a poll sees it).
	for i, fd := range fds {
		if err := m.poller.Add(fd, int32(len(old)+i)); err != nil {
			for _, fd := range fds[:i] {
				unix.EpollCtl(m.poller.FD(), unix.EPOLL_CTL_DEL, fd, nil)
			}
			return fmt.Errorf("ringbuf: %w", err)
		}
	}
	all := append(old[:len(old):len(old)], srcs...)
	m.sources.Store(&all)
	return nil
}

// Poll waits until at least one ring has data, or timeout passes (a negative
// timeout waits forever, zero does not wait), then reads the rings that epoll
// reported, at most the per-ring limit from each. It returns the number of
// records delivered; 0 and a nil error when the timeout expired, or when a
// wake-up found only records that are still being written.
//
// After a Poll that read a large batch, the next one first sleeps briefly
// (WithBatchDelay), so that a steady stream is read in batches rather than
// one wake-up at a time; WithBusyPoll makes it spin before it sleeps.
//
// A callback error stops the read and is returned wrapped, together with the
// number of records delivered, the failing one included. Close from another
// goroutine makes a waiting Poll return an error wrapping os.ErrClosed.
func (m *Manager) Poll(timeout time.Duration) (int, error) {
	if err := m.enter(); err != nil {
		return 0, err
	}
	defer m.exit()
	return m.poll(context.Background(), timeout)
}

// Run polls until ctx is done, a callback fails or the manager is closed,
// and returns ctx.Err(), the wrapped callback error, or an error wrapping
// os.ErrClosed. Cancelling ctx wakes it at once, with or without data: no
// goroutine or thread is needed per ring.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.enter(); err != nil {
		return err
	}
	defer m.exit()
	stop := context.AfterFunc(ctx, func() {
		// The AfterFunc may run after Run returned: hold the manager so the
		// eventfd is not closed under it.
		if m.enter() == nil {
			m.poller.Wake()
			m.exit()
		}
	})
	defer stop()
	for {
		if _, err := m.poll(ctx, -1); err != nil {
			return err
		}
	}
}

// poll implements Poll and Run. The caller has entered.
func (m *Manager) poll(ctx context.Context, timeout time.Duration) (int, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := m.acquire(m.pollSem, ctx, timeout, deadline); err != nil {
		return 0, noTimeout(err)
	}
	defer func() { <-m.pollSem }()

	if m.batchDelay > 0 && m.lastPoll >= batchDelayRecords && timeout != 0 {
		delay := m.batchDelay
		if timeout > 0 {
			delay = min(delay, time.Until(deadline))
		}
		// In slices, so that Close and ctx end a long delay promptly.
		for end := time.Now().Add(delay); delay > 0 && !m.closed.Load() && ctx.Err() == nil; delay = time.Until(end) {
			nanosleep(min(delay, time.Millisecond))
		}
	}
	if m.busyPoll > 0 && timeout != 0 {
		if n, err, done := m.spin(ctx, deadline); done {
			m.lastPoll = n
			return n, err
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		left := timeout
		if timeout > 0 {
			if left = time.Until(deadline); left < 0 {
				left = 0
			}
		}
		wait, capped := m.perfWait(left) // capped: a perf rescan is due first
		nev, err := m.poller.Wait(m.events, wait)
		if err != nil {
			return 0, fmt.Errorf("ringbuf: %w", err)
		}
		if m.closed.Load() {
			return 0, errClosed
		}
		rings := false
		for _, ev := range m.events[:nev] {
			if ev.Fd == epoll.WakeToken {
				// Close or a cancelled ctx (checked above and at the top),
				// or a perf ring left pending (checked below).
				m.poller.ResetWake()
			} else {
				rings = true
			}
		}
		if rings || m.pending.Load() > 0 || capped {
			n, err := m.readReported(ctx, nev)
			m.lastPoll = n
			if n > 0 || err != nil || rings {
				return n, err
			}
			// Pending perf rings that another call drained meanwhile: wait on.
		}
		if nev == 0 && timeout >= 0 && !capped {
			return 0, nil // timed out
		}
	}
}

// spin watches the sources for up to busyPoll (or until deadline, if set)
// and reads them all as soon as one has records. It reports done when it
// read, or found the manager closed or ctx done; otherwise Poll goes on to
// sleep in epoll. The caller holds pollSem.
func (m *Manager) spin(ctx context.Context, deadline time.Time) (n int, err error, done bool) {
	end := time.Now().Add(m.busyPoll)
	if !deadline.IsZero() && deadline.Before(end) {
		end = deadline
	}
	for {
		for _, src := range *m.sources.Load() {
			if src.more() {
				n, err := m.readAll(ctx, math.MaxInt)
				return n, err, true
			}
		}
		if m.closed.Load() {
			return 0, errClosed, true
		}
		if err := ctx.Err(); err != nil {
			return 0, err, true
		}
		if !time.Now().Before(end) {
			return 0, nil, false
		}
	}
}

// readReported reads the sources among the first nev events, then the
// pending perf rings.
func (m *Manager) readReported(ctx context.Context, nev int) (int, error) {
	if err := m.acquire(m.readSem, ctx, -1, time.Time{}); err != nil {
		return 0, err
	}
	defer func() { <-m.readSem }()
	m.serial++
	m.rescanPerf()
	srcs := *m.sources.Load()
	total := 0
	for _, ev := range m.events[:nev] {
		if ev.Fd < 0 || int(ev.Fd) >= len(srcs) {
			continue // the wake-up, or a source whose Add has not finished
		}
		src := srcs[ev.Fd]
		if c, ok := src.(*cpuRing); ok {
			c.readAt = m.serial
		}
		n, err := m.readSource(src, m.maxPerRing)
		total += n
		if err != nil {
			return total, err
		}
		if m.closed.Load() { // Close from a callback
			return total, errClosed
		}
	}
	if m.pending.Load() == 0 {
		return total, nil
	}
	for _, src := range srcs {
		c, ok := src.(*cpuRing)
		// One read per ring per call: a ring reported above stays queued.
		if !ok || !c.queued || c.readAt == m.serial {
			continue
		}
		c.queued = false
		m.pending.Add(-1)
		n, err := m.readSource(c, m.maxPerRing)
		total += n
		if err != nil {
			return total, err
		}
		if m.closed.Load() {
			return total, errClosed
		}
	}
	return total, nil
}

// readSource reads up to max records from src. A perf ring that still holds
// records after a read that hit max is queued as pending, and the epoll fd
// made readable, since its own fd will not poll readable again before the
// kernel's next wake-up. The caller holds readSem.
func (m *Manager) readSource(src source, max int) (int, error) {
	n, err := src.read(max)
	if n >= max {
		if c, ok := src.(*cpuRing); ok && !c.queued && c.more() {
			c.queued = true
			m.pending.Add(1)
			m.poller.Wake()
		}
	}
	return n, err
}

// Consume reads every ring now, without waiting, at most the per-ring limit
// from each, and returns the number of records delivered. It is the
// lowest-latency way to read, at the price of the CPU spent calling it.
func (m *Manager) Consume() (int, error) {
	return m.ConsumeN(math.MaxInt)
}

// ConsumeN reads at most n records in total across all rings now, without
// waiting. Each call starts with the ring after the one the previous call
// started with, so that a small n does not favour the first ring. ConsumeN(0)
// delivers nothing; a negative n is an error.
func (m *Manager) ConsumeN(n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("ringbuf: ConsumeN(%d): negative count: %w", n, os.ErrInvalid)
	}
	if err := m.enter(); err != nil {
		return 0, err
	}
	defer m.exit()
	return m.readAll(context.Background(), n)
}

// readAll reads at most n records across all sources, each up to the
// per-source limit, starting with the source after the one the previous
// call started with. The caller has entered.
func (m *Manager) readAll(ctx context.Context, n int) (int, error) {
	if err := m.acquire(m.readSem, ctx, -1, time.Time{}); err != nil {
		return 0, err
	}
	defer func() { <-m.readSem }()

	m.rescanPerf()
	srcs := *m.sources.Load()
	if len(srcs) == 0 {
		return 0, nil
	}
	start := m.next % len(srcs)
	m.next = start + 1
	total := 0
	for i := range srcs {
		if total >= n {
			break
		}
		got, err := m.readSource(srcs[(start+i)%len(srcs)], min(m.maxPerRing, n-total))
		total += got
		if err != nil {
			return total, err
		}
		if m.closed.Load() {
			return total, errClosed
		}
	}
	return total, nil
}

// EpollFD returns the manager's epoll file descriptor, for an outside event
// loop: when it is readable, call Poll(0) or Consume. The fd belongs to the
// manager and is closed by Close.
func (m *Manager) EpollFD() (int, error) {
	if err := m.enter(); err != nil {
		return -1, err
	}
	defer m.exit()
	return m.poller.FD(), nil
}

// NumRings returns the number of ring buffers added so far (perf buffers
// not included).
func (m *Manager) NumRings() int {
	return len(*m.rings.Load())
}

// Ring returns the ring with index i, in order of addition.
func (m *Manager) Ring(i int) (*Ring, error) {
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.exit()
	rings := *m.rings.Load()
	if i < 0 || i >= len(rings) {
		return nil, fmt.Errorf("ringbuf: ring %d out of range [0, %d): %w", i, len(rings), os.ErrInvalid)
	}
	return rings[i], nil
}

// Close stops the manager. It is idempotent and returns at once, also when a
// callback is running or blocked: a Poll or Run waiting in another goroutine
// wakes and returns an error wrapping os.ErrClosed, and every later call does
// the same. A call that is reading when Close comes finishes the ring it is
// on (at most the per-ring limit of records), then returns an error wrapping
// os.ErrClosed with the count it delivered. The rings are unmapped and the
// manager's fds closed as soon as the last call in progress returns (at once
// when there is none), never while a callback may still read a record.
// Close returns the error of that release when it happens within Close.
func (m *Manager) Close() error {
	m.users.Add(1) // hold: the release must not run before the wake-up
	if !m.closed.CompareAndSwap(false, true) {
		m.exit()
		return nil
	}
	close(m.done)
	if m.poller != nil {
		m.poller.Wake()
	}
	return m.exit()
}

// enter registers a call in progress; it fails once the manager is closed.
func (m *Manager) enter() error {
	m.users.Add(1)
	if m.closed.Load() {
		m.exit()
		return errClosed
	}
	return nil
}

// exit ends a call; the last one out of a closed manager releases it and
// returns the error of that release.
func (m *Manager) exit() error {
	if m.users.Add(-1) != 0 || !m.closed.Load() {
		return nil
	}
	var err error
	m.release.Do(func() { err = m.free() })
	return err
}

func (m *Manager) free() error {
	var errs []error
	if m.poller != nil {
		errs = append(errs, m.poller.Close())
	}
	// The perf rings first: they clear their entries in their map's fd,
	// which their PerfMap then closes.
	for _, src := range *m.sources.Load() {
		errs = append(errs, src.close())
	}
	for _, pm := range *m.perfMaps.Load() {
		errs = append(errs, pm.close())
	}
	return errors.Join(errs...)
}

// acquire takes sem, giving up when the manager closes, ctx is done, or the timeout (negative: none) expires, which it reports as
// os.ErrDeadlineExceeded.
func (m *Manager) acquire(sem chan struct{}, ctx context.Context, timeout time.Duration, deadline time.Time) error {
	select {
	case sem <- struct{}{}:
		return m.checkClosed(sem)
	default:
	}
	var expired <-chan time.Time
	if timeout >= 0 {
		t := time.NewTimer(max(time.Until(deadline), 0))
		defer t.Stop()
		expired = t.C
	}
	select {
	case sem <- struct{}{}:
		return m.checkClosed(sem)
	case <-m.done:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

func (m *Manager) checkClosed(sem chan struct{}) error {
	if m.closed.Load() {
		<-sem
		return errClosed
	}
	return nil
}

// noTimeout turns an expired wait for the manager into Poll's timeout result.
func noTimeout(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// source is one fd on the manager's epoll: a ring buffer (*Ring) or the ring
// of one CPU of a perf buffer (*cpuRing).
type source interface {
	// read delivers up to max records to the source's callback and returns
	// how many; the caller holds readSem.
	read(max int) (int, error)
	// more reports whether records (or, for a ring buffer, reservations)
	// wait to be read: a few atomic loads, for busy polling.
	more() bool
	// close releases the source; the manager is closed and unused.
	close() error
}

// Ring is one ring buffer of a Manager.
type Ring struct {
	m     *Manager
	index int
	mapFD int
	fn    Callback
	kr    *kernelRing
}

// read reads up to max records with the ring's callback, wrapping errors
// with the ring's index. The caller holds readSem.
func (r *Ring) read(max int) (int, error) {
	n, err := r.kr.read(r.fn, max)
	if err != nil {
		return n, fmt.Errorf("ringbuf: ring %d: %w", r.index, err)
	}
	return n, nil
}

func (r *Ring) close() error { return r.kr.close() }

func (r *Ring) more() bool { return r.kr.producerPos() != r.kr.consumerPos() }

// Index returns the ring's index: its position in the order of addition.
func (r *Ring) Index() int { return r.index }

// MapFD returns the fd of the map the ring was added with. It is the
// caller's fd, which the caller may have closed since.
func (r *Ring) MapFD() int { return r.mapFD }

// Size returns the size of the ring's data area in bytes: the map's
// max_entries.
func (r *Ring) Size() int { return r.kr.Size }

// ConsumerPos returns the ring's consumer position: the count of bytes
// consumed since the map was created, by this and any earlier consumer.
func (r *Ring) ConsumerPos() (uint64, error) {
	if err := r.m.enter(); err != nil {
		return 0, err
	}
	defer r.m.exit()
	return uint64(r.kr.consumerPos()), nil
}

// ProducerPos returns the ring's producer position: the count of bytes
// reserved since the map was created.
func (r *Ring) ProducerPos() (uint64, error) {
	if err := r.m.enter(); err != nil {
		return 0, err
	}
	defer r.m.exit()
	return uint64(r.kr.producerPos()), nil
}

// AvailableBytes returns how many bytes of records (headers included) wait
// to be consumed: the producer position minus the consumer position.
func (r *Ring) AvailableBytes() (uint64, error) {
	if err := r.m.enter(); err != nil {
		return 0, err
	}
	defer r.m.exit()
	cons := r.kr.consumerPos()
	return uint64(r.kr.producerPos() - cons), nil
}

// Consume reads this ring alone now, without waiting, up to the per-ring
// limit. See Manager.Consume.
func (r *Ring) Consume() (int, error) {
	return r.ConsumeN(r.m.maxPerRing)
}

// ConsumeN reads at most n records from this ring alone now, without
// waiting. ConsumeN(0) delivers nothing; a negative n is an error.
func (r *Ring) ConsumeN(n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("ringbuf: ring %d: ConsumeN(%d): negative count: %w", r.index, n, os.ErrInvalid)
	}
	if err := r.m.enter(); err != nil {
		return 0, err
	}
	defer r.m.exit()
	if err := r.m.acquire(r.m.readSem, context.Background(), -1, time.Time{}); err != nil {
		return 0, err
	}
	defer func() { <-r.m.readSem }()
	return r.read(n)
}
