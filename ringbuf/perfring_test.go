package ringbuf

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"unsafe"
)

// simPerf is a perf event ring in plain memory with a producer that writes
// the kernel's record format.
type simPerf struct {
	perfRing
	words []uint64 // data_head, data_tail, then the data area
	lost  []uint64
}

func newSimPerf(size int) *simPerf {
	s := &simPerf{words: make([]uint64, 2+size/8)}
	data := unsafe.Slice((*byte)(unsafe.Pointer(&s.words[2])), size)
	s.perfRing = newPerfRing(&s.words[0], &s.words[1], data, func(n uint64) { s.lost = append(s.lost, n) })
	return s
}

// put writes a record of type typ with body at data_head, wrapping as the
// kernel does, and publishes it.
func (s *simPerf) put(typ uint32, body []byte) {
	rec := make([]byte, 8+len(body))
	binary.NativeEndian.PutUint32(rec, typ)
	binary.NativeEndian.PutUint16(rec[6:], uint16(len(rec)))
	copy(rec[8:], body)
	s.putRaw(rec)
}

func (s *simPerf) putRaw(rec []byte) {
	head := s.words[0]
	for i, c := range rec {
		s.data[(head+uint64(i))&s.mask] = c
	}
	s.words[0] = head + uint64(len(rec))
}

func (s *simPerf) sample(payload []byte) {
	raw := make([]byte, (len(payload)+4+7)&^7-4)
	copy(raw, payload)
	body := binary.NativeEndian.AppendUint32(nil, uint32(len(raw)))
	s.put(perfRecordSample, append(body, raw...))
}

func TestPerfRingSim(t *testing.T) {
	s := newSimPerf(64)
	var got [][]byte
	collect := func(b []byte) error { got = append(got, slices.Clone(b)); return nil }
	// 20-byte records (raw 12) and a 32-byte one: the third wraps.
	s.sample([]byte("abcdefgh"))
	s.put(perfRecordLost, binary.NativeEndian.AppendUint64(binary.NativeEndian.AppendUint64(nil, 7), 42))
	s.put(99, []byte("skipped!")) // another record type
	if n, err := s.read(collect, 10); n != 1 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	s.sample([]byte("0123456789abcdefghij")) // at 48: wraps
	if n, err := s.read(collect, 10); n != 1 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	if string(got[0][:8]) != "abcdefgh" || len(got[0]) != 12 || string(got[1][:20]) != "0123456789abcdefghij" {
		t.Fatalf("samples %q", got)
	}
	if !slices.Equal(s.lost, []uint64{42}) || s.words[1] != s.words[0] {
		t.Fatalf("lost %v, tail %d head %d", s.lost, s.words[1], s.words[0])
	}
}

func TestPerfRingCorrupt(t *testing.T) {
	ok := func([]byte) error { return nil }
	for _, tt := range []struct {
		name string
		fill func(s *simPerf)
	}{
		{"head more than a ring ahead", func(s *simPerf) { s.words[0] = 65 }},
		{"record size 0", func(s *simPerf) { s.putRaw(make([]byte, 8)) }},
		{"record size not a multiple of 8", func(s *simPerf) {
			s.put(perfRecordSample, make([]byte, 12))
			binary.NativeEndian.PutUint16(s.data[6:], 13)
		}},
		{"record beyond data_head", func(s *simPerf) {
			s.sample([]byte("x"))
			binary.NativeEndian.PutUint16(s.data[6:], 24)
		}},
		{"raw size beyond the record", func(s *simPerf) {
			s.sample([]byte("x"))
			binary.NativeEndian.PutUint32(s.data[8:], 5)
		}},
		{"sample without raw size", func(s *simPerf) { s.put(perfRecordSample, nil) }},
		{"short lost record", func(s *simPerf) { s.put(perfRecordLost, make([]byte, 8)) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSimPerf(64)
			tt.fill(s)
			if _, err := s.read(ok, 10); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: %v, want ErrCorrupt", err)
			}
		})
	}
}
