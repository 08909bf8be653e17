/*
 * p11agent: name resolution that never blocks the loop.
 *
 * glibc's getaddrinfo_a() resolves in its own thread and tells us through
 * SIGEV_THREAD.  The notification only puts the finished lookup on a list
 * (under a mutex) and adds 1 to an eventfd that the loop watches: a
 * counter cannot fill up the way a pipe can, and however many lookups end
 * together, one wake-up hands them all over.  Every callback runs on the
 * loop.
 *
 * Connections waiting on the same host:port share one lookup in flight;
 * each gets its own copy of the answer.  A waiter that cancels leaves the
 * others waiting; a lookup nobody waits for any more is freed when its
 * answer arrives.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "p11agent/clock.h"
#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/resolve.h"

/* One getaddrinfo_a request, shared by its waiters. */
struct lookup {
	struct gaicb	 cb;
	struct gaicb	*list[1];
	struct addrinfo	 hints;
	struct sigevent	 sev;
	char		*host;
	char		*port;
	struct resolve	*waiters;	/* in joining order */
	struct resolve	*wtail;
	int		 nwaiters;
	int		 served;	/* waiters ever joined */
	struct lookup	*next;		/* in flight (loop thread) */
	struct lookup	*fnext;		/* finished (finished_mu) */
};

/* One connection waiting for a lookup. */
struct resolve {
	struct lookup	*lk;
	resolve_cb	 done;
	void		*arg;
	struct resolve	*prev, *next;
};

/* Our copies of the answers: one allocation per address. */
struct ai_copy {
	struct addrinfo		 ai;	/* first: freeing it frees all */
	struct sockaddr_storage	 ss;
};

/*
 * Answers are kept for a short time: an application that opens many
 * connections costs one lookup (and one resolver thread) every few
 * seconds, not one each.  Only answers with addresses are kept.
 */
#define ANSWER_MS	5000
#define ANSWERS		16

static struct answer {
	char		*host;
	char		*port;
	struct addrinfo	*ai;
	long		 at;	/* CLOCK_MONOTONIC ms */
} answers[ANSWERS];

static struct lookup	*inflight;	/* loop thread only */
static pthread_mutex_t	 finished_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lookup	*finished;	/* under finished_mu */
static int		 efd = -1;
static struct watch	 ew;

void
resolve_freeaddrinfo(struct addrinfo *ai)
{
	struct addrinfo	*next;

	for (; ai != NULL; ai = next) {
		next = ai->ai_next;
		free(ai);	/* the struct ai_copy it starts */
	}
}

/* A copy of the list (addresses only); 0 or EAI_MEMORY. */
static int
ai_copy(const struct addrinfo *src, struct addrinfo **out)
{
	struct addrinfo	*head = NULL, **tail = &head;
	struct ai_copy	*n;

	for (; src != NULL; src = src->ai_next) {
		if (src->ai_addr == NULL || src->ai_addrlen > sizeof(n->ss))
			continue;
		if ((n = calloc(1, sizeof(*n))) == NULL) {
			resolve_freeaddrinfo(head);
			return EAI_MEMORY;
		}
		n->ai.ai_flags = src->ai_flags;
		n->ai.ai_family = src->ai_family;
		n->ai.ai_socktype = src->ai_socktype;
		n->ai.ai_protocol = src->ai_protocol;
		n->ai.ai_addrlen = src->ai_addrlen;
		memcpy(&n->ss, src->ai_addr, src->ai_addrlen);
		n->ai.ai_addr = (struct sockaddr *)&n->ss;
		*tail = &n->ai;
		tail = &n->ai.ai_next;
	}
	*out = head;
	return 0;
}

int
resolve_numeric(const char *host, const char *port, struct addrinfo **out)
{
	struct addrinfo	 hints, *ai;
	int		 e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if ((e = getaddrinfo(host, port, &hints, &ai)) != 0)
		return e;
	if ((e = ai_copy(ai, out)) == 0 && *out == NULL)
		e = EAI_NONAME;
	freeaddrinfo(ai);
	return e;
}

static void
lookup_free(struct lookup *lk)
{
	if (lk->cb.ar_result != NULL)
		freeaddrinfo(lk->cb.ar_result);
	free(lk->host);
	free(lk->port);
	free(lk);
}

/* Runs in a glibc thread: only hands the lookup to the loop. */
static void
notify(union sigval sv)
{
	struct lookup	*lk = sv.sival_ptr;
	uint64_t	 one = 1;
	ssize_t		 n;

	pthread_mutex_lock(&finished_mu);
	lk->fnext = finished;
	finished = lk;
	pthread_mutex_unlock(&finished_mu);
	/* fails only when the counter is already huge: the loop wakes */
	n = write(efd, &one, sizeof(one));
	(void)n;
}

static void
unlink_waiter(struct resolve *r)
{
	struct lookup	*lk = r->lk;

	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		lk->waiters = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	else
		lk->wtail = r->prev;
	r->prev = r->next = NULL;
	lk->nwaiters--;
}

static void
inflight_remove(struct lookup *lk)
{
	struct lookup	**pp;

	for (pp = &inflight; *pp != NULL; pp = &(*pp)->next)
		if (*pp == lk) {
			*pp = lk->next;
			break;
		}
	lk->next = NULL;
}

static void
answer_clear(struct answer *a)
{
	free(a->host);
	free(a->port);
	resolve_freeaddrinfo(a->ai);
	memset(a, 0, sizeof(*a));
}

/* Keeps a copy of the answer, in the oldest (or an expired) place. */
static void
answer_keep(const char *host, const char *port, const struct addrinfo *ai)
{
	struct answer	*a = &answers[0];
	int		 i;

	for (i = 0; i < ANSWERS; i++) {
		if (answers[i].host != NULL &&
		    strcmp(answers[i].host, host) == 0 &&
		    strcmp(answers[i].port, port) == 0) {
			a = &answers[i];
			break;
		}
		if (answers[i].at < a->at)
			a = &answers[i];
	}
	answer_clear(a);
	if ((a->host = strdup(host)) == NULL ||
	    (a->port = strdup(port)) == NULL || ai_copy(ai, &a->ai) != 0 ||
	    a->ai == NULL) {
		answer_clear(a);
		return;
	}
	a->at = clock_now_ms();
}

int
resolve_cached(const char *host, const char *port, struct addrinfo **out)
{
	long	 now = clock_now_ms();
	int	 i;

	*out = NULL;
	for (i = 0; i < ANSWERS; i++) {
		if (answers[i].host == NULL ||
		    strcmp(answers[i].host, host) != 0 ||
		    strcmp(answers[i].port, port) != 0)
			continue;
		if (now - answers[i].at >= ANSWER_MS) {
			answer_clear(&answers[i]);
			return -1;
		}
		if (ai_copy(answers[i].ai, out) != 0)
			return -1;
		log_debug("%s:%s: the answer of %ld ms ago", host, port,
		    now - answers[i].at);
		return 0;
	}
	return -1;
}

void
resolve_forget(void)
{
	int	 i;

	for (i = 0; i < ANSWERS; i++)
		answer_clear(&answers[i]);
}

/* The answer of one lookup, to each of its waiters (a copy each). */
static void
deliver(struct lookup *lk)
{
	struct resolve	*r;
	struct addrinfo	*ai;
	resolve_cb	 done;
	void		*arg;
	int		 err, e;

	inflight_remove(lk);	/* a callback may start the same again */
	err = gai_error(&lk->cb);
	log_debug("lookup of %s:%s answered (%s) for %d connection%s (%d "
	    "gave up)", lk->host, lk->port, err == 0 ? "ok" :
	    gai_strerror(err), lk->nwaiters, lk->nwaiters == 1 ? "" : "s",
	    lk->served - lk->nwaiters);
	if (err == 0)
		answer_keep(lk->host, lk->port, lk->cb.ar_result);
	while ((r = lk->waiters) != NULL) {
		unlink_waiter(r);
		done = r->done;
		arg = r->arg;
		free(r);
		ai = NULL;
		e = err;
		if (e == 0 && (e = ai_copy(lk->cb.ar_result, &ai)) == 0 &&
		    ai == NULL)
			e = EAI_NONAME;
		done(arg, ai, e);
	}
	lookup_free(lk);
}

static void
on_event(struct watch *w, uint32_t events)
{
	struct lookup	*lk, *rev = NULL, *next;
	uint64_t	 n;

	if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn_sys("resolver eventfd");
	pthread_mutex_lock(&finished_mu);
	lk = finished;
	finished = NULL;
	pthread_mutex_unlock(&finished_mu);
	for (; lk != NULL; lk = next) {		/* oldest first */
		next = lk->fnext;
		lk->fnext = rev;
		rev = lk;
	}
	for (lk = rev; lk != NULL; lk = next) {
		next = lk->fnext;
		deliver(lk);
	}
}

int
resolve_init(void)
{
	/*
	 * getaddrinfo_a's threads end with pthread_exit, which loads
	 * libgcc_s the first time; when the process is out of descriptors
	 * that load fails and glibc aborts.  Load it now, for good.
	 */
	if (dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE) == NULL)
		log_warn("cannot preload libgcc_s.so.1: %s", dlerror());
	if ((efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		log_err_sys("resolver eventfd");
		return P11A_ERR_SYSTEM;
	}
	loop_watch_init(&ew, efd, on_event, NULL);
	return loop_set(&ew, EPOLLIN);
}

static struct lookup *
lookup_start(const char *host, const char *port)
{
	struct lookup	*lk;

	if ((lk = calloc(1, sizeof(*lk))) == NULL ||
	    (lk->host = strdup(host)) == NULL ||
	    (lk->port = strdup(port)) == NULL)
		goto fail;
	lk->hints.ai_family = AF_UNSPEC;
	lk->hints.ai_socktype = SOCK_STREAM;
	lk->hints.ai_flags = AI_ADDRCONFIG;
	lk->cb.ar_name = lk->host;
	lk->cb.ar_service = lk->port;
	lk->cb.ar_request = &lk->hints;
	lk->list[0] = &lk->cb;
	lk->sev.sigev_notify = SIGEV_THREAD;
	lk->sev.sigev_notify_function = notify;
	lk->sev.sigev_value.sival_ptr = lk;
	if (getaddrinfo_a(GAI_NOWAIT, lk->list, 1, &lk->sev) != 0)
		goto fail;
	lk->next = inflight;
	inflight = lk;
	return lk;
fail:
	if (lk != NULL)
		lookup_free(lk);
	return NULL;
}

struct resolve *
resolve_start(const char *host, const char *port, resolve_cb done, void *arg)
{
	struct lookup	*lk;
	struct resolve	*r;

	for (lk = inflight; lk != NULL; lk = lk->next)
		if (strcmp(lk->host, host) == 0 && strcmp(lk->port, port) == 0)
			break;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	if (lk != NULL)
		log_debug("a connection joins the lookup of %s:%s (%d "
		    "waiting)", host, port, lk->nwaiters + 1);
	else if ((lk = lookup_start(host, port)) != NULL)
		log_debug("resolving %s:%s", host, port);
	else {
		free(r);
		return NULL;
	}
	r->lk = lk;
	r->done = done;
	r->arg = arg;
	if ((r->prev = lk->wtail) != NULL)
		lk->wtail->next = r;
	else
		lk->waiters = r;
	lk->wtail = r;
	lk->nwaiters++;
	lk->served++;
	return r;
}

/* The callback will not run; the lookup goes on for the others. */
void
resolve_cancel(struct resolve *r)
{
	unlink_waiter(r);
	free(r);
}
