package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is a subcommand. Each lives in its own file; adding one is adding
// its line to commands.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands in the order the help lists them.
var commands = []command{
	{"snoop", "trace process exec and exit on the host through two ring buffers", runSnoop},
	{"top", "show every ring buffer on the host: fill level, producer and consumer rates", runTop},
	{"cat", "consume the records of one ring buffer and write them to stdout", runCat},
	{"bench", "measure ring buffer consumers against a BPF producer", runBench},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr, unless the flag package already did, and
// returns the exit status: 0 for success and -h, 2 for a bad command line,
// 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	var usage *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		if !usage.reported {
			fmt.Fprintln(stderr, "bpfring:", err)
			fmt.Fprintln(stderr, "Run 'bpfring -h' for usage.")
		}
		return 2
	default:
		fmt.Fprintln(stderr, "bpfring:", err)
		return 1
	}
}

// run runs the command line args (without the program name). Output goes to
// stdout, diagnostics, warnings and summaries to stderr. A done ctx stops a
// command cleanly: it prints its summary and returns nil.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return &usageError{err: errors.New("no command given"), reported: true}
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stderr)
		return flag.ErrHelp
	}
	for _, c := range commands {
		if c.name == name {
			if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
	}
	return &usageError{err: fmt.Errorf("unknown command %q", name)}
}

func usage(w io.Writer) {
	fmt.Fprint(w, "bpfring works with BPF ring buffers on this host (run as root).\n\n")
	fmt.Fprint(w, "Usage:\n\n\tbpfring <command> [flags] [arguments]\n\nCommands:\n\n")
	for _, c := range commands {
		fmt.Fprintf(w, "\t%-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'bpfring <command> -h' for a command's flags.\n")
}

// usageError is a mistake in the command line (exit status 2). reported
// means the flag package has already printed it with the usage.
type usageError struct {
	err      error
	reported bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usageError for a command line the flags accepted but
// the command does not.
func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// newFlagSet returns a flag set for a subcommand whose -h prints
// "Usage: bpfring name synopsis", the description and the flags to stderr.
func newFlagSet(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bpfring %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, marking a bad flag (which the flag package has
// reported) as a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err: err, reported: true}
}
