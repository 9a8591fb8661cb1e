package ringbuf

import (
	"errors"
	"fmt"
	"math"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/bpf"
)

// kernelRing is a ring buffer map mapped into this process.
type kernelRing struct {
	ring
	fd      int    // our duplicate of the map fd, owned
	size    int    // max_entries
	consMem []byte // consumer page, read-write
	dataMem []byte // producer page and the doubled data area, read-only
}

// openKernelRing checks the arguments of New and Add, and that rb is a
// BPF_MAP_TYPE_RINGBUF map, and maps it. It duplicates the map's fd, so the
// caller's fd may be closed at any time afterwards.
func openKernelRing(rb Map, fn Callback) (*kernelRing, error) {
	if rb == nil {
		return nil, fmt.Errorf("ringbuf: nil map: %w", os.ErrInvalid)
	}
	if fn == nil {
		return nil, fmt.Errorf("ringbuf: nil callback: %w", os.ErrInvalid)
	}
	fd := rb.FD()
	info, err := bpf.MapInfoByFD(fd)
	if err != nil {
		return nil, fmt.Errorf("ringbuf: %w", err)
	}
	if info.Type != bpf.RingBuf {
		return nil, fmt.Errorf("%w: map %q (id %d) is of type %s, want %s",
			ErrMapType, info.Name, info.ID, info.Type, bpf.RingBuf)
	}
	size := int(info.MaxEntries)
	page := os.Getpagesize()
	// The kernel guarantees a power of two and a multiple of the page size;
	// check anyway, since the ring logic depends on it.
	if size <= 0 || size&(size-1) != 0 || size%page != 0 || size > (math.MaxInt-page)/2 {
		return nil, fmt.Errorf("%w: map %q has unusable size %d", ErrMapType, info.Name, size)
	}

	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ringbuf: dup fd %d: %w", fd, err)
	}
	kr := &kernelRing{fd: dup, size: size}
	// Layout (kernel/bpf/ringbuf.c, ringbuf_map_mmap_kern): the consumer page
	// is the only writable one; the producer page and the data area, which
	// the kernel maps twice in a row, are read-only.
	kr.consMem, err = unix.Mmap(dup, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		kr.close()
		return nil, fmt.Errorf("ringbuf: mmap consumer page of map %q: %w", info.Name, err)
	}
	kr.dataMem, err = unix.Mmap(dup, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		kr.close()
		return nil, fmt.Errorf("ringbuf: mmap data of map %q: %w", info.Name, err)
	}
	kr.ring = newRing(
		(*uintptr)(unsafe.Pointer(&kr.consMem[0])),
		(*uintptr)(unsafe.Pointer(&kr.dataMem[0])),
		kr.dataMem[page:],
	)
	return kr, nil
}

// close unmaps the ring and closes the duplicated fd.
func (kr *kernelRing) close() error {
	var errs []error
	for _, mem := range [][]byte{kr.consMem, kr.dataMem} {
		if mem != nil {
			errs = append(errs, unix.Munmap(mem))
		}
	}
	kr.consMem, kr.dataMem = nil, nil
	errs = append(errs, unix.Close(kr.fd))
	return errors.Join(errs...)
}
