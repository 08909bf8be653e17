/*
 * p11agent: tunnels (tunnel.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>	/* malloc_trim */
#endif
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "p11agent/agent.h"
#include "p11agent/audit.h"
#include "p11agent/bufpool.h"
#include "p11agent/clock.h"
#include "p11agent/connlog.h"
#include "p11agent/error.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/peer.h"
#include "p11agent/resolve.h"
#include "p11agent/tls.h"
#include "p11agent/tunnel.h"
#include "p11agent/wbio.h"

/* A pump buffer: several TLS records (16 KB each at most), so that one
 * write(2) to the client carries what several SSL_reads gave, and one
 * read(2) from it fills several records. */
#define BUF_SIZE	(64 * 1024)
#define PUMP_BUDGET	16	/* steps per wake-up: others get a turn */

enum conn_state { C_RESOLVING, C_CONNECTING, C_WAITSESS, C_QUEUED, C_HANDSHAKE,
    C_PUMP };

/* After a full handshake without a session: how long a TLS 1.3 ticket
 * may take to come before the waiting connections give up on it. */
#define TICKET_GRACE_MS	300

/*
 * Signatures done inside a handshake's async job, kept until the job has
 * returned to the event loop's stack: the audit line is written from
 * there (conn_audit_flush), never on the job's small stack.
 */
#define CONN_SIGS	2
struct conn_sigs {
	int			 n;
	struct rkey_signed	 r[CONN_SIGS];
	char			 why[CONN_SIGS][256];
};

struct conn {
	unsigned long		 id;
	struct tunnel_rt	*rt;
	enum conn_state		 state;
	struct watch		 cw;		/* the local client */
	struct watch		 uw;		/* the upstream */
	struct watch		 aw;		/* the async sign wait fd */
	SSL			*ssl;
	struct resolve		*res;
	struct addrinfo		*ai, *ai_next;
	long			 started;
	long			 deadline;	/* of the current phase */
	long			 active;	/* last byte moved */
	int			 client_eof, up_eof, shut_sent, client_shut;
	int			 up_dead;	/* closed without close_notify */
	int			 cr, ur;	/* the client, the upstream may
						 * have bytes to read: not known
						 * empty since epoll said so */
	int			 closing;
	int			 zombie;	/* closed, job still paused */
	struct audit_sig	*zaudit;	/* a zombie's: conn_signed */
	struct conn_sigs	*sigs;		/* done, not yet logged */
	int			 leader;	/* a full handshake others wait
						 * for (tunnel_rt.leaders) */
	int			 slot;		/* one of its identity's full
						 * handshakes (max-handshakes) */
	struct conn		*qprev, *qnext;	/* C_QUEUED: in its
						 * identity's hsq_first... */
	int			 token_failed;	/* the token did not sign */
	const char		*token_why;	/* and why (during conn_fail) */
	uint8_t			*c2u;		/* from the pool while data */
	size_t			 c2u_off, c2u_len;	/* is in flight */
	uint8_t			*u2c;
	size_t			 u2c_off, u2c_len;
	unsigned long long	 up_bytes, down_bytes;
	char			*who;		/* for a PIN dialog, until the
						 * handshake is done */
	struct connlog		 log;		/* for its end line */
	struct conn		*prev, *next;
};

long			 tunnels_last_handshake;	/* for lock-after */
static struct conn	*conns;
static struct conn	*zombies;	/* closed while the token signs */
static int		 nwaiting;	/* open ones in C_WAITSESS */

/*
 * A handshake frees its temporaries and a closed connection its SSL
 * between the objects of the open tunnels: glibc keeps those holes
 * (about 3 KB per idle tunnel after a burst).  Once the tunnels have been
 * quiet this long, the whole free pages go back to the kernel.
 */
#define TRIM_QUIET_MS	1000
static long		 trim_at;	/* 0: nothing freed since */

static void
heap_freed(void)
{
	trim_at = clock_now_ms() + TRIM_QUIET_MS;
}

static void
heap_trim(long now)
{
	if (trim_at == 0 || now < trim_at)
		return;
	trim_at = 0;
#ifdef __GLIBC__
	malloc_trim(0);
	log_debug("tunnels: quiet for %d ms: free heap pages returned",
	    TRIM_QUIET_MS);
#endif
}

/*
 * Pump buffers (bufpool.h): a connection holds one only while bytes are
 * in flight that way, so an idle tunnel holds none (OpenSSL releases its
 * own, SSL_MODE_RELEASE_BUFFERS).
 */
static uint8_t *
buf_get(void)
{
	return bufpool_get();
}

static void
buf_put(uint8_t **b)
{
	bufpool_put(*b);
	*b = NULL;
}
static unsigned long	 next_id = 1;

static void	conn_close(struct conn *, const char *);
static void	conn_fail(struct conn *, enum tunnel_fail, const char *);
static int	watch_async(struct conn *);
static void	on_upstream(struct watch *, uint32_t);
static void	handshake(struct conn *);
static void	pump(struct conn *);
static void	tls_start(struct conn *);
static int	coalesce_wait(struct conn *);
static void	waiters_kick(void *);
static void	leader_done(struct conn *, int);
static int	token_removed(struct conn *);
static void	hsq_add(struct conn *);
static void	hsq_later(void *);
static void	hsq_run(struct identity *);
static void	hsq_remove(struct conn *);
static void	slot_release(struct conn *);
static void	retired_free(struct agent *);
static void	conn_signed(void *, const struct rkey_signed *);
static void	conn_audit_flush(struct conn *);
static void	audit_base(struct conn *, struct audit_sig *, char *, size_t,
		    char *, size_t);

static void
conn_free(void *arg)
{
	struct conn	*c = arg;

	SSL_free(c->ssl);	/* frees a paused job's wait fd too */
	resolve_freeaddrinfo(c->ai);
	buf_put(&c->c2u);
	buf_put(&c->u2c);
	free(c->who);
	connlog_clear(&c->log);
	audit_free(c->zaudit);
	free(c->sigs);
	free(c);
	heap_freed();
}

static void
list_remove(struct conn **head, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void
list_add(struct conn **head, struct conn *c)
{
	if ((c->next = *head) != NULL)
		(*head)->prev = c;
	*head = c;
}

/*
 * The handshake's async job is paused in a signature: SSL_free would leak
 * the job, so the SSL (and the upstream socket it writes to) stay until
 * the signature's reply or deadline resumes the job once more.
 */
static int
paused_in_sign(struct conn *c)
{
	return c->state == C_HANDSHAKE && c->aw.events != 0;
}

static void
bury(struct conn *c)
{
	if (c->rt != NULL)
		c->rt->refs--;	/* a retired tunnel goes after its last */
	if (c->uw.fd != -1) {
		loop_set(&c->uw, 0);
		close(c->uw.fd);
		c->uw.fd = -1;
	}
	loop_defer(conn_free, c);
}

/* A zombie's job has its answer: let it finish, then free. */
static void
zombie_resume(struct conn *c)
{
	int	 r;

	loop_set(&c->aw, 0);	/* while the fd is still open */
	rkey_set_audit(conn_signed, c);	/* the card signed all the same */
	r = SSL_do_handshake(c->ssl);
	rkey_set_audit(NULL, NULL);
	conn_audit_flush(c);
	if (r != 1 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_ASYNC &&
	    watch_async(c) == 0)
		return;		/* paused again */
	ERR_clear_error();
	list_remove(&zombies, c);
	slot_release(c);	/* the token is done with it */
	bury(c);
}

const char *
tunnel_fail_name(enum tunnel_fail f)
{
	switch (f) {
	case TFAIL_RESOLVE:	return "resolve";
	case TFAIL_CONNECT:	return "connect";
	case TFAIL_TIMEOUT:	return "timeout";
	case TFAIL_TLS:		return "tls";
	case TFAIL_TOKEN:	return "token";
	case TFAIL_LIMIT:	return "limit";
	case TFAIL_IO:		return "io";
	case TFAIL_DENIED:	return "denied";
	default:		return "?";
	}
}

static void	limits_update(struct agent *);

/* A failure counted by reason, and kept as the tunnel's last error. */
static void
count_fail(struct tunnel_rt *rt, enum tunnel_fail f, const char *why)
{
	rt->stats->failed[f]++;
	snprintf(rt->stats->last_err, sizeof(rt->stats->last_err), "%s: %s",
	    tunnel_fail_name(f), why);
	rt->stats->last_err_at = (long long)time(NULL);
}

static void
conn_fail(struct conn *c, enum tunnel_fail f, const char *why)
{
	count_fail(c->rt, f, why);
	conn_close(c, why);
}

static void
conn_close(struct conn *c, const char *why)
{
	struct tunnel_stats	*st = c->rt->stats;
	struct audit_sig	 g;
	char			 up[300], tok[80];

	if (c->closing)
		return;
	c->closing = 1;
	if (c->state == C_WAITSESS)
		nwaiting--;
	leader_done(c, 0);
	hsq_remove(c);
	if (!paused_in_sign(c))
		slot_release(c);	/* a zombie's goes when it is done */
	if (c->ssl != NULL)
		sess_detach(c->ssl);
	st->open--;
	c->rt->agent->nconns--;
	limits_update(c->rt->agent);
	connlog_end(&c->log, c->id, c->rt, c->state == C_PUMP ? c->ssl : NULL,
	    c->up_bytes, c->down_bytes, clock_now_ms() - c->started, why,
	    c->up_dead);
	if (c->res != NULL)
		resolve_cancel(c->res);
	loop_set(&c->cw, 0);
	close(c->cw.fd);
	list_remove(&conns, c);
	if (paused_in_sign(c)) {
		c->zombie = 1;
		audit_base(c, &g, up, sizeof(up), tok, sizeof(tok));
		c->zaudit = audit_copy(&g);	/* NULL: less is said */
		loop_set(&c->uw, 0);
		list_add(&zombies, c);
		return;
	}
	if (c->aw.events != 0)
		loop_set(&c->aw, 0);
	bury(c);
}

static const char *
upstream_name(struct conn *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%s", c->rt->cfg->connect_host,
	    c->rt->cfg->connect_port);
	return buf;
}

/* ---- connecting */

/* -v: one address of the upstream's name failed (errno says why). */
static void
log_attempt(struct conn *c)
{
	char	 up[300], host[NI_MAXHOST];
	int	 saved = errno;

	if (getnameinfo(c->ai_next->ai_addr, c->ai_next->ai_addrlen, host,
	    sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "?");
	errno = saved;
	log_debug("conn %lu: upstream %s: connecting to %s failed: %s",
	    c->id, upstream_name(c, up, sizeof(up)), host, strerror(saved));
}

static void
try_connect(struct conn *c)
{
	char		 up[300];
	int		 fd;

	for (; c->ai_next != NULL; c->ai_next = c->ai_next->ai_next) {
		fd = socket(c->ai_next->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1) {
			log_attempt(c);
			continue;
		}
		if (connect(fd, c->ai_next->ai_addr,
		    c->ai_next->ai_addrlen) == 0 || errno == EINPROGRESS) {
			loop_watch_init(&c->uw, fd, on_upstream, c);
			c->state = C_CONNECTING;
			if (loop_set(&c->uw, EPOLLOUT) != 0)
				conn_fail(c, TFAIL_IO, "cannot watch a socket");
			return;
		}
		log_attempt(c);
		close(fd);
	}
	log_warn_sys("conn %lu: upstream %s: cannot connect", c->id,
	    upstream_name(c, up, sizeof(up)));
	conn_fail(c, TFAIL_CONNECT, "upstream down");
}

static void
resolved(void *arg, struct addrinfo *ai, int err)
{
	struct conn	*c = arg;
	char		 up[300];

	c->res = NULL;
	if (err != 0) {
		log_warn("conn %lu: upstream %s: name resolution failed: %s",
		    c->id, upstream_name(c, up, sizeof(up)), gai_strerror(err));
		conn_fail(c, TFAIL_RESOLVE, "upstream name does not resolve");
		return;
	}
	c->ai = c->ai_next = ai;
	try_connect(c);
}

static int
set_nodelay(int fd)
{
	int	 one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int
ssl_setup(struct conn *c)
{
	struct cfg_tunnel	*t = c->rt->cfg;
	const char		*name = t->server_name ? t->server_name :
				    t->connect_host;
	BIO			*b;

	if ((c->ssl = SSL_new(c->rt->ssl_ctx)) == NULL ||
	    (b = wbio_new(c->uw.fd)) == NULL)
		return -1;
	SSL_set_bio(c->ssl, b, b);	/* one reference for both */
	SSL_set_app_data(c->ssl, c);	/* for cert_cb */
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (tls_ssl_setup(c->ssl, name) != 0)	/* the name checked */
		return -1;
	SSL_set_connect_state(c->ssl);
	if (!sess_offer(&c->rt->sess, c->ssl) && c->rt->sess.enabled) {
		c->leader = 1;	/* a full handshake: a signature */
		c->rt->leaders++;
	}
	return 0;
}

/*
 * The leader's handshake is over (done, failed or closed): the waiting
 * connections resume with its session, or, without one, one of them
 * becomes the next leader (after a grace time for a TLS 1.3 ticket when
 * it succeeded).
 */
static void
leader_done(struct conn *c, int ok)
{
	struct tunnel_rt	*rt = c->rt;
	struct conn		*w, *next;

	if (!c->leader)
		return;
	c->leader = 0;
	rt->leaders--;
	if (!ok && c->token_failed && !sess_usable(&rt->sess)) {
		/* a cancelled PIN dialog, a locked card: those who waited
		 * fail with it, rather than each asking the card again */
		for (w = conns; w != NULL; w = next) {
			next = w->next;
			if (w->rt != rt || w->state != C_WAITSESS || w->closing)
				continue;
			log_warn("conn %lu: the handshake it waited for failed "
			    "on the token: %s", w->id, c->token_why);
			conn_fail(w, TFAIL_TOKEN, "TLS handshake failed");
		}
		return;
	}
	/* a leader set up before a flush: its session is not kept, and
	 * that says nothing of the upstream */
	if (ok && !sess_usable(&rt->sess) && !sess_stale(&rt->sess, c->ssl))
		rt->grace_until = clock_now_ms() + TICKET_GRACE_MS;
	else
		waiters_kick(rt);
}

static void
connected(struct conn *c)
{
	char		 up[300];
	int		 err = 0;
	socklen_t	 len = sizeof(err);

	if (getsockopt(c->uw.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		loop_set(&c->uw, 0);
		close(c->uw.fd);
		c->uw.fd = -1;
		errno = err;
		log_attempt(c);
		c->ai_next = c->ai_next->ai_next;
		if (c->ai_next != NULL) {
			try_connect(c);
			return;
		}
		errno = err;
		log_warn_sys("conn %lu: upstream %s: cannot connect", c->id,
		    upstream_name(c, up, sizeof(up)));
		conn_fail(c, TFAIL_CONNECT, "upstream down");
		return;
	}
	set_nodelay(c->uw.fd);
	resolve_freeaddrinfo(c->ai);	/* connected: no other address */
	c->ai = c->ai_next = NULL;
	c->deadline = clock_now_ms() + c->rt->cfg->handshake_timeout * 1000L;
	if (coalesce_wait(c))
		return;
	tls_start(c);
}

/* The TLS handshake begins (its deadline runs from the TCP connect). */
static void
tls_start(struct conn *c)
{
	if (c->state == C_WAITSESS) {
		nwaiting--;
		c->state = C_CONNECTING;	/* connected, not in TLS */
	}
	if (ssl_setup(c) != 0) {
		log_ssl(LOG_LVL_ERR, __func__, "conn %lu: TLS setup", c->id);
		conn_fail(c, TFAIL_TLS, "TLS setup failed");
		return;
	}
	c->state = C_HANDSHAKE;
	handshake(c);
}

/*
 * The server asked for the client certificate: this handshake will need
 * a signature, so it needs one of its identity's max-handshakes slots
 * (OpenSSL's certificate callback; a resumed handshake never comes
 * here).  Without a free one it waits in the queue: -1 pauses the
 * handshake (SSL_ERROR_WANT_X509_LOOKUP) until hsq_run gives it a slot
 * and goes on with it.
 */
static int
cert_cb(SSL *ssl, void *arg)
{
	struct conn	*c = SSL_get_app_data(ssl);
	struct identity	*id;

	(void)arg;
	if (c == NULL || c->slot || (id = c->rt->id) == NULL)
		return 1;
	if (id->hs_inflight < id->cfg->max_handshakes &&
	    id->hsq_first == NULL) {
		c->slot = 1;
		id->hs_inflight++;
		return 1;
	}
	hsq_add(c);
	return -1;
}

/*
 * A full handshake of this tunnel is in flight and no session is there
 * to resume: this connection waits for the session it yields instead of
 * queueing a signature of its own on the card.  1 if it waits.
 */
static int
coalesce_wait(struct conn *c)
{
	struct tunnel_rt	*rt = c->rt;

	if (!rt->sess.enabled || rt->no_sessions || rt->leaders == 0 ||
	    sess_usable(&rt->sess))
		return 0;
	c->state = C_WAITSESS;
	nwaiting++;
	loop_set(&c->uw, 0);
	rt->stats->coalesced++;
	log_debug("conn %lu (%s): waits for the session of a handshake in "
	    "flight", c->id, rt->cfg->name);
	return 1;
}

/*
 * Handshake work per loop turn is bounded in time: a step costs 0.2-0.5
 * ms of CPU (a ClientHello with its key share and PSK binder, a
 * ServerHello's key schedule), and 50 connections resuming at once made
 * turns of 4-15 ms that an open tunnel's bytes waited behind.  Once a
 * turn has spent HS_TURN_NS on handshakes, the next handshake events are
 * left for the next turn (epoll is level-triggered: they come back), and
 * the open tunnels' events of this turn are served first.  Every turn
 * makes one step at least.
 */
#define HS_TURN_NS	(1000 * 1000LL)

static long long	 hs_used;	/* ns of handshake work in turn */
static unsigned long	 hs_turn;	/* this one of the loop */

/* May this turn make another handshake step? */
static int
hs_may_step(void)
{
	if (hs_turn != loop_turn()) {
		hs_turn = loop_turn();
		hs_used = 0;
	}
	return hs_used < HS_TURN_NS;
}

/* A step that began at t0 (after hs_may_step) is over. */
static void
hs_spent(long long t0)
{
	hs_used += clock_now_ns() - t0;
}

static struct watch	 kickw = { .fd = -1 };	/* an eventfd */
static struct agent	*kick_agent;

static void
kick_rt(struct tunnel_rt *rt)
{
	struct conn	*c, *next;
	long long	 t0;

	rt->kick_pending = 0;
	/* each stored session kicks: without waiters, no walk of them all
	 * (5.8% of the agent's CPU while 10,000 open, bench/scale) */
	if (nwaiting == 0)
		return;
	for (c = conns; c != NULL; c = next) {
		next = c->next;		/* tls_start touches c only */
		if (c->rt != rt || c->state != C_WAITSESS || c->closing)
			continue;
		/* with a session all resume; without, one leads */
		if (!sess_usable(&rt->sess) && !rt->no_sessions &&
		    rt->leaders > 0)
			break;
		/* (without the eventfd, the next kick would come in this
		 * very turn: no budget then) */
		if (kickw.fd != -1 && !hs_may_step()) {
			waiters_kick(rt);	/* the rest next turn */
			break;
		}
		t0 = clock_now_ns();
		if (!token_removed(c))
			tls_start(c);
		hs_spent(t0);
	}
}

static void
kick_later(void *arg)
{
	struct tunnel_rt	*rt = arg;

	if (kick_agent != NULL && rt->kick_pending)
		kick_rt(rt);
}

static void
on_kick(struct watch *w, uint32_t events)
{
	struct tunnel_rt	*rt;
	struct identity		*id;
	uint64_t		 v;

	(void)events;
	if (read(w->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn_sys("tunnels: eventfd read");
	for (rt = kick_agent != NULL ? kick_agent->tunnels : NULL; rt != NULL;
	    rt = rt->next)
		if (rt->kick_pending)
			kick_rt(rt);
	for (id = kick_agent != NULL ? kick_agent->identities : NULL;
	    id != NULL; id = id->next)
		if (id->hsq_kick)
			hsq_run(id);
}

/* Sets *pending, and has on_kick run at the loop's next turn (not from
 * inside an OpenSSL callback of another connection), or later(arg)
 * without the eventfd. */
static void
kick_soon(int *pending, void (*later)(void *), void *arg)
{
	uint64_t	 one = 1;

	*pending = 1;
	if (kickw.fd == -1 || write(kickw.fd, &one, sizeof(one)) < 0)
		loop_defer(later, arg);
}

/* Wakes the waiting connections at the loop's next turn. */
static void
waiters_kick(void *arg)
{
	struct tunnel_rt	*rt = arg;

	if (!rt->kick_pending && !rt->agent->stopping)
		kick_soon(&rt->kick_pending, kick_later, rt);
}

/* ---- full handshakes per identity: a few on the token, the rest queued
 *
 * The card signs one at a time; a handshake that waits for it holds an
 * upstream handshake open and its signature's sign-timeout running.  So
 * at most max-handshakes full handshakes of an identity are in flight;
 * the others wait here, oldest first, bounded by their handshake-timeout,
 * and take the next free slot, or resume without one if a session to
 * offer has come meanwhile.
 */

static void
hsq_add(struct conn *c)
{
	struct identity	*id = c->rt->id;

	c->state = C_QUEUED;
	loop_set(&c->uw, 0);
	c->qnext = NULL;
	if ((c->qprev = id->hsq_last) != NULL)
		c->qprev->qnext = c;
	else
		id->hsq_first = c;
	id->hsq_last = c;
	id->hsq_len++;
	c->rt->stats->queued++;
	log_debug("conn %lu (%s): queued for the token (%d full handshakes "
	    "in flight, max-handshakes %d, %d queued)", c->id,
	    c->rt->cfg->name, id->hs_inflight, id->cfg->max_handshakes,
	    id->hsq_len);
}

static void
hsq_remove(struct conn *c)
{
	struct identity	*id;

	if (c->state != C_QUEUED)
		return;
	id = c->rt->id;
	c->state = C_HANDSHAKE;	/* it goes on, or it is closing */
	if (c->qprev != NULL)
		c->qprev->qnext = c->qnext;
	else
		id->hsq_first = c->qnext;
	if (c->qnext != NULL)
		c->qnext->qprev = c->qprev;
	else
		id->hsq_last = c->qprev;
	c->qprev = c->qnext = NULL;
	id->hsq_len--;
}

/* The queue goes on at the loop's next turn. */
static void
hsq_kick(struct identity *id)
{
	if (id->hsq_first != NULL && !id->hsq_kick && !id->agent->stopping)
		kick_soon(&id->hsq_kick, hsq_later, id);
}

/*
 * Free slots go to the queued handshakes, oldest first, within the
 * turn's handshake budget; after a token failure they all fail with it.
 */
static void
hsq_run(struct identity *id)
{
	struct conn	*c, *next;
	long long	 t0;

	id->hsq_kick = 0;
	if (id->hsq_fail) {
		id->hsq_fail = 0;
		for (c = id->hsq_first; c != NULL; c = next) {
			next = c->qnext;	/* conn_fail takes c out */
			log_warn("conn %lu: a handshake before it in the "
			    "token's queue failed on the token: %s", c->id,
			    id->hsq_why);
			conn_fail(c, TFAIL_TOKEN, "TLS handshake failed");
		}
		return;
	}
	while ((c = id->hsq_first) != NULL &&
	    id->hs_inflight < id->cfg->max_handshakes) {
		/* (without the eventfd, the next kick would come in this
		 * very turn: no budget then) */
		if (kickw.fd != -1 && !hs_may_step()) {
			hsq_kick(id);	/* the rest next turn */
			break;
		}
		t0 = clock_now_ns();
		hsq_remove(c);
		c->slot = 1;
		id->hs_inflight++;
		if (!token_removed(c))
			handshake(c);	/* the certificate callback again */
		hs_spent(t0);
	}
}

static void
hsq_later(void *arg)
{
	struct identity	*id = arg;

	if (kick_agent != NULL && id->hsq_kick)
		hsq_run(id);
}

/*
 * A full handshake is over: its slot goes to the queue.  If the token
 * failed it (a cancelled PIN dialog, a locked card), those queued that
 * have no session fail with it rather than each asking the card again.
 */
static void
slot_release(struct conn *c)
{
	struct identity	*id;

	if (!c->slot)
		return;		/* (a zombie at exit: its rt is gone) */
	id = c->rt->id;
	c->slot = 0;
	id->hs_inflight--;
	if (c->token_failed && id->hsq_first != NULL && !id->hsq_fail) {
		id->hsq_fail = 1;	/* hsq_run fails them, next turn */
		snprintf(id->hsq_why, sizeof(id->hsq_why), "%s",
		    c->token_why != NULL ? c->token_why : "?");
	}
	hsq_kick(id);
}

/* A session was stored (agent/session.c): the waiting ones resume. */
static void
session_ready(void *arg)
{
	struct tunnel_rt	*rt = arg;

	rt->no_sessions = 0;
	rt->grace_until = 0;
	if (nwaiting > 0)	/* each resumed handshake brings a ticket */
		waiters_kick(rt);
}

/* ---- the handshake */

static void
on_async(struct watch *w, uint32_t events)
{
	struct conn	*c = w->arg;
	long long	 t0;

	if (c->zombie)
		zombie_resume(c);
	else if (!c->closing && c->state == C_HANDSHAKE && hs_may_step()) {
		t0 = clock_now_ns();
		handshake(c);
		hs_spent(t0);
	}
}

/* The job paused: watch its wait fd. */
static int
watch_async(struct conn *c)
{
	OSSL_ASYNC_FD	 fd;
	size_t		 n = 0;

	if (!SSL_get_all_async_fds(c->ssl, NULL, &n) || n != 1 ||
	    !SSL_get_all_async_fds(c->ssl, &fd, &n))
		return -1;
	loop_watch_init(&c->aw, fd, on_async, c);
	return loop_set(&c->aw, EPOLLIN);
}

static void
log_handshake(struct conn *c)
{
	X509		*peer = SSL_get0_peer_certificate(c->ssl);
	char		 subj[256] = "?", up[300], alpn[256];
	int		 none;

	if (peer != NULL)
		X509_NAME_oneline(X509_get_subject_name(peer), subj,
		    sizeof(subj));
	none = tls_handshake_done(c->ssl, alpn, sizeof(alpn));
	log_info("conn %lu (%s): %s to %s in %ld ms%s, server %s%s%s", c->id,
	    c->rt->cfg->name, SSL_get_version(c->ssl),
	    upstream_name(c, up, sizeof(up)), clock_now_ms() - c->started,
	    SSL_session_reused(c->ssl) ? ", resumed (no signature)" : "",
	    subj, alpn[0] ? ", ALPN " : "", alpn);
	if (none)
		log_warn("conn %lu (%s): the server chose none of the ALPN "
		    "protocols offered (alpn =); going on without", c->id,
		    c->rt->cfg->name);
}

/* Who and where for the audit trail: the tunnel's names, the client. */
static void
audit_base(struct conn *c, struct audit_sig *g, char *up, size_t uplen,
    char *tok, size_t toklen)
{
	const struct identity	*id = c->rt->id;

	snprintf(tok, toklen, "'%s' serial %s", id->tok_label,
	    id->tok_serial);
	*g = (struct audit_sig){ .identity = id->cfg->name,
	    .token = id->tok_label[0] ? tok : NULL, .tunnel = c->rt->cfg->name,
	    .upstream = upstream_name(c, up, uplen), .conn = c->id,
	    .uid = c->log.uid, .pid = c->log.pid, .exe = c->log.exe };
}

/*
 * A signature of this connection's handshake done (called inside the
 * handshake's job): kept for conn_audit_flush, which logs it.
 */
static void
conn_signed(void *arg, const struct rkey_signed *r)
{
	struct conn		*c = arg;
	struct conn_sigs	*k;

	if (c->sigs == NULL && (c->sigs = calloc(1, sizeof(*c->sigs))) ==
	    NULL)
		return;		/* no memory: the helper's counters still
				 * have it */
	k = c->sigs;
	if (k->n == CONN_SIGS)
		return;
	k->r[k->n] = *r;
	snprintf(k->why[k->n], sizeof(k->why[k->n]), "%s", r->why ? r->why :
	    "");
	k->n++;
}

/* The audit trail's lines of the signatures conn_signed kept.  A
 * zombie's tunnel may be gone (the agent stopping): its copy serves. */
static void
conn_audit_flush(struct conn *c)
{
	struct conn_sigs	*k = c->sigs;
	struct audit_sig	 g;
	char			 up[300], tok[80];
	int			 i;

	if (k == NULL)
		return;
	c->sigs = NULL;
	for (i = 0; i < k->n; i++) {
		if (c->rt != NULL)
			audit_base(c, &g, up, sizeof(up), tok, sizeof(tok));
		else if (c->zaudit != NULL)
			g = *c->zaudit;
		else
			g = (struct audit_sig){ .conn = c->id,
			    .uid = c->log.uid, .pid = c->log.pid,
			    .exe = c->log.exe };
		g.when = time(NULL) - (clock_now_ms() - k->r[i].start_ms) /
		    1000;
		g.ms = k->r[i].ms;
		g.ok = k->r[i].err == 0;
		g.why = g.ok ? NULL : k->why[i];
		g.mechanism = audit_mechanism(k->r[i].alg);
		audit_signature(&g);
	}
	free(k);
}

static void
handshake(struct conn *c)
{
	enum tunnel_fail f;
	char		 why[1024], up[300];
	int		 r, e;

	/* the job closes its wait fd when it resumes: unwatch it first */
	loop_set(&c->aw, 0);
	ERR_clear_error();
	rkey_set_requester(c->who, c->rt->cfg->server_name ?
	    c->rt->cfg->server_name : c->rt->cfg->connect_host);
	rkey_set_audit(conn_signed, c);
	r = SSL_do_handshake(c->ssl);
	rkey_set_audit(NULL, NULL);
	rkey_set_requester(NULL, NULL);
	conn_audit_flush(c);
	if (r == 1 && SSL_session_reused(c->ssl) &&
	    sess_stale(&c->rt->sess, c->ssl)) {
		/* resumed a session dropped meanwhile (lock, card pulled) */
		log_warn("conn %lu (%s): resumed a TLS session that was dropped "
		    "during its handshake; closed", c->id, c->rt->cfg->name);
		conn_fail(c, TFAIL_TOKEN, "session dropped");
		return;
	}
	if (r == 1 && !SSL_session_reused(c->ssl))
		sess_refused(&c->rt->sess, c->ssl);
	if (r == 1) {
		SSL_clear_mode(c->ssl, SSL_MODE_ASYNC);
		c->rt->stats->handshakes++;
		tunnels_last_handshake = clock_now_ms();
		if (SSL_session_reused(c->ssl))
			c->rt->stats->resumed++;
		leader_done(c, 1);
		slot_release(c);
		log_handshake(c);
		free(c->who);	/* no more signatures */
		c->who = NULL;
		heap_freed();
		c->state = C_PUMP;
		c->cr = c->ur = 1;	/* either may have sent already */
		c->active = clock_now_ms();
		set_nodelay(c->cw.fd);
		pump(c);
		return;
	}
	switch ((e = SSL_get_error(c->ssl, r))) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		if (loop_set(&c->uw, e == SSL_ERROR_WANT_READ ? EPOLLIN :
		    EPOLLOUT) != 0)
			conn_fail(c, TFAIL_IO, "cannot watch a socket");
		return;
	case SSL_ERROR_WANT_X509_LOOKUP:
		if (c->state == C_QUEUED)
			return;		/* for a slot: hsq_run goes on */
		snprintf(why, sizeof(why), "the certificate callback failed");
		f = TFAIL_TLS;
		break;
	case SSL_ERROR_WANT_ASYNC:
		log_debug("conn %lu: the handshake waits for the token",
		    c->id);
		loop_set(&c->uw, 0);
		if (watch_async(c) == 0)
			return;
		snprintf(why, sizeof(why), "cannot wait for the token");
		f = TFAIL_TOKEN;
		break;
	default:
		f = tls_describe_failure(c->ssl, why, sizeof(why)) ?
		    TFAIL_TOKEN : TFAIL_TLS;
		break;
	}
	log_warn("conn %lu: upstream %s: TLS handshake failed: %s", c->id,
	    upstream_name(c, up, sizeof(up)), why);
	if (f == TFAIL_TOKEN) {
		c->token_failed = 1;
		c->token_why = why;	/* for leader_done, from conn_fail */
	}
	conn_fail(c, f, "TLS handshake failed");
	c->token_why = NULL;	/* freed on the loop's next turn */
}

/* ---- pumping bytes */

struct wants {
	int	 up_in, up_out;
};

/* One step from the client towards the upstream; 1 if progress. */
static int
client_to_upstream(struct conn *c, struct wants *w)
{
	BIO	*b = SSL_get_wbio(c->ssl);
	size_t	 moved = 0;
	ssize_t	 n;
	int	 r;

	if (c->up_dead)
		return 0;	/* nothing can reach the upstream now */
	if (wbio_pending(b) > 0) {
		/* the records gathered last step go out first */
		if ((r = wbio_flush(b)) < 0)
			return -1;
		if (r == 0) {
			w->up_out = 1;
			return 0;
		}
		return 1;
	}
	if (!c->client_eof && c->c2u_len == 0 && c->cr) {
		if (c->c2u == NULL && (c->c2u = buf_get()) == NULL)
			return -1;
		n = read(c->cw.fd, c->c2u, BUF_SIZE);
		if (n > 0) {
			c->c2u_off = 0;
			c->c2u_len = (size_t)n;
			return 1;
		}
		buf_put(&c->c2u);	/* nothing in flight this way */
		if (n == 0) {
			c->client_eof = 1;
			connlog_eof(&c->log, CONNLOG_CLIENT);
			return 1;
		}
		if (errno == EAGAIN)
			c->cr = 0;	/* until epoll says otherwise */
		else if (errno != EINTR)
			return -1;
	}
	if (c->c2u_len > 0) {
		/* a record per SSL_write (partial writes), all of them out
		 * with one send(2) at the next step */
		wbio_gather(b, 1);
		do {
			r = SSL_write(c->ssl, c->c2u + c->c2u_off,
			    (int)(c->c2u_len - c->c2u_off));
			if (r <= 0)
				break;
			c->up_bytes += (size_t)r;
			c->rt->stats->bytes_up += (size_t)r;
			moved += (size_t)r;
			if ((c->c2u_off += (size_t)r) == c->c2u_len) {
				c->c2u_len = c->c2u_off = 0;
				buf_put(&c->c2u);
			}
		} while (c->c2u_len > 0);
		wbio_gather(b, 0);
		if (moved > 0)
			return 1;
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:	w->up_in = 1; return 0;
		case SSL_ERROR_WANT_WRITE:	w->up_out = 1; return 0;
		default:			return -1;
		}
	}
	if (c->client_eof && !c->shut_sent) {
		/* the client is done: close_notify, keep reading */
		r = SSL_shutdown(c->ssl);
		if (r >= 0) {
			c->shut_sent = 1;
			return 1;
		}
		if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE) {
			w->up_out = 1;
			return 0;
		}
		return -1;
	}
	return 0;
}

/*
 * The upstream ended the TCP connection (FIN or RST) without close_notify:
 * the session cannot go on, not even for a close_notify of ours.  The
 * client gets what arrived, then EOF.
 */
static int
upstream_gone(struct conn *c, int e, int err)
{
	const char	*how;

	if (e == SSL_ERROR_SYSCALL && err == ECONNRESET)
		how = " (connection reset)";
	else if (ERR_GET_REASON(ERR_peek_last_error()) ==
	    SSL_R_UNEXPECTED_EOF_WHILE_READING)
		how = "";
	else
		return 0;
	/* after our close_notify many servers just close (nginx does):
	 * nothing is lost then, and it is not worth a warning */
	if (c->shut_sent)
		log_info("conn %lu: upstream closed without close_notify%s",
		    c->id, how);
	else
		log_warn("conn %lu: upstream closed without close_notify%s",
		    c->id, how);
	ERR_clear_error();
	c->up_eof = c->up_dead = 1;
	connlog_eof(&c->log, CONNLOG_UPSTREAM);
	return 1;
}

/*
 * Decrypts what there is, record after record, into one buffer for one
 * write(2) to the client.  With read-ahead, OpenSSL may hold records the
 * socket no longer shows: SSL_has_pending says so.
 */
static int
upstream_read(struct conn *c, struct wants *w)
{
	size_t	 got = 0;
	int	 r, e, err = 0, eof = 0;

	if (!c->ur && !SSL_has_pending(c->ssl)) {
		w->up_in = 1;
		return 0;
	}
	if (c->u2c == NULL && (c->u2c = buf_get()) == NULL)
		return -1;
	do {
		errno = 0;
		r = SSL_read(c->ssl, c->u2c + got, (int)(BUF_SIZE - got));
		err = errno;
		if (r > 0)
			got += (size_t)r;
	} while (r > 0 && got < BUF_SIZE);
	if (r <= 0) {
		switch ((e = SSL_get_error(c->ssl, r))) {
		case SSL_ERROR_WANT_READ:
			c->ur = 0;
			w->up_in = 1;
			break;
		case SSL_ERROR_WANT_WRITE:
			w->up_out = 1;
			break;
		case SSL_ERROR_ZERO_RETURN:
			c->up_eof = eof = 1;	/* close_notify */
			connlog_eof(&c->log, CONNLOG_UPSTREAM);
			break;
		default:
			if (upstream_gone(c, e, err))
				eof = 1;
			else if (got == 0) {
				buf_put(&c->u2c);
				return -1;
			}
			/* else the client gets what came before the error
			 * first; the next SSL_read says it again */
			break;
		}
	}
	if (got > 0) {
		c->u2c_off = 0;
		c->u2c_len = got;
		return 1;
	}
	buf_put(&c->u2c);
	return eof;
}

static int
upstream_to_client(struct conn *c, struct wants *w)
{
	ssize_t	 n;

	if (!c->up_eof && c->u2c_len == 0)
		return upstream_read(c, w);
	if (c->u2c_len > 0) {
		n = write(c->cw.fd, c->u2c + c->u2c_off,
		    c->u2c_len - c->u2c_off);
		if (n > 0) {
			c->down_bytes += (size_t)n;
			c->rt->stats->bytes_down += (size_t)n;
			if ((c->u2c_off += (size_t)n) == c->u2c_len) {
				c->u2c_len = c->u2c_off = 0;
				buf_put(&c->u2c);
			}
			return 1;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		return -1;
	}
	if (c->up_eof && !c->client_shut) {
		shutdown(c->cw.fd, SHUT_WR);
		c->client_shut = 1;
		return 1;
	}
	return 0;
}

static void
pump(struct conn *c)
{
	struct wants	 w;
	uint32_t	 cev = 0, uev = 0;
	int		 a, b, steps = 0;

	do {
		memset(&w, 0, sizeof(w));
		ERR_clear_error();	/* SSL_get_error reads the queue */
		a = client_to_upstream(c, &w);
		b = upstream_to_client(c, &w);
		if (a < 0 || b < 0) {
			log_ssl(LOG_LVL_INFO, __func__, "conn %lu: %s", c->id,
			    a < 0 ? "sending upstream failed" :
			    "receiving from upstream failed");
			conn_fail(c, TFAIL_IO, "connection error");
			return;
		}
		if (a > 0 || b > 0)
			c->active = clock_now_ms();
	} while ((a > 0 || b > 0) && ++steps < PUMP_BUDGET);
	if (a > 0 || b > 0) {
		/* out of budget with work left: come back on the next turn
		 * of the loop (a socket with room to write wakes us) */
		w.up_out = 1;
		cev |= EPOLLOUT;
	}
	if ((c->up_dead || (c->shut_sent &&
	    wbio_pending(SSL_get_wbio(c->ssl)) == 0)) && c->client_shut) {
		conn_close(c, NULL);
		return;
	}
	/* the client is read when what it sent is out (backpressure) */
	if (!c->client_eof && c->c2u_len == 0 &&
	    wbio_pending(SSL_get_wbio(c->ssl)) == 0)
		cev |= EPOLLIN;
	if (c->u2c_len > 0)
		cev |= EPOLLOUT;
	if (w.up_in)
		uev |= EPOLLIN;
	if (w.up_out)
		uev |= EPOLLOUT;
	if (loop_set(&c->cw, cev) != 0 || loop_set(&c->uw, uev) != 0)
		conn_fail(c, TFAIL_IO, "cannot watch a socket");
}

/*
 * After the bytes have moved: OpenSSL's record buffers go back to the heap
 * when nothing is pending in them.  SSL_MODE_RELEASE_BUFFERS does that
 * after reading and writing data, but a handshake message read after the
 * handshake (a TLS 1.3 NewSessionTicket, a KeyUpdate) sets up the write
 * buffer (16.7 KB) and leaves it for the next write, which on an idle
 * tunnel does not come: most idle tunnels held one.
 */
static void
pump_release(struct conn *c)
{
	pump(c);
	if (!c->closing && c->state == C_PUMP)
		SSL_free_buffers(c->ssl);
}

static void
on_upstream(struct watch *w, uint32_t events)
{
	struct conn	*c = w->arg;
	long long	 t0;

	if (c->closing)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		c->ur = 1;
	switch (c->state) {
	case C_CONNECTING:
	case C_HANDSHAKE:
		if (!hs_may_step())
			break;		/* next turn: the event comes back */
		t0 = clock_now_ns();
		if (c->state == C_CONNECTING)
			connected(c);
		else
			handshake(c);
		hs_spent(t0);
		break;
	case C_PUMP:
		pump_release(c);
		break;
	default:
		break;
	}
}

static void
on_client(struct watch *w, uint32_t events)
{
	struct conn	*c = w->arg;

	if (c->closing)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		c->cr = 1;
	if (c->state == C_PUMP)
		pump_release(c);
}

/* ---- accepting */

static void
start_upstream(struct conn *c)
{
	struct cfg_tunnel	*t = c->rt->cfg;
	struct addrinfo		*ai;

	c->state = C_RESOLVING;
	c->deadline = c->started + t->connect_timeout * 1000L;
	if (resolve_numeric(t->connect_host, t->connect_port, &ai) == 0 ||
	    resolve_cached(t->connect_host, t->connect_port, &ai) == 0) {
		c->ai = c->ai_next = ai;	/* a literal, or a recent answer */
		try_connect(c);
		return;
	}
	if ((c->res = resolve_start(t->connect_host, t->connect_port,
	    resolved, c)) == NULL)
		conn_close(c, "cannot start name resolution");
}

/* Pauses or resumes listeners at the per-tunnel and total limits. */
static void
limits_update(struct agent *a)
{
	struct tunnel_rt	*rt;
	int			 i, full, all = a->nconns >=
				    a->cfg->agent.max_connections;
	static int		 was_all;

	if (all && !was_all)
		log_warn("%d connections open, the agent's max-connections: "
		    "not accepting more until one closes", a->nconns);
	was_all = all;
	for (rt = a->tunnels; rt != NULL && !rt->retired; rt = rt->next) {
		full = rt->stats->open >= rt->cfg->max_connections;
		if (full && !rt->listen[0].paused && !all)
			log_warn("tunnel %s: %d connections open, its "
			    "max-connections: not accepting more until one "
			    "closes", rt->cfg->name, rt->stats->open);
		for (i = 0; i < rt->nlisten; i++)
			listen_pause(&rt->listen[i], full || all);
	}
}

/* Before any upstream connect, name lookup or signature: closed. */
static void
refuse(struct conn *c, struct listener *ln, int fd, const struct peer *p,
    const char *rule)
{
	struct tunnel_rt	*rt = ln->arg;

	connlog_decision(c->id, rt, p, 0, rule);
	connlog_refused(c->id, rt, ln->addr, p, rule);
	log_info("conn %lu (%s): closed: refused", c->id, rt->cfg->name);
	rt->stats->accepted++;
	count_fail(rt, TFAIL_DENIED, "refused: the peer may not use the tunnel");
	close(fd);
	free(c);
}

/*
 * The identity's card was pulled: the connection fails at once, before
 * any upstream work (a resumed session would need no signature), and
 * the log names the card.  Never a plaintext fallback.
 */
static int
token_removed(struct conn *c)
{
	struct identity	*id = c->rt->id;

	if (id == NULL || !id->absent)
		return 0;
	if (id->retired) {
		log_warn("conn %lu (%s): its identity %s was removed by a "
		    "reload and its token helper has restarted since: no "
		    "signature", c->id, c->rt->cfg->name, id->cfg->name);
		conn_fail(c, TFAIL_TOKEN, "identity removed");
		return 1;
	}
	log_warn("conn %lu (%s): token '%s' (serial %s) was removed; insert "
	    "it again", c->id, c->rt->cfg->name, id->tok_label[0] ?
	    id->tok_label : "?", id->tok_serial[0] ? id->tok_serial :
	    "unknown");
	conn_fail(c, TFAIL_TOKEN, "token removed");
	return 1;
}

int
tunnels_close_identity(struct agent *a, struct identity *id, const char *why)
{
	struct conn	*c, *next;
	int		 n = 0;

	for (c = conns; c != NULL; c = next) {
		next = c->next;
		if (c->rt->agent == a && c->rt->id == id && !c->closing) {
			conn_close(c, why);
			n++;
		}
	}
	return n;
}

static void
on_accept(struct listener *ln, int fd)
{
	struct tunnel_rt	*rt = ln->arg;
	struct conn		*c;
	struct peer		 peer;	/* 4 KB: not kept in the conn */
	char			 who[PATH_MAX + 64], rule[512];

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_err("out of memory: closing a new connection");
		close(fd);
		return;
	}
	c->id = next_id++;
	peer_from_fd(fd, &peer);
	if (!peer_access(&peer, rt->cfg, rule, sizeof(rule))) {
		refuse(c, ln, fd, &peer, rule);
		return;
	}
	connlog_decision(c->id, rt, &peer, 1, rule);
	connlog_peer(&c->log, &peer, rule);
	/* what a PIN dialog would show (NULL if out of memory: less) */
	peer_requester(&peer, who, sizeof(who));
	c->who = strdup(who);
	c->rt = rt;
	rt->refs++;
	c->started = clock_now_ms();
	loop_watch_init(&c->cw, fd, on_client, c);
	loop_watch_init(&c->uw, -1, on_upstream, c);
	loop_watch_init(&c->aw, -1, on_async, c);
	list_add(&conns, c);
	rt->stats->accepted++;
	rt->stats->open++;
	rt->agent->nconns++;
	peer_describe(&peer, who, sizeof(who));
	if (peer.unix_sock)
		log_info("conn %lu (%s): from %s on %s", c->id, rt->cfg->name,
		    who, ln->addr);
	else if (peer.pid == -1)	/* allowed: the kernel named its uid */
		log_info("conn %lu (%s): from %s on %s, uid %ld", c->id,
		    rt->cfg->name, who, ln->addr, peer.uid);
	else
		log_info("conn %lu (%s): from %s on %s, uid %ld pid %ld %s",
		    c->id, rt->cfg->name, who, ln->addr, peer.uid,
		    peer.pid, peer.exe[0] ? peer.exe :
		    "(executable unknown)");
	limits_update(rt->agent);
	if (token_removed(c))
		return;
	/* the client is not watched until the tunnel is up */
	start_upstream(c);
}

/* ---- timers and start-up */

void
tunnels_tick(struct agent *a, long now)
{
	struct tunnel_rt	*rt;
	struct conn		*c, *next;
	int			 i;

	heap_trim(now);
	retired_free(a);
	for (rt = a->tunnels; rt != NULL; rt = rt->next) {
		for (i = 0; i < rt->nlisten; i++)
			listen_tick(&rt->listen[i], now);
		if (rt->grace_until != 0 && now >= rt->grace_until) {
			/* a full handshake gave no session: do not wait */
			rt->grace_until = 0;
			if (!sess_usable(&rt->sess)) {
				if (!rt->no_sessions)
					log_info("tunnel %s: the upstream gave "
					    "no session to resume; each "
					    "connection makes a full handshake",
					    rt->cfg->name);
				rt->no_sessions = 1;
			}
			waiters_kick(rt);
		}
	}

	for (c = conns; c != NULL; c = next) {
		next = c->next;
		if (c->state == C_PUMP) {
			if (now - c->active > c->rt->cfg->idle_timeout * 1000L)
				conn_close(c, "idle timeout");
		} else if (now > c->deadline) {
			log_warn("conn %lu: upstream %s:%s: %s timed out",
			    c->id, c->rt->cfg->connect_host,
			    c->rt->cfg->connect_port, c->state ==
			    C_QUEUED ? "TLS handshake (queued for the token)" :
			    c->state == C_HANDSHAKE || c->state == C_WAITSESS ?
			    "TLS handshake" : "connect");
			conn_fail(c, TFAIL_TIMEOUT, "timeout");
		}
	}
}

static int
tunnel_listen(struct tunnel_rt *rt, int ready_fd)
{
	struct cfg_tunnel	*t = rt->cfg;
	char			 err[512], line[256];
	int			 i, r;

	for (i = 0; i < t->nlisten; i++) {
		if ((r = listen_open(&rt->listen[i], &t->listen[i],
		    t->allow_remote, on_accept, rt, err, sizeof(err))) != 0) {
			log_err("%s:%d: [tunnel %s] listen: %s",
			    rt->agent->cfg->path, t->listen[i].line, t->name,
			    err);
			return r;
		}
		rt->nlisten++;
		log_info("tunnel %s: listening on %s, to %s:%s", t->name,
		    rt->listen[i].addr, t->connect_host, t->connect_port);
		snprintf(line, sizeof(line), "listen %s %s\n", t->name,
		    rt->listen[i].addr);
		if (ready_fd != -1 && write(ready_fd, line, strlen(line)) < 0)
			log_warn_sys("ready fd");
	}
	return 0;
}

/* The tunnel's TLS context, with the slot check before each signature. */
static SSL_CTX *
tunnel_ctx(struct cfg_tunnel *t, struct identity *id, char *err,
    size_t errlen)
{
	SSL_CTX	*ctx;

	if ((ctx = tls_ctx_new(t, id, err, errlen)) != NULL && id != NULL)
		SSL_CTX_set_cert_cb(ctx, cert_cb, NULL);
	return ctx;
}

static void
stats_unref(struct tunnel_stats *st)
{
	if (st != NULL && --st->refs == 0)
		free(st);
}

/* Frees a tunnel that no connection refers to any more. */
static void
rt_free(struct tunnel_rt *rt)
{
	int	 i;

	for (i = 0; i < CONFIG_MAX_LISTEN; i++)
		listen_close(&rt->listen[i]);
	SSL_CTX_free(rt->ssl_ctx);
	sess_cache_free(&rt->sess);
	stats_unref(rt->stats);
	free(rt);
}

/* The trust files as read now, to see at a reload whether they changed. */
static void
trust_stamp(struct tunnel_rt *rt)
{
	rt->trust_stamped = tls_trust_stamp(rt->cfg, rt->trust_stamp) == 0;
}

/* A tunnel with its TLS context and no listener yet; stats: those of the
 * tunnel it replaces, or NULL for new ones. */
static struct tunnel_rt *
rt_new(struct agent *a, struct cfg_tunnel *t, struct tunnel_stats *stats,
    char *err, size_t errlen)
{
	struct tunnel_rt	*rt;
	char			 why[512];
	int			 i;

	if ((rt = calloc(1, sizeof(*rt))) == NULL)
		goto nomem;
	for (i = 0; i < CONFIG_MAX_LISTEN; i++)
		rt->listen[i].w.fd = rt->listen[i].dfd = -1;
	if (stats == NULL && (stats = calloc(1, sizeof(*stats))) == NULL) {
		free(rt);
		goto nomem;
	}
	rt->stats = stats;
	stats->refs++;
	rt->agent = a;
	rt->cfg = t;
	rt->id = identity_find(a, t->identity);
	if (sess_cache_init(&rt->sess, t) != 0) {
		rt_free(rt);
		goto nomem;
	}
	rt->sess.ready = session_ready;
	rt->sess.ready_arg = rt;
	/* before the files are read: one changed meanwhile is read again
	 * at the next reload */
	trust_stamp(rt);
	if ((rt->ssl_ctx = tunnel_ctx(t, rt->id, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "%s:%d: [tunnel %s]: %s", a->cfg->path,
		    t->line, t->name, why);
		rt_free(rt);
		return NULL;
	}
	return rt;
nomem:
	snprintf(err, errlen, "out of memory");
	return NULL;
}

int
tunnels_start(struct agent *a, int ready_fd)
{
	struct cfg_tunnel	*t;
	struct tunnel_rt	*rt, **tail = &a->tunnels;
	char			 err[1024];
	int			 r;

	kick_agent = a;
	if (kickw.fd == -1) {
		loop_watch_init(&kickw, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
		    on_kick, NULL);
		if (kickw.fd != -1 && loop_set(&kickw, EPOLLIN) != 0) {
			close(kickw.fd);
			kickw.fd = -1;
		}
		if (kickw.fd == -1)
			log_warn_sys("tunnels: eventfd (waiting connections "
			    "start from the loop's deferred work)");
	}
	for (t = a->cfg->tunnels; t != NULL; t = t->next) {
		if ((rt = rt_new(a, t, NULL, err, sizeof(err))) == NULL) {
			log_err("%s", err);
			return P11A_ERR_TLS;
		}
		*tail = rt;	/* in config order */
		tail = &rt->next;
		if ((r = tunnel_listen(rt, ready_fd)) != 0)
			return r;
	}
	return 0;
}

/* ---- reload (agent/reload.c) and drain */

/* The running tunnel of that name, or NULL. */
static struct tunnel_rt *
rt_named(struct agent *a, const char *name)
{
	struct tunnel_rt	*rt;

	for (rt = a->tunnels; rt != NULL; rt = rt->next)
		if (!rt->retired && strcmp(rt->cfg->name, name) == 0)
			return rt;
	return NULL;
}

/* The tunnel runs as t says: same settings, identity, and trust files
 * (ca, crl, ca-dir and its files) as when it read them. */
static int
rt_unchanged(const struct tunnel_rt *rt, const struct cfg_tunnel *t,
    const struct identity *id)
{
	unsigned char	 now[32];

	if (rt->id != id || !config_str_same(rt->cfg->text, t->text))
		return 0;
	return rt->trust_stamped && tls_trust_stamp(t, now) == 0 &&
	    memcmp(now, rt->trust_stamp, sizeof(now)) == 0;
}

struct plan {
	struct cfg_tunnel	*t;
	struct tunnel_rt	*old;		/* running under its name */
	struct tunnel_rt	*keep;		/* unchanged: goes on */
	struct tunnel_rt	*fresh;		/* new or changed */
	struct listener		*from[CONFIG_MAX_LISTEN];	/* to move */
};

/* A listener of a tunnel that goes (neither kept nor taken yet) on the
 * address l names, or NULL.  tcp:HOST:0 names the port the same tunnel
 * was given. */
static struct listener *
listener_to_take(struct agent *a, const struct cfg_tunnel *t,
    const struct cfg_listen *l, const struct plan *plan, int nplan)
{
	struct tunnel_rt	*rt;
	int			 i, j, k, taken;

	for (rt = a->tunnels; rt != NULL; rt = rt->next) {
		if (rt->retired)
			continue;
		/* an ephemeral port is the same tunnel's, never another's */
		if (l->kind == LISTEN_TCP && strcmp(l->port, "0") == 0 &&
		    strcmp(rt->cfg->name, t->name) != 0)
			continue;
		for (i = 0; i < nplan && plan[i].keep != rt; i++)
			;
		if (i < nplan)
			continue;
		for (j = 0; j < rt->nlisten; j++) {
			if (rt->listen[j].w.fd == -1 ||
			    !config_listen_same(&rt->cfg->listen[j], l))
				continue;
			for (taken = 0, i = 0; i < nplan && !taken; i++)
				for (k = 0; k < CONFIG_MAX_LISTEN; k++)
					if (plan[i].from[k] == &rt->listen[j])
						taken = 1;
			if (!taken)
				return &rt->listen[j];
		}
	}
	return NULL;
}

/* Builds what a changed or new tunnel needs, opening only addresses that
 * no running tunnel listens on; 0, or < 0 with err. */
static int
plan_fresh(struct agent *a, struct plan *plan, int nplan, int i, char *err,
    size_t errlen)
{
	struct plan		*p = &plan[i];
	struct cfg_tunnel	*t = p->t;
	struct tunnel_rt	*rt;
	char			 why[512];
	int			 j, r;

	if ((rt = p->fresh = rt_new(a, t, p->old != NULL ? p->old->stats :
	    NULL, err, errlen)) == NULL)
		return P11A_ERR_TLS;
	for (j = 0; j < t->nlisten; j++) {
		if ((p->from[j] = listener_to_take(a, t, &t->listen[j], plan,
		    nplan)) != NULL) {
			if (!t->allow_remote && listen_is_remote(p->from[j])) {
				snprintf(err, errlen, "%s:%d: [tunnel %s] "
				    "listen: %s is not a loopback address; "
				    "set allow-remote-listen = yes to keep it",
				    a->cfg->path, t->listen[j].line, t->name,
				    p->from[j]->addr);
				return P11A_ERR_CONFIG;
			}
			continue;
		}
		if ((r = listen_open(&rt->listen[j], &t->listen[j],
		    t->allow_remote, on_accept, rt, why, sizeof(why))) != 0) {
			snprintf(err, errlen, "%s:%d: [tunnel %s] listen: %s",
			    a->cfg->path, t->listen[j].line, t->name, why);
			return r;
		}
	}
	rt->nlisten = t->nlisten;
	return 0;
}

int
tunnels_reload(struct agent *a, struct tunnels_reload_sum *sum, char *err,
    size_t errlen)
{
	struct cfg_tunnel	*t;
	struct tunnel_rt	*rt, **was = NULL, **tail;
	struct plan		*plan;
	int			 n = 0, nwas = 0, i, j, k, r = 0;

	memset(sum, 0, sizeof(*sum));
	for (t = a->cfg->tunnels; t != NULL; t = t->next)
		n++;
	for (rt = a->tunnels; rt != NULL; rt = rt->next)
		nwas++;
	if ((plan = calloc(n, sizeof(*plan))) == NULL ||
	    (was = calloc(nwas + 1, sizeof(*was))) == NULL) {
		free(plan);
		snprintf(err, errlen, "out of memory");
		return P11A_ERR_NOMEM;
	}
	for (rt = a->tunnels, k = 0; rt != NULL; rt = rt->next)
		was[k++] = rt;
	/* the unchanged tunnels first: no other takes their sockets */
	for (t = a->cfg->tunnels, i = 0; t != NULL; t = t->next, i++) {
		plan[i].t = t;
		plan[i].old = rt_named(a, t->name);
		if (plan[i].old != NULL && rt_unchanged(plan[i].old, t,
		    identity_find(a, t->identity)))
			plan[i].keep = plan[i].old;
	}
	/* what can fail comes next, while the running tunnels serve */
	for (i = 0; i < n && r == 0; i++)
		if (plan[i].keep == NULL)
			r = plan_fresh(a, plan, n, i, err, errlen);
	if (r != 0) {
		for (i = 0; i < n; i++)
			if (plan[i].fresh != NULL)
				rt_free(plan[i].fresh);
		free(plan);
		free(was);
		return r;
	}
	/* from here nothing fails */
	tail = &a->tunnels;
	for (i = 0; i < n; i++) {
		if ((rt = plan[i].keep) != NULL) {
			rt->cfg = plan[i].t;	/* the same settings */
			sum->kept++;
		} else {
			rt = plan[i].fresh;
			if (plan[i].old != NULL)
				sum->changed++;
			else
				sum->added++;
			for (j = 0; j < rt->nlisten; j++) {
				if (plan[i].from[j] != NULL)
					listen_move(&rt->listen[j],
					    plan[i].from[j], on_accept, rt);
				log_info("tunnel %s: listening on %s, to %s:%s",
				    rt->cfg->name, rt->listen[j].addr,
				    rt->cfg->connect_host,
				    rt->cfg->connect_port);
			}
		}
		*tail = rt;
		tail = &rt->next;
	}
	/* the tunnels that go: retired, their connections go on */
	for (k = 0; k < nwas; k++) {
		rt = was[k];
		for (i = 0; i < n && plan[i].keep != rt; i++)
			;
		if (i < n)
			continue;
		if (!rt->retired) {
			for (i = 0; i < n && strcmp(plan[i].t->name,
			    rt->cfg->name) != 0; i++)
				;
			if (i == n) {
				sum->removed++;
				log_info("tunnel %s: removed by the reload; "
				    "%d connections finish", rt->cfg->name,
				    rt->stats->open);
			}
			for (j = 0; j < CONFIG_MAX_LISTEN; j++)
				listen_close(&rt->listen[j]);
			rt->nlisten = 0;
			rt->retired = 1;
		}
		*tail = rt;
		tail = &rt->next;
	}
	*tail = NULL;
	free(plan);
	free(was);
	limits_update(a);
	return 0;
}

void
tunnels_kick_queues(struct agent *a)
{
	struct identity	*id;

	for (id = a->identities; id != NULL; id = id->next)
		hsq_kick(id);
}

int
tunnels_drain(struct agent *a)
{
	struct tunnel_rt	*rt;
	int			 i;

	for (rt = a->tunnels; rt != NULL; rt = rt->next) {
		for (i = 0; i < CONFIG_MAX_LISTEN; i++)
			listen_close(&rt->listen[i]);
		rt->nlisten = 0;
	}
	return a->nconns;
}

static void
rt_free_deferred(void *arg)
{
	rt_free(arg);
}

/* Retired tunnels that nothing refers to any more go. */
static void
retired_free(struct agent *a)
{
	struct tunnel_rt	**pp = &a->tunnels, *rt;

	while ((rt = *pp) != NULL) {
		if (rt->retired && rt->refs == 0 && !rt->kick_pending) {
			*pp = rt->next;
			log_debug("tunnel %s: retired, its last connection "
			    "gone", rt->cfg->name);
			/* after this batch: an event of it may be in it */
			loop_defer(rt_free_deferred, rt);
		} else
			pp = &rt->next;
	}
}

const char *
tunnel_fails(const struct tunnel_stats *st, char *buf, size_t size)
{
	size_t	 n;
	int	 f;

	buf[0] = '\0';
	for (f = 0; f < TFAIL_MAX; f++) {
		if (st->failed[f] == 0)
			continue;
		n = strlen(buf);
		snprintf(buf + n, size - n, "%s%s %llu", n ? ", " : "",
		    tunnel_fail_name(f), st->failed[f]);
	}
	if (buf[0] == '\0')
		snprintf(buf, size, "none");
	return buf;
}

/* "tunnel t: 12 connections, 10 handshakes, 3400 bytes up, ..." */
void
tunnel_log_stats(const struct tunnel_rt *rt)
{
	const struct tunnel_stats	*st = rt->stats;
	char				 fails[256];

	log_info("tunnel %s: %llu connections, %llu handshakes (%llu resumed), "
	    "%llu bytes up, %llu down, failed: %s", rt->cfg->name,
	    st->accepted, st->handshakes, st->resumed, st->bytes_up,
	    st->bytes_down, tunnel_fails(st, fails, sizeof(fails)));
}

int
tunnels_rebuild_tls(struct agent *a, struct identity *id,
    const char *flush_why)
{
	struct tunnel_rt	*rt;
	SSL_CTX			**ctx;
	char			 err[512];
	int			 n = 0, i, r = 0;

	for (rt = a->tunnels; rt != NULL; rt = rt->next)
		n++;
	if ((ctx = calloc(n + 1, sizeof(*ctx))) == NULL)
		return P11A_ERR_NOMEM;
	/* build every context first: all tunnels change, or none */
	for (rt = a->tunnels, i = 0; rt != NULL; rt = rt->next, i++) {
		if (rt->id != id)
			continue;
		if ((ctx[i] = tunnel_ctx(rt->cfg, id, err, sizeof(err))) ==
		    NULL) {
			log_err("%s:%d: [tunnel %s]: %s", a->cfg->path,
			    rt->cfg->line, rt->cfg->name, err);
			r = P11A_ERR_TLS;
			break;
		}
	}
	for (rt = a->tunnels, i = 0; rt != NULL; rt = rt->next, i++) {
		if (ctx[i] == NULL)
			continue;
		if (r == 0) {
			SSL_CTX_free(rt->ssl_ctx);	/* open SSLs hold it */
			rt->ssl_ctx = ctx[i];
			if (flush_why != NULL)
				sess_flush(&rt->sess, rt->cfg->name,
				    flush_why);
		} else
			SSL_CTX_free(ctx[i]);
	}
	free(ctx);
	return r;
}

/* After the helpers failed every request: let paused jobs finish. */
void
tunnels_reap(void)
{
	while (zombies != NULL)
		zombie_resume(zombies);
}

void
tunnels_stop(struct agent *a)
{
	struct tunnel_rt	*rt;
	struct conn		*c;

	kick_agent = NULL;	/* no waiter starts any more */
	for (rt = a->tunnels; rt != NULL; rt = rt->next)
		rt->kick_pending = 1;
	while (conns != NULL)
		conn_close(conns, "agent stopping");
	for (c = zombies; c != NULL; c = c->next) {
		c->slot = 0;	/* their identities go before they do */
		c->rt->refs--;	/* and their tunnels now */
		c->rt = NULL;
	}
	if (kickw.fd != -1) {
		loop_set(&kickw, 0);
		close(kickw.fd);
		kickw.fd = -1;
	}
	kick_agent = NULL;
	while ((rt = a->tunnels) != NULL) {
		a->tunnels = rt->next;
		if (!rt->retired)
			tunnel_log_stats(rt);
		rt_free(rt);
	}
}

void
tunnels_flush_sessions(struct agent *a, struct identity *id, const char *why)
{
	struct tunnel_rt	*rt;

	for (rt = a->tunnels; rt != NULL; rt = rt->next)
		if (id == NULL || rt->id == id)
			sess_flush(&rt->sess, rt->cfg->name, why);
}
