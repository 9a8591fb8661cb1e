package ringbuf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/bpf"
	"github.com/bpfring/bpfring/internal/perf"
)

// DefaultPerfPages is the size of each CPU's perf ring in pages, unless
// WithPerfPages says otherwise.
const DefaultPerfPages = 16

// DefaultPerfRescan is how often, at most, the manager rescans a perf
// buffer's CPUs on its own, unless WithPerfRescan says otherwise.
const DefaultPerfRescan = time.Second

// PerfOption configures a perf buffer added with AddPerf.
type PerfOption func(*perfConfig) error

type perfConfig struct {
	pages     int
	wakeup    perf.Wakeup
	wakeupSet bool
	onLost    func(cpu int, count uint64)
	rescan    time.Duration
}

// WithPerfPages sets the size of each CPU's perf ring: n pages, a power of
// two (default DefaultPerfPages). The kernel maps one more page for the ring's
// metadata.
func WithPerfPages(n int) PerfOption {
	return func(c *perfConfig) error {
		if n <= 0 || n&(n-1) != 0 || n > 1<<20 {
			return fmt.Errorf("ringbuf: perf ring of %d pages: want a power of two up to 2^20: %w", n, os.ErrInvalid)
		}
		c.pages = n
		return nil
	}
}

// WithPerfWakeupEvents makes the kernel wake the manager after every n
// samples on a CPU (the default is 1: every sample). A larger n costs fewer
// wake-ups; samples below the count wait for the next wake-up, a Consume, or
// a Poll that reads their CPU's ring for another reason.
func WithPerfWakeupEvents(n int) PerfOption {
	return func(c *perfConfig) error {
		if n <= 0 || n > 1<<31-1 {
			return fmt.Errorf("ringbuf: wake-up every %d perf samples: must be positive: %w", n, os.ErrInvalid)
		}
		return c.setWakeup(perf.Wakeup{Events: uint32(n)})
	}
}

// WithPerfWakeupBytes makes the kernel wake the manager when n bytes of
// records wait in a CPU's ring (a watermark), instead of counting samples. n
// must be positive and at most the ring's size.
func WithPerfWakeupBytes(n int) PerfOption {
	return func(c *perfConfig) error {
		if n <= 0 || n > 1<<31-1 {
			return fmt.Errorf("ringbuf: perf wake-up watermark of %d bytes: must be positive: %w", n, os.ErrInvalid)
		}
		return c.setWakeup(perf.Wakeup{Bytes: uint32(n)})
	}
}

// setWakeup records the wake-up policy; only one of the two options may
// set it.
func (c *perfConfig) setWakeup(w perf.Wakeup) error {
	if c.wakeupSet {
		return fmt.Errorf("ringbuf: WithPerfWakeupEvents and WithPerfWakeupBytes both given: %w", os.ErrInvalid)
	}
	c.wakeup, c.wakeupSet = w, true
	return nil
}

// WithPerfLost calls fn with the CPU and the count of every PERF_RECORD_LOST
// that a CPU's ring reports: samples the kernel dropped because the ring was
// full. fn runs like a Callback, never concurrently with another callback of
// the manager.
func WithPerfLost(fn func(cpu int, count uint64)) PerfOption {
	return func(c *perfConfig) error {
		if fn == nil {
			return fmt.Errorf("ringbuf: nil perf lost callback: %w", os.ErrInvalid)
		}
		c.onLost = fn
		return nil
	}
}

// WithPerfRescan sets how often, at most, the manager rescans the perf
// buffer's CPUs on its own (see PerfMap.Rescan): Poll, Run, Consume and
// ConsumeN do it when the interval has passed, and a Poll or Run that waits
// for longer wakes up for it. d = 0 turns the automatic rescan off; Rescan
// still works. The default is DefaultPerfRescan; d must not be negative.
func WithPerfRescan(d time.Duration) PerfOption {
	return func(c *perfConfig) error {
		if d < 0 {
			return fmt.Errorf("ringbuf: perf rescan every %v: negative: %w", d, os.ErrInvalid)
		}
		c.rescan = d
		return nil
	}
}

// PerfMap is a perf buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY) of a Manager: one
// perf event ring per CPU, each one a source of the manager like a ring
// buffer.
type PerfMap struct {
	m       *Manager
	index   int
	name    string
	mapFD   int // the caller's fd
	fd      int // our duplicate, owned
	entries uint32
	fn      Callback
	onLost  func(cpu int, count uint64)
	size    int // data bytes per CPU
	cfg     perfConfig
	lost    atomic.Uint64

	// next is when the next automatic rescan is due, in monotime
	// nanoseconds; a reader claims a rescan by moving it on.
	next atomic.Int64

	mu    sync.Mutex // guards rings once published, rescans, err
	rings []*cpuRing // by increasing CPU
	err   error      // of the last rescan
}

// cpuRing is the perf event ring of one CPU of a PerfMap.
type cpuRing struct {
	perfRing
	pm     *PerfMap
	cpu    int
	fd     int    // the perf event, owned
	mem    []byte // metadata page and data area
	stored bool   // fd stored in the map at index cpu
	queued bool   // counted in Manager.pending; guarded by readSem
	readAt uint64 // Manager.serial of the last readReported that read it; guarded by readSem

	// live is the event stored in the map, guarded by pm.mu: fd, or, once
	// fd's CPU went offline and came back, a newer event redirected into
	// fd's ring.
	live int
}

// AddPerf adds a perf buffer, a BPF_MAP_TYPE_PERF_EVENT_ARRAY map, whose
// samples are consumed with fn, and returns it. Ring buffers and perf
// buffers are added by different methods, so that a map of the wrong type
// is an error (ErrMapType) rather than a surprise.
//
// For every CPU online now, AddPerf opens a perf event
// (PERF_COUNT_SW_BPF_OUTPUT with PERF_SAMPLE_RAW), maps its ring, enables it,
// stores its fd in the map at the CPU's index and registers it on the
// manager's epoll, where it is read like a ring buffer by Poll, Consume,
// ConsumeN and Run; the per-ring limit applies to each CPU's ring. A CPU
// that goes offline meanwhile is skipped. The map's max_entries must exceed
// the highest online CPU, or AddPerf fails with ErrMapType.
//
// CPUs that come online later, and CPUs that go offline and come back, are
// handled by rescans (see PerfMap.Rescan and WithPerfRescan): by default the
// manager rescans at most once a second while it is used. Until the rescan
// after such a change, what a BPF program outputs on that CPU fails
// (bpf_perf_event_output returns an error). A CPU that goes offline keeps its
// ring; the samples in it are still read.
//
// fn receives each sample's raw data as the kernel stores it: the bytes the
// BPF program passed, followed by up to 7 bytes of padding up to a length of
// 8k+4 bytes. The kernel keeps records 8-byte aligned, does not record the
// unpadded size, and does not write the padding: its content is whatever the
// ring held there before. A program that needs the exact length must put it
// in the sample. Samples are handed over in place except those that wrap around the
// end of a CPU's ring, which are copied whole into a buffer reused for the
// next one: either way, data is valid only during the call.
//
// As with Add, the Manager does not own pm: it keeps a duplicate of the fd.
// Close disables the perf events, deletes their entries from the map,
// unmaps their rings and closes them.
func (m *Manager) AddPerf(pm Map, fn Callback, opts ...PerfOption) (*PerfMap, error) {
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.exit()
	if pm == nil {
		return nil, fmt.Errorf("ringbuf: nil map: %w", os.ErrInvalid)
	}
	if fn == nil {
		return nil, fmt.Errorf("ringbuf: nil callback: %w", os.ErrInvalid)
	}
	cfg := perfConfig{pages: DefaultPerfPages, wakeup: perf.Wakeup{Events: 1}, rescan: DefaultPerfRescan}
	for _, opt := range opts {
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	size := cfg.pages * os.Getpagesize()
	if int(cfg.wakeup.Bytes) > size {
		return nil, fmt.Errorf("ringbuf: perf wake-up watermark of %d bytes exceeds the ring's %d bytes: %w",
			cfg.wakeup.Bytes, size, os.ErrInvalid)
	}
	fd := pm.FD()
	info, err := bpf.MapInfoByFD(fd)
	if err != nil {
		return nil, fmt.Errorf("ringbuf: %w", err)
	}
	if info.Type != bpf.PerfEventArray {
		return nil, fmt.Errorf("%w: map %q (id %d) is of type %s, want %s",
			ErrMapType, info.Name, info.ID, info.Type, bpf.PerfEventArray)
	}
	cpus, err := perf.OnlineCPUs()
	if err != nil {
		return nil, fmt.Errorf("ringbuf: %w", err)
	}
	if last := cpus[len(cpus)-1]; uint64(last) >= uint64(info.MaxEntries) {
		return nil, fmt.Errorf("%w: perf map %q has max_entries %d, too few for online CPU %d (%d CPUs online)",
			ErrMapType, info.Name, info.MaxEntries, last, len(cpus))
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ringbuf: dup fd %d: %w", fd, err)
	}
	p := &PerfMap{m: m, name: info.Name, mapFD: fd, fd: dup, entries: info.MaxEntries,
		fn: fn, onLost: cfg.onLost, size: size, cfg: cfg}
	if err := p.open(cpus); err != nil {
		p.closeRings()
		p.close()
		return nil, fmt.Errorf("ringbuf: perf map %q: %w", info.Name, err)
	}

	m.addMu.Lock()
	defer m.addMu.Unlock()
	srcs := make([]source, len(p.rings))
	fds := make([]int, len(p.rings))
	for i, c := range p.rings {
		srcs[i], fds[i] = c, c.fd
	}
	old := *m.perfMaps.Load()
	p.index = len(old)
	if err := m.register(srcs, fds); err != nil {
		p.closeRings()
		p.close()
		return nil, err
	}
	if cfg.rescan > 0 {
		p.next.Store(monotime() + int64(cfg.rescan))
	}
	all := append(old[:len(old):len(old)], p)
	m.perfMaps.Store(&all)
	return p, nil
}

// open opens the ring of every CPU in cpus, skipping those that went offline.
func (p *PerfMap) open(cpus []int) error {
	for _, cpu := range cpus {
		c, err := p.openCPU(cpu)
		if errors.Is(err, unix.ENODEV) {
			continue // went offline since we listed it
		}
		if err != nil {
			return err
		}
		p.rings = append(p.rings, c)
	}
	if len(p.rings) == 0 {
		return fmt.Errorf("no online CPU left of %v: %w", cpus, unix.ENODEV)
	}
	return nil
}

func (p *PerfMap) openCPU(cpu int) (*cpuRing, error) {
	fd, err := perf.Open(cpu, p.cfg.wakeup)
	if err != nil {
		return nil, err
	}
	c := &cpuRing{pm: p, cpu: cpu, fd: fd, live: fd}
	if c.mem, err = perf.Mmap(fd, p.cfg.pages); err != nil {
		c.close()
		return nil, err
	}
	page := uint64(os.Getpagesize())
	// Linux 4.1 and later say where the data area is; before, it follows
	// the metadata page.
	off := *(*uint64)(unsafe.Pointer(&c.mem[perf.OffDataOffset]))
	size := *(*uint64)(unsafe.Pointer(&c.mem[perf.OffDataSize]))
	if off == 0 && size == 0 {
		off, size = page, uint64(p.size)
	}
	if size != uint64(p.size) || off < perf.OffDataSize+8 || off+size > uint64(len(c.mem)) {
		c.close()
		return nil, fmt.Errorf("cpu %d: perf ring data area at %d of %d bytes does not fit its %d-byte mapping",
			cpu, off, size, len(c.mem))
	}
	c.perfRing = newPerfRing(
		(*uint64)(unsafe.Pointer(&c.mem[perf.OffDataHead])),
		(*uint64)(unsafe.Pointer(&c.mem[perf.OffDataTail])),
		c.mem[off:off+size],
		c.addLost,
	)
	if err := perf.Enable(fd); err != nil {
		c.close()
		return nil, fmt.Errorf("cpu %d: %w", cpu, err)
	}
	if err := bpf.UpdateUint32(p.fd, uint32(cpu), uint32(fd)); err != nil {
		c.close()
		return nil, fmt.Errorf("cpu %d: store perf event fd: %w", cpu, err)
	}
	c.stored = true
	return c, nil
}

// closeRings closes the rings of a PerfMap that never reached the manager.
func (p *PerfMap) closeRings() {
	for _, c := range p.rings {
		c.close()
	}
}

// close closes the duplicated map fd, after the rings.
func (p *PerfMap) close() error { return unix.Close(p.fd) }

func (c *cpuRing) addLost(count uint64) {
	c.pm.lost.Add(count)
	if c.pm.onLost != nil {
		c.pm.onLost(c.cpu, count)
	}
}

// read reads up to max samples with the map's callback, wrapping errors with
// the map's index and the CPU. The caller holds readSem.
func (c *cpuRing) read(max int) (int, error) {
	n, err := c.perfRing.read(c.pm.fn, max)
	if err != nil {
		return n, fmt.Errorf("ringbuf: perf map %d: cpu %d: %w", c.pm.index, c.cpu, err)
	}
	return n, nil
}

// close disables the events, clears the entry in the map (so that the BPF
// program's outputs on this CPU fail instead of filling a ring nobody
// reads), unmaps the ring and closes the events. The entry is deleted
// unconditionally: another user who stored their own fd at this CPU's index
// meanwhile loses it.
func (c *cpuRing) close() error {
	var errs []error
	if c.live != c.fd {
		errs = append(errs, perf.Disable(c.live), unix.Close(c.live))
		c.live = c.fd
	}
	if c.mem != nil {
		errs = append(errs, perf.Disable(c.fd))
	}
	if c.stored {
		errs = append(errs, bpf.DeleteUint32(c.pm.fd, uint32(c.cpu)))
		c.stored = false
	}
	if c.mem != nil {
		errs = append(errs, unix.Munmap(c.mem))
		c.mem = nil
	}
	errs = append(errs, unix.Close(c.fd))
	return errors.Join(errs...)
}

// Index returns the perf buffer's index among the manager's perf buffers, in
// order of addition.
func (p *PerfMap) Index() int { return p.index }

// MapFD returns the fd of the map the perf buffer was added with. It is the
// caller's fd, which the caller may have closed since.
func (p *PerfMap) MapFD() int { return p.mapFD }

// Size returns the size of each CPU's ring in bytes, metadata page excluded.
func (p *PerfMap) Size() int { return p.size }

// CPUs returns the CPUs that have a ring, in increasing order: those online
// when the perf buffer was added and those that a rescan found online since.
// A CPU that went offline keeps its ring.
func (p *PerfMap) CPUs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	cpus := make([]int, len(p.rings))
	for i, c := range p.rings {
		cpus[i] = c.cpu
	}
	return slices.Clip(cpus)
}

// Lost returns the number of samples the kernel reported lost so far, on all
// CPUs: the sum of the PERF_RECORD_LOST counts read. The kernel reports
// samples lost to a full ring in a record placed before the next sample that
// fits, so the count catches up only once a CPU outputs again after its ring
// overflowed and that record is read. Lost may be called at any time, also
// after Close.
func (p *PerfMap) Lost() uint64 { return p.lost.Load() }

// Rescan brings the perf buffer up to date with the CPUs online now, at once
// (the manager also does it on its own, see WithPerfRescan):
//
//   - A CPU that came online and has no ring gets one, set up as AddPerf
//     does, and from then on is read like the others.
//   - A CPU that went offline keeps its ring and its unread samples. The
//     kernel drops a CPU's perf events when the CPU goes offline and does
//     not bring them back with it, so outputs there would fail for good:
//     Rescan spots such an event (its enabled time stands still) once the
//     CPU is back, opens a new one redirected into the same ring
//     (PERF_EVENT_IOC_SET_OUTPUT) and stores that in the map. The ring, its
//     position and its epoll registration stay.
//
// A CPU that fails is skipped and tried again by the next rescan; the others
// are set up anyway. Rescan returns the errors of the CPUs that failed,
// joined (nil when every online CPU has a working ring), and RescanErr
// returns them until the next rescan. A CPU beyond the map's max_entries is
// such an error, wrapping ErrMapType. After Close, Rescan returns an error
// wrapping os.ErrClosed. It may be called from any goroutine, also from a
// callback.
func (p *PerfMap) Rescan() error {
	if err := p.m.enter(); err != nil {
		return err
	}
	defer p.m.exit()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rescan()
}

// RescanErr returns the error of the last rescan, automatic or explicit: nil
// if it left every online CPU with a working ring (or there was none yet).
func (p *PerfMap) RescanErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// epoch anchors monotime.
var epoch = time.Now()

// monotime returns the monotonic clock in nanoseconds: a clock read, no
// allocation.
func monotime() int64 { return int64(time.Since(epoch)) }

// rescanPerf runs the automatic rescans that are due. It is called on every
// read, so the common case is one atomic load per perf buffer and one clock
// read. A rescan that another goroutine is running (an explicit Rescan) is
// not waited for.
func (m *Manager) rescanPerf() {
	pms := *m.perfMaps.Load()
	if len(pms) == 0 {
		return
	}
	now := monotime()
	for _, p := range pms {
		next := p.next.Load()
		if p.cfg.rescan == 0 || now < next || !p.next.CompareAndSwap(next, now+int64(p.cfg.rescan)) {
			continue
		}
		if p.mu.TryLock() {
			p.rescan()
			p.mu.Unlock()
		}
	}
}

// perfWait caps a wait in epoll of left (negative: forever) at the next
// automatic rescan, so that a Poll or Run that hears nothing still rescans;
// capped reports whether it did.
func (m *Manager) perfWait(left time.Duration) (wait time.Duration, capped bool) {
	pms := *m.perfMaps.Load()
	if len(pms) == 0 {
		return left, false
	}
	due := int64(-1)
	for _, p := range pms {
		if next := p.next.Load(); p.cfg.rescan > 0 && (due < 0 || next < due) {
			due = next
		}
	}
	if due < 0 {
		return left, false
	}
	d := max(time.Duration(due-monotime()), 0)
	if left >= 0 && left <= d {
		return left, false
	}
	return d, true
}

// rescan implements Rescan. The caller holds p.mu.
func (p *PerfMap) rescan() error {
	if p.cfg.rescan > 0 {
		p.next.Store(monotime() + int64(p.cfg.rescan))
	}
	var errs []error
	for _, c := range p.rings {
		if err := c.revive(); err != nil {
			errs = append(errs, err)
		}
	}
	cpus, err := perf.OnlineCPUs()
	if err != nil {
		errs = append(errs, err)
	}
	var added []*cpuRing
	for _, cpu := range cpus {
		if _, ok := slices.BinarySearchFunc(p.rings, cpu, func(c *cpuRing, cpu int) int { return c.cpu - cpu }); ok {
			continue
		}
		if uint64(cpu) >= uint64(p.entries) {
			errs = append(errs, fmt.Errorf("%w: cpu %d came online, but perf map %q has max_entries %d",
				ErrMapType, cpu, p.name, p.entries))
			continue
		}
		c, err := p.openCPU(cpu)
		if errors.Is(err, unix.ENODEV) {
			continue // went offline again
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		added = append(added, c)
	}
	if len(added) > 0 {
		if err := p.register(added); err != nil {
			errs = append(errs, err)
		}
	}
	p.err = nil
	if len(errs) > 0 {
		p.err = fmt.Errorf("ringbuf: perf map %d (%q): rescan: %w", p.index, p.name, errors.Join(errs...))
	}
	return p.err
}

// register adds the rings of CPUs that came online to the manager and to
// p.rings; on failure it closes them. The caller holds p.mu.
func (p *PerfMap) register(added []*cpuRing) error {
	srcs := make([]source, len(added))
	fds := make([]int, len(added))
	for i, c := range added {
		srcs[i], fds[i] = c, c.fd
	}
	p.m.addMu.Lock()
	err := p.m.register(srcs, fds)
	p.m.addMu.Unlock()
	if err != nil {
		for _, c := range added {
			c.close()
		}
		return err
	}
	rings := append(slices.Clone(p.rings), added...)
	slices.SortFunc(rings, func(a, b *cpuRing) int { return a.cpu - b.cpu })
	p.rings = rings
	return nil
}

// revive replaces the ring's event if the kernel dropped it while its CPU
// was offline and the CPU is back: a new event on the CPU, redirected into
// the ring and stored in the map. While the CPU is still offline it does
// nothing. The caller holds pm.mu.
func (c *cpuRing) revive() error {
	alive, err := c.alive()
	if alive || err != nil {
		return err
	}
	fd, err := perf.Open(c.cpu, c.pm.cfg.wakeup)
	if errors.Is(err, unix.ENODEV) {
		return nil // still offline
	}
	if err != nil {
		return err
	}
	err = perf.Redirect(fd, c.fd)
	if err == nil {
		err = perf.Enable(fd)
	}
	if err == nil {
		err = bpf.UpdateUint32(c.pm.fd, uint32(c.cpu), uint32(fd))
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("cpu %d: replace the event dropped while the CPU was offline: %w", c.cpu, err)
	}
	if c.live != c.fd {
		unix.Close(c.live) // an earlier replacement, dropped in turn
	}
	c.live, c.stored = fd, true
	return nil
}

// alive reports whether the stored event is still on its CPU: its enabled
// time grows between two reads (each one makes the CPU bring it up to date,
// to the nanosecond) unless the kernel took it off the CPU for good. A
// clock too coarse to move between the reads would make a live event look
// dead; replacing it costs a few system calls and loses nothing, since both
// write into the same ring.
func (c *cpuRing) alive() (bool, error) {
	t0, err := perf.TimeEnabled(c.live)
	if err != nil {
		return false, fmt.Errorf("cpu %d: %w", c.cpu, err)
	}
	t1, err := perf.TimeEnabled(c.live)
	if err != nil {
		return false, fmt.Errorf("cpu %d: %w", c.cpu, err)
	}
	return t1 != t0, nil
}
