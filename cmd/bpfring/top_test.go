package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/ringbuf"
)

// pauseWriter collects a command's output and, on the first line that
// mentions a given map ID, blocks the command inside Write until the test
// says go on: the test acts between two refreshes of top.
type pauseWriter struct {
	syncBuffer
	id      string // `"id":N,`
	reached chan struct{}
	proceed chan struct{}
}

func (w *pauseWriter) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if w.reached != nil && bytes.Contains(p, []byte(w.id)) {
		close(w.reached)
		w.reached = nil
		<-w.proceed
	}
	return n, err
}

func mapID(t *testing.T, m *ebpf.Map) uint32 {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("the kernel does not tell map IDs")
	}
	return uint32(id)
}

// recordBytes is the ring space a record of size payload bytes takes.
func recordBytes(size int) uint64 { return uint64(size+8+7) &^ 7 }

func TestTopJSON(t *testing.T) {
	testprog.RequireBPF(t)
	page := os.Getpagesize()
	type ring struct {
		size, recSize        int
		before, consBefore   int // records produced and consumed before top starts
		between, consBetween int // between its first and second refresh
	}
	rings := []ring{
		{size: 4 * page, recSize: 24, before: 10, consBefore: 4, between: 5, consBetween: 3},
		{size: 2 * page, recSize: 100, between: 7},
	}
	maps := make([]*ebpf.Map, len(rings))
	prods := make([]*testprog.Producer, len(rings))
	mgrs := make([]*ringbuf.Manager, len(rings))
	for i, r := range rings {
		maps[i] = testprog.NewRingBuf(t, r.size)
		prods[i] = testprog.NewProducer(t, testprog.Spec{Ring: maps[i], Size: r.recSize})
		var err error
		mgrs[i], err = ringbuf.New(maps[i], func([]byte) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mgrs[i].Close() })
	}
	consume := func(i, n int) {
		t.Helper()
		if got, err := mgrs[i].ConsumeN(n); err != nil || got != n {
			t.Fatalf("ring %d: ConsumeN(%d) = %d, %v", i, n, got, err)
		}
	}
	for i, r := range rings {
		prods[i].Run(t, r.before)
		consume(i, r.consBefore)
	}

	ids := make([]uint32, len(rings))
	for i := range maps {
		ids[i] = mapID(t, maps[i])
	}
	stdout := &pauseWriter{
		id:      `"id":` + strconv.Itoa(int(ids[0])) + `,`,
		reached: make(chan struct{}),
		proceed: make(chan struct{}),
	}
	reached := stdout.reached
	var stderr syncBuffer
	r := start(t, []string{"top", "-json", "-n", "2", "-interval", "100ms"}, stdout, &stderr)
	// Unblock top if the test fails before it does (cleanups run last first).
	t.Cleanup(func() {
		select {
		case <-stdout.proceed:
		default:
			close(stdout.proceed)
		}
	})
	select {
	case <-reached:
	case <-time.After(hangTimeout):
		t.Fatalf("top printed no first refresh within %v", hangTimeout)
	}
	// top is blocked writing its first refresh: its second one sees these.
	for i, r := range rings {
		prods[i].Run(t, r.between)
		consume(i, r.consBetween)
	}
	close(stdout.proceed)
	if err := r.wait(t); err != nil {
		t.Fatalf("top: %v\n%s", err, stderr.String())
	}

	got := map[[2]uint32]ringSample{} // by sample and map ID
	for _, line := range lines(stdout.String()) {
		var s ringSample
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if s.Sample != 1 && s.Sample != 2 {
			t.Errorf("sample %d with -n 2: %s", s.Sample, line)
		}
		got[[2]uint32{uint32(s.Sample), s.ID}] = s
	}
	for i, r := range rings {
		produced := [2]uint64{uint64(r.before), uint64(r.before + r.between)}
		consumed := [2]uint64{uint64(r.consBefore), uint64(r.consBefore + r.consBetween)}
		rec := recordBytes(r.recSize)
		for sample := range 2 {
			s, ok := got[[2]uint32{uint32(sample + 1), ids[i]}]
			if !ok {
				t.Errorf("ring %d (map %d): no sample %d in:\n%s", i, ids[i], sample+1, stdout.String())
				continue
			}
			waiting := (produced[sample] - consumed[sample]) * rec
			if s.Size != uint32(r.size) || s.ProducerPos != produced[sample]*rec || s.ConsumerPos != consumed[sample]*rec ||
				s.Waiting != waiting || s.FillPct != float64(waiting)/float64(r.size)*100 {
				t.Errorf("ring %d sample %d: %+v; want size %d, positions %d and %d, %d bytes waiting",
					i, sample+1, s, r.size, produced[sample]*rec, consumed[sample]*rec, waiting)
			}
			if len(s.Programs) != 1 || s.Programs[0].Name != "testprog" {
				t.Errorf("ring %d sample %d: programs %+v, want the producer", i, sample+1, s.Programs)
			}
			if sample == 0 {
				if s.ElapsedS != nil || s.ProducerBps != nil || s.ConsumerBps != nil {
					t.Errorf("ring %d: rates at the first sample: %+v", i, s)
				}
				continue
			}
			if s.ElapsedS == nil || s.ProducerBps == nil || s.ConsumerBps == nil || *s.ElapsedS <= 0 {
				t.Errorf("ring %d: no rates at the second sample: %+v", i, s)
				continue
			}
			wantProd := float64(uint64(r.between)*rec) / *s.ElapsedS
			wantCons := float64(uint64(r.consBetween)*rec) / *s.ElapsedS
			if *s.ProducerBps != wantProd || *s.ConsumerBps != wantCons {
				t.Errorf("ring %d: rates %v and %v B/s over %v s, want %v and %v",
					i, *s.ProducerBps, *s.ConsumerBps, *s.ElapsedS, wantProd, wantCons)
			}
		}
		// top only read: the consumer position is where the test left it.
		ring, err := mgrs[i].Ring(0)
		if err != nil {
			t.Fatal(err)
		}
		if pos, err := ring.ConsumerPos(); err != nil || pos != consumed[1]*rec {
			t.Errorf("ring %d: consumer position %d (%v) after top, want %d", i, pos, err, consumed[1]*rec)
		}
	}
}

func TestTopTable(t *testing.T) {
	testprog.RequireBPF(t)
	size := 4 * os.Getpagesize()
	m := testprog.NewRingBuf(t, size)
	testprog.NewProducer(t, testprog.Spec{Ring: m, Size: 120}).Run(t, 8) // 1K waiting
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"top", "-n", "1"}, &stdout, &stderr); err != nil {
		t.Fatalf("top: %v\n%s", err, stderr.String())
	}
	rows := lines(stdout.String())
	if len(rows) < 2 || strings.Join(strings.Fields(rows[1]), " ") != "ID NAME SIZE WAITING FILL% PROD B/s CONS B/s PROGRAMS" {
		t.Fatalf("no header:\n%s", stdout.String())
	}
	id := strconv.Itoa(int(mapID(t, m)))
	want := []string{id, "-", humanBytes(float64(size)), "1K", strconv.FormatFloat(1024*100/float64(size), 'f', 1, 64), "-", "-"}
	for _, row := range rows[2:] {
		f := strings.Fields(row)
		if len(f) > 0 && f[0] == id {
			if len(f) != len(want)+1 || strings.Join(f[:len(want)], " ") != strings.Join(want, " ") || !strings.HasSuffix(f[len(want)], ":testprog") {
				t.Errorf("row %q, want %q and the producer", row, want)
			}
			return
		}
	}
	t.Errorf("no row for map %s:\n%s", id, stdout.String())
}

func TestHumanBytes(t *testing.T) {
	for _, tt := range []struct {
		n    float64
		want string
	}{
		{0, "0"}, {1023, "1023"}, {1024, "1K"}, {1536, "1.5K"}, {10.5 * 1024, "10K"}, {256 << 10, "256K"}, {3 << 20, "3M"}, {1 << 60, "1E"},
	} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%v) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
