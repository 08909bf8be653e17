/*
 * p11agent: name resolution that never blocks the loop (agent/resolve.c).
 */
#ifndef P11AGENT_RESOLVE_H
#define P11AGENT_RESOLVE_H

#include <netdb.h>

struct resolve;
/* Runs on the loop; owns ai (freeaddrinfo) when gai_err is 0. */
typedef void (*resolve_cb)(void *, struct addrinfo *, int gai_err);

int	 resolve_init(void);
/* Starts a lookup of host:port; NULL when it cannot start. */
struct resolve *resolve_start(const char *host, const char *port,
	    resolve_cb, void *);
/* The callback will not run. */
void	 resolve_cancel(struct resolve *);

#endif
