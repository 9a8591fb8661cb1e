package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfring/bpfring/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// hangTimeout only detects hangs; nothing is timed against it.
const hangTimeout = 10 * time.Second

// syncBuffer is an io.Writer that a command writes from one goroutine while
// the test reads it from another.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a command running in a goroutine.
type running struct {
	args   []string
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // run's result, once done is closed
}

// start runs the command line in a goroutine; it is stopped when the test
// ends, if not before.
func start(t *testing.T, args []string, stdout, stderr io.Writer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{args: args, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = run(ctx, args, stdout, stderr)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// wait waits for the command to end by itself and returns its error.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(hangTimeout):
		t.Fatalf("%q did not end within %v", r.args, hangTimeout)
		return nil
	}
}

// stop cancels the command's context (Ctrl-C) and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// waitFor waits until cond holds for the buffer's contents, failing the test
// if the command ends first or nothing happens for hangTimeout.
func (r *running) waitFor(t *testing.T, b *syncBuffer, what string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(hangTimeout)
	for !cond(b.String()) {
		select {
		case <-r.done:
			if !cond(b.String()) {
				t.Fatalf("%q ended (%v) before %s; output:\n%s", r.args, r.err, what, b)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v; output:\n%s", what, hangTimeout, b)
		}
	}
}

func TestUsage(t *testing.T) {
	usage := func(reported bool) func(error) bool {
		return func(err error) bool {
			var u *usageError
			return errors.As(err, &u) && u.reported == reported
		}
	}
	help := func(err error) bool { return errors.Is(err, flag.ErrHelp) }
	tests := []struct {
		name     string
		args     []string
		is       func(error) bool
		code     int
		inStderr string
	}{
		{"no command", nil, usage(true), 2, "Usage:"},
		{"help", []string{"-h"}, help, 0, "snoop"},
		{"help word", []string{"help"}, help, 0, "Commands:"},
		{"unknown command", []string{"bogus"}, usage(false), 2, `unknown command "bogus"`},
		{"snoop help", []string{"snoop", "-h"}, help, 0, "Usage: bpfring snoop"},
		{"snoop bad flag", []string{"snoop", "-bogus"}, usage(true), 2, "flag provided but not defined: -bogus"},
		{"snoop argument", []string{"snoop", "extra"}, usage(false), 2, "snoop takes no arguments"},
		{"snoop negative duration", []string{"snoop", "-duration", "-1s"}, usage(false), 2, "-duration -1s is negative"},
		{"snoop negative pid", []string{"snoop", "-pid", "-2"}, usage(false), 2, "-pid -2 is negative"},
		{"top help", []string{"top", "-h"}, help, 0, "Usage: bpfring top"},
		{"top argument", []string{"top", "x"}, usage(false), 2, "top takes no arguments"},
		{"top negative n", []string{"top", "-n", "-1"}, usage(false), 2, "-n -1 is negative"},
		{"cat help", []string{"cat", "-h"}, help, 0, "Usage: bpfring cat [flags] MAP"},
		{"top zero interval", []string{"top", "-interval", "0s"}, usage(false), 2, "-interval 0s is not positive"},
		{"bench help", []string{"bench", "-h"}, help, 0, "Usage: bpfring bench"},
		{"bench argument", []string{"bench", "x"}, usage(false), 2, "bench takes no arguments"},
		{"bench bad sizes", []string{"bench", "-sizes", "8,x"}, usage(false), 2, `-sizes: "x" is not a positive number`},
		{"bench bad format", []string{"bench", "-o", "xml"}, usage(false), 2, `-o "xml": want table, csv or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if !tt.is(err) {
				t.Fatalf("run(%q) = %v, not the expected kind of error", tt.args, err)
			}
			if code := exitCode(err, &stderr); code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if !strings.Contains(stderr.String(), tt.inStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.inStderr, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout is not empty:\n%s", stdout.String())
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	var stderr bytes.Buffer
	if code := exitCode(nil, &stderr); code != 0 || stderr.Len() != 0 {
		t.Errorf("exitCode(nil) = %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	if code := exitCode(errors.New("boom"), &stderr); code != 1 || stderr.String() != "bpfring: boom\n" {
		t.Errorf("exitCode(boom) = %d, stderr %q; want 1 and the error", code, stderr.String())
	}
}
