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

#include <openssl/evp.h>

#include "p11agent/helper.h"
#include "p11agent/loop.h"

struct agent;
struct cfg_identity;

/* The agent's side of one module's helper. */
struct module_rt {
	struct helper		*helper;
	char			*module;	/* NULL: p11-kit's registry */
	struct watch		 w;		/* its channel, in the loop */
	struct watch		 pw;		/* its process (pidfd) */
	int			 killed;	/* taken for hung, killed */
	int			 dead;		/* waiting to be restarted */
	int			 given_up;	/* needs the user: no restarts */
	int			 reopening;	/* OPENs in flight */
	long			 restart_at;
	int			 backoff_ms;
};

struct identity {
	struct cfg_identity	*cfg;
	struct module_rt	*mod;
	struct helper_identity	 hid;
	EVP_PKEY		*pkey;
	struct identity		*next;
};

/* Opens every identity a tunnel uses (blocking: start-up only). */
int	 identity_open_all(struct agent *);
void	 identity_close_all(struct agent *);
struct identity *identity_find(struct agent *, struct cfg_identity *);
/* Puts the helpers' channels in the loop; restarts dead or hung ones. */
int	 helpers_watch(struct agent *);
void	 helpers_tick(struct agent *, long now);
void	 helpers_fail_all(struct agent *);

#endif
