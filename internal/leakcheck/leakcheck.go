// Package leakcheck fails a test binary that leaks goroutines, file
// descriptors or ring buffer mappings. Call Main from TestMain.
package leakcheck

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main runs the tests and then checks for leaks; it exits the process.
func Main(m *testing.M) {
	// The runtime's netpoller opens an epoll fd and an eventfd the first
	// time a pollable file is used, and keeps them: start it now so that its
	// fds are in the snapshot.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fdsBefore := openFDs()
	code := m.Run()
	if code == 0 {
		if err := check(fdsBefore); err != nil {
			fmt.Fprintln(os.Stderr, "leakcheck:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func check(fdsBefore []string) error {
	if err := goleak.Find(); err != nil {
		return err
	}
	// Resources released by a call returning in another goroutine, or by a
	// finalizer, may take a moment.
	var fds []string
	var maps []string
	for range 50 {
		runtime.GC()
		fds, maps = newFDs(fdsBefore), bpfMappings()
		if len(fds) == 0 && len(maps) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("leaked file descriptors %v and BPF map mappings %v", fds, maps)
}

func openFDs() []string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []string
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		fds = append(fds, e.Name()+" -> "+target)
	}
	return fds
}

func newFDs(before []string) []string {
	var leaked []string
	for _, fd := range openFDs() {
		if !slices.Contains(before, fd) {
			leaked = append(leaked, fd)
		}
	}
	return leaked
}

// bpfMappings lists the process's mappings of BPF maps (ring buffers).
func bpfMappings() []string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "bpf-map") || strings.Contains(sc.Text(), "perf_event") {
			found = append(found, sc.Text())
		}
	}
	return found
}
