package ringbuf

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/testprog"
)

// TestNoLostWakeup makes a producer commit a record right as the consumer
// goes to sleep, thousands of times, with adaptive wake-ups: the consumer
// stores its position, re-reads the producer's and blocks in epoll, and the
// producer's commit must wake it whichever of them comes first. A lost
// wake-up leaves Poll waiting for a record that is there, which this test
// sees as a hang.
func TestNoLostWakeup(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8}
	c := newChecker(t, spec)
	prod := testprog.NewProducer(t, spec)
	iterations := 5000
	if raceEnabled || testing.Short() {
		iterations = 1000
	}
	for _, opts := range []struct {
		name string
		opts []Option
	}{
		{"epoll", nil},
		{"busy poll", []Option{WithBusyPoll(5 * time.Microsecond)}},
	} {
		t.Run(opts.name, func(t *testing.T) {
			m := newManager(t, rb, c.callback, opts.opts...)
			start := make(chan struct{})
			done := make(chan error)
			go func() {
				for range iterations {
					start <- struct{}{}
					n, err := m.Poll(hang)
					if err == nil && n == 0 {
						err = errors.New("Poll returned no record: a wake-up was lost")
					}
					if err != nil {
						done <- err
						return
					}
				}
				close(done)
			}()
			for i := range iterations {
				select {
				case <-start:
				case err := <-done:
					t.Fatalf("iteration %d: %v", i, err)
				}
				// Commit at a random moment around the consumer's sleep.
				for spin := rand.IntN(4000); spin > 0; spin-- {
				}
				prod.RunOnCPU(t, 1, 1)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := c.count(); got != 2*iterations {
		t.Fatalf("consumed %d records, want %d", got, 2*iterations)
	}
}

func TestBusyPoll(t *testing.T) {
	rb := testprog.NewRingBuf(t, 4096)
	spec := testprog.Spec{Ring: rb, Size: 8, Flags: testprog.NoWakeup}
	c := newChecker(t, spec)
	m := newManager(t, rb, c.callback, WithBusyPoll(hang))
	prod := testprog.NewProducer(t, spec)

	// A record that sends no wake-up is found by the spinning Poll.
	done := make(chan error, 1)
	go func() {
		n, err := m.Poll(2 * hang)
		if err == nil && n != 3 {
			err = errors.New("busy Poll missed a record that sent no wake-up")
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	prod.RunOnCPU(t, 0, 3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Past its spin, Poll sleeps in epoll: such a record goes unseen. On a
	// loaded machine the Poll may start late, still spinning when the
	// record comes: such a try proves nothing and is made again.
	m = newManager(t, rb, c.callback, WithBusyPoll(time.Millisecond))
	for try := 0; ; try++ {
		started := make(chan time.Time, 1)
		go func() {
			started <- time.Now()
			n, err := m.Poll(300 * time.Millisecond)
			if err == nil && n != 0 {
				err = errors.New("Poll saw a record that sent no wake-up after its spin")
			}
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		prod.RunOnCPU(t, 0, 1)
		produced := time.Now()
		err := <-done
		if (<-started).Add(10*time.Millisecond).Before(produced) || try == 5 {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		drain(t, m)
	}
	if n, err := m.Consume(); n != 1 || err != nil {
		t.Fatalf("Consume: %d, %v", n, err)
	}

	// Close ends a spinning Poll too.
	m = newManager(t, rb, c.callback, WithBusyPoll(hang))
	go func() {
		_, err := m.Poll(2 * hang)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	m.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("spinning Poll after Close: %v", err)
	}
}

// TestBatchDelay checks when a Poll sleeps before it reads: only after a
// batch of at least batchDelayRecords, never beyond its timeout, never for
// Poll(0).
func TestBatchDelay(t *testing.T) {
	rb := testprog.NewRingBuf(t, 64<<10)
	spec := testprog.Spec{Ring: rb, Size: 16, Batch: 100}
	c := newChecker(t, spec)
	const delay = time.Hour // a Poll that sleeps it shows as a hang
	m := newManager(t, rb, c.callback, WithBatchDelay(delay))
	prod := testprog.NewProducer(t, spec)

	// pollNoSleep polls with a long timeout: one that slept the delay
	// (capped at the timeout) would take it all.
	pollNoSleep := func(what string, want int) {
		t.Helper()
		start := time.Now()
		if n, err := m.Poll(2 * hang); n != want || err != nil || time.Since(start) >= hang {
			t.Fatalf("%s: %d, %v after %v; want %d at once", what, n, err, time.Since(start), want)
		}
	}
	prod.RunOnCPU(t, 0, 1) // a small batch: no delay after it
	pollNoSleep("Poll", 100)
	prod.RunOnCPU(t, 0, 3)
	pollNoSleep("Poll after a small batch", 300)
	// After a batch of 300, Poll(0) still does not wait, and a Poll with a
	// timeout sleeps no longer than that timeout.
	prod.RunOnCPU(t, 0, 3)
	if n, err := m.Poll(0); n != 300 || err != nil {
		t.Fatalf("Poll(0) after a large batch: %d, %v", n, err)
	}
	start := time.Now()
	if n, err := m.Poll(50 * time.Millisecond); n != 0 || err != nil || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Poll(50ms) after a large batch: %d, %v after %v", n, err, time.Since(start))
	}
	// With the delay off, a large batch is followed by an immediate read.
	m = newManager(t, rb, c.callback, WithBatchDelay(0))
	prod.RunOnCPU(t, 0, 3)
	for range 2 {
		pollNoSleep("Poll without a delay", 300)
		prod.RunOnCPU(t, 0, 3)
	}
	if c.count() != 1300 {
		t.Fatalf("%d records delivered", c.count())
	}

	// Close and a cancelled context end a long delay.
	for _, end := range []string{"Close", "cancel"} {
		m := newManager(t, rb, c.callback, WithBatchDelay(delay))
		prod.RunOnCPU(t, 0, 3)
		if n, err := m.Poll(hang); n < 256 || err != nil { // arms the delay
			t.Fatalf("Poll: %d, %v", n, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		time.Sleep(20 * time.Millisecond)
		want := context.Canceled
		if end == "Close" {
			m.Close()
			want = os.ErrClosed
		} else {
			cancel()
		}
		select {
		case err := <-done:
			if !errors.Is(err, want) {
				t.Fatalf("Run ended by %s: %v", end, err)
			}
		case <-time.After(hang):
			t.Fatalf("%s did not end a Run sleeping its batch delay", end)
		}
		cancel()
	}
}
