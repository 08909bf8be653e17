/*
 * deny-syscall WHAT PROGRAM [ARG...]: runs PROGRAM under a seccomp filter
 * that makes one hardening call fail with EPERM, so a test can see what
 * the token helper does when it cannot harden itself:
 *	core		setrlimit(RLIMIT_CORE, ...) (prlimit64 and setrlimit)
 *	dumpable	prctl(PR_SET_DUMPABLE, 0)
 * Everything else is allowed.  Exits 77 where the filter cannot be built.
 */
#include "config.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH	AUDIT_ARCH_AARCH64
#endif

/* the low 32 bits of argument i (little-endian) */
#define ARG(i)	(offsetof(struct seccomp_data, args) + (i) * 8)

#define LOAD(off)	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
/* if A == k go jt instructions ahead, else jf */
#define JEQ(k, jt, jf)	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (k), (jt), (jf))
#define RET(v)		BPF_STMT(BPF_RET | BPF_K, (v))
#define DENY		RET(SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define ALLOW		RET(SECCOMP_RET_ALLOW)

int
main(int argc, char *argv[])
{
#ifdef ARCH
	struct sock_filter	 core[] = {
		/* 0 */ LOAD(offsetof(struct seccomp_data, arch)),
		/* 1 */ JEQ(ARCH, 0, 8),
		/* 2 */ LOAD(offsetof(struct seccomp_data, nr)),
		/* 3 */ JEQ(__NR_prlimit64, 0, 2),
		/* 4 */ LOAD(ARG(1)),
		/* 5 */ JEQ(RLIMIT_CORE, 3, 4),
#ifdef __NR_setrlimit
		/* 6 */ JEQ(__NR_setrlimit, 0, 3),
		/* 7 */ LOAD(ARG(0)),
		/* 8 */ JEQ(RLIMIT_CORE, 0, 1),
#else
		ALLOW, ALLOW, ALLOW,
#endif
		/* 9 */ DENY,
		/* 10 */ ALLOW,
	};
	struct sock_filter	 dumpable[] = {
		/* 0 */ LOAD(offsetof(struct seccomp_data, arch)),
		/* 1 */ JEQ(ARCH, 0, 7),
		/* 2 */ LOAD(offsetof(struct seccomp_data, nr)),
		/* 3 */ JEQ(__NR_prctl, 0, 5),
		/* 4 */ LOAD(ARG(0)),
		/* 5 */ JEQ(PR_SET_DUMPABLE, 0, 3),
		/* 6 */ LOAD(ARG(1)),
		/* 7 */ JEQ(0, 0, 1),
		/* 8 */ DENY,
		/* 9 */ ALLOW,
	};
	struct sock_fprog	 prog;

	if (argc < 3) {
		fprintf(stderr, "usage: deny-syscall core|dumpable PROGRAM "
		    "[ARG...]\n");
		return 2;
	}
	if (strcmp(argv[1], "core") == 0) {
		prog.filter = core;
		prog.len = sizeof(core) / sizeof(core[0]);
	} else if (strcmp(argv[1], "dumpable") == 0) {
		prog.filter = dumpable;
		prog.len = sizeof(dumpable) / sizeof(dumpable[0]);
	} else {
		fprintf(stderr, "deny-syscall: unknown call '%s'\n", argv[1]);
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == -1) {
		fprintf(stderr, "deny-syscall: seccomp: %s\n", strerror(errno));
		return 77;
	}
	execv(argv[2], argv + 2);
	fprintf(stderr, "deny-syscall: %s: %s\n", argv[2], strerror(errno));
	return 127;
#else
	fprintf(stderr, "deny-syscall: no seccomp filter for this machine\n");
	return 77;
#endif
}
