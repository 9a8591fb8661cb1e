package perf

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/leakcheck"
	"github.com/bpfring/bpfring/internal/testprog"
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

// openEnabled opens and enables an event on cpu, closed when the test ends.
func openEnabled(t *testing.T, cpu int) int {
	t.Helper()
	fd, err := Open(cpu, Wakeup{Events: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := Enable(fd); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestTimeEnabled(t *testing.T) {
	testprog.RequireBPF(t)
	fd := openEnabled(t, 0)
	t0, err := TimeEnabled(fd)
	if err != nil {
		t.Fatal(err)
	}
	t1, err := TimeEnabled(fd)
	if err != nil {
		t.Fatal(err)
	}
	if t1 <= t0 {
		t.Fatalf("time enabled of a live event went from %d to %d", t0, t1)
	}
	if err := Disable(fd); err != nil {
		t.Fatal(err)
	}
	t0, _ = TimeEnabled(fd)
	if t1, _ = TimeEnabled(fd); t1 != t0 {
		t.Fatalf("time enabled of a disabled event went from %d to %d", t0, t1)
	}
	if _, err := TimeEnabled(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("TimeEnabled(-1): %v, want EBADF", err)
	}
}

func TestRedirect(t *testing.T) {
	testprog.RequireBPF(t)
	ring := openEnabled(t, 0)
	mem, err := Mmap(ring, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := Redirect(openEnabled(t, 0), ring); err != nil {
		t.Fatalf("Redirect on the same CPU: %v", err)
	}
	if cpus, _ := OnlineCPUs(); len(cpus) > 1 {
		if err := Redirect(openEnabled(t, cpus[1]), ring); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("Redirect across CPUs: %v, want EINVAL", err)
		}
	}
	// A mapped event has a ring of its own.
	if err := Redirect(ring, openEnabled(t, 0)); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Redirect of a mapped event: %v, want EINVAL", err)
	}
}
