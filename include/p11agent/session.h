/*
 * p11agent: TLS session resumption (agent/session.c).
 *
 * Each tunnel keeps the sessions its upstream gave it (TLS 1.3 tickets,
 * TLS 1.2 tickets or session IDs), newest first, bounded in number and
 * age.  A new connection offers the newest one: a resumed handshake needs
 * no signature, so the token is not asked.  The cache belongs to one
 * (tunnel, identity, upstream name), since a tunnel has one of each, and
 * is flushed when the identity's card is pulled, the agent is locked, or
 * the identity's certificate changes: a session must never outlive the
 * login that made it.
 */
#ifndef P11AGENT_SESSION_H
#define P11AGENT_SESSION_H

#include <openssl/ssl.h>

struct cfg_tunnel;

#define SESS_DEFAULT_SIZE	16
#define SESS_MAX_SIZE		4096
#define SESS_DEFAULT_LIFETIME	3600	/* seconds; the server's may be less */

struct sess_cache {
	int		 enabled;	/* session-cache = yes */
	int		 max;		/* session-cache-size */
	int		 lifetime;	/* session-lifetime, seconds */
	SSL_SESSION	**s;		/* newest first */
	int		 n;
	unsigned int	 gen;		/* flushes so far */
	unsigned long long stored;
	/* called after a session is stored (agent/tunnel.c: connections
	 * waiting for one go on) */
	void		(*ready)(void *);
	void		*ready_arg;
};

int	 sess_cache_init(struct sess_cache *, const struct cfg_tunnel *);
void	 sess_cache_free(struct sess_cache *);
/* Client-side caching on ctx, through the callback below. */
void	 sess_ctx_setup(SSL_CTX *);
/*
 * Before ssl's handshake: the newest usable session, if any, is offered,
 * and the sessions the server gives this connection go to cache.
 */
int	 sess_offer(struct sess_cache *, SSL *);	/* 1: one offered */
/* 1 if a session could be offered now. */
int	 sess_usable(struct sess_cache *);
/* 1 if ssl was set up before the cache's last flush (it must not
 * resume a login that is over). */
int	 sess_stale(const struct sess_cache *, SSL *);
/* The server did not resume the session offered on ssl: it and older
 * ones are dropped. */
void	 sess_refused(struct sess_cache *, SSL *);
/* ssl no longer gives the cache sessions (its tunnel may go first). */
void	 sess_detach(SSL *);
/* Every session dropped (why: for the log, or NULL to say nothing). */
void	 sess_flush(struct sess_cache *, const char *tunnel, const char *why);

#endif
