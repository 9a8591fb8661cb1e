package testprog_test

import (
	"os"
	"testing"

	"github.com/bpfring/bpfring/internal/testprog"
)

// TestDrainerEmpty loads both kinds of drain program (the verifier checks
// the callback and its BTF) and drains an empty user ring: nothing comes out
// and nothing is counted. Round trips of real samples are tested with the
// producer in package userringbuf.
func TestDrainerEmpty(t *testing.T) {
	page := os.Getpagesize()
	for _, copying := range []bool{true, false} {
		user := testprog.NewUserRingBuf(t, page)
		var out = testprog.NewRingBuf(t, page)
		if !copying {
			out = nil
		}
		d := testprog.NewDrainer(t, user, out)
		if n := d.Drain(t); n != 0 {
			t.Errorf("copying %v: Drain of an empty ring = %d, want 0", copying, n)
		}
		if c := d.Counts(t); c != (testprog.DrainCounts{}) {
			t.Errorf("copying %v: counts %+v, want zero", copying, c)
		}
	}
}
