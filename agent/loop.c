/*
 * p11agent: the event loop: epoll, signals through a signalfd, and a
 * timerfd that ticks for deadlines.  Nothing here blocks but epoll_wait.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/clock.h"
#include "p11agent/loop.h"

#define MAX_EVENTS	64

struct deferred {
	void		(*fn)(void *);
	void		*arg;
	struct deferred	*next;
};

static int		 epfd = -1;
static int		 stopping;
static struct watch	 sigw, timerw;
static struct deferred	*deferred;
static unsigned long	 turns;

void
loop_watch_init(struct watch *w, int fd, watch_cb cb, void *arg)
{
	w->fd = fd;
	w->events = 0;
	w->cb = cb;
	w->arg = arg;
}

int
loop_set(struct watch *w, uint32_t events)
{
	struct epoll_event	 ev = { .events = events, .data.ptr = w };
	int			 op;

	if (events == w->events)
		return 0;
	if (events == 0)
		op = EPOLL_CTL_DEL;
	else
		op = w->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(epfd, op, w->fd, &ev) == -1) {
		log_err_sys("epoll_ctl(fd %d)", w->fd);
		return P11A_ERR_SYSTEM;
	}
	w->events = events;
	return 0;
}

void
loop_defer(void (*fn)(void *), void *arg)
{
	struct deferred	*d;

	if ((d = malloc(sizeof(*d))) == NULL) {
		log_err("out of memory; leaking an object");
		return;
	}
	d->fn = fn;
	d->arg = arg;
	d->next = deferred;
	deferred = d;
}

void
loop_run_deferred(void)
{
	struct deferred	*d;

	while ((d = deferred) != NULL) {
		deferred = d->next;
		d->fn(d->arg);
		free(d);
	}
}

unsigned long
loop_turn(void)
{
	return turns;
}

void
loop_stop(void)
{
	stopping = 1;
}

static void	(*signal_cb)(int);

void
loop_on_signal(void (*cb)(int))
{
	signal_cb = cb;
}

static void
on_signal(struct watch *w, uint32_t events)
{
	struct signalfd_siginfo	 si;

	while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
		if (signal_cb != NULL) {
			signal_cb((int)si.ssi_signo);
			continue;
		}
		log_info("signal %d: stopping", (int)si.ssi_signo);
		stopping = 1;
	}
}

static void
on_timer(struct watch *w, uint32_t events)
{
	uint64_t	 n;

	if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn_sys("timerfd");
}

int
loop_init(void)
{
	struct itimerspec	 its = {
		.it_interval = { 0, LOOP_TICK_MS * 1000000L },
		.it_value = { 0, LOOP_TICK_MS * 1000000L },
	};
	sigset_t		 set;
	int			 sfd, tfd;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1 ||
	    (epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) == -1 ||
	    (tfd = timerfd_create(CLOCK_MONOTONIC,
	    TFD_NONBLOCK | TFD_CLOEXEC)) == -1 ||
	    timerfd_settime(tfd, 0, &its, NULL) == -1) {
		log_err_sys("event loop");
		return P11A_ERR_SYSTEM;
	}
	signal(SIGPIPE, SIG_IGN);
	loop_watch_init(&sigw, sfd, on_signal, NULL);
	loop_watch_init(&timerw, tfd, on_timer, NULL);
	if (loop_set(&sigw, EPOLLIN) != 0 || loop_set(&timerw, EPOLLIN) != 0)
		return P11A_ERR_SYSTEM;
	return 0;
}

int
loop_run(void (*tick)(long))
{
	struct epoll_event	 ev[MAX_EVENTS];
	struct watch		*w;
	int			 i, n;

	while (!stopping) {
		n = epoll_wait(epfd, ev, MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_err_sys("epoll_wait");
			return P11A_ERR_SYSTEM;
		}
		turns++;
		for (i = 0; i < n; i++) {
			w = ev[i].data.ptr;
			if (w == &timerw)
				tick(clock_now_ms());
			w->cb(w, ev[i].events);
		}
		loop_run_deferred();
	}
	loop_run_deferred();
	return 0;
}
