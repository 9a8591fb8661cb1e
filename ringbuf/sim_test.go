package ringbuf

import (
	"encoding/binary"
	"unsafe"
)

// simRing is a ring buffer in plain memory, laid out as the kernel lays it
// out, with a producer that writes the kernel's record format. Every byte is
// written to both copies of the data area, as the kernel's double mapping
// would show it.
type simRing struct {
	ring
	size uintptr
	prod uintptr // producer position as the producer knows it
}

func newSimRing(size int) *simRing {
	// uint64 backing keeps positions and headers 8-byte aligned.
	words := make([]uint64, 2+2*size/8)
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&words[2])), 2*size)
	return &simRing{
		ring: newRing((*uintptr)(unsafe.Pointer(&words[0])), (*uintptr)(unsafe.Pointer(&words[1])), mem),
		size: uintptr(size),
	}
}

// put writes b at ring position pos into both copies of the data area.
func (s *simRing) put(pos uintptr, b []byte) {
	for i, c := range b {
		off := (pos + uintptr(i)) & (s.size - 1)
		s.data[off] = c
		s.data[off+s.size] = c
	}
}

// reserve writes a BUSY header for a record of n bytes and publishes the new
// producer position, as __bpf_ringbuf_reserve does. It returns the record's
// position, or false when the ring has no room.
func (s *simRing) reserve(n int) (uintptr, bool) {
	total := (uintptr(n) + headerSize + 7) &^ 7
	if s.prod+total-s.consumerPos() > s.size {
		return 0, false
	}
	pos := s.prod
	s.setHeader(pos, uint32(n)|busyBit)
	s.prod += total
	*s.ring.prod = s.prod
	return pos, true
}

func (s *simRing) setHeader(pos uintptr, hdr uint32) {
	var b [headerSize]byte
	binary.LittleEndian.PutUint32(b[:], hdr)
	s.put(pos, b[:])
}

// commit fills the payload and clears BUSY (setting DISCARD if asked).
func (s *simRing) commit(pos uintptr, payload []byte, discard bool) {
	s.put(pos+headerSize, payload)
	hdr := uint32(len(payload))
	if discard {
		hdr |= discardBit
	}
	s.setHeader(pos, hdr)
}

// output reserves and commits a record in one go.
func (s *simRing) output(payload []byte) bool {
	pos, ok := s.reserve(len(payload))
	if ok {
		s.commit(pos, payload, false)
	}
	return ok
}
