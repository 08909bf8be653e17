/*
 * p11agent: reload without dropping traffic, and drain on SIGTERM
 * (include/p11agent/reload.h).
 *
 * A reload runs from the event loop in three steps, each of which may
 * fail and then undoes what the steps before it did:
 *   1. the file is read again (config_load); the running identities whose
 *      token side is unchanged are kept (identity_reload_begin);
 *   2. the identities new to it are opened on their helpers, from the
 *      loop, as at start-up (identity_open_start);
 *   3. the tunnels: unchanged ones go on, changed and new ones get a TLS
 *      context and take over the listening sockets of the old ones on the
 *      same address (tunnels_reload).
 * Only then does the new configuration run; the old one stays in memory
 * while a retired tunnel or identity still runs on it.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11agent/agent.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/control.h"
#include "p11agent/error.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/reload.h"
#include "p11agent/sd.h"
#include "p11agent/tunnel.h"

static struct {
	struct config	*old;		/* running while the reload works */
	reload_cb	 cb;
	void		*arg;
	long		 started;
} rl;

static void
finish(struct agent *a, int err, const char *msg)
{
	reload_cb	 cb = rl.cb;
	void		*arg = rl.arg;

	a->reloading = 0;
	sd_ready(a);	/* after RELOADING=1, taken or not */
	rl.cb = NULL;
	rl.arg = NULL;
	rl.old = NULL;
	if (err != 0)
		log_err("reload: %s; the running configuration stays", msg);
	else
		log_info("reload: %s", msg);
	if (cb != NULL)
		cb(arg, err, msg);
}

/* Back to the configuration that ran before. */
static void
undo(struct agent *a)
{
	struct config	*nc = a->cfg;

	identity_reload_abort(a);
	a->cfg = rl.old;
	config_free(nc);
}

static int
keep_old(struct agent *a, struct config *old)
{
	struct config	**v;

	if ((v = reallocarray(a->old_cfgs, a->nold_cfgs + 1,
	    sizeof(*v))) == NULL)
		return P11A_ERR_NOMEM;
	a->old_cfgs = v;
	v[a->nold_cfgs++] = old;
	return 0;
}

/* What of [agent] a reload cannot change: said, and the old value kept. */
static void
agent_settings(struct agent *a, const struct config *old)
{
	struct cfg_agent	*n = &a->cfg->agent;
	const struct cfg_agent	*o = &old->agent;

	if ((n->control == NULL) != (o->control == NULL) ||
	    (n->control != NULL && strcmp(n->control, o->control) != 0))
		log_warn("%s:%d: [agent] control: a reload keeps the socket "
		    "the agent opened (%s); restart p11agent to move it",
		    a->cfg->path, n->line, o->control != NULL ? o->control :
		    "the default");
	if (n->lock_after != o->lock_after)
		control_set_lock_after(n->lock_after);
}

static void
opened(struct agent *a, int failed)
{
	struct tunnels_reload_sum	 ts;
	char				 err[1024], msg[512];
	int				 r, retired, nid = 0;
	struct identity			*id;

	if (a->draining) {
		undo(a);
		finish(a, P11A_ERR_CONFIG, "the agent is stopping");
		return;
	}
	if (failed) {
		snprintf(err, sizeof(err), "%s", a->open_err[0] ? a->open_err :
		    "an identity could not be opened");
		undo(a);
		finish(a, P11A_ERR_CONFIG, err);
		return;
	}
	if ((r = tunnels_reload(a, &ts, err, sizeof(err))) != 0) {
		undo(a);
		finish(a, r, err);
		return;
	}
	for (id = a->identities; id != NULL; id = id->next)
		nid += id->fresh;
	retired = identity_reload_commit(a);
	agent_settings(a, rl.old);
	if (keep_old(a, rl.old) != 0) {
		log_err("out of memory: the old configuration stays in "
		    "memory until the agent stops");
	}
	snprintf(msg, sizeof(msg), "%s: tunnels: %d new, %d changed, %d "
	    "unchanged, %d removed; identities: %d opened, %d retired "
	    "(%ld ms)", a->cfg->path, ts.added, ts.changed, ts.kept,
	    ts.removed, nid, retired, clock_now_ms() - rl.started);
	finish(a, 0, msg);
}

void
reload_start(struct agent *a, reload_cb cb, void *arg)
{
	struct config	*nc;
	char		 err[CONFIG_MAX_ERR];
	int		 r;

	if (a->reloading || a->opening || a->tunnels == NULL || a->draining) {
		if (cb != NULL)
			cb(arg, P11A_ERR_CONFIG, a->reloading ? "a reload is "
			    "already under way" : a->draining ? "the agent is "
			    "stopping" : "the agent is still starting");
		return;
	}
	rl.cb = cb;
	rl.arg = arg;
	rl.started = clock_now_ms();
	a->reloading = 1;
	sd_reloading();
	log_info("reload: reading %s", a->cfg->path);
	if ((r = config_load(a->cfg->path, &nc, err, sizeof(err))) != 0) {
		finish(a, r, err);
		return;
	}
	/* listen = systemd:NAME against the sockets systemd passed */
	if ((r = sd_check_config(nc, err, sizeof(err))) != 0) {
		config_free(nc);
		finish(a, r, err);
		return;
	}
	rl.old = a->cfg;
	a->cfg = nc;
	if ((r = identity_reload_begin(a, err, sizeof(err))) != 0) {
		undo(a);
		finish(a, r, r == P11A_ERR_NOMEM ? "out of memory" : err);
		return;
	}
	if ((r = identity_open_start(a, opened)) != 0) {
		/* nothing is in flight when it fails before its requests */
		undo(a);
		finish(a, r, "cannot ask the token helpers");
	}
}

static void
logged(void *arg, int err, const char *msg)
{
	(void)arg;
	(void)err;
	(void)msg;	/* finish() logged it */
}

void
reload_signal(struct agent *a, int signo)
{
	int	 n;

	if (signo == SIGHUP) {
		log_info("SIGHUP: reloading");
		reload_start(a, logged, NULL);
		return;
	}
	if (a->draining || a->tunnels == NULL) {
		log_info("signal %d: stopping%s", signo, a->draining ?
		    " now, without waiting for the open connections" : "");
		loop_stop();
		return;
	}
	a->draining = 1;
	sd_stopping();
	n = tunnels_drain(a);
	if (n == 0 || a->cfg->agent.drain_timeout == 0) {
		log_info("signal %d: stopping; %d connections open", signo, n);
		loop_stop();
		return;
	}
	a->drain_until = clock_now_ms() + a->cfg->agent.drain_timeout * 1000L;
	log_info("signal %d: stopping: not accepting; %d open connections "
	    "may finish within drain-timeout (%d s)", signo, n,
	    a->cfg->agent.drain_timeout);
}

void
reload_tick(struct agent *a, long now)
{
	struct tunnel_rt	*rt;
	int			 i, left;

	if (a->draining) {
		if (a->nconns == 0) {
			log_info("every connection has finished: stopping");
			loop_stop();
		} else if (now >= a->drain_until) {
			log_warn("drain-timeout (%d s): closing the %d "
			    "connections still open", a->cfg->agent.drain_timeout,
			    a->nconns);
			loop_stop();
		}
	}
	if (a->nold_cfgs == 0)
		return;
	left = identity_retired_free(a);
	for (rt = a->tunnels; rt != NULL && !rt->retired; rt = rt->next)
		;
	if (left != 0 || rt != NULL)
		return;
	for (i = 0; i < a->nold_cfgs; i++)
		config_free(a->old_cfgs[i]);
	free(a->old_cfgs);
	a->old_cfgs = NULL;
	a->nold_cfgs = 0;
}

void
reload_cleanup(struct agent *a)
{
	int	 i;

	for (i = 0; i < a->nold_cfgs; i++)
		config_free(a->old_cfgs[i]);
	free(a->old_cfgs);
	a->old_cfgs = NULL;
	a->nold_cfgs = 0;
}
