/*
 * p11agent: identities and their token helpers (agent/identity.c).
 *
 * Each PKCS#11 module in use has one token helper process, kept by a
 * struct module_rt; each [identity] is a key opened on one of them, an
 * EVP_PKEY whose signatures that helper computes.  A helper that exits
 * or hangs is restarted at a bounded rate and its identities are opened
 * again.
 */
#ifndef P11AGENT_IDENTITY_H
#define P11AGENT_IDENTITY_H

#include <sys/stat.h>

#include <openssl/evp.h>

#include "p11agent/helper.h"
#include "p11agent/loop.h"

struct agent;
struct cfg_identity;
struct conn;

/*
 * The agent's side of one module's helper.  A module given by path has
 * module set; a module of p11-kit's registry has registry_name (each has
 * a helper of its own, so a hung one hides no other); the registry's
 * lister, which only names the registered modules, has neither.
 */
struct module_rt {
	struct agent		*agent;
	struct helper		*helper;
	char			*module;	/* a path, or NULL */
	char			*registry_name;	/* p11-kit's name, or NULL */
	struct watch		 w;		/* its channel, in the loop */
	struct watch		 pw;		/* its process (pidfd) */
	int			 killed;	/* taken for hung, killed */
	int			 dead;		/* waiting to be restarted */
	int			 given_up;	/* needs the user: no restarts */
	int			 reopening;	/* OPENs in flight */
	int			 retiring;	/* to be removed: not needed */
	int			 remove_queued;	/* its removal is deferred */
	long			 restart_at;
	int			 backoff_ms;
	int			 reinserting;	/* a card came back: restart */
	int			 restarts;	/* helpers started after the first */
};

/* A token that a registry identity's key URI could mean (PROBE). */
struct probe_hit {
	struct module_rt	*mod;
	char			*uri;
	char			*desc;
};

struct identity {
	struct agent		*agent;
	struct cfg_identity	*cfg;
	struct module_rt	*mod;		/* NULL until found */
	struct helper_identity	 hid;
	EVP_PKEY		*pkey;
	/* registry mode, at start-up: the modules' answers to PROBE */
	int			 probes_left;
	int			 probe_unknown;	/* modules that did not say */
	struct probe_hit	*hits;
	int			 nhits;
	char			 probe_err[1024];	/* modules that failed */
	/* its card was pulled (PROTO_EVENT): new connections fail at once
	 * until it is open again; the card's label and serial */
	int			 absent;
	unsigned long long	 removals;	/* times it was pulled */
	char			 tok_label[33];
	char			 tok_serial[17];
	/* its card is still out after a restart of its helper: a PROBE
	 * (no login) looks for it every CARD_PROBE_MS */
	int			 card_wait;
	int			 probing;
	long			 probe_at;
	/* full handshakes (no session to offer) in flight, at most
	 * cfg->max_handshakes; the connections past that wait in this
	 * queue, oldest first (agent/tunnel.c) */
	int			 hs_inflight;
	struct conn		*hsq_first, *hsq_last;
	int			 hsq_len;
	int			 hsq_kick;	/* start queued ones next turn */
	int			 hsq_fail;	/* and fail them: the token */
	char			 hsq_why[300];	/* failed a handshake */
	/* reload (agent/reload.c): opened by it, kept by it (and what it
	 * had before, until it is done), or not in the new configuration:
	 * goes after its last tunnel */
	int			 fresh;
	int			 kept;
	struct stat		 cert_st;	/* cert = FILE, when read */
	struct cfg_identity	*prev_cfg;
	int			 retired;
	struct identity		*next;
};

/*
 * Moves the PINs of pin = env:NAME (and reads those of pin = fd:N) into the agent's locked memory and out
 * of its environment (the bytes are wiped too); each module's helper
 * gets the variables of its identities in its own environment.  Call it
 * first, before any helper starts.
 */
int	 identity_take_env_pins(struct agent *);
/*
 * pin = fd:N and --pin fd:N: reads one PIN line from descriptor N and
 * closes it; *kv is a locked "P11AGENT_PIN_FD_N=PIN" for a helper's
 * environment (free with identity_pin_kv_free, which wipes it), *src the
 * source to give that helper ("env:P11AGENT_PIN_FD_N").  Errors are
 * logged, prefixed with who.
 */
int	 identity_pin_fd(const char *source, const char *who, char **kv,
	    char **src);
void	 identity_pin_kv_free(char *);
/*
 * Starts opening every identity a tunnel uses, from the event loop; cb
 * runs once all have answered (failed: one or more could not be opened,
 * each said why in the log).  < 0 when the requests cannot even start.
 */
int	 identity_open_start(struct agent *,
	    void (*cb)(struct agent *, int failed));
void	 identity_close_all(struct agent *);
/*
 * Reload: a->cfg is the new configuration.  begin keeps each running
 * identity whose key, certificate, module, PIN source and login settings
 * a new [identity] has (its cfg is that one's now: no new OPEN, no
 * login); the others are opened by identity_open_start() after it.
 * abort undoes both (call it once every open has answered), commit
 * retires the identities the new configuration has no use for (returns
 * how many); identity_retired_free() frees those no tunnel refers to any
 * more and says how many are left.
 */
int	 identity_reload_begin(struct agent *, char *err, size_t errlen);
void	 identity_reload_abort(struct agent *);
int	 identity_reload_commit(struct agent *);
int	 identity_retired_free(struct agent *);
struct identity *identity_find(struct agent *, struct cfg_identity *);
/*
 * Card removal: a helper's PROTO_EVENT "removed" marks the identities on
 * that card absent (tunnel_*: new connections fail at once, naming the
 * card; with on-removal = close their open tunnels are closed); an
 * "inserted" with the same card (its serial), or any card matching the
 * key URI with on-reinsert = any, starts a new helper whose reopen of the
 * identities clears the mark.  Set up by the agent for each helper.
 */
void	 identity_event(void *module_rt, uint32_t type, uint32_t id,
	    struct pbuf *msg);
/* Restarts dead helpers (at a bounded rate) and kills hung ones. */
void	 helpers_tick(struct agent *, long now);
void	 helpers_fail_all(struct agent *);

#endif
