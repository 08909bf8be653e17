/*
 * Unit tests: the resolver (agent/resolve.c).  Many lookups that end
 * while the loop is busy: none is lost and nothing aborts (a pipe of
 * pointers held 8192 of them; the loop now wakes on a counter).
 */
#include "config.h"

#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "p11agent/clock.h"
#include "p11agent/loop.h"
#include "p11agent/resolve.h"
#include "tests.h"

#define NLOOKUPS	10000
#define DEADLINE_MS	60000

static int	 answered, failed;
static long	 deadline;

static int
setup(void)
{
	if (loop_init() != 0 || resolve_init() != 0)
		return -1;
	return 0;
}

static void
stop(void)
{
	raise(SIGTERM);		/* the loop reads it from its signalfd */
}

static void
one_done(void *arg, struct addrinfo *ai, int err)
{
	if (err != 0 || ai == NULL)
		failed++;
	resolve_freeaddrinfo(ai);
	if (++answered + failed >= NLOOKUPS)
		stop();
}

/*
 * On the loop: start NLOOKUPS lookups of different names, then keep the
 * loop busy until glibc has worked through them (a lookup queued last,
 * waited for), so that their notifications pile up.
 */
static void
first_done(void *arg, struct addrinfo *ai, int err)
{
	struct gaicb	 last, *list[1] = { &last };
	struct addrinfo	 hints;
	char		 host[32];
	int		 i;

	resolve_freeaddrinfo(ai);
	for (i = 0; i < NLOOKUPS; i++) {
		snprintf(host, sizeof(host), "10.%d.%d.%d", i >> 16,
		    (i >> 8) & 255, i & 255);
		if (resolve_start(host, "1", one_done, &answered) == NULL)
			failed++;
	}
	memset(&last, 0, sizeof(last));
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	last.ar_name = "10.255.255.255";
	last.ar_service = "1";
	last.ar_request = &hints;
	if (getaddrinfo_a(GAI_WAIT, list, 1, NULL) == 0 &&
	    last.ar_result != NULL)
		freeaddrinfo(last.ar_result);
}

static void
tick(long now)
{
	if (now > deadline)
		stop();
}

static void
test_many_at_once(void)
{
	deadline = clock_now_ms() + DEADLINE_MS;
	CU_ASSERT_PTR_NOT_NULL_FATAL(resolve_start("10.255.0.1", "1",
	    first_done, &answered));
	CU_ASSERT_EQUAL(loop_run(tick), 0);
	CU_ASSERT_EQUAL(failed, 0);
	CU_ASSERT_EQUAL(answered, NLOOKUPS);
}

int
suite_resolve(void)
{
	CU_pSuite	 s = CU_add_suite("resolve", setup, NULL);

	if (s == NULL ||
	    CU_add_test(s, "10000 lookups end together",
	    test_many_at_once) == NULL)
		return -1;
	return 0;
}
