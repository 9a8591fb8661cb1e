package ringbuf

import (
	"fmt"
	"os"

	"github.com/bpfring/bpfring/internal/bpf"
	"github.com/bpfring/bpfring/internal/ringmap"
)

// kernelRing is a ring buffer map mapped into this process.
type kernelRing struct {
	ring
	*ringmap.Mapping
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
	m, err := ringmap.Open(rb.FD(), bpf.RingBuf, ErrMapType, "ringbuf")
	if err != nil {
		return nil, err
	}
	return &kernelRing{ring: newRing(m.Cons, m.Prod, m.Data), Mapping: m}, nil
}

// close unmaps the ring and closes the duplicated fd.
func (kr *kernelRing) close() error { return kr.Mapping.Close() }
