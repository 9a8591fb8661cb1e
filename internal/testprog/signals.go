package testprog

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SignalStorm sends SIGURG, the Go runtime's own preemption signal and so
// harmless, to thread tid (tgkill) and to the whole process (kill) every
// interval, until stop is called; stop returns how many signals were sent.
// A signal makes a system call blocked on that thread, such as epoll_wait
// or BPF_PROG_TEST_RUN, return EINTR.
func SignalStorm(tb testing.TB, tid int, interval time.Duration) (stop func() int64) {
	var sent atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		pid := unix.Getpid()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := unix.Tgkill(pid, tid, unix.SIGURG); err != nil {
					tb.Error(err)
					return
				}
				if err := unix.Kill(pid, unix.SIGURG); err != nil {
					tb.Error(err)
					return
				}
				sent.Add(2)
			}
		}
	})
	return func() int64 {
		close(done)
		wg.Wait()
		return sent.Load()
	}
}
