package userringbuf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waiter lets ReserveWait sleep until the kernel frees space, without
// blocking an OS thread. The map fd polls writable (EPOLLOUT) while the ring
// is not completely full, and the kernel wakes its pollers when a
// bpf_user_ringbuf_drain call consumed or skipped records
// (ringbuf_map_poll_user, bpf_user_ringbuf_drain in kernel/bpf/ringbuf.c).
// The map fd is registered edge-triggered in an epoll instance of our own,
// so that every drain reports once, however much space is free: a waiter
// whose record does not fit yet sleeps until the next drain instead of
// spinning. That epoll fd is non-blocking and wrapped in an *os.File, which
// puts it in Go's network poller: a waiting goroutine parks like one reading
// a socket, and the file's read deadline gives timeouts and cancellation.
// (Our own epoll, not the map fd itself, so that the caller's file
// description is not switched to O_NONBLOCK.)
//
// One goroutine at a time waits in the poller, holding sem; the others
// queue on sem, in order, and give up there when their context ends or the
// Producer closes.
type waiter struct {
	sem    chan struct{}
	file   *os.File
	conn   syscall.RawConn
	events [1]unix.EpollEvent // epoll_wait's output; used by sem's holder

	closeOnce sync.Once
	closeErr  error
}

// aLongTimeAgo is a deadline in the past: it wakes a waiting read at once.
var aLongTimeAgo = time.Unix(1, 0)

func (w *waiter) init(mapFD int) error {
	w.sem = make(chan struct{}, 1)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLET}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, mapFD, &ev); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("epoll_ctl add map fd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("set epoll fd non-blocking: %w", err)
	}
	w.file = os.NewFile(uintptr(epfd), "userringbuf-epoll")
	if w.conn, err = w.file.SyscallConn(); err != nil {
		w.close()
		return fmt.Errorf("epoll fd: %w", err)
	}
	return nil
}

// close closes the epoll file, which wakes a goroutine waiting on it. The
// runtime closes the fd itself once that goroutine is out.
func (w *waiter) close() error {
	w.closeOnce.Do(func() {
		if w.file != nil {
			w.closeErr = w.file.Close()
		}
	})
	return w.closeErr
}

// tryReserve reserves a record of n bytes if there is room now.
func (p *Producer) tryReserve(n int) (uintptr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reserve(n)
}

// reserveWait implements ReserveWait; the caller holds a reference, which
// the record takes over on success.
func (p *Producer) reserveWait(ctx context.Context, n int) (Record, error) {
	pos, err := p.tryReserve(n)
	if err == nil {
		return Record{p: p, pos: pos, n: n}, nil
	}
	if !errors.Is(err, ErrNoSpace) {
		return Record{}, err
	}
	w := &p.waiter
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return Record{}, fmt.Errorf("userringbuf: reserve %d bytes: %w", n, ctx.Err())
	case <-p.done:
		return Record{}, errClosed
	}
	defer func() { <-w.sem }()

	deadline, hasDeadline := ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { w.file.SetReadDeadline(aLongTimeAgo) })
	defer stop()
	for {
		if p.closed.Load() {
			return Record{}, errClosed
		}
		if hasDeadline && !time.Now().Before(deadline) {
			return Record{}, fmt.Errorf("userringbuf: reserve %d bytes: %w", n, context.DeadlineExceeded)
		}
		// Set the deadline on every round: the cancellation of an earlier
		// waiter may have set a past one just now (its AfterFunc can run
		// late), which is why a deadline error alone proves nothing.
		w.file.SetReadDeadline(deadline) // the zero time when there is none
		// After the deadline is set: a cancellation from now on sets a past
		// deadline that we will see; one before, we see here.
		if err := ctx.Err(); err != nil {
			return Record{}, fmt.Errorf("userringbuf: reserve %d bytes: %w", n, err)
		}
		var rerr error
		err := w.conn.Read(func(fd uintptr) bool {
			// Take the pending events off the epoll's ready list first, then
			// look at the ring: a drain after this look sends a fresh event,
			// which the netpoller holds for us if we have not parked yet.
			unix.EpollWait(int(fd), w.events[:], 0)
			pos, rerr = p.tryReserve(n)
			return !errors.Is(rerr, ErrNoSpace) // false: park until the next event
		})
		if err == nil {
			if rerr != nil {
				return Record{}, rerr
			}
			return Record{p: p, pos: pos, n: n}, nil
		}
		// A deadline (ours or a stale one) or Close: the checks above tell.
		if !errors.Is(err, os.ErrDeadlineExceeded) && !p.closed.Load() {
			return Record{}, fmt.Errorf("userringbuf: wait for space: %w", err)
		}
	}
}
