// Package perf wraps the perf_event_open(2) plumbing behind a BPF perf
// buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY): opening one PERF_COUNT_SW_BPF_OUTPUT
// event per CPU, mapping its ring, enabling and disabling it, listing the
// online CPUs, redirecting a new event into a mapped ring and telling a live
// event from one the kernel dropped with its CPU. It depends only on
// golang.org/x/sys/unix; reading the ring is the ringbuf package's business.
package perf
