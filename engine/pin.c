/*
 * p11agent: PIN sources.  Runs only in the token helper.
 */
#include "config.h"

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

#define PIN_MAX	256
#define ASK_PROGRAM	"systemd-ask-password"
#define ASK_NOPIN	ASK_PROGRAM " gave no PIN (cancelled or timed out)"

extern char	**environ;

void
pin_free(struct pin *p)
{
	if (p == NULL)
		return;
	if (p->value != NULL) {
		OPENSSL_cleanse(p->value, p->len);
		free(p->value);
	}
	OPENSSL_cleanse(p, sizeof(*p));
	free(p);
}

static int
pin_new(const char *s, size_t len, struct pin **out)
{
	struct pin	*p;

	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	if (len == 0)
		return P11A_ERR_PIN_SOURCE;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->value = malloc(len + 1)) == NULL) {
		free(p);
		return P11A_ERR_NOMEM;
	}
	memcpy(p->value, s, len);
	p->value[len] = '\0';
	p->len = len;
	*out = p;
	return 0;
}

static int
pin_from_file(const char *path, struct pin **out, char *err, size_t errlen)
{
	char		 buf[PIN_MAX + 2];
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
	n = read(fd, buf, sizeof(buf));
	if (n < 0 || n > PIN_MAX) {
		snprintf(err, errlen, "PIN file %s: %s", path,
		    n < 0 ? strerror(errno) : "longer than 256 bytes");
		goto out;
	}
	if ((r = pin_new(buf, (size_t)n, out)) == P11A_ERR_PIN_SOURCE)
		snprintf(err, errlen, "PIN file %s is empty", path);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return r;
}

/*
 * Reads the PIN named by source: "file:PATH" or "env:NAME" (pin_ask also
 * runs systemd-ask-password).  "none" gives *out = NULL and 0 (the token
 * needs no PIN or has a PIN pad).
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
		if ((r = pin_new(v, strlen(v), out)) != 0)
			snprintf(err, errlen, "PIN source %s: %s", source,
			    p11a_strerror(r));
		return r;
	}
	snprintf(err, errlen, "PIN source '%s' is not one of file:PATH, "
	    "env:NAME, " ASK_PROGRAM ", none", source);
	return P11A_ERR_PIN_SOURCE;
}

/* ---- systemd-ask-password, run by the helper */

static long
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The variables the program may need; never the helper's PIN variables. */
static int
ask_env_ok(const char *kv)
{
	static const char	*keep[] = { "PATH=", "HOME=", "USER=", "LOGNAME=",
	    "LANG=", "LC_", "TERM=", "XDG_RUNTIME_DIR=", "SYSTEMD_",
	    "DBUS_SESSION_BUS_ADDRESS=" };
	size_t			 i;

	for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		if (strncmp(kv, keep[i], strlen(keep[i])) == 0)
			return 1;
	return 0;
}

static char **
ask_envp(void)
{
	char	**envp;
	size_t	  i, n = 0;

	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((envp = calloc(n + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (i = n = 0; environ != NULL && environ[i] != NULL; i++)
		if (ask_env_ok(environ[i]))
			envp[n++] = environ[i];
	return envp;
}

/* Starts the program with stdin /dev/null, stdout the pipe *rfd. */
static int
ask_spawn(const struct pin_ask *ask, int timeout, pid_t *pidp, int *rfdp,
    char *err, size_t errlen)
{
	posix_spawn_file_actions_t	 fa;
	char				 prompt[128], tmo[32], id[64];
	char				*argv[] = { ASK_PROGRAM, id, tmo, prompt,
					    NULL };
	char				**envp = NULL;
	int				 p[2] = { -1, -1 }, e = ENOMEM;

	snprintf(prompt, sizeof(prompt), "PIN for token '%s' (serial %s):",
	    ask->label, ask->serial);
	snprintf(tmo, sizeof(tmo), "--timeout=%d", timeout);
	snprintf(id, sizeof(id), "--id=p11agent:%s", ask->serial);
	if (pipe2(p, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return P11A_ERR_SYSTEM;
	}
	if ((envp = ask_envp()) != NULL &&
	    posix_spawn_file_actions_init(&fa) == 0) {
		if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
		    O_RDONLY, 0)) == 0 &&
		    (e = posix_spawn_file_actions_adddup2(&fa, p[1], 1)) == 0 &&
		    (e = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) == 0)
			e = posix_spawnp(pidp, ASK_PROGRAM, &fa, NULL, argv,
			    envp);
		posix_spawn_file_actions_destroy(&fa);
	}
	free(envp);
	close(p[1]);
	if (e != 0) {
		close(p[0]);
		if (e == ENOENT)
			snprintf(err, errlen, "pin = " ASK_PROGRAM ": the "
			    "program is not on PATH; install systemd or choose "
			    "another pin source (file:, env:, fd:, none)");
		else
			snprintf(err, errlen, "cannot run " ASK_PROGRAM ": %s",
			    strerror(e));
		return P11A_ERR_PIN_SOURCE;
	}
	*rfdp = p[0];
	return 0;
}

/* Reads up to a newline, end of file, a full buffer or the deadline. */
static int
ask_read(int fd, char *buf, size_t bufsz, size_t *lenp, long deadline)
{
	struct pollfd	 pfd = { fd, POLLIN, 0 };
	ssize_t		 n;
	long		 left;

	*lenp = 0;
	for (;;) {
		if ((left = deadline - now_ms()) <= 0)
			return -1;
		if (poll(&pfd, 1, (int)left) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (pfd.revents == 0)
			continue;
		if ((n = read(fd, buf + *lenp, bufsz - *lenp)) == -1 &&
		    errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : -1;
		*lenp += (size_t)n;
		if (*lenp == bufsz)
			return 0;	/* too long: the caller says so */
		if (memchr(buf, '\n', *lenp) != NULL)
			return 0;
	}
}

/* Waits for the child until the deadline, then kills it; its status. */
static int
ask_wait(pid_t pid, long deadline, int kill_now)
{
	struct pollfd	 pfd;
	long		 left;
	int		 st = -1, pfdn;

	if (!kill_now &&
	    (pfdn = (int)syscall(SYS_pidfd_open, pid, 0)) != -1) {
		pfd.fd = pfdn;
		pfd.events = POLLIN;
		while ((left = deadline - now_ms()) > 0 &&
		    poll(&pfd, 1, (int)left) == -1 && errno == EINTR)
			;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			close(pfdn);
			return st;
		}
		close(pfdn);
	} else if (!kill_now) {
		/* no pidfd (an old kernel, valgrind): look every 20 ms */
		while (now_ms() < deadline) {
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

static int
pin_from_ask(const struct pin_ask *ask, struct pin **out, char *err,
    size_t errlen)
{
	char	 buf[PIN_MAX + 2], *nl;
	size_t	 len = 0;
	long	 deadline;
	pid_t	 pid;
	int	 fd = -1, timeout, rr, st, r;

	timeout = ask->timeout > 0 ? ask->timeout : PIN_ASK_TIMEOUT;
	if ((r = ask_spawn(ask, timeout, &pid, &fd, err, errlen)) != 0)
		return r;
	/* a moment beyond its own timeout, for it to say so */
	deadline = now_ms() + (long)timeout * 1000 + 2000;
	rr = ask_read(fd, buf, sizeof(buf), &len, deadline);
	close(fd);
	st = ask_wait(pid, deadline, rr != 0 || len == sizeof(buf));
	r = P11A_ERR_PIN_SOURCE;
	if (len == sizeof(buf)) {
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
	if ((r = pin_new(buf, len, out)) == P11A_ERR_PIN_SOURCE)
		snprintf(err, errlen, ASK_NOPIN);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

int
pin_ask(const char *source, const struct pin_ask *ask, struct pin **out,
    char *err, size_t errlen)
{
	if (source != NULL && strcmp(source, ASK_PROGRAM) == 0) {
		*out = NULL;
		return pin_from_ask(ask, out, err, errlen);
	}
	return pin_read(source, out, err, errlen);
}
