// Package bpf wraps the few bpf(2) commands the ring buffer packages need:
// identifying a map behind a file descriptor and reading its attributes.
// It depends only on golang.org/x/sys/unix.
package bpf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapType is a kernel map type (enum bpf_map_type).
type MapType uint32

// The map types this project deals with; any other prints as its number.
const (
	Hash           MapType = unix.BPF_MAP_TYPE_HASH
	Array          MapType = unix.BPF_MAP_TYPE_ARRAY
	PerfEventArray MapType = unix.BPF_MAP_TYPE_PERF_EVENT_ARRAY
	RingBuf        MapType = unix.BPF_MAP_TYPE_RINGBUF
	UserRingBuf    MapType = unix.BPF_MAP_TYPE_USER_RINGBUF
)

func (t MapType) String() string {
	switch t {
	case Hash:
		return "Hash"
	case Array:
		return "Array"
	case PerfEventArray:
		return "PerfEventArray"
	case RingBuf:
		return "RingBuf"
	case UserRingBuf:
		return "UserRingBuf"
	}
	return "MapType(" + strconv.Itoa(int(t)) + ")"
}

// MapInfo holds the attributes of a map (the head of struct bpf_map_info).
type MapInfo struct {
	Type       MapType
	ID         uint32
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32
	Name       string
}

// mapInfo mirrors the start of struct bpf_map_info in include/uapi/linux/bpf.h.
// The kernel fills min(len, its own size) bytes, so a prefix is enough.
type mapInfo struct {
	typ        uint32
	id         uint32
	keySize    uint32
	valueSize  uint32
	maxEntries uint32
	flags      uint32
	name       [16]byte
}

// objGetInfoAttr mirrors the info member of union bpf_attr. info is a real
// pointer so that the runtime keeps the buffer alive and updates it if the
// stack moves. On a 32-bit little-endian platform the struct is 12 bytes and
// the kernel zero-fills the high half of its aligned_u64. (A trailing padding
// array would not do: Go pads a struct that ends in a zero-size field.)
type objGetInfoAttr struct {
	fd      uint32
	infoLen uint32
	info    unsafe.Pointer
}

// ErrNotMap means a file descriptor is open but is not a BPF map.
var ErrNotMap = errors.New("not a BPF map")

// MapInfoByFD identifies the map behind fd. It fails with an error wrapping
// unix.EBADF when fd is negative or not open, and ErrNotMap when fd is some
// other kind of file (the error names what it is).
func MapInfoByFD(fd int) (MapInfo, error) {
	if fd < 0 {
		return MapInfo{}, fmt.Errorf("fd %d: %w", fd, unix.EBADF)
	}
	// The kernel answers BPF_OBJ_GET_INFO_BY_FD for programs, links and BTF
	// too, so ask what the fd is first; /proc may be absent, then trust the
	// kernel's answer alone.
	if kind, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil {
		if kind != "anon_inode:bpf-map" {
			return MapInfo{}, fmt.Errorf("fd %d is %s: %w", fd, kind, ErrNotMap)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		return MapInfo{}, fmt.Errorf("fd %d is not open: %w", fd, unix.EBADF)
	}

	var info mapInfo
	attr := objGetInfoAttr{
		fd:      uint32(fd),
		infoLen: uint32(unsafe.Sizeof(info)),
		info:    unsafe.Pointer(&info),
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD,
		uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	switch errno {
	case 0:
	case unix.EBADF, unix.EBADFD:
		return MapInfo{}, fmt.Errorf("fd %d is not open: %w", fd, unix.EBADF)
	case unix.EINVAL:
		return MapInfo{}, fmt.Errorf("fd %d: %w", fd, ErrNotMap)
	default:
		return MapInfo{}, fmt.Errorf("fd %d: BPF_OBJ_GET_INFO_BY_FD: %w", fd, errno)
	}
	return MapInfo{
		Type:       MapType(info.typ),
		ID:         info.id,
		KeySize:    info.keySize,
		ValueSize:  info.valueSize,
		MaxEntries: info.maxEntries,
		Flags:      info.flags,
		Name:       unix.ByteSliceToString(info.name[:]),
	}, nil
}
