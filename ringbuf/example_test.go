package ringbuf_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/ringbuf"
)

// events and errs stand in for ring buffer maps that a loaded BPF
// collection provides (coll.Maps["events"]).
var events, errs *ebpf.Map

func ExampleNew() {
	mgr, err := ringbuf.New(events, func(data []byte) error {
		fmt.Printf("event of %d bytes\n", len(data))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()
}

func ExampleManager_Add() {
	mgr, err := ringbuf.New(events, func(data []byte) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()

	// A second ring on the same epoll instance, with its own callback.
	ring, err := mgr.Add(errs, func(data []byte) error {
		log.Printf("error record: %q", data)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ring", ring.Index(), "holds", ring.Size(), "bytes")
}

func ExampleManager_Poll() {
	errStop := errors.New("end marker")
	mgr, err := ringbuf.New(events, func(data []byte) error {
		if len(data) == 0 {
			return errStop // stops Poll, which returns it wrapped
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()
	for {
		n, err := mgr.Poll(100 * time.Millisecond)
		if errors.Is(err, errStop) {
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(n, "records")
	}
}

func ExampleManager_Consume() {
	mgr, err := ringbuf.New(events, func(data []byte) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()
	// Read whatever is there now, without waiting: the lowest latency.
	n, err := mgr.Consume()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "records")
}

func ExampleManager_Run() {
	mgr, err := ringbuf.New(events, func(data []byte) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Run returns ctx.Err() on Ctrl-C, with or without data.
	if err := mgr.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func ExampleRawFD() {
	fd := events.FD() // any ring buffer map fd, from any loader
	mgr, err := ringbuf.New(ringbuf.RawFD(fd), func(data []byte) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer mgr.Close()
}
