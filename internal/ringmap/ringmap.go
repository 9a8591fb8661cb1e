// Package ringmap maps a BPF ring buffer map into the process, for the
// consumer of a BPF_MAP_TYPE_RINGBUF (package ringbuf) and the producer of a
// BPF_MAP_TYPE_USER_RINGBUF (package userringbuf), and holds the record
// header format the two share.
package ringmap

import (
	"errors"
	"fmt"
	"math"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/bpf"
)

// The record header is 8 bytes: a 32-bit length word, then 32 bits that the
// kernel's consumer ignores (include/uapi/linux/bpf.h, BPF_RINGBUF_*).
const (
	BusyBit    = 1 << 31 // BPF_RINGBUF_BUSY_BIT: reserved, not committed yet
	DiscardBit = 1 << 30 // BPF_RINGBUF_DISCARD_BIT: committed, to be skipped
	HeaderSize = 8       // BPF_RINGBUF_HDR_SZ
)

// Mapping is a ring buffer map mapped into the process: its consumer page,
// its producer page and its data area, which the kernel maps twice in a row
// so that a record that wraps past the end reads as one slice.
type Mapping struct {
	FD   int      // a duplicate of the map's fd, owned by the Mapping
	Name string   // the map's name
	Size int      // the data area's size: the map's max_entries
	Cons *uintptr // the consumer position (unsigned long in the kernel)
	Prod *uintptr // the producer position
	Data []byte   // the data area, twice: len(Data) == 2*Size

	consMem []byte
	dataMem []byte
}

// Open checks that fd is a map of type typ (RingBuf or UserRingBuf) with a
// usable size, failing with an error that wraps errMapType otherwise, then
// duplicates fd, so that the caller's fd may be closed at any time, and maps
// the map. The side that user space writes is mapped writable: the consumer
// page of a RingBuf, the producer page and data area of a UserRingBuf, as the
// kernel requires (ringbuf_map_mmap_kern, ringbuf_map_mmap_user). prefix
// starts the messages of the other errors.
func Open(fd int, typ bpf.MapType, errMapType error, prefix string) (*Mapping, error) {
	info, err := bpf.MapInfoByFD(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	if info.Type != typ {
		return nil, fmt.Errorf("%w: map %q (id %d) is of type %s, want %s",
			errMapType, info.Name, info.ID, info.Type, typ)
	}
	size := int(info.MaxEntries)
	page := os.Getpagesize()
	// The kernel guarantees a power of two and a multiple of the page size;
	// check anyway, since the position arithmetic depends on it.
	if size <= 0 || size&(size-1) != 0 || size%page != 0 || size > (math.MaxInt-page)/2 {
		return nil, fmt.Errorf("%w: map %q has unusable size %d", errMapType, info.Name, size)
	}
	consProt, dataProt := unix.PROT_READ|unix.PROT_WRITE, unix.PROT_READ
	if typ == bpf.UserRingBuf {
		consProt, dataProt = unix.PROT_READ, unix.PROT_READ|unix.PROT_WRITE
	}

	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: dup fd %d: %w", prefix, fd, err)
	}
	m := &Mapping{FD: dup, Name: info.Name, Size: size}
	if m.consMem, err = unix.Mmap(dup, 0, page, consProt, unix.MAP_SHARED); err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: mmap consumer page of map %q: %w", prefix, info.Name, err)
	}
	if m.dataMem, err = unix.Mmap(dup, int64(page), page+2*size, dataProt, unix.MAP_SHARED); err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: mmap data of map %q: %w", prefix, info.Name, err)
	}
	m.Cons = (*uintptr)(unsafe.Pointer(&m.consMem[0]))
	m.Prod = (*uintptr)(unsafe.Pointer(&m.dataMem[0]))
	m.Data = m.dataMem[page:]
	return m, nil
}

// Close unmaps the map and closes the duplicated fd.
func (m *Mapping) Close() error {
	var errs []error
	for _, mem := range [][]byte{m.consMem, m.dataMem} {
		if mem != nil {
			errs = append(errs, unix.Munmap(mem))
		}
	}
	m.consMem, m.dataMem, m.Data = nil, nil, nil
	errs = append(errs, unix.Close(m.FD))
	return errors.Join(errs...)
}
