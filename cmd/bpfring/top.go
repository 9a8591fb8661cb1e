package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const topHelp = `List every ring buffer (BPF_MAP_TYPE_RINGBUF) on the host and refresh every
-interval: map ID, name, size, bytes waiting to be consumed (producer minus
consumer position), fill level, producer and consumer rates in bytes/s since
the previous refresh, and the programs that use the map. Rates need two
refreshes: the first shows "-" (null in JSON).

top maps only the two position pages of each ring, read-only, and never moves
a consumer position: it does not disturb the ring's real consumer. Needs
root.`

// ringSample is what top reports for one ring at one refresh; a JSON line.
type ringSample struct {
	Sample      int       `json:"sample"` // refresh number, from 1
	Time        time.Time `json:"time"`
	ID          uint32    `json:"id"`
	Name        string    `json:"name"`
	Size        uint32    `json:"size"`
	ProducerPos uint64    `json:"producer_pos"`
	ConsumerPos uint64    `json:"consumer_pos"`
	Waiting     uint64    `json:"waiting"`  // bytes: producer_pos - consumer_pos
	FillPct     float64   `json:"fill_pct"` // waiting / size * 100
	// Since this ring's previous sample; null at its first.
	ElapsedS    *float64  `json:"elapsed_s"`
	ProducerBps *float64  `json:"producer_bps"`
	ConsumerBps *float64  `json:"consumer_bps"`
	Programs    []progRef `json:"programs"`
}

// progRef names a program that uses a map.
type progRef struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
}

func runTop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("top", "[flags]", topHelp, stderr)
	n := fs.Int("n", 0, "stop after this many refreshes (0: run until Ctrl-C)")
	interval := fs.Duration("interval", time.Second, "time between refreshes")
	jsonOut := fs.Bool("json", false, "write one JSON object per ring and refresh instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageErrorf("top takes no arguments, got %q", fs.Args())
	case *n < 0:
		return usageErrorf("-n %d is negative", *n)
	case *interval <= 0:
		return usageErrorf("-interval %v is not positive", *interval)
	}

	prev := map[uint32]ringSample{}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for i := 1; ; i++ {
		samples, err := sampleRings(i, prev)
		if err != nil {
			return err
		}
		if *jsonOut {
			err = printTopJSON(stdout, samples)
		} else {
			err = printTopTable(stdout, samples)
		}
		if err != nil {
			return err
		}
		if i == *n {
			return nil
		}
		clear(prev)
		for _, s := range samples {
			prev[s.ID] = s
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// sampleRings reads every ring buffer on the host, in map ID order, with
// rates against prev (the last refresh's samples by map ID).
func sampleRings(sample int, prev map[uint32]ringSample) ([]ringSample, error) {
	users, err := mapUsers()
	if err != nil {
		return nil, err
	}
	var samples []ringSample
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return samples, nil
		}
		if err != nil {
			return nil, fmt.Errorf("walk map IDs (are you root?): %w", err)
		}
		id = next
		s, ok, err := sampleRing(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		s.Sample = sample
		s.Programs = users[s.ID]
		if p, seen := prev[s.ID]; seen {
			elapsed := s.Time.Sub(p.Time).Seconds() // monotonic: both are from time.Now
			prod := float64(s.ProducerPos-p.ProducerPos) / elapsed
			cons := float64(s.ConsumerPos-p.ConsumerPos) / elapsed
			s.ElapsedS, s.ProducerBps, s.ConsumerBps = &elapsed, &prod, &cons
		}
		samples = append(samples, s)
	}
}

// sampleRing reads map id's positions if it is a ring buffer. ok is false
// when it is not, or when it went away meanwhile.
func sampleRing(id ebpf.MapID) (s ringSample, ok bool, err error) {
	m, err := ebpf.NewMapFromID(id)
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("open map %d: %w", id, err)
	}
	defer m.Close()
	if m.Type() != ebpf.RingBuf {
		return s, false, nil
	}
	info, err := m.Info()
	if err != nil {
		return s, false, fmt.Errorf("map %d: %w", id, err)
	}
	cons, prod, err := readPositions(m.FD())
	if err != nil {
		return s, false, fmt.Errorf("map %d: %w", id, err)
	}
	waiting := prod - cons
	return ringSample{
		Time:        time.Now(),
		ID:          uint32(id),
		Name:        info.Name,
		Size:        info.MaxEntries,
		ProducerPos: prod,
		ConsumerPos: cons,
		Waiting:     waiting,
		FillPct:     float64(waiting) / float64(info.MaxEntries) * 100,
	}, true, nil
}

// readPositions maps the consumer page (offset 0) and the producer page
// (offset one page) of a ring read-only, and loads both positions. Read-only
// on purpose: top must never move the consumer position.
func readPositions(fd int) (cons, prod uint64, err error) {
	page := os.Getpagesize()
	mem, err := unix.Mmap(fd, 0, 2*page, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0, fmt.Errorf("map the position pages: %w", err)
	}
	defer unix.Munmap(mem)
	// The consumer position first: the producer's can only be ahead of it.
	cons = atomic.LoadUint64((*uint64)(unsafe.Pointer(&mem[0])))
	prod = atomic.LoadUint64((*uint64)(unsafe.Pointer(&mem[page])))
	return cons, prod, nil
}

// mapUsers walks every program on the host and returns, by map ID, the
// programs that use the map, as far as the kernel tells.
func mapUsers() (map[uint32][]progRef, error) {
	users := map[uint32][]progRef{}
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return users, nil
		}
		if err != nil {
			return nil, fmt.Errorf("walk program IDs (are you root?): %w", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("open program %d: %w", id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		maps, _ := info.MapIDs()
		for _, m := range maps {
			users[uint32(m)] = append(users[uint32(m)], progRef{ID: uint32(id), Name: info.Name})
		}
	}
}

func printTopJSON(w io.Writer, samples []ringSample) error {
	enc := json.NewEncoder(w)
	for _, s := range samples {
		if s.Programs == nil {
			s.Programs = []progRef{} // [] rather than null: "none that the kernel tells"
		}
		if err := enc.Encode(s); err != nil {
			return err
		}
	}
	return nil
}

const topTableFormat = "%-7v %-16s %9s %9s %6s %10s %10s  %s\n"

func printTopTable(w io.Writer, samples []ringSample) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %d ring buffers\n", time.Now().Format("15:04:05"), len(samples))
	fmt.Fprintf(&b, topTableFormat, "ID", "NAME", "SIZE", "WAITING", "FILL%", "PROD B/s", "CONS B/s", "PROGRAMS")
	for _, s := range samples {
		rate := func(r *float64) string {
			if r == nil {
				return "-"
			}
			return humanBytes(*r)
		}
		progs := make([]string, len(s.Programs))
		for i, p := range s.Programs {
			progs[i] = fmt.Sprintf("%d:%s", p.ID, p.Name)
		}
		sort.Strings(progs)
		name := s.Name
		if name == "" {
			name = "-" // keep the columns apart
		}
		fmt.Fprintf(&b, topTableFormat, s.ID, name, humanBytes(float64(s.Size)), humanBytes(float64(s.Waiting)),
			fmt.Sprintf("%.1f", s.FillPct), rate(s.ProducerBps), rate(s.ConsumerBps), strings.Join(progs, ","))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// humanBytes writes n with a binary unit: 512, 64K, 1.5M.
func humanBytes(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%.0f", n)
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if n < 10 && n != float64(int(n)) {
		return fmt.Sprintf("%.1f%c", n, units[i])
	}
	return fmt.Sprintf("%.0f%c", n, units[i])
}
