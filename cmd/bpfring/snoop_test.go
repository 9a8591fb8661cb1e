package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfring/bpfring/internal/testprog"
)

// children runs /bin/sh -c 'exit 3' and then /bin/true, and returns their
// pids in that order.
func children(t *testing.T) (sh, tru int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "exit 3")
	var exitErr *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("sh -c 'exit 3': %v, want exit status 3", err)
	}
	sh = cmd.Process.Pid
	cmd = exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("/bin/true: %v", err)
	}
	return sh, cmd.Process.Pid
}

func lines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' })
}

func TestSnoopJSON(t *testing.T) {
	testprog.RequireBPF(t)
	// The first process Go starts makes the runtime fork a child that exits
	// at once (its pidfd support check): let that happen before tracing, so
	// that the test's only children are the two it checks.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var stdout, stderr syncBuffer
	// -pid selects the test's children (their PPID): nothing else runs them.
	r := start(t, []string{"snoop", "-json", "-pid", strconv.Itoa(self)}, &stdout, &stderr)
	r.waitFor(t, &stderr, "ready message", func(s string) bool { return strings.Contains(s, "Tracing") })

	shPID, truePID := children(t)
	r.waitFor(t, &stdout, "4 events", func(s string) bool { return len(lines(s)) >= 4 })
	if err := r.stop(t); err != nil {
		t.Fatalf("snoop: %v", err)
	}

	got := map[string]snoopEvent{}
	for _, line := range lines(stdout.String()) {
		var e snoopEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		key := e.Event + " " + strconv.Itoa(int(e.PID))
		if _, dup := got[key]; dup {
			t.Errorf("two %s events", key)
		}
		got[key] = e
	}
	uid := uint32(os.Getuid())
	want := []struct {
		key, comm, filename string
		exitCode            int
	}{
		{"exec " + strconv.Itoa(shPID), "sh", "/bin/sh", -1},
		{"exit " + strconv.Itoa(shPID), "sh", "", 3},
		{"exec " + strconv.Itoa(truePID), "true", "/bin/true", -1},
		{"exit " + strconv.Itoa(truePID), "true", "", 0},
	}
	for _, w := range want {
		e, ok := got[w.key]
		if !ok {
			t.Errorf("no %s event; output:\n%s", w.key, stdout.String())
			continue
		}
		delete(got, w.key)
		if e.Comm != w.comm || e.PPID != uint32(self) || e.UID != uid || e.Filename != w.filename || e.Time.IsZero() {
			t.Errorf("%s: got %+v, want comm %q, ppid %d, uid %d, filename %q and a time", w.key, e, w.comm, self, uid, w.filename)
		}
		switch {
		case w.exitCode < 0 && (e.ExitCode != nil || e.LifetimeNs != nil):
			t.Errorf("%s: exec event with exit fields: %+v", w.key, e)
		case w.exitCode >= 0 && (e.ExitCode == nil || *e.ExitCode != w.exitCode || e.Signal != 0 || e.LifetimeNs == nil || *e.LifetimeNs == 0):
			t.Errorf("%s: got %+v, want exit code %d, no signal and a lifetime", w.key, e, w.exitCode)
		}
	}
	for key, e := range got {
		t.Errorf("unexpected %s event: %+v", key, e)
	}
	if !strings.Contains(stderr.String(), "\n4 events shown\n") || !strings.Contains(stderr.String(), "exec ring: ") {
		t.Errorf("no summary with 4 events on stderr:\n%s", stderr.String())
	}
}

func TestSnoopTable(t *testing.T) {
	testprog.RequireBPF(t)
	self := strconv.Itoa(os.Getpid())
	var stdout, stderr syncBuffer
	r := start(t, []string{"snoop", "-comm", "true", "-pid", self}, &stdout, &stderr)
	r.waitFor(t, &stderr, "ready message", func(s string) bool { return strings.Contains(s, "Tracing") })

	// sh's events come first in each ring, so they have been read (and
	// filtered out) by the time true's exit is shown.
	_, truePID := children(t)
	r.waitFor(t, &stdout, "header and 2 rows", func(s string) bool { return len(lines(s)) >= 3 })
	if err := r.stop(t); err != nil {
		t.Fatalf("snoop: %v", err)
	}

	rows := lines(stdout.String())
	if len(rows) != 3 {
		t.Fatalf("want a header and 2 rows, got:\n%s", stdout.String())
	}
	if got := strings.Fields(rows[0]); strings.Join(got, " ") != "TIME EVENT COMM PID PPID UID DETAIL" {
		t.Errorf("header %q", rows[0])
	}
	uid := strconv.Itoa(os.Getuid())
	pid := strconv.Itoa(truePID)
	for i, want := range [][]string{
		{"exec", "true", pid, self, uid, "/bin/true"},
		{"exit", "true", pid, self, uid, "exit_code=0"},
	} {
		got := strings.Fields(rows[1+i])
		if len(got) < 1+len(want) || strings.Join(got[1:1+len(want)], " ") != strings.Join(want, " ") {
			t.Errorf("row %q, want TIME then %q", rows[1+i], want)
		}
	}
	if len(rows[1]) != len(rows[0])-len("DETAIL")+len("/bin/true") {
		t.Errorf("columns not aligned:\n%s", stdout.String())
	}
}

func TestSnoopDuration(t *testing.T) {
	testprog.RequireBPF(t)
	var stdout, stderr syncBuffer
	r := start(t, []string{"snoop", "-duration", "50ms", "-comm", "no-such-command"}, &stdout, &stderr)
	if err := r.wait(t); err != nil {
		t.Fatalf("snoop -duration: %v", err)
	}
	if !strings.Contains(stderr.String(), "exit ring:") {
		t.Errorf("no summary on stderr:\n%s", stderr.String())
	}
	if got := stdout.String(); len(lines(got)) != 1 {
		t.Errorf("want only the header, got:\n%s", got)
	}
}
