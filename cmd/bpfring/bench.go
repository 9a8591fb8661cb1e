package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bpfring/bpfring/internal/ringbench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := ringbench.DefaultConfig()
	fs := newFlagSet("bench", "[flags]",
		"Measure ring buffer consumers against a BPF producer, as the kernel's bench_ringbufs does.\n"+
			"The producer (BPF_PROG_TEST_RUN, pinned to one CPU) emits fixed-size records; each\n"+
			"consumer drains them on another CPU, the consumers taking turns (A B C A B C ...).\n"+
			"Every run checks that consumed + dropped == produced. The default run takes under\n"+
			"two minutes. It needs root.", stderr)
	sizes := fs.String("sizes", joinInts(cfg.Sizes), "record sizes in bytes, comma-separated")
	batches := fs.String("batches", joinInts(cfg.Batches), "records per producer run, comma-separated")
	wakeups := fs.String("wakeups", strings.Join(cfg.Wakeups, ","),
		"wake-up policies: default (adaptive), sampled (forced once -sample bytes wait), b2b (back to back)")
	consumers := fs.String("consumers", strings.Join(cfg.Consumers, ","),
		"consumers: poll, consume, busypoll (this library), cilium (cilium/ebpf ReadInto), perf (a perf buffer, not back to back),\n"+
			"ceiling (the producer's own rate);\n"+
			"also poll-eager (Poll without its batch delay) and poll-commit1 (Poll storing its position after every record)")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "measurements per consumer and scenario; medians and ranges are over these")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of one measurement")
	fs.IntVar(&cfg.RingSize, "ring", cfg.RingSize, "ring buffer size in bytes")
	fs.IntVar(&cfg.SampleBytes, "sample", cfg.SampleBytes, "bytes waiting at which the sampled policy forces a wake-up")
	fs.IntVar(&cfg.LatencyRate, "latency-rate", cfg.LatencyRate, "paced producer rate for the latency runs, records/s (0 skips them)")
	fs.IntVar(&cfg.LatencySize, "latency-size", cfg.LatencySize, "record size for the latency runs (at least 24)")
	fs.DurationVar(&cfg.BusySpin, "busy-spin", cfg.BusySpin, "how long the busypoll consumer spins before it sleeps")
	fs.IntVar(&cfg.ProducerCPU, "producer-cpu", cfg.ProducerCPU, "CPU the producer is pinned to")
	fs.IntVar(&cfg.ConsumerCPU, "consumer-cpu", cfg.ConsumerCPU, "CPU the consumer is pinned to")
	format := fs.String("o", "table", "output format: table, csv or json")
	plotFile := fs.String("plot", "", "also draw the throughput figures as a PNG chart into this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("bench takes no arguments, got %q", fs.Args())
	}
	var err error
	if cfg.Sizes, err = parseInts(*sizes); err != nil {
		return usageErrorf("-sizes: %v", err)
	}
	if cfg.Batches, err = parseInts(*batches); err != nil {
		return usageErrorf("-batches: %v", err)
	}
	cfg.Wakeups = strings.Split(*wakeups, ",")
	cfg.Consumers = strings.Split(*consumers, ",")
	write := map[string]func(*ringbench.Results, io.Writer) error{
		"table": (*ringbench.Results).WriteTable,
		"csv":   (*ringbench.Results).WriteCSV,
		"json":  (*ringbench.Results).WriteJSON,
	}[*format]
	if write == nil {
		return usageErrorf("-o %q: want table, csv or json", *format)
	}

	start := time.Now()
	// The progress line redraws itself with \r: on a terminal only, so
	// that a log does not get one line per measurement.
	progress := io.Discard
	if isTerminal(stderr) {
		progress = stderr
	} else {
		fmt.Fprintln(stderr, "measuring; the progress line shows on a terminal")
	}
	res, err := ringbench.Run(ctx, cfg, progress)
	if err != nil {
		return err
	}
	if err := write(res, stdout); err != nil {
		return err
	}
	if *plotFile != "" {
		if err := res.WritePlot(*plotFile); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "done in %v; every run checked consumed + dropped == produced\n", time.Since(start).Round(time.Second))
	return nil
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
