package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/ringbuf"
)

// The BPF program, bpf/snoop.bpf.c, compiled for little-endian hosts; the
// outputs snoop_bpfel.go and snoop_bpfel.o are committed. -I/usr/include
// finds libbpf's bpf/*.h (Debian: libbpf-dev).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type exec_event -type exit_event snoop bpf/snoop.bpf.c -- -I/usr/include -Wall -Werror

const snoopHelp = `Trace every exec and every process exit on the host, live. A BPF program
(tp_btf tracepoints sched_process_exec and sched_process_exit, CO-RE) writes
exec events into one ring buffer and exit events into another; one
ringbuf.Manager consumes both. Ctrl-C (or -duration) stops and prints a
summary on stderr: events read per ring and records the BPF side dropped
because a ring was full. Needs root.`

// Indexes of the drops array map in bpf/snoop.bpf.c.
const (
	dropExec uint32 = iota
	dropExit
)

// snoopLoaded is what snoop loads: the programs and maps, not the two
// unused globals that only carry the record types into the BTF for bpf2go.
type snoopLoaded struct {
	snoopPrograms
	snoopMaps
}

func runSnoop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("snoop", "[flags]", snoopHelp, stderr)
	jsonOut := fs.Bool("json", false, "write one JSON object per line instead of a table")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	pid := fs.Int("pid", 0, "show only events whose `PID` or PPID is this one")
	comm := fs.String("comm", "", "show only events of processes with this command `name`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageErrorf("snoop takes no arguments, got %q", fs.Args())
	case *duration < 0:
		return usageErrorf("-duration %v is negative", *duration)
	case *pid < 0:
		return usageErrorf("-pid %d is negative", *pid)
	}

	spec, err := loadSnoop()
	if err != nil {
		return err
	}
	var objs snoopLoaded
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return fmt.Errorf("load the BPF program (are you root?): %w", err)
	}
	defer objs.snoopMaps.Close()
	defer objs.snoopPrograms.Close()

	offset, err := wallClockOffset()
	if err != nil {
		return err
	}
	p := &snoopPrinter{
		w:      stdout,
		json:   *jsonOut,
		pid:    uint32(*pid),
		comm:   *comm,
		offset: offset,
	}
	mgr, err := ringbuf.New(objs.Execs, p.exec)
	if err != nil {
		return err
	}
	defer mgr.Close()
	if _, err := mgr.Add(objs.Exits, p.exit); err != nil {
		return err
	}

	for _, prog := range []*ebpf.Program{objs.HandleExec, objs.HandleExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			return fmt.Errorf("attach %v: %w", prog, err)
		}
		defer l.Close()
	}

	if !p.json {
		p.header()
	}
	fmt.Fprintln(stderr, "Tracing exec and exit on the host; Ctrl-C to stop.")

	runCtx := ctx
	if *duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	err = mgr.Run(runCtx)
	if runCtx.Err() == nil {
		return err // a failed write or a corrupt record
	}
	// Records committed before the stop are still in the rings.
	if _, err := mgr.Consume(); err != nil {
		return err
	}
	return p.summary(stderr, objs.Drops)
}

// wallClockOffset returns the wall clock time minus CLOCK_MONOTONIC, which
// bpf_ktime_get_ns reads, in nanoseconds.
func wallClockOffset() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return time.Now().UnixNano() - ts.Nano(), nil
}

// snoopEvent is one line of output. Exit-only fields are pointers, so that a
// JSON exit event shows exit_code 0 while an exec event has none.
type snoopEvent struct {
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	Comm       string    `json:"comm"`
	PID        uint32    `json:"pid"`
	PPID       uint32    `json:"ppid"`
	UID        uint32    `json:"uid"`
	Filename   string    `json:"filename,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Signal     int       `json:"signal,omitempty"`
	CoreDump   bool      `json:"core_dump,omitempty"`
	LifetimeNs *uint64   `json:"lifetime_ns,omitempty"`
}

// snoopPrinter decodes records, filters and prints them, and counts.
type snoopPrinter struct {
	w      io.Writer
	json   bool
	pid    uint32 // 0: any
	comm   string // "": any
	offset int64  // wall clock minus bpf_ktime_get_ns

	execs, exits, shown int
}

func (p *snoopPrinter) exec(data []byte) error {
	var r snoopExecEvent
	if err := decodeRecord(data, &r); err != nil {
		return fmt.Errorf("exec record: %w", err)
	}
	p.execs++
	return p.print(snoopEvent{
		Time:     time.Unix(0, p.offset+int64(r.TimeNs)),
		Event:    "exec",
		Comm:     unix.ByteSliceToString(r.Comm[:]),
		PID:      r.Pid,
		PPID:     r.Ppid,
		UID:      r.Uid,
		Filename: unix.ByteSliceToString(r.Filename[:]),
	})
}

func (p *snoopPrinter) exit(data []byte) error {
	var r snoopExitEvent
	if err := decodeRecord(data, &r); err != nil {
		return fmt.Errorf("exit record: %w", err)
	}
	p.exits++
	// exit_code is a wait status: the exit code, or the killing signal.
	code := int(r.ExitCode>>8) & 0xff
	return p.print(snoopEvent{
		Time:       time.Unix(0, p.offset+int64(r.TimeNs)),
		Event:      "exit",
		Comm:       unix.ByteSliceToString(r.Comm[:]),
		PID:        r.Pid,
		PPID:       r.Ppid,
		UID:        r.Uid,
		ExitCode:   &code,
		Signal:     int(r.ExitCode & 0x7f),
		CoreDump:   r.ExitCode&0x80 != 0,
		LifetimeNs: &r.LifetimeNs,
	})
}

// decodeRecord decodes a record of exactly the size of the type v points to.
func decodeRecord(data []byte, v any) error {
	if want := binary.Size(v); len(data) != want {
		return fmt.Errorf("%d bytes, want %d: %w", len(data), want, ringbuf.ErrCorrupt)
	}
	_, err := binary.Decode(data, binary.NativeEndian, v)
	return err
}

const snoopTableFormat = "%-12s %-5s %-16s %7v %7v %6v %s\n"

func (p *snoopPrinter) header() {
	fmt.Fprintf(p.w, snoopTableFormat, "TIME", "EVENT", "COMM", "PID", "PPID", "UID", "DETAIL")
}

func (p *snoopPrinter) print(e snoopEvent) error {
	if (p.pid != 0 && e.PID != p.pid && e.PPID != p.pid) || (p.comm != "" && e.Comm != p.comm) {
		return nil
	}
	p.shown++
	if p.json {
		line, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(line, '\n'))
		return err
	}
	detail := e.Filename
	if e.Event == "exit" {
		switch {
		case e.Signal != 0 && e.CoreDump:
			detail = fmt.Sprintf("signal=%d (core dumped)", e.Signal)
		case e.Signal != 0:
			detail = fmt.Sprintf("signal=%d", e.Signal)
		default:
			detail = fmt.Sprintf("exit_code=%d", *e.ExitCode)
		}
		detail += " lifetime=" + time.Duration(*e.LifetimeNs).Round(time.Microsecond).String()
	}
	_, err := fmt.Fprintf(p.w, snoopTableFormat, e.Time.Format("15:04:05.000"), e.Event, e.Comm, e.PID, e.PPID, e.UID, detail)
	return err
}

// summary prints the counts and the BPF side's drops.
func (p *snoopPrinter) summary(w io.Writer, drops *ebpf.Map) error {
	var dropped [2]uint64
	for i, key := range []uint32{dropExec, dropExit} {
		if err := drops.Lookup(key, &dropped[i]); err != nil {
			return fmt.Errorf("read the drop counters: %w", err)
		}
	}
	_, err := fmt.Fprintf(w, "\n%d events shown\nexec ring: %d events read, %d dropped (ring full)\nexit ring: %d events read, %d dropped (ring full)\n",
		p.shown, p.execs, dropped[0], p.exits, dropped[1])
	return err
}
