/*
 * p11agent: name resolution that never blocks the loop.
 *
 * glibc's getaddrinfo_a() resolves in its own thread and tells us through
 * SIGEV_THREAD; the notification writes the request's pointer to a pipe
 * that the loop watches, so every callback runs on the loop.  A request
 * cancelled while in flight is freed when its answer arrives.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/resolve.h"

struct resolve {
	struct gaicb	 cb;
	struct gaicb	*list[1];
	struct addrinfo	 hints;
	struct sigevent	 sev;
	char		*host;
	char		*port;
	resolve_cb	 done;
	void		*arg;		/* NULL once cancelled */
};

static int		 pipefd[2] = { -1, -1 };
static struct watch	 pipew;

static void
resolve_free(struct resolve *r)
{
	if (r->cb.ar_result != NULL)
		freeaddrinfo(r->cb.ar_result);
	free(r->host);
	free(r->port);
	free(r);
}

/* Runs in a glibc thread: only hands the request to the loop. */
static void
notify(union sigval sv)
{
	struct resolve	*r = sv.sival_ptr;

	if (write(pipefd[1], &r, sizeof(r)) != sizeof(r))
		abort();	/* a lost wake-up would hang a client */
}

static void
on_pipe(struct watch *w, uint32_t events)
{
	struct resolve	*r;
	struct addrinfo	*ai;
	int		 err;

	while (read(w->fd, &r, sizeof(r)) == sizeof(r)) {
		if (r->arg == NULL) {
			resolve_free(r);
			continue;
		}
		err = gai_error(&r->cb);
		ai = err == 0 ? r->cb.ar_result : NULL;
		r->cb.ar_result = NULL;	/* the callback owns it */
		r->done(r->arg, ai, err);
		resolve_free(r);
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
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) == -1)
		return P11A_ERR_SYSTEM;
	loop_watch_init(&pipew, pipefd[0], on_pipe, NULL);
	return loop_set(&pipew, EPOLLIN);
}

struct resolve *
resolve_start(const char *host, const char *port, resolve_cb done, void *arg)
{
	struct resolve	*r;

	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->host = strdup(host)) == NULL ||
	    (r->port = strdup(port)) == NULL)
		goto fail;
	r->hints.ai_family = AF_UNSPEC;
	r->hints.ai_socktype = SOCK_STREAM;
	r->hints.ai_flags = AI_ADDRCONFIG;
	r->cb.ar_name = r->host;
	r->cb.ar_service = r->port;
	r->cb.ar_request = &r->hints;
	r->list[0] = &r->cb;
	r->sev.sigev_notify = SIGEV_THREAD;
	r->sev.sigev_notify_function = notify;
	r->sev.sigev_value.sival_ptr = r;
	r->done = done;
	r->arg = arg;
	if (getaddrinfo_a(GAI_NOWAIT, r->list, 1, &r->sev) != 0)
		goto fail;
	return r;
fail:
	if (r != NULL) {
		free(r->host);
		free(r->port);
		free(r);
	}
	return NULL;
}

/* The callback will not run; the request frees itself when answered. */
void
resolve_cancel(struct resolve *r)
{
	r->arg = NULL;
}
