/*
 * Unit tests: starting, restarting and stopping token helpers
 * (engine/client.c).  The "helper" is this program again: run as
 * p11agent-helper (argv[0]), spawn_child() reports what it was given.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "p11agent/clock.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "tests.h"

#define REPORT_MAX	1024

static char	 self[PATH_MAX];

/* ---- the child side */

static void
child_check(FILE *fp)
{
	struct stat		 a, b, null;
	struct sigaction	 sa;
	sigset_t		 mask;
	const char		*v;
	int			 fd, type = 0, sigs[] = { SIGINT, SIGTERM,
				    SIGHUP, SIGPIPE }, i;
	socklen_t		 len = sizeof(type);

	if (stat("/dev/null", &null) == -1 || fstat(0, &a) == -1 ||
	    a.st_rdev != null.st_rdev)
		fprintf(fp, "stdin is not /dev/null\n");
	if (fstat(1, &a) == -1 || fstat(2, &b) == -1 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		fprintf(fp, "stdout is not stderr\n");
	if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
	    type != SOCK_SEQPACKET)
		fprintf(fp, "fd 3 is not the channel\n");
	for (fd = 4; fd < 1024; fd++)
		if (fd != fileno(fp) && fcntl(fd, F_GETFD) != -1)
			fprintf(fp, "fd %d inherited\n", fd);
	if (sigprocmask(SIG_SETMASK, NULL, &mask) == -1 ||
	    sigismember(&mask, SIGTERM) || sigismember(&mask, SIGINT))
		fprintf(fp, "signals blocked\n");
	for (i = 0; i < (int)(sizeof(sigs) / sizeof(sigs[0])); i++)
		if (sigaction(sigs[i], NULL, &sa) == -1 ||
		    sa.sa_handler != SIG_DFL)
			fprintf(fp, "signal %d not default\n", sigs[i]);
	if ((v = getenv("P11UNIT_PIN")) == NULL || strcmp(v, "from-opts") != 0)
		fprintf(fp, "P11UNIT_PIN=%s\n", v ? v : "(unset)");
	if ((v = getenv("P11UNIT_KEEP")) == NULL || strcmp(v, "1") != 0)
		fprintf(fp, "P11UNIT_KEEP missing\n");
}

/* Run as the helper: report, then wait for EOF on the channel. */
int
spawn_child(void)
{
	const char	*report = getenv("P11UNIT_REPORT");
	const char	*mode = getenv("P11UNIT_MODE");
	FILE		*fp;
	char		 c;

	if (mode != NULL && strcmp(mode, "ignore-eof") == 0) {
		for (;;)
			pause();	/* until killed */
	}
	if (report == NULL || (fp = fopen(report, "w")) == NULL)
		_exit(2);
	child_check(fp);
	fprintf(fp, "done\n");
	fclose(fp);
	while (read(3, &c, 1) > 0)
		;
	_exit(0);
}

/* ---- the agent side */

static int
setup(void)
{
	sigset_t	 set;

	if (realpath("/proc/self/exe", self) == NULL || test_dir_make() != 0)
		return -1;
	/* as the agent does: its signals blocked, SIGPIPE ignored */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	setenv("P11UNIT_PIN", "from-environ", 1);
	setenv("P11UNIT_KEEP", "1", 1);
	return 0;
}

static int
teardown(void)
{
	unsetenv("P11AGENT_HELPER");
	unsetenv("P11UNIT_MODE");
	unsetenv("P11UNIT_REPORT");
	return test_dir_remove();
}

static const char *
report_path(void)
{
	static char	 path[600];

	snprintf(path, sizeof(path), "%s/report", test_dir);
	return path;
}

static const char *
read_report(void)
{
	static char	 buf[REPORT_MAX];
	FILE		*fp;
	size_t		 n;

	if ((fp = fopen(report_path(), "r")) == NULL)
		return "no report";
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	unlink(report_path());
	return buf;
}

/*
 * Under valgrind (its preload names it) posix_spawn's vfork is a plain
 * fork, so an exec failure shows only later, as a helper that exits, and
 * valgrind 3.19 knows no pidfd_open.
 */
static int
under_valgrind(void)
{
	const char	*p = getenv("LD_PRELOAD");

	return p != NULL && strstr(p, "vgpreload") != NULL;
}

static int
start(struct helper **h, char *err, size_t errlen)
{
	static char *const	 env[] = { "P11UNIT_PIN=from-opts", NULL };
	struct helper_opts	 o;

	memset(&o, 0, sizeof(o));
	o.env = env;
	return helper_start(&o, h, err, errlen);
}

/* The helper gets the channel on fd 3 and nothing else, a clean signal
 * state and its own environment; a restart gives the same. */
static void
test_child_state(void)
{
	struct helper	*h = NULL;
	char		 err[1024];
	pid_t		 old;

	setenv("P11AGENT_HELPER", self, 1);
	setenv("P11UNIT_REPORT", report_path(), 1);
	CU_ASSERT_EQUAL_FATAL(start(&h, err, sizeof(err)), 0);
	old = helper_pid(h);
	CU_ASSERT(old > 0);
	CU_ASSERT(helper_pidfd(h) >= 0 || under_valgrind());
	CU_ASSERT_EQUAL(helper_restart(h), 0);
	CU_ASSERT(helper_pid(h) != old);
	helper_free(h);		/* EOF: it exits after its report */
	CU_ASSERT_STRING_EQUAL(read_report(), "done\n");
}

/* socketpair() may hand out fd 3 itself (here 0 and 3 are free). */
static void
test_channel_was_fd3(void)
{
	struct helper	*h = NULL;
	char		 err[1024];
	int		 save0, save3 = -1;

	setenv("P11AGENT_HELPER", self, 1);
	setenv("P11UNIT_REPORT", report_path(), 1);
	if (fcntl(3, F_GETFD) != -1)
		save3 = fcntl(3, F_DUPFD_CLOEXEC, 10);
	save0 = fcntl(0, F_DUPFD_CLOEXEC, 10);
	CU_ASSERT_FATAL(save0 != -1);
	close(0);
	close(3);
	CU_ASSERT_EQUAL(start(&h, err, sizeof(err)), 0);
	if (h != NULL) {
		CU_ASSERT_EQUAL(helper_fd(h), 0);
		helper_free(h);	/* closes fd 0 */
	}
	dup2(save0, 0);
	close(save0);
	if (save3 != -1) {
		dup2(save3, 3);
		close(save3);
	}
	CU_ASSERT_STRING_EQUAL(read_report(), "done\n");
}

/* An exec failure is an error of helper_start and helper_restart. */
static void
test_exec_failure(void)
{
	struct helper	*h = NULL;
	char		 err[1024], link[600];

	if (under_valgrind())
		return;
	setenv("P11AGENT_HELPER", "/nonexistent/p11agent-helper", 1);
	CU_ASSERT_EQUAL(start(&h, err, sizeof(err)), P11A_ERR_HELPER);
	CU_ASSERT_PTR_NULL(h);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot run the token helper "
	    "/nonexistent/p11agent-helper: No such file or directory; set "
	    "P11AGENT_HELPER"));

	snprintf(link, sizeof(link), "%s/helper", test_dir);
	CU_ASSERT_EQUAL_FATAL(symlink(self, link), 0);
	setenv("P11AGENT_HELPER", link, 1);
	setenv("P11UNIT_MODE", "ignore-eof", 1);
	CU_ASSERT_EQUAL_FATAL(start(&h, err, sizeof(err)), 0);
	unlink(link);
	CU_ASSERT_EQUAL(helper_restart(h), P11A_ERR_HELPER);
	CU_ASSERT_PTR_NOT_NULL(strstr(helper_error(h), "cannot run the "
	    "token helper"));
	CU_ASSERT_PTR_NOT_NULL(strstr(helper_error(h), link));
	CU_ASSERT_EQUAL(helper_pid(h), -1);
	helper_free(h);		/* the replaced one was killed: reaped */
	unsetenv("P11UNIT_MODE");
}

/* Helpers that ignore EOF: all stopped in about 2.5 s, not 2.5 s each. */
static void
test_stop_all_bounded(void)
{
	struct helper	*h[3] = { NULL, NULL, NULL };
	pid_t		 pid[3];
	char		 err[1024];
	long		 t0, ms;
	int		 i;

	setenv("P11AGENT_HELPER", self, 1);
	setenv("P11UNIT_MODE", "ignore-eof", 1);
	for (i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL_FATAL(start(&h[i], err, sizeof(err)), 0);
		pid[i] = helper_pid(h[i]);
	}
	t0 = clock_now_ms();
	helper_stop_all(h, 3);
	ms = clock_now_ms() - t0;
	CU_ASSERT(ms >= 2000);
	CU_ASSERT(ms < 4000);
	for (i = 0; i < 3; i++) {
		/* killed and reaped: the pid is no process of ours now */
		CU_ASSERT(kill(pid[i], 0) == -1 && errno == ESRCH);
		t0 = clock_now_ms();
		helper_free(h[i]);	/* stopped already: no second wait */
		CU_ASSERT(clock_now_ms() - t0 < 500);
	}
	unsetenv("P11UNIT_MODE");
}

int
suite_spawn(void)
{
	CU_pSuite	 s = CU_add_suite("spawn", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "what the helper gets", test_child_state) == NULL ||
	    CU_add_test(s, "socketpair gave fd 3", test_channel_was_fd3) ==
	    NULL ||
	    CU_add_test(s, "exec failure", test_exec_failure) == NULL ||
	    CU_add_test(s, "stopping is bounded", test_stop_all_bounded) ==
	    NULL)
		return -1;
	return 0;
}
