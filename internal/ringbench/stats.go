package ringbench

import (
	"slices"
	"time"
)

// Spread is the median of a figure over several runs, with its range.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spread(values []float64) Spread {
	if len(values) == 0 {
		return Spread{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: median, Min: s[0], Max: s[len(s)-1]}
}

// Latency holds wake-up latency percentiles.
type Latency struct {
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
}

// percentiles sorts samples (nanoseconds) in place and picks the
// percentiles by the nearest-rank method.
func percentiles(samples []int64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(samples))+0.999999) - 1
		return time.Duration(samples[min(max(i, 0), len(samples)-1)])
	}
	return Latency{P50: rank(0.50), P99: rank(0.99), P999: rank(0.999)}
}
