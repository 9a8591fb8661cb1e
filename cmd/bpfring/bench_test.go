package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfring/bpfring/internal/ringbench"
	"github.com/bpfring/bpfring/internal/testprog"
)

// TestBench runs a small bench through run, as a user would, and reads its
// JSON and its chart back.
func TestBench(t *testing.T) {
	testprog.RequireBPF(t)
	plot := filepath.Join(t.TempDir(), "bench.png")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench",
		"-sizes", "8", "-batches", "100", "-wakeups", "default,sampled",
		"-consumers", "poll,cilium,ceiling", "-runs", "1", "-duration", "30ms",
		"-latency-rate", "0", "-ring", "1048576", "-o", "json", "-plot", plot,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var res ringbench.Results
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if len(res.Throughput) != 2*3 {
		t.Fatalf("%d throughput figures, want 6", len(res.Throughput))
	}
	for _, f := range res.Throughput {
		if !f.Checked || f.Size != 8 || f.Batch != 100 {
			t.Errorf("figure %+v", f)
		}
	}
	if !strings.Contains(stderr.String(), "every run checked consumed + dropped == produced") {
		t.Errorf("stderr lacks the check's summary:\n%s", stderr.String())
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("-plot wrote no PNG: %v", err)
	}
}
