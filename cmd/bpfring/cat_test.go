package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfring/bpfring/internal/testprog"
	"github.com/bpfring/bpfring/ringbuf"
)

// mountBPFFS mounts a bpffs of the test's own in a temporary directory,
// unmounted when the test ends.
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return dir
}

// pinnedRing creates a ring buffer pinned in a fresh bpffs and a producer for
// it, and returns the pin path.
func pinnedRing(t *testing.T, spec *testprog.Spec) (string, *testprog.Producer) {
	t.Helper()
	testprog.RequireBPF(t)
	path := filepath.Join(mountBPFFS(t), "ring")
	spec.Ring = testprog.NewRingBuf(t, 4*os.Getpagesize())
	if err := spec.Ring.Pin(path); err != nil {
		t.Fatalf("pin: %v", err)
	}
	return path, testprog.NewProducer(t, *spec)
}

func TestCat(t *testing.T) {
	const records = 6
	// Odd size: the ring pads records to 8 bytes, cat must not.
	spec := testprog.Spec{Size: 37}
	want := make([][]byte, records)
	for seq := range want {
		want[seq] = spec.Expected(0, uint64(seq))
	}

	// parse turns each format's output back into records.
	parseRaw := func(t *testing.T, out []byte) [][]byte {
		var recs [][]byte
		for len(out) > 0 {
			if len(out) < 4 {
				t.Fatalf("%d stray bytes at the end", len(out))
			}
			n := binary.LittleEndian.Uint32(out)
			if uint32(len(out)-4) < n {
				t.Fatalf("record of %d bytes, %d left", n, len(out)-4)
			}
			recs = append(recs, out[4:4+n])
			out = out[4+n:]
		}
		return recs
	}
	parseHex := func(t *testing.T, out []byte) [][]byte {
		var recs [][]byte
		// Each record is a header line and then stdlib's hex.Dump of it.
		rest := string(out)
		for rest != "" {
			head, body, ok := strings.Cut(rest, "\n")
			var seq, n int
			if _, err := fmt.Sscanf(head, "record %d: %d bytes", &seq, &n); !ok || err != nil || seq != len(recs)+1 {
				t.Fatalf("bad header %q (%v)", head, err)
			}
			dumpLines := (n + 15) / 16
			lines := strings.SplitAfterN(body, "\n", dumpLines+1)
			if len(lines) < dumpLines {
				t.Fatalf("short dump for record %d", seq)
			}
			dump := strings.Join(lines[:dumpLines], "")
			rec := []byte{}
			if seq <= len(want) {
				rec = want[seq-1]
			}
			if dump != hex.Dump(rec) {
				t.Fatalf("record %d dump:\n%s\nwant:\n%s", seq, dump, hex.Dump(rec))
			}
			recs = append(recs, rec)
			rest = ""
			if len(lines) > dumpLines {
				rest = lines[dumpLines]
			}
		}
		return recs
	}
	parseJSON := func(t *testing.T, out []byte) [][]byte {
		var recs [][]byte
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var r struct {
				Record, Len int
				Data        string
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("bad line %q: %v", sc.Text(), err)
			}
			data, err := base64.StdEncoding.DecodeString(r.Data)
			if err != nil || r.Record != len(recs)+1 || r.Len != len(data) {
				t.Fatalf("bad line %q (%v)", sc.Text(), err)
			}
			recs = append(recs, data)
		}
		return recs
	}

	for _, tt := range []struct {
		format string
		parse  func(*testing.T, []byte) [][]byte
	}{
		{"raw", parseRaw},
		{"hex", parseHex},
		{"json", parseJSON},
	} {
		t.Run(tt.format, func(t *testing.T) {
			path, prod := pinnedRing(t, &spec)
			prod.RunOnCPU(t, 0, records+2) // 2 more than cat reads

			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"cat", "-format", tt.format, "-n", strconv.Itoa(records), "-timeout", hangTimeout.String(), path}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("cat: %v\n%s", err, stderr.String())
			}
			got := tt.parse(t, stdout.Bytes())
			if len(got) != records {
				t.Fatalf("%d records, want %d", len(got), records)
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("record %d:\n%x\nwant\n%x", i, got[i], want[i])
				}
			}
			for _, s := range []string{"warning: consuming the records", "any other consumer of this map will miss them",
				fmt.Sprintf("%d records, %d bytes of payload", records, records*spec.Size)} {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}

// TestCatByID reads by map ID, then runs into -timeout before -n records.
func TestCatByID(t *testing.T) {
	spec := testprog.Spec{Size: 16}
	_, prod := pinnedRing(t, &spec)
	prod.RunOnCPU(t, 0, 3)
	id := "id:" + strconv.Itoa(int(mapID(t, spec.Ring)))

	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"cat", "-n", "2", id}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("cat %s: %v\n%s", id, err, stderr.String())
	}
	want := append(binary.LittleEndian.AppendUint32(nil, 16), spec.Expected(0, 0)...)
	want = append(binary.LittleEndian.AppendUint32(want, 16), spec.Expected(0, 1)...)
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("output\n%x\nwant\n%x", stdout.Bytes(), want)
	}

	// One record is left; ask for two.
	stdout.Reset()
	stderr.Reset()
	err = run(t.Context(), []string{"cat", "-n", "2", "-timeout", "100ms", id}, &stdout, &stderr)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "1 of 2 records") {
		t.Errorf("cat -n 2 with one record: %v, want a timeout after 1 of 2 records", err)
	}
	want = append(binary.LittleEndian.AppendUint32(nil, 16), spec.Expected(0, 2)...)
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("output\n%x\nwant\n%x", stdout.Bytes(), want)
	}

	// Without -n, a timeout is a normal end.
	stdout.Reset()
	if err := run(t.Context(), []string{"cat", "-timeout", "10ms", id}, &stdout, &stderr); err != nil || stdout.Len() != 0 {
		t.Errorf("cat -timeout on an empty ring: %v, output %x", err, stdout.Bytes())
	}
}

func TestCatErrors(t *testing.T) {
	testprog.RequireBPF(t)
	dir := mountBPFFS(t)
	array, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer array.Close()
	if err := array.Pin(filepath.Join(dir, "array")); err != nil {
		t.Fatal(err)
	}
	var usage *usageError
	for _, tt := range []struct {
		name string
		args []string
		is   func(error) bool
		msg  string
	}{
		{"not a ring", []string{filepath.Join(dir, "array")}, func(err error) bool { return errors.Is(err, ringbuf.ErrMapType) }, "not a ring buffer"},
		{"no such pin", []string{filepath.Join(dir, "nothing")}, func(err error) bool { return errors.Is(err, os.ErrNotExist) }, "open pinned map " + filepath.Join(dir, "nothing")},
		{"no such id", []string{"id:4294967295"}, func(err error) bool { return errors.Is(err, os.ErrNotExist) }, "open map 4294967295"},
		{"bad id", []string{"id:x"}, func(err error) bool { return errors.As(err, &usage) }, `bad map ID in "id:x"`},
		{"no map", nil, func(err error) bool { return errors.As(err, &usage) }, "cat takes one MAP"},
		{"bad format", []string{"-format", "xml", "id:1"}, func(err error) bool { return errors.As(err, &usage) }, `unknown -format "xml"`},
		{"negative n", []string{"-n", "-1", "id:1"}, func(err error) bool { return errors.As(err, &usage) }, "-n -1 is negative"},
		{"negative timeout", []string{"-timeout", "-1s", "id:1"}, func(err error) bool { return errors.As(err, &usage) }, "-timeout -1s is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"cat"}, tt.args...), &stdout, &stderr)
			if err == nil || !tt.is(err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("cat %q: %v, want an error with %q", tt.args, err, tt.msg)
			}
			if stdout.Len() != 0 {
				t.Errorf("output on error: %q", stdout.String())
			}
		})
	}
}

// TestCatInterrupt: without -n or -timeout, cat runs until Ctrl-C, which is a
// normal end with the counts.
func TestCatInterrupt(t *testing.T) {
	spec := testprog.Spec{Size: 8}
	path, prod := pinnedRing(t, &spec)
	var stdout, stderr syncBuffer
	r := start(t, []string{"cat", "-format", "json", path}, &stdout, &stderr)
	r.waitFor(t, &stderr, "warning", func(s string) bool { return strings.Contains(s, "warning") })
	prod.Run(t, 2)
	r.waitFor(t, &stdout, "2 records", func(s string) bool { return len(lines(s)) == 2 })
	if err := r.stop(t); err != nil {
		t.Fatalf("cat: %v", err)
	}
	if !strings.Contains(stderr.String(), "2 records, 16 bytes of payload") {
		t.Errorf("no counts on stderr:\n%s", stderr.String())
	}
}
