// SPDX-License-Identifier: (MIT OR GPL-2.0)
// snoop: one record per exec and per process exit, into two ring buffers.
// Compiled by bpf2go (see ../snoop.go); CO-RE relocations against the
// kernel's BTF make it independent of the kernel's struct layouts.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define MAX_FILENAME 256

struct exec_event {
	__u64 time_ns; /* bpf_ktime_get_ns() */
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u8 comm[TASK_COMM_LEN];
	__u8 filename[MAX_FILENAME];
};

struct exit_event {
	__u64 time_ns;
	__u64 lifetime_ns; /* since the process started */
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 exit_code; /* wait status: code << 8 | signal */
	__u8 comm[TASK_COMM_LEN];
};

/* Make the record types part of the BTF, so that bpf2go generates them. */
const struct exec_event *unused_exec_event __attribute__((unused));
const struct exit_event *unused_exit_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} exits SEC(".maps");

/* Reservations that failed because a ring was full: the ring buffer keeps no
 * count of its own. Index DROP_EXEC or DROP_EXIT. */
enum { DROP_EXEC, DROP_EXIT, NR_DROPS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_DROPS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static void count_drop(__u32 key)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_event *e = bpf_ringbuf_reserve(&execs, sizeof(*e), 0);

	if (!e) {
		count_drop(DROP_EXEC);
		return 0;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	const char *filename = BPF_CORE_READ(bprm, filename);

	if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename) < 0)
		e->filename[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	/* Report the process, not each thread: only the last thread to exit,
	 * once the thread group is dead. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;

	struct exit_event *e = bpf_ringbuf_reserve(&exits, sizeof(*e), 0);

	if (!e) {
		count_drop(DROP_EXIT);
		return 0;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->lifetime_ns = e->time_ns - BPF_CORE_READ(p, group_leader, start_time);
	e->pid = BPF_CORE_READ(p, tgid);
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->exit_code = BPF_CORE_READ(p, exit_code);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
