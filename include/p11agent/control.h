/*
 * p11agent: the control socket (agent/control.c, docs/control-protocol.md).
 *
 * A running agent serves one Unix socket per user, mode 0600 in a
 * directory of its own with mode 0700: $XDG_RUNTIME_DIR/p11agent/control
 * unless the configuration says control = PATH or the command line
 * --control PATH.  Only the uid that runs the agent may use it
 * (SO_PEERCRED); other uids get a refusal and are logged.  A client sends
 * one request line (at most CONTROL_MAX_LINE bytes) and reads "* " lines
 * and then one "OK ..." or "ERR CODE ..." line; the agent then closes the
 * connection.  Every request is served from the event loop, never
 * blocking it: lock and unlock ask each token helper asynchronously and
 * answer when all of them have answered, failed or timed out.
 *
 * The requests are one table in control.c: lock, lock --idle SECONDS,
 * unlock, status [--json | --prometheus], reload.
 */
#ifndef P11AGENT_CONTROL_H
#define P11AGENT_CONTROL_H

#include <stddef.h>

struct agent;
struct config;

#define CONTROL_MAX_LINE	4096	/* a request, with its newline */

/* Exit statuses of the command line's control requests (p11agent(1)). */
#define CONTROL_EXIT_OK		0
#define CONTROL_EXIT_FAILED	1	/* refused, failed or no answer */
#define CONTROL_EXIT_NO_AGENT	3	/* nothing listens on the socket */

/*
 * The socket's path: opt (--control) if set, else cfg's control = PATH
 * (cfg may be NULL), else $XDG_RUNTIME_DIR/p11agent/control.  *path is
 * new; on error (XDG_RUNTIME_DIR unset or not absolute) err says what
 * to set.
 */
int	 control_path(const struct config *cfg, const char *opt, char **path,
	    char *err, size_t errlen);
/*
 * The agent's side: opens the socket at path (a stale one is replaced,
 * a live one means another agent runs: refused) and watches it in the
 * loop, which must be initialised; the lock-after timer starts from
 * cfg's lock-after.  A socket systemd passed as "control" (sd.h) is
 * served instead, path then only checked against it; path NULL: that
 * socket or none.  0, or < 0 with the reason logged.
 */
int	 control_open(struct agent *, const char *path);
/* A reload changed lock-after in the configuration. */
void	 control_set_lock_after(int seconds);
/* From the agent's tick: client deadlines and lock-after. */
void	 control_tick(struct agent *, long now);
/* Closes every client and the socket, and removes it.  Requests still
 * waiting for a helper finish without a client; call it after
 * helpers_fail_all() so that none is left. */
void	 control_close(struct agent *);

/*
 * The command line's side: sends request (one line, without its
 * newline) to the agent at path and prints its answer, "* " and "OK"
 * lines to stdout, an "ERR" line to stderr; waits at most timeout_ms.
 * Returns a CONTROL_EXIT_* status, with the reason printed.
 */
int	 control_request(const char *path, const char *request,
	    int timeout_ms);

#endif
