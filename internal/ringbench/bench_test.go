package ringbench

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/leakcheck"
	"github.com/bpfring/bpfring/internal/testprog"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestRun measures a small grid with every consumer and wake-up policy on
// the real kernel: each measurement checks consumed + dropped == produced
// itself, so the test checks that every figure is there and plausible.
func TestRun(t *testing.T) {
	testprog.RequireBPF(t)
	cfg := DefaultConfig()
	cfg.Sizes = []int{8, 256}
	cfg.Batches = []int{100}
	cfg.Runs = 1
	cfg.Duration = 50 * time.Millisecond
	cfg.RingSize = 1 << 20
	cfg.LatencyRate = 20_000
	var progress strings.Builder
	res, err := Run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatal(err)
	}
	// Every wake-up policy, size and consumer, but perf back to back.
	if want := len(AllWakeups)*2*len(AllConsumers) - 2; len(res.Throughput) != want {
		t.Fatalf("%d throughput figures, want %d", len(res.Throughput), want)
	}
	// Within a 50 ms window a consumer slowed down by -race on a loaded
	// machine may deliver nothing, so rates are only checked in sum; the
	// exact accounting is checked by every measurement itself.
	var sum float64
	for _, f := range res.Throughput {
		sum += f.Rate.Median
		if !f.Checked || f.Rate.Median < 0 || f.Dropped.Median < 0 || f.Dropped.Median > 1 ||
			f.Consumer == Ceiling && f.OfCeiling != 1 {
			t.Errorf("implausible figure %+v", f)
		}
	}
	if sum == 0 {
		t.Error("no consumer delivered anything")
	}
	if len(res.Latency) != len(AllConsumers)-1 {
		t.Fatalf("%d latency figures", len(res.Latency))
	}
	for _, l := range res.Latency {
		// At 20k records/s for 50 ms, about 1000 records, but a paced
		// producer sharing its CPU with other test binaries falls behind.
		if l.Records < 1 || l.Latency.P50 <= 0 || l.Latency.P50 > l.Latency.P99 || l.Latency.P99 > l.Latency.P999 || l.Latency.P999 > time.Second {
			t.Errorf("implausible latency %+v", l)
		}
	}
	if !strings.Contains(progress.String(), "ceiling") {
		t.Errorf("no progress line: %q", progress.String())
	}
	if err := res.WriteTable(io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no sizes", func(c *Config) { c.Sizes = nil }, "nothing to measure"},
		{"zero runs", func(c *Config) { c.Runs = 0 }, "runs 0"},
		{"unknown consumer", func(c *Config) { c.Consumers = []string{"poll", "nope"} }, `unknown consumer "nope"`},
		{"unknown wake-up", func(c *Config) { c.Wakeups = []string{"often"} }, `unknown wake-up policy "often"`},
		{"record too large", func(c *Config) { c.Sizes = []int{c.RingSize} }, "does not fit"},
		{"short latency records", func(c *Config) { c.LatencySize = 16 }, "latency size 16"},
		{"one CPU for both", func(c *Config) { c.ConsumerCPU = c.ProducerCPU }, "same CPU"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			_, err := Run(context.Background(), cfg, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
