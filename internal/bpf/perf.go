package bpf

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// elemAttr mirrors the map element member of union bpf_attr: map_fd, then
// aligned_u64 key, value and flags. key and value are real pointers so that
// the runtime keeps their targets alive; the padding after each makes it 8
// bytes wide on 32-bit platforms too (little-endian: the kernel reads the
// zeroed high half).
type elemAttr struct {
	mapFD uint32
	_     uint32
	key   unsafe.Pointer
	_     [8 - unsafe.Sizeof(uintptr(0))]byte
	value unsafe.Pointer
	_     [8 - unsafe.Sizeof(uintptr(0))]byte
	flags uint64
}

// UpdateUint32 stores value at key in the map behind mapFD
// (BPF_MAP_UPDATE_ELEM, BPF_ANY). Both must be 4 bytes wide in the map; for a
// BPF_MAP_TYPE_PERF_EVENT_ARRAY, key is a CPU and value a perf event fd.
func UpdateUint32(mapFD int, key, value uint32) error {
	attr := elemAttr{
		mapFD: uint32(mapFD),
		key:   unsafe.Pointer(&key),
		value: unsafe.Pointer(&value),
		flags: unix.BPF_ANY,
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_UPDATE_ELEM,
		uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return fmt.Errorf("map fd %d: BPF_MAP_UPDATE_ELEM key %d: %w", mapFD, key, errno)
	}
	return nil
}

// DeleteUint32 deletes key from the map behind mapFD (BPF_MAP_DELETE_ELEM).
// Deleting a missing key fails with an error wrapping unix.ENOENT.
func DeleteUint32(mapFD int, key uint32) error {
	attr := elemAttr{mapFD: uint32(mapFD), key: unsafe.Pointer(&key)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_DELETE_ELEM,
		uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return fmt.Errorf("map fd %d: BPF_MAP_DELETE_ELEM key %d: %w", mapFD, key, errno)
	}
	return nil
}
