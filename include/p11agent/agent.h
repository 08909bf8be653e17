/*
 * p11agent: the agent process's top-level state (agent/main.c).
 */
#ifndef P11AGENT_AGENT_H
#define P11AGENT_AGENT_H

struct config;
struct identity;
struct module_rt;
struct tunnel_rt;

struct agent {
	struct config		*cfg;
	struct identity		*identities;	/* in open order */
	struct module_rt	**mods;		/* one per module */
	int			 nmods;
	struct tunnel_rt	*tunnels;
	int			 nconns;	/* open connections, all tunnels */
	/* "NAME=PIN" of pin = env:NAME, out of the environment, locked */
	char			**pin_env;
	int			 npin_env;
	/* start-up: identities still opening, and what to call then */
	int			 opening;
	int			 open_failed;
	char			 open_err[1024];	/* the first failure */
	/* reload (agent/reload.c): one at a time; the configurations that
	 * retired tunnels and identities still run on */
	int			 reloading;
	int			 mods_check;	/* a helper may be unneeded */
	struct config		**old_cfgs;
	int			 nold_cfgs;
	/* SIGTERM: not accepting, open connections finish until then */
	int			 draining;
	long			 drain_until;
	int			 drain_secs;
	int			 stopping;	/* after the loop: open nothing */
	void			(*opened_cb)(struct agent *, int failed);
};

#endif
