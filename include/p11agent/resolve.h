/*
 * p11agent: name resolution that never blocks the loop (agent/resolve.c).
 *
 * Lookups of the same host:port in flight at the same time are shared:
 * one getaddrinfo_a for all the connections waiting on that name, and an
 * answer is kept for 5 s (resolve_cached).
 */
#ifndef P11AGENT_RESOLVE_H
#define P11AGENT_RESOLVE_H

#include <netdb.h>

struct resolve;
/* Runs on the loop; when gai_err is 0, ai is the caller's own copy of
 * the addresses (at least one), freed with resolve_freeaddrinfo(). */
typedef void (*resolve_cb)(void *, struct addrinfo *, int gai_err);

int	 resolve_init(void);
/* Starts a lookup of host:port, or joins the one in flight; NULL when
 * it cannot start. */
struct resolve *resolve_start(const char *host, const char *port,
	    resolve_cb, void *);
/* The callback will not run; other waiters of the lookup still get it. */
void	 resolve_cancel(struct resolve *);
/* An address literal and numeric port, without a lookup: 0 and a list
 * to free with resolve_freeaddrinfo(), or a getaddrinfo error. */
int	 resolve_numeric(const char *host, const char *port,
	    struct addrinfo **);
/* A kept answer for host:port younger than 5 s: 0 and a copy to free
 * with resolve_freeaddrinfo(); -1 if there is none. */
int	 resolve_cached(const char *host, const char *port,
	    struct addrinfo **);
/* Drops the kept answers (at exit). */
void	 resolve_forget(void);
/* Frees a list from resolve_cb or resolve_numeric; NULL is fine. */
void	 resolve_freeaddrinfo(struct addrinfo *);

#endif
