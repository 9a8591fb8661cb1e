package ringbuf

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"
)

// fuzzPerfSize is the data area of the fuzzed perf ring: small, so that
// records wrap and the ring fills often.
const fuzzPerfSize = 256

// FuzzPerfRing reads a perf ring whose data area, data_head and data_tail
// come from the input: any bytes as record headers (sizes of 0, odd sizes,
// sizes past data_head, raw lengths past the record), positions that jump or
// go backwards. The reader must not panic, must hand out only slices of the
// data area or of its stitch buffer, must stop after max samples, must not
// move data_tail past data_head, and must report impossible input as
// ErrCorrupt; repeated reads must come to an end.
func FuzzPerfRing(f *testing.F) {
	sample := func(raw int) []byte { // a PERF_RECORD_SAMPLE of raw bytes
		size := (perfRawOffset + raw + 7) &^ 7
		b := make([]byte, size)
		binary.LittleEndian.PutUint32(b, perfRecordSample)
		binary.LittleEndian.PutUint16(b[6:], uint16(size))
		binary.LittleEndian.PutUint32(b[8:], uint32(raw))
		return b
	}
	lost := make([]byte, perfLostSize)
	binary.LittleEndian.PutUint32(lost, perfRecordLost)
	binary.LittleEndian.PutUint16(lost[6:], perfLostSize)
	binary.LittleEndian.PutUint64(lost[16:], 7)
	seed := func(head, tail uint64, records ...[]byte) []byte {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], head)
		binary.LittleEndian.PutUint64(b[8:], tail)
		out := b[:]
		for _, r := range records {
			out = append(out, r...)
		}
		return out
	}
	f.Add(seed(48, 0, sample(4), sample(20)))
	f.Add(seed(24+perfLostSize, 0, sample(12), lost))
	f.Add(seed(300, 250, sample(100), sample(100), sample(40))) // wraps
	f.Add(seed(8, 0, []byte{9, 0, 0, 0, 0, 0, 0, 0}))           // size 0
	f.Add(seed(1<<40, 0))                                       // head far ahead
	f.Add(seed(0, 64))                                          // head behind tail
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 16 {
			return
		}
		head := binary.LittleEndian.Uint64(in) % (4 * fuzzPerfSize)
		if in[0]&1 != 0 { // sometimes keep the raw, impossible position
			head = binary.LittleEndian.Uint64(in)
		}
		tail := binary.LittleEndian.Uint64(in[8:]) % (4 * fuzzPerfSize)
		words := make([]uint64, 2+fuzzPerfSize/8) // head, tail, data: 8-byte aligned
		data := unsafe.Slice((*byte)(unsafe.Pointer(&words[2])), fuzzPerfSize)
		for i, b := range in[16:] {
			data[(tail+uint64(i))%fuzzPerfSize] = b
		}
		words[0], words[1] = head, tail
		lostTotal := uint64(0)
		r := newPerfRing(&words[0], &words[1], data, func(n uint64) { lostTotal += n })
		inside := func(b []byte, area []byte) bool {
			if len(b) == 0 {
				return true
			}
			p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(unsafe.SliceData(area)))
			return p >= lo && p+uintptr(len(b)) <= lo+uintptr(len(area))
		}
		for calls := 0; ; calls++ {
			if calls > fuzzPerfSize {
				t.Fatalf("reads do not come to an end: data_tail %d, data_head %d", words[1], words[0])
			}
			max := 1 + calls%4
			got := 0
			n, err := r.read(func(b []byte) error {
				got++
				if !inside(b, data) && !inside(b, r.stitch) {
					t.Fatalf("sample of %d bytes outside the data area and the stitch buffer", len(b))
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
				return
			}
			if words[1]-tail > words[0]-tail {
				t.Fatalf("data_tail %d moved past data_head %d", words[1], words[0])
			}
			if words[1] == words[0] {
				return
			}
		}
	})
}
