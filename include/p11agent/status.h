/*
 * p11agent: what the running agent says of itself (agent/status.c): for
 * people, as JSON (docs/control-protocol.md, schema version 1) and in the
 * Prometheus text format, over the control socket (agent/control.c) and
 * the metrics listener (agent/metrics.c).
 *
 * A status asks every token helper that runs for the state of its tokens
 * (PROTO_STATE: present, logged in, PIN flags; no login, no dialog),
 * asynchronously, and is built once all have answered or failed, or
 * STATUS_WAIT_MS has passed: a helper that is busy (a PIN dialog, a slow
 * token) or dead makes its tokens "unknown", never the status wait.
 */
#ifndef P11AGENT_STATUS_H
#define P11AGENT_STATUS_H

#include <stddef.h>

struct agent;
struct module_rt;
struct status_req;

#define STATUS_WAIT_MS		2000	/* for the helpers' answers */
/* A STATE request's own timeout: the smallest sign-timeout of the
 * module's identities, at least STATUS_WAIT_MS, STATUS_STATE_MS when it
 * has none; the helper is taken for hung after it, as after a signature. */
#define STATUS_STATE_MS		10000

enum status_format {
	STATUS_TEXT,
	STATUS_JSON,
	STATUS_PROMETHEUS,
};

/*
 * The answer: text (len bytes, NUL-terminated, now the callee's to free;
 * NULL when out of memory), lines each starting with the prefix given;
 * cut: a line did not fit in max bytes and was left out, with all after
 * it.
 */
typedef void (*status_cb)(void *arg, char *text, size_t len, int cut);

/* Starts a status; cb runs from the loop (never from inside this call).
 * *req is for status_cancel until cb runs. */
int	 status_start(struct agent *, enum status_format, const char *prefix,
	    size_t max, status_cb, void *arg, struct status_req **req);
/* The callback of a status not answered yet will not run. */
void	 status_cancel(struct status_req *);
/* From the agent's tick: statuses whose wait is over are answered. */
void	 status_tick(long now);
/* The agent's start (wall clock), once: the first call sets it. */
void	 status_init(void);
/* "/path/module.so", the registry name, or "the p11-kit registry". */
const char *status_module_label(const struct module_rt *);

#endif
