/*
 * Unit tests: the PIN's locked memory (engine/pin.c) and the pinentry
 * client (engine/pinentry.c), against tests/pinentry-stub, a real
 * process speaking Assuan.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "p11agent/error.h"
#include "p11agent/token.h"
#include "tests.h"

/* nothing is trimmed or decoded twice */
#define PIN_ODD	"a%b c\nd\r\xc3\xbc%25 \n"

extern char	**environ;

static char	 stub[PATH_MAX], logpath[600];	/* realpath(3) writes PATH_MAX */

static const char *env_names[] = { "DISPLAY", "WAYLAND_DISPLAY", "GPG_TTY",
    "TERM", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LANG",
    "PINENTRY_STUB_MODE", "PINENTRY_STUB_PIN", "PINENTRY_STUB_SPLIT",
    "PINENTRY_STUB_FDS", "PINENTRY_STUB_LOG" };
static char	*env_saved[sizeof(env_names) / sizeof(env_names[0])];

static int
setup(void)
{
	const char	*top = getenv("top_srcdir");
	size_t		 i;

	for (i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
		if (getenv(env_names[i]) != NULL)
			env_saved[i] = strdup(getenv(env_names[i]));
	if (realpath(top ? top : ".", stub) == NULL)
		return -1;
	strncat(stub, "/tests/pinentry-stub", sizeof(stub) - strlen(stub) - 1);
	if (access(stub, X_OK) != 0 || test_dir_make() != 0)
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/stub.log", test_dir);
	return 0;
}

static int
teardown(void)
{
	size_t	 i;

	for (i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++) {
		if (env_saved[i] != NULL)
			setenv(env_names[i], env_saved[i], 1);
		else
			unsetenv(env_names[i]);
		free(env_saved[i]);
		env_saved[i] = NULL;
	}
	return test_dir_remove();
}

/* A fresh log, a display, no other screen variables, mode and PIN. */
static void
stub_env(const char *mode, const char *pin)
{
	unlink(logpath);
	setenv("PINENTRY_STUB_LOG", logpath, 1);
	setenv("PINENTRY_STUB_MODE", mode, 1);
	setenv("PINENTRY_STUB_PIN", pin, 1);
	unsetenv("PINENTRY_STUB_SPLIT");
	unsetenv("PINENTRY_STUB_FDS");
	setenv("DISPLAY", ":97", 1);
	unsetenv("WAYLAND_DISPLAY");
	unsetenv("GPG_TTY");
}

static const char *
stub_log(void)
{
	static char	 buf[16384];
	FILE		*fp;
	size_t		 n;

	if ((fp = fopen(logpath, "r")) == NULL)
		return "";
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* No child left behind: not running, not a zombie. */
static int
no_children(void)
{
	int	 st;

	return waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD;
}

static int
entry(struct pin_ask *a, struct pin **p, char *err, size_t errlen)
{
	*p = NULL;
	err[0] = '\0';
	return pin_ask("pinentry", a, p, err, errlen);
}

/* ---- locked memory */

/* The smaps entry of the mapping that holds addr: Locked and VmFlags. */
static int
smaps_locked(const void *addr, long *locked_kb, int *lo_flag)
{
	FILE		*fp;
	char		 line[512];
	uintptr_t	 a = (uintptr_t)addr;
	unsigned long	 lo, hi;
	int		 in = 0, found = 0;

	*locked_kb = -1;
	*lo_flag = 0;
	if ((fp = fopen("/proc/self/smaps", "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = a >= lo && a < hi;
			found |= in;
			continue;
		}
		if (!in)
			continue;
		if (strncmp(line, "Locked:", 7) == 0)
			*locked_kb = strtol(line + 7, NULL, 10);
		if (strncmp(line, "VmFlags:", 8) == 0)
			*lo_flag = strstr(line, " lo") != NULL;
	}
	fclose(fp);
	return found ? 0 : -1;
}

static void
test_locked(void)
{
	struct pin	*p = NULL;
	char		 err[512];
	long		 kb;
	int		 lo;

	CU_ASSERT_EQUAL(pin_memory_init(err, sizeof(err)), 0);
	setenv("P11AGENT_UNIT_LOCKED", "24680", 1);
	CU_ASSERT_EQUAL_FATAL(pin_read("env:P11AGENT_UNIT_LOCKED", &p, err,
	    sizeof(err)), 0);
	unsetenv("P11AGENT_UNIT_LOCKED");
	CU_ASSERT(CRYPTO_secure_allocated(p->value));
	CU_ASSERT(CRYPTO_secure_allocated(p));
	CU_ASSERT_EQUAL_FATAL(smaps_locked(p->value, &kb, &lo), 0);
	CU_ASSERT(kb > 0);
	CU_ASSERT(lo);
	pin_free(p);
}

/*
 * The unit-test binary started as "pin-nolock": RLIMIT_MEMLOCK 0 (and
 * as root, another uid, so that CAP_IPC_LOCK does not lift it); prints
 * what pin_memory_init and a PIN read said.
 */
int
pin_nolock_child(void)
{
	struct rlimit	 rl = { 0, 0 };
	struct pin	*p = NULL;
	char		 err[512] = "", err2[512] = "";
	int		 r, r2;

	if (setrlimit(RLIMIT_MEMLOCK, &rl) == -1)
		return 2;
	if (geteuid() == 0 && (setgid(65534) == -1 || setuid(65534) == -1))
		return 3;
	r = pin_memory_init(err, sizeof(err));
	setenv("P11AGENT_UNIT_NOLOCK", "1357", 1);
	r2 = pin_read("env:P11AGENT_UNIT_NOLOCK", &p, err2, sizeof(err2));
	printf("init %d: %s\nread %d: %s\n", r, err, r2, err2);
	pin_free(p);
	return 0;
}

static void
test_nolock(void)
{
	posix_spawn_file_actions_t	 fa;
	char				 self[4096], out[2048];
	char				*argv[] = { "pin-nolock", NULL };
	size_t				 n = 0;
	ssize_t				 k;
	pid_t				 pid;
	int				 p[2], st;

	CU_ASSERT_FATAL(realpath("/proc/self/exe", self) != NULL);
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	CU_ASSERT_FATAL(posix_spawn(&pid, self, &fa, NULL, argv,
	    environ) == 0);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	while (n < sizeof(out) - 1 &&
	    (k = read(p[0], out + n, sizeof(out) - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = '\0';
	close(p[0]);
	CU_ASSERT(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	    WEXITSTATUS(st) == 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "init -2: cannot lock memory for "
	    "PINs against swap (mlock: RLIMIT_MEMLOCK is 0 KiB"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "read -2: cannot lock memory"));
	CU_ASSERT_PTR_NULL(strstr(out, "1357"));
}

/* ---- pinentry */

static void
test_pin(void)
{
	struct pin_ask	 a = { "tok", "0123", 10, stub, NULL, NULL, NULL,
			    NULL };
	struct pin	*p;
	char		 err[512];
	const char	*log;
	int		 fd, split;

	/* a descriptor the helper has open must not reach pinentry */
	CU_ASSERT_FATAL((fd = open("/dev/null", O_RDONLY)) > 2);
	for (split = 0; split <= 3; split += 3) {
		stub_env("pin", PIN_ODD);
		setenv("PINENTRY_STUB_FDS", "1", 1);
		if (split)
			setenv("PINENTRY_STUB_SPLIT", "3", 1);
		CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
		CU_ASSERT_FATAL(p != NULL);
		CU_ASSERT_EQUAL(p->len, strlen(PIN_ODD));
		CU_ASSERT(memcmp(p->value, PIN_ODD, p->len) == 0);
		CU_ASSERT(CRYPTO_secure_allocated(p->value));
		pin_free(p);
		log = stub_log();
		CU_ASSERT_PTR_NOT_NULL(strstr(log, " FDS 0 1 2\n"));
		CU_ASSERT_PTR_NOT_NULL(strstr(log, " GETPIN\n"));
		CU_ASSERT_PTR_NOT_NULL(strstr(log, " BYE\n"));
		CU_ASSERT(no_children());
	}
	close(fd);
}

static void
test_texts(void)
{
	const char	*desc = "100% sure\nline two: Gr\xc3\xbc\xc3\x9f" "e %41";
	struct pin_ask	 a = { "tok", "0123", 7, stub, "Card \xe2\x9c\x93",
			    desc, "PIN%:", "Last try before the card locks" };
	struct pin	*p;
	char		 err[512], want[600], big[1400], *s, *e;
	const char	*log;
	size_t		 i;

	stub_env("pin", "unPe-7dM3");
	setenv("GPG_TTY", "/dev/pts/77", 1);
	setenv("TERM", "xterm-stub", 1);
	setenv("DISPLAY", ":77", 1);
	unsetenv("LC_ALL");
	setenv("LC_CTYPE", "C.UTF-8", 1);
	setenv("LC_MESSAGES", "C", 1);
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	pin_free(p);
	log = stub_log();
	snprintf(want, sizeof(want), " SETDESC %s\n", desc);
	CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " SETTITLE Card \xe2\x9c\x93\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " SETPROMPT PIN%:\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " SETERROR Last try before the "
	    "card locks\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " SETTIMEOUT 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " OPTION ttyname=/dev/pts/77\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " OPTION ttytype=xterm-stub\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " OPTION display=:77\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " OPTION lc-ctype=C.UTF-8\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, " OPTION lc-messages=C\n"));
	/* the order: options and texts, then GETPIN */
	CU_ASSERT(strstr(log, " SETDESC ") < strstr(log, " GETPIN"));

	/* a description too long for a line: cut between characters */
	stub_env("pin", "unPe-7dM3");
	for (i = 0; i + 3 < sizeof(big); i += 3)
		memcpy(big + i, i % 2 ? "\xc3\xbc%" : "%\xc3\xbc", 3);
	big[i] = '\0';
	a.description = big;
	a.error = NULL;
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	pin_free(p);
	log = stub_log();
	CU_ASSERT_PTR_NULL(strstr(log, "TOOLONG"));
	CU_ASSERT_PTR_NULL(strstr(log, "SETERROR"));
	CU_ASSERT_FATAL((s = strstr(log, " SETDESC ")) != NULL);
	s += 9;
	CU_ASSERT_FATAL((e = strstr(s, "\n")) != NULL);
	CU_ASSERT((size_t)(e - s) > 500 && (size_t)(e - s) < strlen(big));
	CU_ASSERT(strncmp(s, big, (size_t)(e - s)) == 0);
	CU_ASSERT(((unsigned char)big[e - s] & 0xc0) != 0x80);
	CU_ASSERT(no_children());
}

/* mode: the stub's answer to GETPIN; the result and err */
static int
answer(const char *mode, int timeout, char *err, size_t errlen)
{
	struct pin_ask	 a = { "tok", "0123", timeout, stub, NULL, NULL,
			    NULL, NULL };
	struct pin	*p;
	int		 r;

	stub_env(mode, "unMd-9wE6");
	r = entry(&a, &p, err, errlen);
	CU_ASSERT_PTR_NULL(p);
	pin_free(p);
	CU_ASSERT_PTR_NULL(strstr(err, "unMd-9wE6"));
	CU_ASSERT(no_children());
	return r;
}

static void
test_errors(void)
{
	char	 err[512];

	CU_ASSERT_EQUAL(answer("cancel", 5, err, sizeof(err)),
	    P11A_ERR_PIN_CANCELLED);
	CU_ASSERT_STRING_EQUAL(err, "the PIN dialog was cancelled");
	CU_ASSERT_PTR_NOT_NULL(strstr(stub_log(), " BYE\n"));
	CU_ASSERT_EQUAL(answer("timeout", 5, err, sizeof(err)),
	    P11A_ERR_TIMEOUT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "timed out"));
	/* the codes with another source, or none */
	CU_ASSERT_EQUAL(answer("err:99", 5, err, sizeof(err)),
	    P11A_ERR_PIN_CANCELLED);
	CU_ASSERT_EQUAL(answer("err:16777278", 5, err, sizeof(err)),
	    P11A_ERR_TIMEOUT);
	CU_ASSERT_EQUAL(answer("err:83886165", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "GETPIN failed: ERR 83886165 "
	    "Some error"));
	CU_ASSERT_EQUAL(answer("die", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "exited with status 3 before it "
	    "answered GETPIN"));
	CU_ASSERT_EQUAL(answer("nogreeting", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "exited with status 4 before it "
	    "answered the greeting"));
	CU_ASSERT_EQUAL(answer("garbage", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "protocol error: a line that is "
	    "not Assuan"));
	CU_ASSERT_PTR_NULL(strstr(err, "WHAT"));
	CU_ASSERT_EQUAL(answer("badescape", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad %-escape in answer to GETPIN"));
	CU_ASSERT_EQUAL(answer("longline", 5, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "longer than"));
}

static void
test_empty_inquire(void)
{
	struct pin_ask	 a = { "tok", "0123", 5, stub, NULL, NULL, NULL,
			    NULL };
	struct pin	*p;
	char		 err[512], file[700];

	stub_env("pin", "");
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no PIN entered"));
	/* INQUIRE is answered with CAN; the dialog goes on */
	stub_env("inquire", "unInq-3gH8");
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	CU_ASSERT(p != NULL && p->len == 10 && memcmp(p->value, "unInq-3gH8", 10) == 0);
	pin_free(p);
	CU_ASSERT_PTR_NOT_NULL(strstr(stub_log(), " CAN\n"));
	/* wait:FILE says so in the log, and answers once FILE is there */
	snprintf(file, sizeof(file), "wait:%s", test_write("go", "", 0600));
	stub_env(file, "unWt-5jN2");
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	CU_ASSERT(p != NULL && p->len == 9 && memcmp(p->value, "unWt-5jN2", 9) == 0);
	pin_free(p);
	CU_ASSERT_PTR_NOT_NULL(strstr(stub_log(), " GETPIN waiting\n"));
	CU_ASSERT(no_children());
}

static void
test_hang(void)
{
	char		 err[512];
	struct timespec	 t0, t1;
	long		 ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	CU_ASSERT_EQUAL(answer("hang", 1, err, sizeof(err)), P11A_ERR_TIMEOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) /
	    1000000;
	CU_ASSERT(ms >= 1000 && ms < 3000);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "did not answer GETPIN within 1 s"));
}

static void
test_missing(void)
{
	struct pin_ask	 a = { "tok", "0123", 5, "/nonexistent/pinentry-x",
			    NULL, NULL, NULL, NULL };
	struct pin	*p;
	char		 err[512], *old;

	stub_env("pin", "unPe-7dM3");
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "pinentry-program "
	    "/nonexistent/pinentry-x: No such file or directory"));
	/* the default: pinentry from PATH */
	a.program = NULL;
	old = strdup(getenv("PATH"));
	setenv("PATH", test_dir, 1);
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), P11A_ERR_PIN_SOURCE);
	setenv("PATH", old, 1);
	free(old);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no program 'pinentry' on PATH"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "pinentry-program = PATH"));
	/* no display, no terminal */
	a.program = stub;
	unsetenv("DISPLAY");
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no display and no terminal for "
	    "pinentry: set DISPLAY or WAYLAND_DISPLAY, or GPG_TTY for a "
	    "terminal pinentry, or choose another PIN source (pin = "
	    "file:PATH, "));
	CU_ASSERT_EQUAL(access(logpath, F_OK), -1);
	/* either is enough */
	setenv("WAYLAND_DISPLAY", "wayland-7", 1);
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	pin_free(p);
	unsetenv("WAYLAND_DISPLAY");
	setenv("GPG_TTY", "/dev/pts/7", 1);
	CU_ASSERT_EQUAL(entry(&a, &p, err, sizeof(err)), 0);
	pin_free(p);
	CU_ASSERT(no_children());
}

int
suite_pinentry(void)
{
	CU_pSuite	 s = CU_add_suite("pinentry", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "a PIN is in locked memory", test_locked) == NULL ||
	    CU_add_test(s, "no locked memory: no PIN", test_nolock) == NULL ||
	    CU_add_test(s, "pinentry: the PIN byte for byte", test_pin) == NULL ||
	    CU_add_test(s, "pinentry: texts and options", test_texts) == NULL ||
	    CU_add_test(s, "pinentry: errors", test_errors) == NULL ||
	    CU_add_test(s, "pinentry: empty PIN, INQUIRE",
	    test_empty_inquire) == NULL ||
	    CU_add_test(s, "pinentry: a hang is killed", test_hang) == NULL ||
	    CU_add_test(s, "pinentry: missing, no screen", test_missing) == NULL)
		return -1;
	return 0;
}
