/*
 * p11agent: TLS session resumption; see session.h.
 *
 * OpenSSL's client side keeps no cache of its own
 * (SSL_SESS_CACHE_NO_INTERNAL_STORE): each session the server issues
 * reaches new_session() with the connection it came on, and the
 * connection's ex_data says which tunnel's cache takes it and at which
 * flush generation it was offered, so that a session made before a
 * flush (a connection of the old card or login) is not kept.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ssl.h>

#include "p11agent/config.h"
#include "p11agent/log.h"
#include "p11agent/session.h"

static int	 idx_cache = -1, idx_gen = -1, idx_offered = -1;

int
sess_cache_init(struct sess_cache *c, const struct cfg_tunnel *t)
{
	memset(c, 0, sizeof(*c));
	c->enabled = t->session_cache != CFG_SESSION_NO;
	c->max = t->session_cache_size > 0 ? t->session_cache_size :
	    SESS_DEFAULT_SIZE;
	c->lifetime = t->session_lifetime > 0 ? t->session_lifetime :
	    SESS_DEFAULT_LIFETIME;
	if (!c->enabled)
		return 0;
	if ((c->s = calloc((size_t)c->max, sizeof(*c->s))) == NULL)
		return -1;
	if (idx_cache == -1) {
		idx_cache = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
		idx_gen = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
		idx_offered = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	}
	return idx_cache == -1 || idx_gen == -1 || idx_offered == -1 ? -1 : 0;
}

void
sess_cache_free(struct sess_cache *c)
{
	int	 i;

	for (i = 0; i < c->n; i++)
		SSL_SESSION_free(c->s[i]);
	free(c->s);
	memset(c, 0, sizeof(*c));
}

void
sess_flush(struct sess_cache *c, const char *tunnel, const char *why)
{
	int	 n = c->n, i;

	for (i = 0; i < c->n; i++)
		SSL_SESSION_free(c->s[i]);
	c->n = 0;
	c->gen++;
	if (why != NULL && n > 0)
		log_info("tunnel %s: %d TLS session%s dropped: %s", tunnel, n,
		    n == 1 ? "" : "s", why);
}

/* Still good to offer: resumable, and neither the server's lifetime nor
 * ours has passed. */
static int
usable(const struct sess_cache *c, SSL_SESSION *s, time_t now)
{
	long	 age = (long)(now - SSL_SESSION_get_time(s));
	long	 life = SSL_SESSION_get_timeout(s);

	if (life <= 0)
		return 0;	/* a TLS 1.3 lifetime of 0: not to be used */
	if (life > c->lifetime)
		life = c->lifetime;
	return SSL_SESSION_is_resumable(s) && age >= 0 && age < life;
}

/* Drops the oldest entries that can no longer be offered. */
static void
expire(struct sess_cache *c, time_t now)
{
	while (c->n > 0 && !usable(c, c->s[c->n - 1], now))
		SSL_SESSION_free(c->s[--c->n]);
}

static int
new_session(SSL *ssl, SSL_SESSION *s)
{
	struct sess_cache	*c = SSL_get_ex_data(ssl, idx_cache);
	uintptr_t		 gen = (uintptr_t)SSL_get_ex_data(ssl, idx_gen);

	if (c == NULL || !c->enabled || gen != c->gen ||
	    !SSL_SESSION_is_resumable(s))
		return 0;	/* not kept: OpenSSL frees it */
	if (c->n == c->max)
		SSL_SESSION_free(c->s[--c->n]);
	memmove(c->s + 1, c->s, (size_t)c->n * sizeof(*c->s));
	c->s[0] = s;
	c->n++;
	c->stored++;
	if (c->ready != NULL)
		c->ready(c->ready_arg);
	return 1;		/* ours now */
}

void
sess_ctx_setup(SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session);
}

/* The newest session that may be offered now, or NULL. */
static SSL_SESSION *
newest(struct sess_cache *c)
{
	time_t	 now = time(NULL);
	int	 i;

	expire(c, now);
	for (i = 0; i < c->n; i++)
		if (usable(c, c->s[i], now))
			return c->s[i];
	return NULL;
}

int
sess_usable(struct sess_cache *c)
{
	return c->enabled && newest(c) != NULL;
}

int
sess_offer(struct sess_cache *c, SSL *ssl)
{
	SSL_SESSION	*s;

	if (!c->enabled)
		return 0;
	SSL_set_ex_data(ssl, idx_cache, c);
	SSL_set_ex_data(ssl, idx_gen, (void *)(uintptr_t)c->gen);
	if ((s = newest(c)) == NULL || SSL_set_session(ssl, s) != 1)
		return 0;
	SSL_set_ex_data(ssl, idx_offered, s);
	return 1;
}

int
sess_stale(const struct sess_cache *c, SSL *ssl)
{
	return c->enabled && SSL_get_ex_data(ssl, idx_cache) == c &&
	    (uintptr_t)SSL_get_ex_data(ssl, idx_gen) != c->gen;
}

void
sess_refused(struct sess_cache *c, SSL *ssl)
{
	SSL_SESSION	*s;
	int		 i;

	if (!c->enabled || sess_stale(c, ssl) ||
	    (s = SSL_get_ex_data(ssl, idx_offered)) == NULL)
		return;
	for (i = 0; i < c->n; i++)
		if (c->s[i] == s)
			break;
	/* it, and the older ones the server would refuse as well */
	while (c->n > i)
		SSL_SESSION_free(c->s[--c->n]);
}

void
sess_detach(SSL *ssl)
{
	if (idx_cache != -1)
		SSL_set_ex_data(ssl, idx_cache, NULL);
}
