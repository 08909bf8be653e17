/*
 * p11agent: the agent's event loop (agent/loop.c).
 *
 * One epoll loop; SIGINT, SIGTERM and SIGHUP arrive through a signalfd,
 * and a timerfd ticks every 200 ms for deadlines.  Nothing run from the
 * loop may block.
 */
#ifndef P11AGENT_LOOP_H
#define P11AGENT_LOOP_H

#include <stdint.h>

#define LOOP_TICK_MS	200	/* the tick's period */

struct watch;
typedef void (*watch_cb)(struct watch *, uint32_t events);

/* One file descriptor in the loop, embedded in its owner. */
struct watch {
	int		 fd;
	uint32_t	 events;	/* current interest; 0: not added */
	watch_cb	 cb;
	void		*arg;
};

int	 loop_init(void);
void	 loop_watch_init(struct watch *, int fd, watch_cb, void *);
/* Sets the interest (EPOLLIN/EPOLLOUT); 0 removes the fd.  Changes
 * epoll only when the interest changes; 0 or P11A_ERR_SYSTEM. */
int	 loop_set(struct watch *, uint32_t events);
/* Runs until a signal or loop_stop() asks to stop; tick runs every
 * LOOP_TICK_MS.  Returns 0, or < 0 when epoll fails. */
int	 loop_run(void (*tick)(long now_ms));
/* SIGINT, SIGTERM and SIGHUP go to cb (from the loop) instead of
 * stopping it; NULL: each stops the loop. */
void	 loop_on_signal(void (*cb)(int signo));
/* Ends loop_run() after the current batch of events. */
void	 loop_stop(void);
/* Frees run after the current batch of events, never inside it. */
void	 loop_defer(void (*fn)(void *), void *);
void	 loop_run_deferred(void);
/* Counts the batches of events: work that is bounded per batch (a turn
 * of the loop) starts over when this changes. */
unsigned long	 loop_turn(void);

#endif
