// Command tworings consumes two BPF ring buffers with one ringbuf.Manager.
//
// It creates two ring buffer maps and, for each, a small socket filter
// program (assembled in Go, no clang) that writes a 16-byte record (kernel
// time, ring tag, CPU) with bpf_ringbuf_output. It runs the programs with
// BPF_PROG_TEST_RUN, so nothing is attached to the system, then polls the
// manager and prints every record with the ring it came from. It needs root.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfring/bpfring/ringbuf"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tworings:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tworings", flag.ContinueOnError)
	count := fs.Int("n", 3, "records to produce into each ring")
	if err := fs.Parse(args); err != nil {
		return err
	}

	tags := []string{"alpha", "beta"}
	rings := make([]*ebpf.Map, len(tags))
	progs := make([]*ebpf.Program, len(tags))
	for i := range tags {
		var err error
		rings[i], err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 64 << 10})
		if err != nil {
			return fmt.Errorf("create ring buffer (are you root?): %w", err)
		}
		defer rings[i].Close()
		if progs[i], err = producer(rings[i], uint32(i)); err != nil {
			return err
		}
		defer progs[i].Close()
	}

	// One manager, one epoll instance, a callback per ring.
	received := 0
	printer := func(tag string) ringbuf.Callback {
		return func(data []byte) error {
			if len(data) != 16 {
				return fmt.Errorf("record of %d bytes, want 16", len(data))
			}
			received++
			fmt.Fprintf(stdout, "%-5s ktime=%d tag=%d cpu=%d\n", tag,
				binary.LittleEndian.Uint64(data[0:]),
				binary.LittleEndian.Uint32(data[8:]),
				binary.LittleEndian.Uint32(data[12:]))
			return nil
		}
	}
	mgr, err := ringbuf.New(rings[0], printer(tags[0]))
	if err != nil {
		return err
	}
	defer mgr.Close()
	if _, err := mgr.Add(rings[1], printer(tags[1])); err != nil {
		return err
	}

	for _, prog := range progs {
		if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64), Repeat: uint32(*count)}); err != nil {
			return fmt.Errorf("run producer: %w", err)
		}
	}

	want := *count * len(tags)
	for received < want {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := mgr.Poll(time.Second)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no records within a second")
		}
	}
	fmt.Fprintf(stdout, "%d records from %d rings\n", received, len(tags))
	return nil
}

// producer returns a socket filter that writes {ktime u64, tag u32, cpu u32}
// to rb with bpf_ringbuf_output each time it runs.
func producer(rb *ebpf.Map, tag uint32) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.DWord),
		asm.StoreImm(asm.RFP, -8, int64(tag), asm.Word),
		asm.FnGetSmpProcessorId.Call(),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, rb.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.Mov.Imm(asm.R3, 16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("load producer: %w", err)
	}
	return prog, nil
}
