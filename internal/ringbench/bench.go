// Package ringbench measures ring buffer consumers the way the kernel's
// bench_ringbufs does: a BPF producer, run with BPF_PROG_TEST_RUN on its own
// CPU, emits fixed-size records as fast as it can (or at a paced rate for
// latency), and a consumer on the other CPU drains them. It backs the
// `bpfring bench` command.
package ringbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
)

// Wake-up policies, as the -wakeups flag takes them.
const (
	Default = "default" // adaptive: the kernel wakes a consumer that caught up
	Sampled = "sampled" // BPF_RB_NO_WAKEUP until SampleBytes wait, then BPF_RB_FORCE_WAKEUP
	B2B     = "b2b"     // back to back: the next batch once the consumer caught up
)

// AllWakeups lists every wake-up policy.
var AllWakeups = []string{Default, Sampled, B2B}

// Config says what to measure.
type Config struct {
	Sizes     []int         // record payload sizes in bytes
	Batches   []int         // records per program run
	Wakeups   []string      // wake-up policies
	Consumers []string      // consumers, run alternately
	Runs      int           // rounds: each consumer is measured this many times per scenario
	Duration  time.Duration // one measurement
	RingSize  int           // bytes
	// SampleBytes is the queued size at which the sampled policy forces a
	// wake-up.
	SampleBytes int
	// LatencyRate is the paced producer's rate, in records per second, for
	// the latency measurements (0 skips them); LatencySize their size.
	LatencyRate int
	LatencySize int
	// BusySpin is how long the busy-poll consumer spins before it sleeps.
	BusySpin time.Duration
	// ProducerCPU and ConsumerCPU pin the two sides.
	ProducerCPU, ConsumerCPU int
}

// DefaultConfig is the run `bpfring bench` makes without flags; it takes
// under two minutes.
func DefaultConfig() Config {
	return Config{
		Sizes:       []int{8, 64, 256, 1024},
		Batches:     []int{1, 100},
		Wakeups:     AllWakeups,
		Consumers:   AllConsumers,
		Runs:        3,
		Duration:    120 * time.Millisecond,
		RingSize:    4 << 20,
		SampleBytes: 256 << 10,
		LatencyRate: 100_000,
		LatencySize: 64,
		BusySpin:    50 * time.Microsecond,
		ProducerCPU: 1,
		ConsumerCPU: 0,
	}
}

// Throughput is what one consumer achieved in one scenario.
type Throughput struct {
	Wakeup   string `json:"wakeup"`
	Size     int    `json:"size"`
	Batch    int    `json:"batch"`
	Consumer string `json:"consumer"`
	// Rate is records consumed per second.
	Rate Spread `json:"records_per_second"`
	// OfCeiling is Rate's median as a share of the ceiling consumer's
	// median in the same scenario (0 without a ceiling run).
	OfCeiling float64 `json:"share_of_ceiling"`
	// Dropped is the share of records the producer failed to reserve.
	Dropped Spread `json:"dropped_share"`
	// CPUPerRecord is the consumer thread's CPU time per record, in ns,
	// reading what was left after the window included.
	CPUPerRecord Spread `json:"cpu_ns_per_record"`
	// Checked says that every run's consumed + dropped == produced held.
	Checked bool `json:"checked"`
}

// LatencyResult is one consumer's wake-up latency at the paced rate.
type LatencyResult struct {
	Consumer string  `json:"consumer"`
	Rate     int     `json:"records_per_second"`
	Size     int     `json:"size"`
	Records  int     `json:"records"`
	Latency  Latency `json:"latency"`
	Checked  bool    `json:"checked"`
}

// Results are a whole run's figures.
type Results struct {
	Machine    string          `json:"machine"`
	Config     Config          `json:"config"`
	Throughput []Throughput    `json:"throughput"`
	Latency    []LatencyResult `json:"latency"`
}

// measurement is one consumer's run in one scenario.
type measurement struct {
	consumed, produced, dropped uint64 // within the window
	total                       uint64 // consumed, with what was left after the window
	window                      time.Duration
	cpu                         time.Duration // consumer thread CPU time within the window
	latencies                   []int64
}

func (m measurement) rate() float64 { return float64(m.consumed) / m.window.Seconds() }

// Run measures every scenario of cfg, printing a progress line to progress.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Results, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The producer's pacing loop and the pinned threads hold Ps; spare ones
	// let a consumer returning from epoll_wait run at once instead of
	// queueing for a P, a delay that would be the benchmark's, not the
	// consumer's.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), runtime.NumCPU()+2)))
	res := &Results{Machine: machine(), Config: cfg}
	total := len(cfg.Wakeups) * len(cfg.Sizes) * len(cfg.Batches) * len(cfg.Consumers) * cfg.Runs
	if slices.Contains(cfg.Consumers, Perf) && slices.Contains(cfg.Wakeups, B2B) {
		total -= len(cfg.Sizes) * len(cfg.Batches) * cfg.Runs
	}
	if cfg.LatencyRate > 0 {
		total += len(latencyConsumers(cfg.Consumers)) * cfg.Runs
	}
	done := 0
	step := func(what string) {
		done++
		fmt.Fprintf(progress, "\r\033[K[%d/%d] %s", done, total, what)
	}
	defer fmt.Fprintln(progress)

	for _, wakeup := range cfg.Wakeups {
		for _, size := range cfg.Sizes {
			for _, batch := range cfg.Batches {
				rates := map[string][]float64{}
				drops := map[string][]float64{}
				cpus := map[string][]float64{}
				for run := range cfg.Runs {
					for _, name := range cfg.Consumers { // A B C A B C ...
						if err := ctx.Err(); err != nil {
							return nil, err
						}
						if name == Perf && wakeup == B2B {
							continue // back to back needs a ring buffer's positions
						}
						step(fmt.Sprintf("%s wake-ups, %d B records, batch %d: %s, run %d", wakeup, size, batch, name, run+1))
						m, err := measure(ctx, cfg, scenario{wakeup: wakeup, size: size, batch: batch, consumer: name})
						if err != nil {
							return nil, fmt.Errorf("%s, %d B, batch %d, %s: %w", wakeup, size, batch, name, err)
						}
						rates[name] = append(rates[name], m.rate())
						drops[name] = append(drops[name], float64(m.dropped)/float64(max(m.produced+m.dropped, 1)))
						cpus[name] = append(cpus[name], float64(m.cpu.Nanoseconds())/float64(max(m.total, 1)))
					}
				}
				ceiling := spread(rates[Ceiling]).Median
				for _, name := range cfg.Consumers {
					if name == Perf && wakeup == B2B {
						continue
					}
					t := Throughput{
						Wakeup: wakeup, Size: size, Batch: batch, Consumer: name,
						Rate:         spread(rates[name]),
						Dropped:      spread(drops[name]),
						CPUPerRecord: spread(cpus[name]),
						Checked:      true, // measure fails the run otherwise
					}
					if ceiling > 0 {
						t.OfCeiling = t.Rate.Median / ceiling
					}
					res.Throughput = append(res.Throughput, t)
				}
			}
		}
	}

	if cfg.LatencyRate > 0 {
		names := latencyConsumers(cfg.Consumers)
		samples := map[string][]int64{}
		records := map[string]int{}
		for run := range cfg.Runs {
			for _, name := range names { // alternately, as above
				step(fmt.Sprintf("latency at %d records/s: %s, run %d", cfg.LatencyRate, name, run+1))
				m, err := measure(ctx, cfg, scenario{
					wakeup: Default, size: cfg.LatencySize, batch: 1, consumer: name,
					rate: cfg.LatencyRate,
				})
				if err != nil {
					return nil, fmt.Errorf("latency, %s: %w", name, err)
				}
				samples[name] = append(samples[name], m.latencies...)
				records[name] += int(m.consumed)
			}
		}
		for _, name := range names {
			res.Latency = append(res.Latency, LatencyResult{
				Consumer: name, Rate: cfg.LatencyRate, Size: cfg.LatencySize,
				Records: records[name], Latency: percentiles(samples[name]), Checked: true,
			})
		}
	}
	return res, nil
}

// latencyConsumers are the consumers that read records: the ceiling reads
// none.
func latencyConsumers(names []string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == Ceiling })
}

func (cfg Config) validate() error {
	switch {
	case len(cfg.Sizes) == 0 || len(cfg.Batches) == 0 || len(cfg.Wakeups) == 0 || len(cfg.Consumers) == 0:
		return errors.New("nothing to measure: sizes, batches, wake-ups and consumers must not be empty")
	case cfg.Runs < 1:
		return fmt.Errorf("runs %d: want at least 1", cfg.Runs)
	case cfg.Duration <= 0:
		return fmt.Errorf("duration %v: want a positive duration", cfg.Duration)
	case cfg.LatencyRate < 0:
		return fmt.Errorf("latency rate %d: want 0 or more", cfg.LatencyRate)
	case cfg.LatencyRate > 0 && cfg.LatencySize < 24:
		return fmt.Errorf("latency size %d: want at least 24 bytes, the record's timestamp ends at byte 24", cfg.LatencySize)
	case cfg.BusySpin <= 0:
		return fmt.Errorf("busy spin %v: want a positive duration", cfg.BusySpin)
	case cfg.ProducerCPU == cfg.ConsumerCPU:
		return fmt.Errorf("producer and consumer on the same CPU %d", cfg.ProducerCPU)
	}
	for _, w := range cfg.Wakeups {
		if !slices.Contains(AllWakeups, w) {
			return fmt.Errorf("unknown wake-up policy %q (want one of %v)", w, AllWakeups)
		}
	}
	for _, c := range cfg.Consumers {
		if !slices.Contains(KnownConsumers, c) {
			return fmt.Errorf("unknown consumer %q (want one of %v)", c, KnownConsumers)
		}
	}
	for _, s := range cfg.Sizes {
		if recordBytes(s) > cfg.RingSize/2 {
			return fmt.Errorf("record size %d does not fit a ring of %d bytes twice", s, cfg.RingSize)
		}
	}
	return nil
}

// scenario is one measurement's setting.
type scenario struct {
	wakeup   string
	size     int
	batch    int
	consumer string
	rate     int // paced producer, records per second; 0: as fast as it can
}

// measure runs one consumer against a fresh ring and producer for
// cfg.Duration, then stops the producer, drains the ring and checks that
// the consumer got exactly what the producer submitted.
func measure(ctx context.Context, cfg Config, sc scenario) (measurement, error) {
	spec := &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: uint32(cfg.RingSize)}
	if sc.consumer == Perf {
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return measurement{}, err
		}
		spec = &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: uint32(cpus)}
	}
	rb, err := ebpf.NewMap(spec)
	if err != nil {
		return measurement{}, fmt.Errorf("create %s map: %w", spec.Type, err)
	}
	defer rb.Close()
	if sc.consumer == Ceiling {
		// The producer's own rate, whatever the policy: a consumer that
		// moves once a millisecond is never caught up, so adaptive
		// wake-ups send it none, where the sampled policy would force one
		// per record and measure the kernel's wake-ups instead.
		sc.wakeup = Default
	}
	prod, err := newProducer(rb, cfg, sc)
	if err != nil {
		return measurement{}, err
	}
	defer prod.close()

	var m measurement
	var consumed atomic.Uint64
	if sc.rate > 0 {
		m.latencies = make([]int64, 0, int(float64(sc.rate)*cfg.Duration.Seconds()*1.2)+1024)
	}
	clock := newMonoClock()
	rec := func(data []byte) {
		consumed.Add(1)
		if sc.rate > 0 && len(m.latencies) < cap(m.latencies) {
			m.latencies = append(m.latencies, clock.now()-int64(timestamp(data)))
		}
	}
	cons, err := newConsumer(sc.consumer, rb, cfg, sc, rec)
	if err != nil {
		return measurement{}, err
	}
	defer cons.close()

	// The consumer, pinned to its CPU, reports its CPU time when stopped.
	var stopConsumer atomic.Bool
	type outcome struct {
		n   int
		cpu time.Duration
		err error
	}
	consumerDone := make(chan outcome, 1)
	cpuAtStart := make(chan time.Duration, 1)
	go func() {
		restore, err := testprog.PinThread(cfg.ConsumerCPU)
		if err != nil {
			cpuAtStart <- 0
			consumerDone <- outcome{err: err}
			return
		}
		defer restore()
		cpuAtStart <- threadCPU()
		n, err := cons.consume(&stopConsumer)
		consumerDone <- outcome{n: n, cpu: threadCPU(), err: err}
	}()
	cpu0 := <-cpuAtStart

	// The producer runs on its own pinned thread until the window ends.
	var stopProducer atomic.Bool
	producerDone := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { producerDone <- prod.produce(cfg.ProducerCPU, &stopProducer) })
	start := time.Now()
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	stopProducer.Store(true)
	wg.Wait()
	m.window = time.Since(start)
	if err := <-producerDone; err != nil {
		stopConsumer.Store(true)
		<-consumerDone
		return m, fmt.Errorf("producer: %w", err)
	}
	counts, err := prod.counts()
	if err != nil {
		stopConsumer.Store(true)
		<-consumerDone
		return m, err
	}
	m.produced, m.dropped = counts.Submitted, counts.Dropped
	// What arrived by the end of the window counts for the rate; then the
	// consumer reads the rest, for the exact check.
	m.consumed = consumed.Load()
	stopConsumer.Store(true)
	out := <-consumerDone
	if out.err != nil {
		return m, fmt.Errorf("consumer: %w", out.err)
	}
	m.cpu = out.cpu - cpu0
	m.total = uint64(out.n)
	if got := uint64(out.n); got != m.produced {
		return m, fmt.Errorf("consumed %d records, producer submitted %d (dropped %d): consumed + dropped != produced", got, m.produced, m.dropped)
	}
	if sc.consumer == Ceiling { // it reads no records; it consumed them all
		m.consumed = m.produced
	}
	return m, nil
}

// threadCPU returns the calling thread's user and system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// monoClock reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns, through
// Go's monotonic clock (vDSO, no system call per reading).
type monoClock struct {
	base  time.Time
	mono0 int64
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	base := time.Now()
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{base: base, mono0: ts.Nano()}
}

func (c monoClock) now() int64 { return c.mono0 + int64(time.Since(c.base)) }

// machine describes the machine for the report.
func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	return fmt.Sprintf("%s %s, %d CPUs, %s", unix.ByteSliceToString(u.Sysname[:]),
		unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), runtime.Version())
}
