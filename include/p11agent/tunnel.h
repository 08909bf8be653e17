/*
 * p11agent: tunnels (agent/tunnel.c): accept a local plaintext
 * connection, connect to the upstream, run the TLS client handshake (the
 * token signs through the helper while the handshake's async job waits),
 * then pump bytes both ways with back-pressure, carrying half-closes
 * through.
 */
#ifndef P11AGENT_TUNNEL_H
#define P11AGENT_TUNNEL_H

#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#include "p11agent/config.h"
#include "p11agent/listen.h"
#include "p11agent/session.h"

struct agent;
struct identity;

/* Why a connection failed, counted per tunnel. */
enum tunnel_fail {
	TFAIL_RESOLVE,		/* the upstream name does not resolve */
	TFAIL_CONNECT,		/* the upstream refused or is unreachable */
	TFAIL_TIMEOUT,		/* connect or handshake deadline */
	TFAIL_TLS,		/* handshake failed (server, protocol) */
	TFAIL_TOKEN,		/* the token did not sign */
	TFAIL_LIMIT,		/* refused at a connection limit */
	TFAIL_IO,		/* an error while pumping */
	TFAIL_DENIED,		/* the local peer may not use the tunnel */
	TFAIL_MAX
};

struct tunnel_stats {
	unsigned long long	 accepted;
	unsigned long long	 handshakes;	/* completed */
	unsigned long long	 resumed;	/* of them, without a signature */
	unsigned long long	 coalesced;	/* waited for another's session */
	unsigned long long	 queued;	/* waited for a handshake slot */
	unsigned long long	 bytes_up;	/* client to upstream */
	unsigned long long	 bytes_down;
	unsigned long long	 failed[TFAIL_MAX];
	int			 open;		/* connections now */
	/* the last failure: its reason and wall-clock time (p11agent status) */
	char			 last_err[200];
	long long		 last_err_at;
	int			 refs;		/* tunnels sharing them */
};

struct tunnel_rt {
	struct agent		*agent;
	struct cfg_tunnel	*cfg;
	struct identity		*id;
	SSL_CTX			*ssl_ctx;
	struct sess_cache	 sess;		/* sessions to resume */
	/* handshake coalescing: full handshakes in flight (no session was
	 * offered); new connections wait for the session they yield */
	int			 leaders;
	int			 kick_pending;
	long			 grace_until;	/* a ticket may still come */
	int			 no_sessions;	/* the upstream gives none */
	int			 nlisten;
	struct listener		 listen[CONFIG_MAX_LISTEN];
	/* the tunnel's counters, shared by the tunnels of one name across
	 * reloads (a changed tunnel's old connections count in them too) */
	struct tunnel_stats	*stats;
	/* a reload replaced or removed it: no listener, its open
	 * connections finish on its settings; freed after the last */
	int			 retired;
	int			 refs;		/* connections, closed ones too
						 * until freed */
	/* its ca, crl and ca-dir files when read (tls_trust_stamp) */
	unsigned char		 trust_stamp[32];
	int			 trust_stamped;
	struct tunnel_rt	*next;
};

/* What a reload did to the tunnels, for its report. */
struct tunnels_reload_sum {
	int	 added, changed, kept, removed;
};

/* CLOCK_MONOTONIC ms of the last completed handshake, full or resumed:
 * lock-after counts a resumed connection as use of the card's login. */
extern long	 tunnels_last_handshake;

const char *tunnel_fail_name(enum tunnel_fail);
/* "tls 1, token 2" (the non-zero failure counts), or "none", into buf. */
const char *tunnel_fails(const struct tunnel_stats *, char *, size_t);
/* Logs the tunnel's counters (also when the agent stops). */
void	 tunnel_log_stats(const struct tunnel_rt *);
/* Builds each tunnel's TLS context and opens its listeners; writes
 * "listen NAME ADDR" lines to ready_fd (-1: none). */
int	 tunnels_start(struct agent *, int ready_fd);
void	 tunnels_tick(struct agent *, long now);
/*
 * A reload: a->cfg is the new configuration, a->tunnels the running
 * tunnels, every identity of the new one open.  A tunnel whose settings,
 * identity and CA file are unchanged goes on as it is; a changed or new
 * one gets a new TLS context and takes over the listeners of the old
 * tunnels whose address it names (no rebind: the socket stays); the
 * others retire.  0, or < 0 with err and nothing changed.
 */
int	 tunnels_reload(struct agent *, struct tunnels_reload_sum *,
	    char *err, size_t errlen);
/* After a reload: queued full handshakes start where a changed
 * max-handshakes now lets them. */
void	 tunnels_kick_queues(struct agent *);
/* SIGTERM: stops accepting; the open connections go on.  Returns how
 * many are open. */
int	 tunnels_drain(struct agent *);
/* Closes every connection and listener. */
void	 tunnels_stop(struct agent *);
/* After the helpers failed every request: lets paused jobs finish. */
void	 tunnels_reap(void);
/* The identity's key or certificate changed: new TLS contexts for its
 * tunnels (open connections keep theirs), and their sessions dropped
 * saying why (NULL: kept, the same key under a new handle); 0 or
 * P11A_ERR_TLS (logged), and then nothing changed. */
int	 tunnels_rebuild_tls(struct agent *, struct identity *,
	    const char *flush_why);
/* The identity's card was pulled and on-removal = close: closes its
 * open connections (each logged with why); returns how many. */
int	 tunnels_close_identity(struct agent *, struct identity *,
	    const char *why);
/* The TLS sessions of the identity's tunnels (NULL: of every tunnel) are
 * dropped: its card was pulled, the agent locked (why: for the log). */
void	 tunnels_flush_sessions(struct agent *, struct identity *,
	    const char *why);

#endif
