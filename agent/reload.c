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
#include "p11agent/policy.h"
#include "p11agent/reload.h"
#include "p11agent/sd.h"
#include "p11agent/tunnel.h"

static struct {
	struct config	*old;		/* running while the reload works */
	reload_cb	 cb;
	void		*arg;
	long		 started;
	int		 pending;	/* a SIGHUP came while it ran */
} rl;

static void	pending_reload(void *);

static void
finish(struct agent *a, int err, const char *msg)
{
	reload_cb	 cb = rl.cb;
	void		*arg = rl.arg;

	a->reloading = 0;
	if (!a->draining)
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
	if (rl.pending && !a->draining) {
		rl.pending = 0;		/* the SIGHUP that came meanwhile */
		loop_defer(pending_reload, a);
	}
}

/* Keeps a configuration that retired identities or tunnels run on. */
static void
keep_old(struct agent *a, struct config *old)
{
	struct config	**v;

	if ((v = reallocarray(a->old_cfgs, a->nold_cfgs + 1,
	    sizeof(*v))) == NULL) {
		log_err("out of memory: a configuration stays in memory "
		    "until the agent stops");
		return;
	}
	a->old_cfgs = v;
	v[a->nold_cfgs++] = old;
}

/* Back to the configuration that ran before.  The identities the reload
 * opened retire (a helper's request may still point at one), and the
 * new configuration stays until they are gone. */
static void
undo(struct agent *a)
{
	struct config	*nc = a->cfg;

	identity_reload_abort(a);
	a->cfg = rl.old;
	keep_old(a, nc);
}

/*
 * What of [agent] a reload cannot change: module-allow is checked by the
 * token helpers when they start, so a new list is refused (the running
 * helpers would not apply it); the others are said, and the running
 * value is kept.
 */
static int
agent_settings(const struct config *nc, const struct config *old, char *err,
    size_t errlen)
{
	struct cfg_agent	*n = (struct cfg_agent *)&nc->agent;
	const struct cfg_agent	*o = &old->agent;
	int			 i, same = n->nmodule_allow == o->nmodule_allow;

	for (i = 0; same && i < n->nmodule_allow; i++)
		same = strcmp(n->module_allow[i], o->module_allow[i]) == 0;
	if (!same) {
		snprintf(err, errlen, "%s:%d: [agent] module-allow changed: "
		    "the token helpers check it when they start; restart "
		    "p11agent to apply it", nc->path, n->line);
		return P11A_ERR_CONFIG;
	}
	if (!config_str_same(n->control, o->control))
		log_warn("%s:%d: [agent] control: a reload keeps the socket "
		    "the agent opened (%s); restart p11agent to move it",
		    nc->path, n->line, o->control != NULL ? o->control :
		    "the default");
	if (!config_listen_same(&n->metrics, &o->metrics) ||
	    n->allow_remote != o->allow_remote)
		log_warn("%s:%d: [agent] metrics: a reload keeps the metrics "
		    "listener the agent opened; restart p11agent to change it",
		    nc->path, n->line);
	if (n->token_poll_ms != o->token_poll_ms) {
		log_warn("%s:%d: [agent] token-poll: a reload keeps %d ms, "
		    "which the running token helpers use; restart p11agent "
		    "to change it", nc->path, n->line, o->token_poll_ms);
		n->token_poll_ms = o->token_poll_ms;
	}
	return 0;
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
	/* the policies, on the identities now open (agent/policy.c) */
	if ((r = policy_apply(a)) != 0) {
		snprintf(err, sizeof(err), "%s: %d policy violation%s (above)",
		    a->cfg->path, r, r == 1 ? "" : "s");
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
	tunnels_kick_queues(a);		/* max-handshakes may have grown */
	if (a->cfg->agent.lock_after != rl.old->agent.lock_after)
		control_set_lock_after(a->cfg->agent.lock_after);
	/* log-level applies (unless -q or -v was given); the target stays,
	 * since the token helpers' stderr was set up for it */
	if (a->cfg->agent.log_target != rl.old->agent.log_target)
		log_warn("%s:%d: [agent] log: a reload keeps the log target "
		    "the agent started with; restart p11agent to change it",
		    a->cfg->path, a->cfg->agent.line);
	log_configure(log_target(), a->cfg->agent.log_level > 0 ?
	    a->cfg->agent.log_level - 1 : LOG_LVL_INFO);
	keep_old(a, rl.old);
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

	const char	*why;

	if (a->reloading || a->opening || a->tunnels == NULL || a->draining) {
		why = a->reloading ? "a reload is already under way" :
		    a->draining ? "the agent is stopping" :
		    "the agent is still starting";
		log_warn("reload refused: %s", why);
		if (cb != NULL)
			cb(arg, P11A_ERR_CONFIG, why);
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
	/* listen = systemd:NAME against the sockets systemd passed; the
	 * policy directory is read again too */
	if ((r = policy_load_dir(NULL, &nc->policies, err, sizeof(err))) != 0 ||
	    (r = sd_check_config(nc, err, sizeof(err))) != 0 ||
	    (r = agent_settings(nc, a->cfg, err, sizeof(err))) != 0) {
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
	/* every outcome, failures too, comes to opened() */
	identity_open_start(a, opened);
}

static void
logged(void *arg, int err, const char *msg)
{
	(void)arg;
	(void)err;
	(void)msg;	/* finish() logged it */
}

static void
pending_reload(void *arg)
{
	struct agent	*a = arg;

	if (a->draining || a->reloading)
		return;
	log_info("SIGHUP (during the last reload): reloading");
	reload_start(a, logged, NULL);
}

void
reload_signal(struct agent *a, int signo)
{
	int	 n;

	if (signo == SIGHUP) {
		if (a->reloading) {
			/* the file may have changed again: read it after */
			log_info("SIGHUP: a reload is under way; another "
			    "follows it");
			rl.pending = 1;
			return;
		}
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
	/* while a reload runs, the running configuration's (not the new) */
	a->drain_secs = (rl.old != NULL ? rl.old : a->cfg)->agent.drain_timeout;
	if (n == 0 || a->drain_secs == 0) {
		log_info("signal %d: stopping; %d connections open", signo, n);
		loop_stop();
		return;
	}
	a->drain_until = clock_now_ms() + a->drain_secs * 1000L;
	log_info("signal %d: stopping: not accepting; %d open connections "
	    "may finish within drain-timeout (%d s)", signo, n,
	    a->drain_secs);
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
			    "connections still open", a->drain_secs, a->nconns);
			loop_stop();
		}
	}
	if (a->nold_cfgs == 0 && !a->mods_check)
		return;
	left = identity_retired_free(a);
	if (a->nold_cfgs == 0)
		return;
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

	if (rl.old != NULL) {	/* stopped while a reload ran */
		config_free(rl.old);
		rl.old = NULL;
	}
	for (i = 0; i < a->nold_cfgs; i++)
		config_free(a->old_cfgs[i]);
	free(a->old_cfgs);
	a->old_cfgs = NULL;
	a->nold_cfgs = 0;
}
