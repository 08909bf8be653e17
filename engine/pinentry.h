/*
 * p11agent: what pin.c and pinentry.c share inside the token helper (the
 * PIN's locked memory and the child programs that ask for a PIN).
 */
#ifndef P11AGENT_PINENTRY_H
#define P11AGENT_PINENTRY_H

#include <sys/types.h>

#include <stddef.h>

#include "p11agent/token.h"

#define PIN_MAX		256	/* bytes of a PIN, from any source */

/* A PIN of len bytes (taken as it is: no newline is removed). */
int	 pin_new(const char *, size_t len, struct pin **, char *err,
	    size_t errlen);
/* A zeroed buffer in locked memory, for bytes that may hold a PIN. */
int	 pin_buf_new(size_t, char **, char *err, size_t errlen);
void	 pin_buf_free(char *, size_t);	/* wipes it; NULL is fine */

long	 pin_now_ms(void);		/* CLOCK_MONOTONIC */
/*
 * The program's path: prog itself when it has a slash, else the first
 * executable prog in $PATH; 0, or an errno (ENOENT, EACCES, ENAMETOOLONG).
 */
int	 pin_child_find(const char *prog, char *path, size_t pathsz);
/*
 * Starts path with argv, stdin fd0 (-1: /dev/null), stdout fd1, our
 * stderr, no other descriptor, an empty signal mask, default signal
 * dispositions and a few named environment variables (never the helper's
 * PIN variables); 0 or an errno.
 */
int	 pin_child_spawn(const char *path, char *const argv[], int fd0,
	    int fd1, pid_t *);
/*
 * Reads into buf from *lenp on until a newline is in buf, end of file or
 * a full buffer (0: the caller looks which), or the deadline
 * (P11A_ERR_TIMEOUT), or an error (P11A_ERR_SYSTEM).
 */
int	 pin_child_read(int fd, char *buf, size_t bufsz, size_t *lenp,
	    long deadline);
/* Waits for the child until the deadline, or kills it at once (kill_now)
 * or at the deadline, and reaps it; its wait status, -1 if killed. */
int	 pin_child_wait(pid_t, long deadline, int kill_now);

/* pinentry.c: pin_ask's "pinentry". */
int	 pin_from_pinentry(const struct pin_ask *, struct pin **, char *err,
	    size_t errlen);

#endif
