/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types snoop.bpf.c needs, written by hand instead of a
 * multi-megabyte `bpftool btf dump ... format c` header. Only the fields the
 * program reads are declared: preserve_access_index makes clang emit CO-RE
 * relocations, and the loader finds each field's real offset in the running
 * kernel's BTF (/sys/kernel/btf/vmlinux), so the layout here does not matter.
 */
#ifndef BPFRING_VMLINUX_H
#define BPFRING_VMLINUX_H

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef _Bool bool;

/* The map types used below, from include/uapi/linux/bpf.h (stable ABI). */
enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_RINGBUF = 27,
};

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads still running; 0 once the last one exits */
} __attribute__((preserve_access_index));

struct task_struct {
	int exit_code;
	pid_t tgid;
	__u64 start_time; /* CLOCK_MONOTONIC ns, like bpf_ktime_get_ns */
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

#endif /* BPFRING_VMLINUX_H */
