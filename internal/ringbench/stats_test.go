package ringbench

import (
	"testing"
)

func TestSpread(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{3, 3, 3}},
		{[]float64{5, 1, 3}, Spread{3, 1, 5}},
		{[]float64{4, 1, 3, 2}, Spread{2.5, 1, 4}},
	} {
		if got := spread(tt.in); got != tt.want {
			t.Errorf("spread(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	samples := make([]int64, 1000)
	for i := range samples {
		samples[i] = int64(1000 - i) // 1000 down to 1
	}
	got := percentiles(samples)
	want := Latency{P50: 500, P99: 990, P999: 999}
	if got != want {
		t.Fatalf("percentiles = %+v, want %+v", got, want)
	}
	if got := percentiles([]int64{7}); got != (Latency{7, 7, 7}) {
		t.Fatalf("one sample: %+v", got)
	}
	if got := percentiles(nil); got != (Latency{}) {
		t.Fatalf("no samples: %+v", got)
	}
}
