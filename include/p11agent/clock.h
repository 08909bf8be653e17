/*
 * p11agent: the monotonic clock every deadline is measured on.
 */
#ifndef P11AGENT_CLOCK_H
#define P11AGENT_CLOCK_H

/* Milliseconds of CLOCK_MONOTONIC. */
long	 clock_now_ms(void);
/* Nanoseconds of CLOCK_MONOTONIC. */
long long clock_now_ns(void);

#endif
