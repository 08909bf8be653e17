/*
 * p11agent: PIN sources.  Runs only in the token helper.
 *
 * Every byte that may be a PIN (the PIN itself, and each buffer a source
 * is read into) lives in OpenSSL's secure heap: pages locked against
 * swap with mlock, left out of core dumps, wiped when freed.  If the
 * pages cannot be locked, no PIN is held at all.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "p11agent/error.h"
#include "p11agent/token.h"
#include "pinentry.h"

#define ASK_PROGRAM	"systemd-ask-password"
#define ASK_NOPIN	ASK_PROGRAM " gave no PIN (cancelled or timed out)"
/* the secure heap: a few PINs and their read buffers (and what OpenSSL
 * itself keeps there in this process, such as its DRBG seed pools) */
#define PIN_ARENA	(32 * 1024)

extern char	**environ;

static int	 pin_mem_state;		/* 0 not tried, 1 locked, -1 not */
static char	 pin_mem_err[320];

/* ---- locked memory */

static int
pin_mem_setup(void)
{
	struct rlimit	 rl;
	int		 r;

	if (CRYPTO_secure_malloc_initialized())
		return 1;	/* someone in this process set it up */
	if ((r = CRYPTO_secure_malloc_init(PIN_ARENA, 16)) == 1)
		return 1;
	if (r == 2)
		CRYPTO_secure_malloc_done();	/* there, but not locked */
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		snprintf(pin_mem_err, sizeof(pin_mem_err), "cannot lock memory "
		    "for PINs against swap (mlock: RLIMIT_MEMLOCK is %llu "
		    "KiB, %d KiB needed); p11agent keeps no PIN in swappable "
		    "memory, so no PIN can be used: raise the limit (ulimit "
		    "-l, LimitMEMLOCK= in a systemd unit) or use a PIN pad "
		    "(pin = none)", (unsigned long long)rl.rlim_cur / 1024,
		    PIN_ARENA / 1024);
	else
		snprintf(pin_mem_err, sizeof(pin_mem_err), "cannot set up "
		    "memory locked against swap for PINs (OpenSSL's secure "
		    "heap); p11agent keeps no PIN in swappable memory, so no "
		    "PIN can be used");
	return -1;
}

/*
 * Sets up the locked memory once: the helper calls it at start to say
 * at once when it cannot; the first PIN would otherwise.
 */
int
pin_memory_init(char *err, size_t errlen)
{
	if (pin_mem_state == 0)
		pin_mem_state = pin_mem_setup();
	if (pin_mem_state < 0) {
		snprintf(err, errlen, "%s", pin_mem_err);
		return P11A_ERR_SYSTEM;
	}
	return 0;
}

int
pin_buf_new(size_t n, char **out, char *err, size_t errlen)
{
	int	 r;

	if ((r = pin_memory_init(err, errlen)) != 0)
		return r;
	if ((*out = OPENSSL_secure_zalloc(n)) == NULL) {
		snprintf(err, errlen, "out of locked memory for a PIN");
		return P11A_ERR_NOMEM;
	}
	return 0;
}

void
pin_buf_free(char *b, size_t n)
{
	if (b != NULL)
		OPENSSL_secure_clear_free(b, n);
}

void
pin_free(struct pin *p)
{
	if (p == NULL)
		return;
	pin_buf_free(p->value, p->len + 1);
	OPENSSL_secure_clear_free(p, sizeof(*p));
}

int
pin_new(const char *s, size_t len, struct pin **out, char *err,
    size_t errlen)
{
	struct pin	*p = NULL;
	char		*v = NULL;
	int		 r;

	if (len == 0)
		return P11A_ERR_PIN_SOURCE;
	if ((r = pin_buf_new(sizeof(*p), (char **)&p, err, errlen)) != 0 ||
	    (r = pin_buf_new(len + 1, &v, err, errlen)) != 0) {
		pin_buf_free((char *)p, sizeof(*p));
		return r;
	}
	memcpy(v, s, len);
	p->value = v;
	p->len = len;
	*out = p;
	return 0;
}

/* Without the trailing newlines and carriage returns of a file or line. */
static size_t
pin_trim(const char *s, size_t len)
{
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	return len;
}

static int
pin_from_file(const char *path, struct pin **out, char *err, size_t errlen)
{
	char		*buf = NULL;
	struct stat	 st;
	ssize_t		 n;
	int		 fd, r = P11A_ERR_PIN_SOURCE;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "PIN file %s: %s", path, strerror(errno));
		return P11A_ERR_PIN_SOURCE;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "PIN file %s: not a regular file", path);
		goto out;
	}
	if (st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "PIN file %s: mode %03o owner %u; it must "
		    "be owned by uid %u and not readable by others "
		    "(chmod 600 %s)", path, (unsigned)(st.st_mode & 0777),
		    (unsigned)st.st_uid, (unsigned)getuid(), path);
		r = P11A_ERR_PERM;
		goto out;
	}
	if ((r = pin_buf_new(PIN_MAX + 2, &buf, err, errlen)) != 0)
		goto out;
	r = P11A_ERR_PIN_SOURCE;
	n = read(fd, buf, PIN_MAX + 2);
	if (n < 0 || n > PIN_MAX) {
		snprintf(err, errlen, "PIN file %s: %s", path,
		    n < 0 ? strerror(errno) : "longer than 256 bytes");
		goto out;
	}
	if ((r = pin_new(buf, pin_trim(buf, (size_t)n), out, err, errlen)) ==
	    P11A_ERR_PIN_SOURCE)
		snprintf(err, errlen, "PIN file %s is empty", path);
out:
	pin_buf_free(buf, PIN_MAX + 2);
	close(fd);
	return r;
}

/*
 * Reads the PIN named by source: "file:PATH" or "env:NAME" (pin_ask also
 * runs systemd-ask-password and pinentry).  "none" gives *out = NULL and
 * 0 (the token needs no PIN or has a PIN pad).
 */
int
pin_read(const char *source, struct pin **out, char *err, size_t errlen)
{
	const char	*v;
	int		 r;

	*out = NULL;
	if (source == NULL || strcmp(source, "none") == 0)
		return 0;
	if (strncmp(source, "file:", 5) == 0)
		return pin_from_file(source + 5, out, err, errlen);
	if (strncmp(source, "env:", 4) == 0) {
		if ((v = getenv(source + 4)) == NULL || *v == '\0') {
			snprintf(err, errlen, "PIN source %s: the environment "
			    "variable is not set", source);
			return P11A_ERR_PIN_SOURCE;
		}
		if (strlen(v) > PIN_MAX) {
			snprintf(err, errlen, "PIN source %s: longer than 256 "
			    "bytes", source);
			return P11A_ERR_PIN_SOURCE;
		}
		if ((r = pin_new(v, pin_trim(v, strlen(v)), out, err,
		    errlen)) == P11A_ERR_PIN_SOURCE)
			snprintf(err, errlen, "PIN source %s: %s", source,
			    p11a_strerror(r));
		return r;
	}
	/* not echoed: it may be the PIN itself */
	snprintf(err, errlen, "the PIN source is not one of file:PATH, "
	    "env:NAME, pinentry, " ASK_PROGRAM ", none (the value is not "
	    "shown: it may be the PIN)");
	return P11A_ERR_PIN_SOURCE;
}

/* ---- the programs that ask: systemd-ask-password and pinentry */

long
pin_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The variables such a program may need (a display, a terminal, a
 * locale, its session bus; PINENTRY_USER_DATA and the like); never the
 * helper's PIN variables.
 */
/* The variables named by env: PIN sources: never passed on. */
#define MAX_HIDDEN	64
static char	*hidden[MAX_HIDDEN];
static int	 nhidden;

int
pin_env_hide(const char *name)
{
	int	 i;

	for (i = 0; i < nhidden; i++)
		if (strcmp(hidden[i], name) == 0)
			return 0;
	if (nhidden == MAX_HIDDEN || (hidden[nhidden] = strdup(name)) == NULL)
		return P11A_ERR_NOMEM;
	nhidden++;
	return 0;
}

static int
env_hidden(const char *kv)
{
	size_t	 len;
	int	 i;

	for (i = 0; i < nhidden; i++) {
		len = strlen(hidden[i]);
		if (strncmp(kv, hidden[i], len) == 0 && kv[len] == '=')
			return 1;
	}
	return 0;
}

static int
child_env_ok(const char *kv)
{
	static const char	*keep[] = { "PATH=", "HOME=", "USER=", "LOGNAME=",
	    "LANG=", "LC_", "TERM=", "XDG_", "SYSTEMD_",
	    "DBUS_SESSION_BUS_ADDRESS=", "DISPLAY=", "WAYLAND_DISPLAY=",
	    "XAUTHORITY=", "GPG_TTY=", "PINENTRY_" };
	size_t			 i;

	if (env_hidden(kv))
		return 0;
	for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		if (strncmp(kv, keep[i], strlen(keep[i])) == 0)
			return 1;
	return 0;
}

static char **
child_envp(void)
{
	char	**envp;
	size_t	  i, n = 0;

	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((envp = calloc(n + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (i = n = 0; environ != NULL && environ[i] != NULL; i++)
		if (child_env_ok(environ[i]))
			envp[n++] = environ[i];
	return envp;
}

static int
child_exec_ok(const char *path)
{
	struct stat	 st;

	if (stat(path, &st) == -1)
		return errno;
	if (!S_ISREG(st.st_mode) || access(path, X_OK) == -1)
		return EACCES;
	return 0;
}

/*
 * Looked up here, not by posix_spawnp: under valgrind posix_spawn is a
 * fork and a missing program would show only as a child that exits.
 */
int
pin_child_find(const char *prog, char *path, size_t pathsz)
{
	const char	*dirs, *p, *end;
	size_t		 n;
	int		 e = ENOENT;

	if (strchr(prog, '/') != NULL) {
		if (strlen(prog) >= pathsz)
			return ENAMETOOLONG;
		snprintf(path, pathsz, "%s", prog);
		return child_exec_ok(path);
	}
	if ((dirs = getenv("PATH")) == NULL)
		dirs = "/usr/local/bin:/usr/bin:/bin";
	for (p = dirs; ; p = end + 1) {
		if ((end = strchr(p, ':')) == NULL)
			end = p + strlen(p);
		n = (size_t)(end - p);
		if ((size_t)snprintf(path, pathsz, "%.*s%s%s", (int)n, p,
		    n > 0 ? "/" : "", prog) < pathsz &&
		    (e = child_exec_ok(path)) == 0)
			return 0;
		if (*end == '\0')
			break;
	}
	return e == EACCES ? EACCES : ENOENT;
}

int
pin_child_spawn(const char *path, char *const argv[], int fd0, int fd1,
    pid_t *pidp)
{
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 sa;
	sigset_t			 none, all;
	char				**envp;
	int				 e = ENOMEM;

	sigemptyset(&none);
	sigfillset(&all);
	if ((envp = child_envp()) == NULL)
		return ENOMEM;
	if (posix_spawn_file_actions_init(&fa) != 0)
		goto out_env;
	if ((e = posix_spawnattr_init(&sa)) != 0)
		goto out_fa;
	if ((e = fd0 == -1 ? posix_spawn_file_actions_addopen(&fa, 0,
	    "/dev/null", O_RDONLY, 0) : posix_spawn_file_actions_adddup2(&fa,
	    fd0, 0)) == 0 &&
	    (e = posix_spawn_file_actions_adddup2(&fa, fd1, 1)) == 0 &&
	    (e = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) == 0 &&
	    (e = posix_spawnattr_setsigmask(&sa, &none)) == 0 &&
	    (e = posix_spawnattr_setsigdefault(&sa, &all)) == 0 &&
	    (e = posix_spawnattr_setflags(&sa, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF)) == 0)
		e = posix_spawn(pidp, path, &fa, &sa, argv, envp);
	posix_spawnattr_destroy(&sa);
out_fa:
	posix_spawn_file_actions_destroy(&fa);
out_env:
	free(envp);
	return e;
}

int
pin_child_read(int fd, char *buf, size_t bufsz, size_t *lenp, long deadline)
{
	struct pollfd	 pfd = { fd, POLLIN, 0 };
	ssize_t		 n;
	long		 left;

	while (*lenp < bufsz && memchr(buf, '\n', *lenp) == NULL) {
		if ((left = deadline - pin_now_ms()) <= 0)
			return P11A_ERR_TIMEOUT;
		if (poll(&pfd, 1, (int)left) == -1) {
			if (errno == EINTR)
				continue;
			return P11A_ERR_SYSTEM;
		}
		if (pfd.revents == 0)
			continue;
		if ((n = read(fd, buf + *lenp, bufsz - *lenp)) == -1) {
			if (errno == EINTR)
				continue;
			return errno == ECONNRESET ? 0 : P11A_ERR_SYSTEM;
		}
		if (n == 0)
			break;
		*lenp += (size_t)n;
	}
	return 0;
}

int
pin_child_wait(pid_t pid, long deadline, int kill_now)
{
	struct pollfd	 pfd;
	long		 left;
	int		 st = -1, pfdn;

	if (!kill_now &&
	    (pfdn = (int)syscall(SYS_pidfd_open, pid, 0)) != -1) {
		pfd.fd = pfdn;
		pfd.events = POLLIN;
		while ((left = deadline - pin_now_ms()) > 0 &&
		    poll(&pfd, 1, (int)left) == -1 && errno == EINTR)
			;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			close(pfdn);
			return st;
		}
		close(pfdn);
	} else if (!kill_now) {
		/* no pidfd (an old kernel, valgrind): look every 20 ms */
		while (pin_now_ms() < deadline) {
			if (waitpid(pid, &st, WNOHANG) == pid)
				return st;
			poll(NULL, 0, 20);
		}
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
		;
	return -1;
}

/* Starts systemd-ask-password with stdout the pipe *rfdp. */
static int
ask_spawn(const struct pin_ask *ask, int timeout, pid_t *pidp, int *rfdp,
    char *err, size_t errlen)
{
	char		 prompt[128], tmo[32], id[64], path[4096];
	char		*argv[] = { ASK_PROGRAM, id, tmo, prompt, NULL };
	int		 p[2] = { -1, -1 }, e;

	snprintf(prompt, sizeof(prompt), "PIN for token '%s' (serial %s):",
	    ask->label, ask->serial);
	snprintf(tmo, sizeof(tmo), "--timeout=%d", timeout);
	snprintf(id, sizeof(id), "--id=p11agent:%s", ask->serial);
	if ((e = pin_child_find(ASK_PROGRAM, path, sizeof(path))) != 0) {
		snprintf(err, errlen, "pin = " ASK_PROGRAM ": the program is "
		    "not on PATH; install systemd or choose another pin source "
		    "(pinentry, file:, env:, fd:, none)");
		return P11A_ERR_PIN_SOURCE;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return P11A_ERR_SYSTEM;
	}
	e = pin_child_spawn(path, argv, -1, p[1], pidp);
	close(p[1]);
	if (e != 0) {
		close(p[0]);
		snprintf(err, errlen, "cannot run %s: %s", path, strerror(e));
		return P11A_ERR_PIN_SOURCE;
	}
	*rfdp = p[0];
	return 0;
}

static int
pin_from_ask(const struct pin_ask *ask, struct pin **out, char *err,
    size_t errlen)
{
	char	*buf = NULL, *nl;
	size_t	 len = 0;
	long	 deadline;
	pid_t	 pid;
	int	 fd = -1, timeout, rr, st, r;

	timeout = ask->timeout > 0 ? ask->timeout : PIN_ASK_TIMEOUT;
	if ((r = pin_buf_new(PIN_MAX + 2, &buf, err, errlen)) != 0)
		return r;
	if ((r = ask_spawn(ask, timeout, &pid, &fd, err, errlen)) != 0)
		goto out;
	/* a moment beyond its own timeout, for it to say so */
	deadline = pin_now_ms() + (long)timeout * 1000 + 2000;
	rr = pin_child_read(fd, buf, PIN_MAX + 2, &len, deadline);
	close(fd);
	st = pin_child_wait(pid, deadline, rr != 0 || len == PIN_MAX + 2);
	r = P11A_ERR_PIN_SOURCE;
	if (len == PIN_MAX + 2) {
		snprintf(err, errlen, ASK_PROGRAM " gave a PIN longer than "
		    "256 bytes");
		goto out;
	}
	if ((nl = memchr(buf, '\n', len)) != NULL)
		len = (size_t)(nl - buf);
	if (rr != 0 || st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
	    len == 0) {
		snprintf(err, errlen, ASK_NOPIN);
		goto out;
	}
	if ((r = pin_new(buf, pin_trim(buf, len), out, err, errlen)) ==
	    P11A_ERR_PIN_SOURCE)
		snprintf(err, errlen, ASK_NOPIN);
out:
	pin_buf_free(buf, PIN_MAX + 2);
	return r;
}

int
pin_ask(const char *source, const struct pin_ask *ask, struct pin **out,
    char *err, size_t errlen)
{
	*out = NULL;
	if (source != NULL && strcmp(source, ASK_PROGRAM) == 0)
		return pin_from_ask(ask, out, err, errlen);
	if (source != NULL && strcmp(source, "pinentry") == 0)
		return pin_from_pinentry(ask, out, err, errlen);
	return pin_read(source, out, err, errlen);
}
