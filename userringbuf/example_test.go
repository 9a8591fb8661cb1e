package userringbuf_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/userringbuf"
)

// commands stands in for a BPF_MAP_TYPE_USER_RINGBUF map that a loaded BPF
// collection provides (coll.Maps["commands"]); a BPF program drains it with
// bpf_user_ringbuf_drain.
var commands *ebpf.Map

func ExampleNew() {
	p, err := userringbuf.New(commands)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	fmt.Println("records of up to", p.MaxRecordSize(), "bytes")
}

func ExampleProducer_Write() {
	p, err := userringbuf.New(commands)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	err = p.Write([]byte("hello, BPF"))
	if errors.Is(err, userringbuf.ErrNoSpace) {
		log.Print("ring full: the BPF program has not drained it yet")
	} else if err != nil {
		log.Fatal(err)
	}
}

// Fill a record in place: no copy, no allocation.
func ExampleProducer_Reserve() {
	p, err := userringbuf.New(commands)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	rec, err := p.Reserve(16)
	if err != nil {
		log.Fatal(err)
	}
	b := rec.Bytes()
	binary.LittleEndian.PutUint64(b[0:], 42)                            // command
	binary.LittleEndian.PutUint64(b[8:], uint64(time.Now().UnixNano())) // argument
	if err := rec.Submit(); err != nil {
		log.Fatal(err)
	}
}

// Wait for the BPF side to make room, at most a second.
func ExampleProducer_ReserveWait() {
	p, err := userringbuf.New(commands)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rec, err := p.ReserveWait(ctx, 64)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Print("the ring stayed full for a second")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	copy(rec.Bytes(), "payload")
	// Changed our mind: the kernel skips the record and frees its space.
	if err := rec.Discard(); err != nil {
		log.Fatal(err)
	}
}

// Many goroutines may share one Producer.
func ExampleProducer_WriteWait() {
	p, err := userringbuf.New(commands)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	done := make(chan error)
	for i := range 4 {
		go func() {
			done <- p.WriteWait(ctx, []byte{byte(i)})
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			log.Fatal(err)
		}
	}
}
