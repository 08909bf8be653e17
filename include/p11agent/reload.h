/*
 * p11agent: reload and drain (agent/reload.c).
 *
 * A reload (SIGHUP, p11agent reload) reads the configuration file again.
 * The new one applies to new connections; open ones finish on the
 * settings they started with.  An identity whose token side (key,
 * certificate, module, PIN source, login settings) is unchanged keeps its
 * helper and login: no new C_Login, no PIN dialog.  A configuration that
 * does not parse, names a key that cannot be opened, or a listener that
 * cannot be opened leaves the running one as it was, and says why.
 *
 * SIGTERM and SIGINT drain: the listeners close, the open connections
 * may finish for drain-timeout seconds, then the agent stops (a second
 * signal stops it at once).
 */
#ifndef P11AGENT_RELOAD_H
#define P11AGENT_RELOAD_H

struct agent;

/* The result: err 0 and a summary, or err < 0 and why, once. */
typedef void (*reload_cb)(void *arg, int err, const char *msg);

/* Starts a reload; cb runs exactly once, maybe before this returns. */
void	 reload_start(struct agent *, reload_cb, void *arg);
/* The loop's signals (loop_on_signal): SIGHUP reloads, the others drain. */
void	 reload_signal(struct agent *, int signo);
/* From the agent's tick: frees what retired, ends a drain. */
void	 reload_tick(struct agent *, long now);
/* At exit: the configurations retired tunnels ran on. */
void	 reload_cleanup(struct agent *);

#endif
