/*
 * p11agent: the agent process's internals (agent/ only).
 */
#ifndef P11AGENT_AGENT_H
#define P11AGENT_AGENT_H

#include <stdint.h>
#include <sys/types.h>
#include <netdb.h>

#include <openssl/ssl.h>

#include "p11agent/config.h"
#include "p11agent/helper.h"

/* ---- loop.c: one epoll loop, signals by signalfd, a timerfd tick */
struct watch;
typedef void (*watch_cb)(struct watch *, uint32_t events);
struct watch {
	int		 fd;
	uint32_t	 events;	/* current interest; 0: not added */
	watch_cb	 cb;
	void		*arg;
};

int	 loop_init(void);
void	 loop_watch_init(struct watch *, int fd, watch_cb, void *);
/* Sets the interest (EPOLLIN/EPOLLOUT); 0 removes the fd. */
int	 loop_set(struct watch *, uint32_t events);
/* Runs until a signal asks to stop; tick runs every 200 ms. */
int	 loop_run(void (*tick)(long now_ms));
void	 loop_stop(void);
/* Frees run after the current batch of events, never inside it. */
void	 loop_defer(void (*fn)(void *), void *);
void	 loop_run_deferred(void);

/* ---- identity.c: token helpers and identities */
struct helper_slot {
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
	struct helper_slot	*slot;
	struct helper_identity	 hid;
	EVP_PKEY		*pkey;
	struct identity		*next;
};

struct agent {
	struct config		*cfg;
	struct identity		*identities;	/* in open order */
	struct helper_slot	**slots;	/* one per module */
	int			 nslots;
	struct tunnel_rt	*tunnels;
};

/* Opens every identity a tunnel uses (blocking: start-up only). */
int	 identity_open_all(struct agent *);
void	 identity_close_all(struct agent *);
struct identity *identity_find(struct agent *, struct cfg_identity *);
/* Puts the helpers' channels in the loop; restarts dead or hung ones. */
int	 helpers_watch(struct agent *);
void	 helpers_tick(struct agent *, long now);
void	 helpers_fail_all(struct agent *);

/* ---- tls.c */
SSL_CTX	*tls_ctx_new(struct cfg_tunnel *, struct identity *, char *, size_t);
void	 tls_describe_failure(SSL *, char *, size_t);

/* ---- tunnel.c: listeners and connections */
struct tunnel_rt {
	struct cfg_tunnel	*cfg;
	struct identity		*id;
	SSL_CTX			*ssl_ctx;
	int			 nlisten;
	struct listener {
		struct tunnel_rt	*rt;
		struct watch		 w;
		long			 resume_at;	/* paused (EMFILE) */
		char			 addr[128];
	}			 listen[CONFIG_MAX_LISTEN];
	struct tunnel_rt	*next;
};

int	 tunnels_start(struct agent *, int ready_fd);
void	 tunnels_tick(struct agent *, long now);
void	 tunnels_stop(struct agent *);
void	 tunnels_reap(void);
int	 listen_open(struct tunnel_rt *, int, char *, size_t);

/* ---- resolve.c: getaddrinfo_a without blocking the loop */
struct resolve;
typedef void (*resolve_cb)(void *, struct addrinfo *, int gai_err);
int	 resolve_init(void);
struct resolve *resolve_start(const char *host, const char *port,
	    resolve_cb, void *);
void	 resolve_cancel(struct resolve *);

#endif
