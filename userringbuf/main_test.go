package userringbuf_test

import (
	"testing"

	"github.com/bpfring/bpfring/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
