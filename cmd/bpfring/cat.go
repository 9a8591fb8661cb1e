package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/bpfring/bpfring/ringbuf"
)

const catHelp = `Consume the records of one ring buffer and write them to stdout. MAP is
a map pinned in bpffs (a path) or id:N for the map with ID N (see
bpfring top). Formats:

  raw   each record as a little-endian uint32 length, then its bytes
  hex   a "record N: L bytes" line, then a hex dump, per record
  json  one {"record":N,"len":L,"data":"<base64>"} object per line

cat CONSUMES the records: another consumer of the same ring will never see
them. It stops after -n records, after -timeout, or on Ctrl-C, and prints
the counts on stderr. Needs root.`

// errEnough stops the manager once -n records are out.
var errEnough = errors.New("enough records")

func runCat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cat", "[flags] MAP", catHelp, stderr)
	format := fs.String("format", "raw", "output `format`: raw, hex or json")
	n := fs.Int("n", 0, "stop after this many records (0: no limit)")
	timeout := fs.Duration("timeout", 0, "stop after this long; with -n, an error if fewer records came (0: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var write func(w io.Writer, seq int, data []byte) error
	switch *format {
	case "raw":
		write = writeRaw
	case "hex":
		write = writeHex
	case "json":
		write = writeJSON
	default:
		return usageErrorf("unknown -format %q: want raw, hex or json", *format)
	}
	switch {
	case fs.NArg() != 1:
		return usageErrorf("cat takes one MAP (a bpffs path or id:N), got %q", fs.Args())
	case *n < 0:
		return usageErrorf("-n %d is negative", *n)
	case *timeout < 0:
		return usageErrorf("-timeout %v is negative", *timeout)
	}

	m, err := openMap(fs.Arg(0))
	if err != nil {
		return err
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	if m.Type() != ebpf.RingBuf {
		return fmt.Errorf("%s is a %v map, not a ring buffer: %w", fs.Arg(0), m.Type(), ringbuf.ErrMapType)
	}

	var records, bytes int
	mgr, err := ringbuf.New(m, func(data []byte) error {
		records++
		bytes += len(data)
		if err := write(stdout, records, data); err != nil {
			return err
		}
		if records == *n {
			return errEnough
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	defer mgr.Close()
	fmt.Fprintf(stderr, "bpfring cat: warning: consuming the records of ring buffer %s (%q): any other consumer of this map will miss them\n",
		fs.Arg(0), info.Name)

	runCtx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	err = mgr.Run(runCtx)
	fmt.Fprintf(stderr, "bpfring cat: %d records, %d bytes of payload\n", records, bytes)
	switch {
	case errors.Is(err, errEnough):
		return nil
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return nil // Ctrl-C: a normal end
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		if *n == 0 {
			return nil // -timeout without -n: a normal end
		}
		return fmt.Errorf("%d of %d records within -timeout %v: %w", records, *n, *timeout, os.ErrDeadlineExceeded)
	}
	return err
}

// openMap opens a map pinned at path, or "id:N".
func openMap(arg string) (*ebpf.Map, error) {
	if s, ok := strings.CutPrefix(arg, "id:"); ok {
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, usageErrorf("bad map ID in %q: want id:N with N a map ID", arg)
		}
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			return nil, fmt.Errorf("open map %d: %w", id, err)
		}
		return m, nil
	}
	m, err := ebpf.LoadPinnedMap(arg, nil)
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", arg, err)
	}
	return m, nil
}

func writeRaw(w io.Writer, _ int, data []byte) error {
	buf := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(data)), uint32(len(data)))
	_, err := w.Write(append(buf, data...))
	return err
}

func writeHex(w io.Writer, seq int, data []byte) error {
	_, err := fmt.Fprintf(w, "record %d: %d bytes\n%s", seq, len(data), hex.Dump(data))
	return err
}

func writeJSON(w io.Writer, seq int, data []byte) error {
	line, err := json.Marshal(struct {
		Record int    `json:"record"`
		Len    int    `json:"len"`
		Data   string `json:"data"`
	}{seq, len(data), base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		return err
	}
	_, err = w.Write(append(line, '\n'))
	return err
}
