package ringbuf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/bpf"
	"github.com/bpfring/bpfring/internal/perf"
)

// DefaultPerfPages is the size of each CPU's perf ring in pages, unless
// WithPerfPages says otherwise.
const DefaultPerfPages = 16

// PerfOption configures a perf buffer added with AddPerf.
type PerfOption func(*perfConfig) error

type perfConfig struct {
	pages     int
	wakeup    perf.Wakeup
	wakeupSet bool
	onLost    func(cpu int, count uint64)
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
		if c.wakeupSet {
			return fmt.Errorf("ringbuf: WithPerfWakeupEvents and WithPerfWakeupBytes both given: %w", os.ErrInvalid)
		}
		c.wakeup, c.wakeupSet = perf.Wakeup{Events: uint32(n)}, true
		return nil
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
		if c.wakeupSet {
			return fmt.Errorf("ringbuf: WithPerfWakeupEvents and WithPerfWakeupBytes both given: %w", os.ErrInvalid)
		}
		c.wakeup, c.wakeupSet = perf.Wakeup{Bytes: uint32(n)}, true
		return nil
	}
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

// PerfMap is a perf buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY) of a Manager: one
// perf event ring per CPU, each one a source of the manager like a ring
// buffer.
type PerfMap struct {
	m      *Manager
	index  int
	mapFD  int // the caller's fd
	fd     int // our duplicate, owned
	fn     Callback
	onLost func(cpu int, count uint64)
	size   int // data bytes per CPU
	rings  []*cpuRing
	lost   atomic.Uint64
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
// that goes offline meanwhile is skipped; a CPU that comes online later gets
// no ring, so what a BPF program outputs on it fails (bpf_perf_event_output
// returns an error). The map's max_entries must exceed the highest online
// CPU, or AddPerf fails with ErrMapType.
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
	cfg := perfConfig{pages: DefaultPerfPages, wakeup: perf.Wakeup{Events: 1}}
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
	p := &PerfMap{m: m, mapFD: fd, fd: dup, fn: fn, onLost: cfg.onLost, size: size}
	if err := p.open(cpus, cfg); err != nil {
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
	all := append(old[:len(old):len(old)], p)
	m.perfMaps.Store(&all)
	return p, nil
}

// open opens the ring of every CPU in cpus, skipping those that went offline.
func (p *PerfMap) open(cpus []int, cfg perfConfig) error {
	for _, cpu := range cpus {
		c, err := p.openCPU(cpu, cfg)
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

func (p *PerfMap) openCPU(cpu int, cfg perfConfig) (*cpuRing, error) {
	fd, err := perf.Open(cpu, cfg.wakeup)
	if err != nil {
		return nil, err
	}
	c := &cpuRing{pm: p, cpu: cpu, fd: fd}
	if c.mem, err = perf.Mmap(fd, cfg.pages); err != nil {
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

// close disables the event, clears its entry in the map (so that the BPF
// program's outputs on this CPU fail instead of filling a ring nobody
// reads), unmaps the ring and closes the event. The entry is deleted
// unconditionally: another user who stored their own fd at this CPU's index
// meanwhile loses it.
func (c *cpuRing) close() error {
	var errs []error
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

// CPUs returns the CPUs that have a ring, in increasing order.
func (p *PerfMap) CPUs() []int {
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
