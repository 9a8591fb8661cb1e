package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct perf_event_mmap_page (include/uapi/linux/perf_event.h),
// the first page of a perf event mapping.
const (
	OffDataHead   = 1024 // u64, written by the kernel
	OffDataTail   = 1032 // u64, written by the consumer
	OffDataOffset = 1040 // u64, where the data area starts (Linux 4.1 on; 0 before)
	OffDataSize   = 1048 // u64, the data area's size (Linux 4.1 on; 0 before)
)

// Wakeup says when the kernel wakes a consumer of an event: after every
// Events samples, or, with Bytes set instead, when Bytes of records are
// waiting.
type Wakeup struct {
	Events uint32
	Bytes  uint32
}

// Open opens a PERF_COUNT_SW_BPF_OUTPUT software event with PERF_SAMPLE_RAW
// for any process on cpu, disabled, close-on-exec. An offline CPU fails with
// an error wrapping unix.ENODEV. The event reads as its time enabled (see
// TimeEnabled).
func Open(cpu int, w Wakeup) (int, error) {
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_SOFTWARE,
		Size:        uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Config:      unix.PERF_COUNT_SW_BPF_OUTPUT,
		Sample:      1, // sample_period: every output is a sample
		Sample_type: unix.PERF_SAMPLE_RAW,
		Read_format: unix.PERF_FORMAT_TOTAL_TIME_ENABLED,
		Bits:        unix.PerfBitDisabled,
		Wakeup:      w.Events,
	}
	if w.Bytes != 0 {
		attr.Bits |= unix.PerfBitWatermark
		attr.Wakeup = w.Bytes
	}
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("perf_event_open bpf-output on cpu %d: %w", cpu, err)
	}
	return fd, nil
}

// Mmap maps the metadata page and 2^n data pages of the event fd, read-write
// so that the kernel honours the consumer's data_tail and never overwrites
// unread records.
func Mmap(fd, dataPages int) ([]byte, error) {
	page := os.Getpagesize()
	mem, err := unix.Mmap(fd, 0, (1+dataPages)*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap perf event fd %d with %d data pages: %w", fd, dataPages, err)
	}
	return mem, nil
}

// Enable starts the event (PERF_EVENT_IOC_ENABLE).
func Enable(fd int) error {
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_ENABLE fd %d: %w", fd, err)
	}
	return nil
}

// Disable stops the event (PERF_EVENT_IOC_DISABLE).
func Disable(fd int) error {
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_DISABLE, 0); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_DISABLE fd %d: %w", fd, err)
	}
	return nil
}

// Redirect makes the event fd write its records into the ring of the event
// to (PERF_EVENT_IOC_SET_OUTPUT), so that a new event can feed a ring that is
// already mapped. Both must be on the same CPU, and fd must not be mapped.
func Redirect(fd, to int) error {
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_OUTPUT, to); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_SET_OUTPUT fd %d to fd %d: %w", fd, to, err)
	}
	return nil
}

// TimeEnabled returns the nanoseconds an event opened by Open has been
// enabled. The kernel stops the clock when it takes the event off its CPU
// for good: when the CPU goes offline, the event leaves the CPU's context
// and does not come back when the CPU does (kernel/events/core.c,
// __perf_event_exit_context). An enabled event whose time stands still
// across two reads is therefore dead: outputs to it fail.
func TimeEnabled(fd int) (uint64, error) {
	var b [16]byte // value, time_enabled
	n, err := unix.Read(fd, b[:])
	if err != nil {
		return 0, fmt.Errorf("read perf event fd %d: %w", fd, err)
	}
	if n != len(b) {
		return 0, fmt.Errorf("read perf event fd %d: %d bytes, want %d", fd, n, len(b))
	}
	return binary.NativeEndian.Uint64(b[8:]), nil
}

// onlineFile lists the online CPUs, as "0-3,5".
const onlineFile = "/sys/devices/system/cpu/online"

// OnlineCPUs returns the CPUs online now, in increasing order.
func OnlineCPUs() ([]int, error) {
	b, err := os.ReadFile(onlineFile)
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	cpus, err := ParseCPUList(string(b))
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %s: %w", onlineFile, err)
	}
	return cpus, nil
}

// ParseCPUList parses the kernel's CPU list format ("0-3,5,7-8\n") into
// increasing CPU numbers.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty CPU list")
	}
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil || first < 0 {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil, fmt.Errorf("bad CPU list %q", s)
			}
		}
		if len(cpus) > 0 && first <= cpus[len(cpus)-1] {
			return nil, fmt.Errorf("bad CPU list %q: not increasing", s)
		}
		for cpu := first; cpu <= last; cpu++ {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}
