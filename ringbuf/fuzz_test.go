package ringbuf

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"
)

// fuzzRingSize is small so that the fuzzer reaches wrap-around, full rings
// and every header offset quickly.
const fuzzRingSize = 256

// FuzzRing drives the ring walker over a simulated ring with a program of
// operations taken from the input: a well-behaved producer interleaved with
// raw writes to headers and positions (lengths beyond the ring or beyond the
// producer, positions that go backwards or jump, records left BUSY), and
// reads with various limits. Whatever the input, read must not panic, must
// hand out only slices inside the data area, must terminate with at most max
// records, must never move the consumer past the producer, and must report
// impossible input as ErrCorrupt.
func FuzzRing(f *testing.F) {
	f.Add([]byte{3, 8, 3, 200, 2, 100, 3, 1, 2, 1, 2, 255})           // normal records, then wrap
	f.Add([]byte{3, 16, 0, 0, 0x40, 0, 0, 0, 2, 10})                  // header overwritten: length far too big
	f.Add([]byte{3, 16, 0, 0, 0x00, 0, 0, 0x80, 2, 10})               // BUSY forever
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0x7f, 2, 10})                   // producer jumps ahead
	f.Add([]byte{3, 8, 2, 10, 1, 0x80, 0, 0, 0, 2, 10})               // producer goes backwards
	f.Add([]byte{4, 40, 3, 8, 2, 10, 5, 0, 2, 10, 3, 100, 3, 100, 2}) // reserve, commit later, discard
	f.Fuzz(func(t *testing.T, program []byte) {
		s := newSimRing(fuzzRingSize)
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(s.data)))
		hi := lo + uintptr(len(s.data))
		corrupt := false // once the ring is corrupt, positions mean nothing
		var reserved []uintptr
		next := func() byte {
			if len(program) == 0 {
				return 0
			}
			b := program[0]
			program = program[1:]
			return b
		}
		for steps := 0; len(program) > 0 && steps < 1000; steps++ {
			switch next() % 6 {
			case 0: // raw header write at a record-aligned offset
				off := uintptr(next()) * 8 % fuzzRingSize
				var hdr [4]byte
				for i := range hdr {
					hdr[i] = next()
				}
				s.setHeader(off, binary.LittleEndian.Uint32(hdr[:]))
			case 1: // raw producer position
				var p [4]byte
				for i := range p {
					p[i] = next()
				}
				*s.ring.prod = s.consumerPos() + uintptr(int32(binary.LittleEndian.Uint32(p[:])))
				s.prod = *s.ring.prod
			case 2: // read
				max := int(next())
				cons, prod := s.consumerPos(), s.producerPos()
				got := 0
				n, err := s.read(func(data []byte) error {
					got++
					if len(data) > 0 {
						p := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
						if p < lo || p+uintptr(len(data)) > hi {
							t.Fatalf("record [%#x, %#x) outside the data area [%#x, %#x)", p, p+uintptr(len(data)), lo, hi)
						}
					}
					return nil
				}, max)
				if n != got || n > max {
					t.Fatalf("read(max %d) returned %d, delivered %d", max, n, got)
				}
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("read: %v, want ErrCorrupt or nil", err)
					}
					corrupt = true
				}
				if moved := s.consumerPos() - cons; !corrupt && moved > prod-cons {
					t.Fatalf("consumer moved %d bytes with %d published", moved, prod-cons)
				}
			case 3: // a well-behaved record
				if !corrupt {
					s.output(make([]byte, int(next())))
				}
			case 4: // reserve now, commit later
				if pos, ok := s.reserve(int(next())); ok && !corrupt {
					reserved = append(reserved, pos)
				}
			case 5: // commit or discard the oldest reservation
				if len(reserved) > 0 {
					pos := reserved[0]
					reserved = reserved[1:]
					s.commit(pos, make([]byte, s.headerLen(pos)), next()%2 == 0)
				}
			}
		}
	})
}

// headerLen returns the length in the header of the record at pos.
func (s *simRing) headerLen(pos uintptr) int {
	off := pos & (s.size - 1)
	return int(binary.LittleEndian.Uint32(s.data[off:]) &^ (busyBit | discardBit))
}
