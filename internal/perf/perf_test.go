package perf

import (
	"slices"
	"testing"

	"github.com/bpfring/bpfring/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestParseCPUList(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []int // nil: an error
	}{
		{"0\n", []int{0}},
		{"0-3\n", []int{0, 1, 2, 3}},
		{"0-1,3,5-6", []int{0, 1, 3, 5, 6}},
		{"", nil},
		{"\n", nil},
		{"a", nil},
		{"1-", nil},
		{"3-1", nil},
		{"-1", nil},
		{"0,0", nil},
		{"2,1", nil},
		{"0-2,1", nil},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCPUList(tt.in)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParseCPUList(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseCPUList(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestOnlineCPUs(t *testing.T) {
	cpus, err := OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) == 0 || cpus[0] < 0 {
		t.Fatalf("OnlineCPUs() = %v", cpus)
	}
}
