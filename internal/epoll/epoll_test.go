package epoll

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/leakcheck"
	"github.com/bpfring/bpfring/internal/testprog"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestWakeAndReset(t *testing.T) {
	p := newPoller(t)
	events := make([]unix.EpollEvent, 4)
	if n, err := p.Wait(events, 0); n != 0 || err != nil {
		t.Fatalf("Wait with nothing ready: %d, %v", n, err)
	}
	for range 3 { // wake-ups collapse into one event
		if err := p.Wake(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.Wait(events, -1); n != 1 || err != nil || events[0].Fd != WakeToken {
		t.Fatalf("Wait after Wake: %d, %v, %+v", n, err, events[0])
	}
	p.ResetWake()
	if n, err := p.Wait(events, 0); n != 0 || err != nil {
		t.Fatalf("Wait after ResetWake: %d, %v", n, err)
	}
}

func TestAddReportsToken(t *testing.T) {
	p := newPoller(t)
	fds := make([]int, 2)
	if err := unix.Pipe2(fds, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := p.Add(fds[0], 42); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(fds[0], 43); err == nil {
		t.Fatal("adding an fd twice succeeded")
	}
	unix.Write(fds[1], []byte{1})
	events := make([]unix.EpollEvent, 4)
	// Level-triggered: reported on every Wait until read.
	for range 2 {
		if n, err := p.Wait(events, -1); n != 1 || err != nil || events[0].Fd != 42 {
			t.Fatalf("Wait: %d, %v, %+v", n, err, events[0])
		}
	}
}

// TestWaitKeepsTimeoutUnderSignals checks that EINTR neither ends the wait
// early nor restarts it with the full timeout.
func TestWaitKeepsTimeoutUnderSignals(t *testing.T) {
	p := newPoller(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	stop := testprog.SignalStorm(t, unix.Gettid(), 100*time.Microsecond)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	n, err := p.Wait(make([]unix.EpollEvent, 1), timeout)
	elapsed := time.Since(start)
	sent := stop()
	if n != 0 || err != nil {
		t.Fatalf("Wait: %d, %v", n, err)
	}
	if elapsed < timeout || elapsed > 50*timeout {
		t.Fatalf("Wait(%v) under %d signals took %v", timeout, sent, elapsed)
	}
}

func TestMillis(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int
	}{
		{-1, -1}, {0, 0}, {1, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2},
		{time.Duration(1 << 62), 1<<31 - 1},
	} {
		if got := millis(tt.d); got != tt.want {
			t.Errorf("millis(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}
