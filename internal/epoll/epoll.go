// Package epoll is a small level-triggered epoll instance with an eventfd
// that wakes a blocked Wait from another goroutine.
package epoll

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// WakeToken is the token Wait reports for a Wake.
const WakeToken = -1

// Poller is an epoll instance plus a wake-up eventfd. Add, Wait and Wake may
// be called concurrently; Close must come after all of them have returned.
type Poller struct {
	epfd   int
	wakefd int
}

// New creates a Poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	p := &Poller{epfd: epfd, wakefd: wakefd}
	if err := p.Add(wakefd, WakeToken); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// FD returns the epoll file descriptor, for an outside event loop.
func (p *Poller) FD() int { return p.epfd }

// Add registers fd for level-triggered readability; Wait reports it with
// token in EpollEvent.Fd.
func (p *Poller) Add(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add fd %d: %w", fd, err)
	}
	return nil
}

// Wait waits up to timeout (negative: forever, zero: not at all) for
// registered fds to become ready and fills events. It retries EINTR with the
// time that is left, so it returns 0 only when the timeout expired.
func (p *Poller) Wait(events []unix.EpollEvent, timeout time.Duration) (int, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		n, err := unix.EpollWait(p.epfd, events, millis(timeout))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return 0, fmt.Errorf("epoll_wait: %w", err)
			}
			return n, nil
		}
		if timeout > 0 {
			if timeout = time.Until(deadline); timeout <= 0 {
				return 0, nil
			}
		}
	}
}

// millis converts a timeout to epoll_wait's milliseconds, rounding up so that
// a short positive timeout waits instead of spinning.
func millis(d time.Duration) int {
	switch {
	case d < 0:
		return -1
	case d > time.Duration(1<<31-1)*time.Millisecond:
		return 1<<31 - 1
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// Wake makes a current or the next Wait return with a WakeToken event.
func (p *Poller) Wake() error {
	one := [8]byte{1}
	_, err := unix.Write(p.wakefd, one[:])
	if err != nil && !errors.Is(err, unix.EAGAIN) { // EAGAIN: already pending
		return fmt.Errorf("eventfd write: %w", err)
	}
	return nil
}

// ResetWake consumes pending wake-ups, so that the next Wait blocks again.
func (p *Poller) ResetWake() {
	var buf [8]byte
	unix.Read(p.wakefd, buf[:]) // EAGAIN: nothing pending
}

// Close closes the epoll instance and the eventfd.
func (p *Poller) Close() error {
	return errors.Join(unix.Close(p.wakefd), unix.Close(p.epfd))
}
