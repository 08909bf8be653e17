/*
 * p11agent: the agent's side of the wire to a token helper.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "p11agent/clock.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

#ifndef P11AGENT_HELPER_PATH
#define P11AGENT_HELPER_PATH	"/usr/libexec/p11agent/p11agent-helper"
#endif
#ifndef P11AGENT_BINDIR
#define P11AGENT_BINDIR		"/usr/bin"
#endif
#define HELPER_NAME	"p11agent-helper"
#define MAX_PENDING	256
#define EXIT_WAIT_MS	2000	/* for helpers to finalise their modules */
#define KILL_WAIT_MS	500	/* for killed helpers to go */
#define NOPIDFD_POLL_MS	20	/* re-check a child we have no pidfd for */
#define MAX_CANDIDATES	3
#define BUSY_MAX_MS	(10 * 60 * 1000)	/* a dialog's longest wait */

extern char	**environ;

/*
 * A helper process: reaped without ever blocking (waitpid WNOHANG), when
 * its pidfd says it has exited or when the agent's tick comes by.
 */
struct child {
	pid_t			 pid;		/* -1: none, or reaped */
	int			 pidfd;		/* readable once it exits */
	struct child		*next;
};

/*
 * A request in flight.  The list is in sending order, which is the order
 * the helper serves them in; a request past its deadline has had its
 * callback (cb is then NULL) but stays until the helper answers it, so
 * the agent knows what the helper is busy with.
 */
struct helper_req {
	uint32_t		 id;
	uint32_t		 type;
	long			 sent;
	int			 timeout_ms;
	helper_cb		 cb;
	void			*arg;
	struct helper_req	*next;
};

struct helper {
	char			*module;	/* NULL: p11-kit's registry */
	char			*path;		/* the helper program */
	int			 path_from_env;	/* P11AGENT_HELPER gave it */
	char			**argv;		/* the helper's command line */
	char			**env;		/* extra environment */
	struct child		 proc;		/* the current process */
	struct child		*old;		/* replaced ones, killed */
	int			 fd;
	int			 stopped;	/* by helper_stop_all */
	uint32_t		 next_id;
	struct helper_req	*pending;	/* oldest first */
	struct helper_req	**tail;
	int			 npending;
	long			 last_reply;
	long			 busy_until;	/* a dialog may be open */
	uint32_t		 busy_id;	/* for this request */
	helper_event_cb		 ev_cb;		/* PROTO_EVENT messages */
	void			*ev_arg;
	struct helper_sign_stats sign;		/* asynchronous signatures */
	char			 err[1024];
};

/* ---- which program */

/* dir/p11agent-helper into buf; 0, or -1 if it does not fit. */
static int
beside(char *buf, size_t len, const char *dir)
{
	int	 n = snprintf(buf, len, "%s/%s", dir, HELPER_NAME);

	return n > 0 && (size_t)n < len ? 0 : -1;
}

/*
 * Where a helper could be: beside the running p11agent when that is not
 * the installed one (a build tree; libtool would put the real binary in
 * .libs/, the helper one directory up), then the configured path.
 */
static int
candidates(char cand[][PATH_MAX], int max)
{
	char	 self[PATH_MAX], inst[PATH_MAX], *slash;
	int	 n = 0;

	if (realpath("/proc/self/exe", self) != NULL &&
	    (realpath(P11AGENT_BINDIR "/p11agent", inst) == NULL ||
	    strcmp(self, inst) != 0) && (slash = strrchr(self, '/')) != NULL) {
		*slash = '\0';
		if (n < max && beside(cand[n], PATH_MAX, self) == 0)
			n++;
		if ((slash = strrchr(self, '/')) != NULL &&
		    strcmp(slash + 1, ".libs") == 0) {
			*slash = '\0';
			if (n < max && beside(cand[n], PATH_MAX, *self ?
			    self : "/") == 0)
				n++;
		}
	}
	if (n < max)
		snprintf(cand[n++], PATH_MAX, "%s", P11AGENT_HELPER_PATH);
	return n;
}

/* Chooses h->path: $P11AGENT_HELPER, else the first candidate there. */
static int
find_helper(struct helper *h, char *err, size_t errlen)
{
	char		 cand[MAX_CANDIDATES][PATH_MAX], tried[1024];
	const char	*env = getenv("P11AGENT_HELPER");
	size_t		 off = 0;
	int		 i, n;

	if (env != NULL && *env != '\0') {
		h->path_from_env = 1;
		return (h->path = strdup(env)) == NULL ? P11A_ERR_NOMEM : 0;
	}
	n = candidates(cand, MAX_CANDIDATES);
	for (i = 0; i < n; i++)
		if (access(cand[i], X_OK) == 0)
			return (h->path = strdup(cand[i])) == NULL ?
			    P11A_ERR_NOMEM : 0;
	tried[0] = '\0';
	for (i = 0; i < n && off < sizeof(tried); i++)
		off += (size_t)snprintf(tried + off, sizeof(tried) - off,
		    "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", cand[i]);
	snprintf(err, errlen, "cannot run the token helper: there is no "
	    "%s at %s; set P11AGENT_HELPER to the path of %s, or install "
	    "p11agent (make install)", HELPER_NAME, tried, HELPER_NAME);
	return P11A_ERR_HELPER;
}

/* ---- starting and reaping processes */

static int
same_name(const char *a, const char *b)
{
	while (*a != '\0' && *a != '=' && *a == *b) {
		a++;
		b++;
	}
	return (*a == '=' || *a == '\0') && (*b == '=' || *b == '\0');
}

/*
 * The helper's environment: ours plus h->env (PINs from env:NAME, which
 * the agent keeps out of its own), those replacing ours of the same name,
 * without NOTIFY_SOCKET: the agent speaks to systemd (agent/sd.c), the
 * helper and what it runs (pinentry) never.  Only pointers are copied:
 * the strings stay where they are.
 */
static char **
helper_envp(const struct helper *h)
{
	char	**envp;
	size_t	  n = 0, ne = 0, i, j, k = 0;

	while (environ != NULL && environ[n] != NULL)
		n++;
	while (h->env != NULL && h->env[ne] != NULL)
		ne++;
	if ((envp = calloc(n + ne + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		for (j = 0; j < ne && !same_name(environ[i], h->env[j]); j++)
			;
		if (j == ne && !same_name(environ[i], "NOTIFY_SOCKET"))
			envp[k++] = environ[i];
	}
	for (j = 0; j < ne; j++)
		envp[k++] = h->env[j];
	envp[k] = NULL;
	return envp;
}

/*
 * What the child does before exec: the channel on fd 3, stdin from
 * /dev/null, stdout to our stderr (a module's chatter must not reach our
 * stdout), nothing else open; an empty signal mask (the agent blocks its
 * signals for its signalfd) and default dispositions.  fd is above 3.
 */
static int
spawn_setup(posix_spawn_file_actions_t *fa, posix_spawnattr_t *sa, int fd)
{
	sigset_t	 none, dfl;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGPIPE);
	if (posix_spawn_file_actions_adddup2(fa, fd, 3) != 0 ||
	    posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY,
	    0) != 0)
		return -1;
	if (fcntl(2, F_GETFD) != -1) {
		if (posix_spawn_file_actions_adddup2(fa, 2, 1) != 0)
			return -1;
	} else if (posix_spawn_file_actions_addopen(fa, 1, "/dev/null",
	    O_WRONLY, 0) != 0 || posix_spawn_file_actions_addopen(fa, 2,
	    "/dev/null", O_WRONLY, 0) != 0)
		return -1;
	if (posix_spawn_file_actions_addclosefrom_np(fa, 4) != 0 ||
	    posix_spawnattr_setsigmask(sa, &none) != 0 ||
	    posix_spawnattr_setsigdefault(sa, &dfl) != 0 ||
	    posix_spawnattr_setflags(sa, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF) != 0)
		return -1;
	return 0;
}

static void
spawn_failed(struct helper *h, int e)
{
	if (h->path_from_env)
		snprintf(h->err, sizeof(h->err), "cannot run the token helper "
		    "%s: %s; set P11AGENT_HELPER to the path of %s, or unset "
		    "it", h->path, strerror(e), HELPER_NAME);
	else
		snprintf(h->err, sizeof(h->err), "cannot run the token helper "
		    "%s: %s; set P11AGENT_HELPER to the path of a working %s",
		    h->path, strerror(e), HELPER_NAME);
}

/* The channel: a socket pair whose child end is above fd 3 (the file
 * actions set the child's 0 to 3, and dup2(3, 3) would keep CLOEXEC). */
static int
channel(struct helper *h, int sv[2])
{
	int	 fd;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		goto fail;
	if (sv[1] <= 3) {
		if ((fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 4)) == -1)
			goto fail;
		close(sv[1]);
		sv[1] = fd;
	}
	return 0;
fail:
	snprintf(h->err, sizeof(h->err), "cannot start the token helper: "
	    "its channel: %s", strerror(errno));
	return P11A_ERR_SYSTEM;
}

/*
 * Starts the helper with posix_spawn: no code of ours runs between fork
 * and exec (the agent has resolver threads), and a failed exec comes
 * back here as an error.
 */
static int
spawn(struct helper *h)
{
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 sa;
	char				**envp = NULL;
	pid_t				 pid;
	int				 sv[2] = { -1, -1 }, e, r;
	int				 fa_ok = 0, sa_ok = 0;

	if ((r = channel(h, sv)) != 0)
		goto out;
	r = P11A_ERR_NOMEM;
	if (posix_spawn_file_actions_init(&fa) == 0)
		fa_ok = 1;
	if (fa_ok && posix_spawnattr_init(&sa) == 0)
		sa_ok = 1;
	if (!sa_ok || (envp = helper_envp(h)) == NULL ||
	    spawn_setup(&fa, &sa, sv[1]) != 0) {
		snprintf(h->err, sizeof(h->err), "cannot start the token "
		    "helper: out of memory");
		goto out;
	}
	if ((e = posix_spawn(&pid, h->path, &fa, &sa, h->argv, envp)) != 0) {
		r = P11A_ERR_HELPER;
		spawn_failed(h, e);
		goto out;
	}
	h->proc.pid = pid;
	h->proc.pidfd = pidfd_open(pid, 0);
	if (h->proc.pidfd != -1)
		fcntl(h->proc.pidfd, F_SETFD, FD_CLOEXEC);
	/* never block the agent on a full channel: EAGAIN is an error */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	h->fd = sv[0];
	sv[0] = -1;
	r = 0;
out:
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	if (sa_ok)
		posix_spawnattr_destroy(&sa);
	free(envp);	/* pointers only */
	if (sv[0] != -1)
		close(sv[0]);
	if (sv[1] != -1)
		close(sv[1]);
	return r;
}

/* Reaps c if it has exited, without waiting; 1 if it is gone. */
static int
reap(struct child *c)
{
	pid_t	 r;

	if (c->pid <= 0)
		return 1;
	if ((r = waitpid(c->pid, NULL, WNOHANG)) == 0 ||
	    (r == -1 && errno == EINTR))
		return 0;
	/* reaped, or not ours to wait for (ECHILD): gone either way */
	if (c->pidfd != -1)
		close(c->pidfd);
	c->pidfd = -1;
	c->pid = -1;
	return 1;
}

/* Reaps the replaced processes that have exited since. */
static void
reap_old(struct helper *h)
{
	struct child	**pp, *c;

	for (pp = &h->old; (c = *pp) != NULL;) {
		if (reap(c)) {
			*pp = c->next;
			free(c);
		} else
			pp = &c->next;
	}
}

/*
 * The current process is killed and kept for reaping later; a helper
 * stuck in a driver call may take its time to go, and nothing waits.
 */
static void
retire(struct helper *h)
{
	struct child	*c;

	if (h->proc.pid <= 0)
		return;
	kill(h->proc.pid, SIGKILL);
	if (!reap(&h->proc)) {
		if ((c = malloc(sizeof(*c))) != NULL) {
			*c = h->proc;
			c->next = h->old;
			h->old = c;
		} else if (h->proc.pidfd != -1)
			close(h->proc.pidfd);	/* a zombie until we exit */
	}
	h->proc.pid = -1;
	h->proc.pidfd = -1;
}

static void
close_channel(struct helper *h)
{
	if (h->fd != -1)
		close(h->fd);
	h->fd = -1;
}

/* ---- starting, restarting, stopping */

static void
strv_free(char **v)
{
	size_t	 i;

	if (v == NULL)
		return;
	for (i = 0; v[i] != NULL; i++) {
		OPENSSL_cleanse(v[i], strlen(v[i]));	/* may hold a PIN */
		free(v[i]);
	}
	free(v);
}

/* Appends a copy of s to the NULL-terminated vector *v of n entries. */
static int
strv_add(char ***v, size_t *n, const char *s)
{
	char	**nv;

	if ((nv = reallocarray(*v, *n + 2, sizeof(*nv))) == NULL)
		return P11A_ERR_NOMEM;
	*v = nv;
	if ((nv[*n] = strdup(s)) == NULL)
		return P11A_ERR_NOMEM;
	nv[++*n] = NULL;
	return 0;
}

static int
build_argv(struct helper *h, const struct helper_opts *o)
{
	char	 ms[16];
	size_t	 n = 0, ne = 0;
	int	 i, r;

	if ((r = strv_add(&h->argv, &n, HELPER_NAME)) != 0)
		return r;
	for (i = 0; i < o->nallow; i++)
		if ((r = strv_add(&h->argv, &n, "-a")) != 0 ||
		    (r = strv_add(&h->argv, &n, o->allow[i])) != 0)
			return r;
	if (o->token_poll_ms > 0) {
		snprintf(ms, sizeof(ms), "%d", o->token_poll_ms);
		if ((r = strv_add(&h->argv, &n, "-p")) != 0 ||
		    (r = strv_add(&h->argv, &n, ms)) != 0)
			return r;
	}
	if (o->registry_name != NULL &&
	    ((r = strv_add(&h->argv, &n, "-r")) != 0 ||
	    (r = strv_add(&h->argv, &n, o->registry_name)) != 0))
		return r;
	if (o->module != NULL && (r = strv_add(&h->argv, &n, o->module)) != 0)
		return r;
	for (i = 0; o->env != NULL && o->env[i] != NULL; i++)
		if ((r = strv_add(&h->env, &ne, o->env[i])) != 0)
			return r;
	return 0;
}

static void
helper_release(struct helper *h)
{
	struct child	*c;

	while ((c = h->old) != NULL) {
		h->old = c->next;
		if (c->pidfd != -1)
			close(c->pidfd);
		free(c);
	}
	if (h->proc.pidfd != -1)
		close(h->proc.pidfd);
	close_channel(h);
	strv_free(h->argv);
	strv_free(h->env);
	free(h->path);
	free(h->module);
	free(h);
}

int
helper_start(const struct helper_opts *o, struct helper **out, char *err,
    size_t errlen)
{
	struct helper	*h;
	int		 r;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "cannot start the token helper: out of "
		    "memory");
		return P11A_ERR_NOMEM;
	}
	h->fd = h->proc.pidfd = -1;
	h->proc.pid = -1;
	h->next_id = 1;
	h->tail = &h->pending;
	r = P11A_ERR_NOMEM;
	snprintf(h->err, sizeof(h->err), "cannot start the token helper: out "
	    "of memory");
	if ((o->module == NULL || (h->module = strdup(o->module)) != NULL) &&
	    (r = build_argv(h, o)) == 0 &&
	    (r = find_helper(h, h->err, sizeof(h->err))) == 0 &&
	    (r = spawn(h)) == 0) {
		h->err[0] = '\0';
		*out = h;
		return 0;
	}
	snprintf(err, errlen, "%s", h->err);
	helper_release(h);
	return r;
}

int
helper_restart(struct helper *h)
{
	helper_fail_all(h, P11A_ERR_HELPER);
	close_channel(h);
	retire(h);		/* dead or hung: killed, reaped later */
	reap_old(h);
	return spawn(h);
}

void
helper_kill(struct helper *h)
{
	if (h->proc.pid > 0)
		kill(h->proc.pid, SIGKILL);
}

/*
 * Waits up to ms for the n children to exit, polling their pidfds
 * together; returns how many are left (compacted to the front of c).
 */
static int
wait_children(struct child **c, struct pollfd *pfd, int n, int ms)
{
	long		 deadline = clock_now_ms() + ms, left;
	int		 i, k, np, blind;

	for (;;) {
		for (i = k = 0; i < n; i++)
			if (!reap(c[i]))
				c[k++] = c[i];
		if ((n = k) == 0 || (left = deadline - clock_now_ms()) <= 0)
			return n;
		for (i = np = blind = 0; i < n; i++) {
			if (c[i]->pidfd == -1)
				blind = 1;
			else {
				pfd[np].fd = c[i]->pidfd;
				pfd[np].events = POLLIN;
				pfd[np++].revents = 0;
			}
		}
		if (blind && left > NOPIDFD_POLL_MS)
			left = NOPIDFD_POLL_MS;
		if (poll(pfd, (nfds_t)np, (int)left) == -1 && errno != EINTR)
			return n;
	}
}

/*
 * Closes the channels (each helper finalises its module and exits on
 * EOF), gives them EXIT_WAIT_MS in all, then kills what is left and
 * waits KILL_WAIT_MS more.  A process that still does not go (stuck in a
 * driver) is left to init when the agent exits.
 */
void
helper_stop_all(struct helper *const *hs, int nh)
{
	struct child	**c, *o;
	struct pollfd	 *pfd;
	int		  i, n = 0, max = 0;

	for (i = 0; i < nh; i++) {
		if (hs[i] == NULL)
			continue;
		close_channel(hs[i]);
		hs[i]->stopped = 1;
		max++;
		for (o = hs[i]->old; o != NULL; o = o->next)
			max++;
	}
	c = calloc(max > 0 ? max : 1, sizeof(*c));
	pfd = calloc(max > 0 ? max : 1, sizeof(*pfd));
	if (c == NULL || pfd == NULL) {
		free(c);
		free(pfd);
		for (i = 0; i < nh; i++)
			if (hs[i] != NULL) {
				retire(hs[i]);
				reap_old(hs[i]);
			}
		return;
	}
	for (i = 0; i < nh; i++) {
		if (hs[i] == NULL)
			continue;
		c[n++] = &hs[i]->proc;
		for (o = hs[i]->old; o != NULL; o = o->next)
			c[n++] = o;
	}
	if ((n = wait_children(c, pfd, n, EXIT_WAIT_MS)) > 0) {
		for (i = 0; i < n; i++)
			kill(c[i]->pid, SIGKILL);
		wait_children(c, pfd, n, KILL_WAIT_MS);
	}
	free(c);
	free(pfd);
	for (i = 0; i < nh; i++)
		if (hs[i] != NULL)
			reap_old(hs[i]);
}

/* Processes of discarded helpers, reaped by helper_reap_orphans(). */
static struct child	*orphans;

int
helper_discard(struct helper *h)
{
	struct child	*c;
	int		 gone;

	if (h == NULL)
		return 1;
	helper_fail_all(h, P11A_ERR_CLOSED);
	close_channel(h);
	retire(h);		/* killed; it held nothing of ours */
	gone = h->old == NULL;
	while ((c = h->old) != NULL) {
		h->old = c->next;
		c->next = orphans;
		orphans = c;
	}
	helper_release(h);
	return gone;
}

int
helper_reap_orphans(pid_t *pids, int max)
{
	struct child	**pp, *c;
	pid_t		  pid;
	int		  n = 0;

	for (pp = &orphans; (c = *pp) != NULL && n < max;) {
		pid = c->pid;
		if (reap(c)) {
			*pp = c->next;
			free(c);
			pids[n++] = pid;
		} else
			pp = &c->next;
	}
	return n;
}

void
helper_free(struct helper *h)
{
	if (h == NULL)
		return;
	helper_fail_all(h, P11A_ERR_CLOSED);
	if (!h->stopped)
		helper_stop_all(&h, 1);
	helper_release(h);
}

int
helper_fd(const struct helper *h)
{
	return h->fd;
}

int
helper_pidfd(const struct helper *h)
{
	return h->proc.pidfd;
}

pid_t
helper_pid(const struct helper *h)
{
	return h->proc.pid;
}

const char *
helper_error(const struct helper *h)
{
	return h->err;
}

/* Decodes a PROTO_ERROR payload, its message into why; returns its code. */
static int
parse_error(struct pbuf *b, char *why, size_t len)
{
	uint32_t	 code;
	char		*msg;

	code = pbuf_get_u32(b);
	pbuf_get_u32(b);	/* CKR: part of the message already */
	msg = pbuf_get_str(b);
	snprintf(why, len, "%s", msg ? msg : "unknown error");
	free(msg);
	if (b->err != 0 || code == 0 || code > 1000)
		return P11A_ERR_PROTOCOL;
	return -(int)code;
}

/*
 * A PROTO_BUSY message: the request in service waits for the user (a PIN
 * dialog) for up to the milliseconds it says, bounded.
 */
static int
busy_ms(struct pbuf *b)
{
	uint32_t	 ms = pbuf_get_u32(b);

	if (pbuf_end(b) != 0)
		return 0;
	return ms > BUSY_MAX_MS ? BUSY_MAX_MS : (int)ms;
}

int
helper_call(struct helper *h, uint32_t type, const struct pbuf *req,
    struct pbuf *reply, int timeout_ms)
{
	uint32_t	 rtype, rid, id = h->next_id++;
	long		 deadline = clock_now_ms() + timeout_ms;
	int		 r, left;

	h->err[0] = '\0';
	if ((r = proto_send(h->fd, type, id, req)) != 0)
		goto fail;
	do {
		if ((left = (int)(deadline - clock_now_ms())) < 0)
			left = 0;
		if ((r = proto_recv(h->fd, &rtype, &rid, reply, left)) != 0)
			goto fail;
		if (rtype == PROTO_BUSY && rid == id)
			deadline += busy_ms(reply);
	} while (rid != id || proto_unsolicited(rtype));
	if (rtype == PROTO_ERROR)
		return parse_error(reply, h->err, sizeof(h->err));
	if (rtype != (type | 0x80)) {
		r = P11A_ERR_PROTOCOL;
		goto fail;
	}
	return 0;
fail:
	snprintf(h->err, sizeof(h->err), "token helper: %s%s",
	    p11a_strerror(r), r == P11A_ERR_CLOSED ? " (it exited; see the "
	    "messages above)" : "");
	return P11A_ERR_HELPER;
}

static void	count_sign(struct helper_sign_stats *, int, long);

int
helper_request(struct helper *h, uint32_t type, const struct pbuf *req,
    int timeout_ms, helper_cb cb, void *arg)
{
	struct helper_req	*q;
	long			 left;
	int			 r;

	if (h->npending >= MAX_PENDING) {
		if (type == PROTO_SIGN)
			count_sign(&h->sign, 0, 0);
		return P11A_ERR_BUSY;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return P11A_ERR_NOMEM;
	q->id = h->next_id++;
	q->type = type;
	q->sent = clock_now_ms();
	q->timeout_ms = timeout_ms;
	q->cb = cb;
	q->arg = arg;
	/* queued behind a dialog that may still be open: its time too */
	if ((left = h->busy_until - q->sent) > 0 && left < BUSY_MAX_MS)
		q->timeout_ms += (int)left;
	if ((r = proto_send(h->fd, type, q->id, req)) != 0) {
		if (type == PROTO_SIGN)
			count_sign(&h->sign, 0, 0);
		free(q);
		return r;
	}
	if (h->pending == NULL)
		h->tail = &h->pending;
	*h->tail = q;
	h->tail = &q->next;
	h->npending++;
	return 0;
}

static struct helper_req *
take(struct helper *h, uint32_t id)
{
	struct helper_req	**pp, *q;

	for (pp = &h->pending; (q = *pp) != NULL; pp = &q->next) {
		if (q->id == id) {
			if ((*pp = q->next) == NULL)
				h->tail = pp;
			h->npending--;
			return q;
		}
	}
	return NULL;
}

/* Every request waiting behind a dialog gets its time too. */
static void
extend_pending(struct helper *h, int ms)
{
	struct helper_req	*q;

	for (q = h->pending; q != NULL; q = q->next)
		if (q->timeout_ms < INT_MAX - ms)
			q->timeout_ms += ms;
}

static void
unsolicited(struct helper *h, uint32_t type, uint32_t id, struct pbuf *msg)
{
	long	 until;
	int	 ms;

	if (type == PROTO_BUSY) {
		h->sign.prompts++;	/* the helper sends one per dialog */
		ms = busy_ms(msg);
		extend_pending(h, ms);
		/* and the requests sent while the dialog is open */
		until = clock_now_ms() + ms;
		if (until > h->busy_until)
			h->busy_until = until;
		h->busy_id = id;
	}
	else if (h->ev_cb != NULL)
		h->ev_cb(h->ev_arg, type, id, msg);
}

void
helper_set_event_cb(struct helper *h, helper_event_cb cb, void *arg)
{
	h->ev_cb = cb;
	h->ev_arg = arg;
}

/* The upper bounds (ms) of helper_sign_stats.le[]; the last is +Inf. */
const int helper_sign_buckets_ms[HELPER_SIGN_BUCKETS] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, INT_MAX
};

static void
count_sign(struct helper_sign_stats *st, int ok, long ms)
{
	int	 i;

	if (!ok) {
		st->failed++;
		return;
	}
	if (ms < 0)
		ms = 0;
	st->ok++;
	st->total_ms += (unsigned long long)ms;
	if ((unsigned long long)ms > st->max_ms)
		st->max_ms = (unsigned long long)ms;
	for (i = 0; i < HELPER_SIGN_BUCKETS; i++)
		if (ms <= helper_sign_buckets_ms[i])
			st->le[i]++;
}

const struct helper_sign_stats *
helper_sign_stats(const struct helper *h)
{
	return &h->sign;
}

int
helper_read(struct helper *h)
{
	static struct pbuf	 rx;
	struct helper_req	*q;
	uint32_t		 type, id;
	char			 why[PROTO_MAX_STRING + 1];
	int			 r;

	for (;;) {
		r = proto_recv(h->fd, &type, &id, &rx, 0);
		if (r == P11A_ERR_TIMEOUT)
			return 0;	/* nothing more for now */
		if (r != 0) {
			helper_fail_all(h, P11A_ERR_HELPER);
			return r;
		}
		if (proto_unsolicited(type)) {
			unsolicited(h, type, id, &rx);
			continue;
		}
		if ((q = take(h, id)) == NULL)
			continue;	/* not ours: ignored */
		if (id == h->busy_id)
			h->busy_until = 0;	/* its dialog is over */
		h->last_reply = clock_now_ms();
		if (q->type == PROTO_SIGN && q->cb != NULL)
			count_sign(&h->sign, type != PROTO_ERROR,
			    h->last_reply - q->sent);
		if (q->cb == NULL)
			;		/* late reply to an expired request */
		else if (type == PROTO_ERROR) {
			r = parse_error(&rx, why, sizeof(why));
			q->cb(q->arg, r, why, NULL);
		} else
			q->cb(q->arg, 0, NULL, &rx);
		free(q);
	}
}

/*
 * Fails the requests whose deadline passed; says whether the helper looks
 * hung: its oldest request has been in service (since it was sent or the
 * previous reply came, whichever is later) for longer than its timeout.
 * A slow token with a queue is not hung.
 */
int
helper_expire(struct helper *h, long now)
{
	struct helper_req	*q;
	long			 since;

	reap_old(h);
	for (q = h->pending; q != NULL; q = q->next) {
		if (q->cb == NULL || now < q->sent + q->timeout_ms)
			continue;
		if (q->type == PROTO_SIGN)
			count_sign(&h->sign, 0, 0);
		q->cb(q->arg, P11A_ERR_TIMEOUT, HELPER_EXPIRED, NULL);
		q->cb = NULL;
	}
	if ((q = h->pending) == NULL)
		return 0;
	since = q->sent > h->last_reply ? q->sent : h->last_reply;
	return now - since > q->timeout_ms;
}

void
helper_fail_all(struct helper *h, int err)
{
	struct helper_req	*q;

	while ((q = h->pending) != NULL) {
		h->pending = q->next;
		h->npending--;
		if (q->cb != NULL && q->type == PROTO_SIGN)
			count_sign(&h->sign, 0, 0);
		if (q->cb != NULL)
			q->cb(q->arg, err, err == P11A_ERR_HELPER ||
			    err == P11A_ERR_CLOSED ? "the token helper is gone" :
			    p11a_strerror(err), NULL);
		free(q);
	}
	h->tail = &h->pending;
}

void
helper_put_open(struct pbuf *req, const char *key_uri, const char *cert,
    const char *pin_source)
{
	pbuf_put_str(req, key_uri);
	pbuf_put_str(req, cert);
	pbuf_put_str(req, pin_source);
}

void
helper_put_open_login(struct pbuf *req, const char *pinentry, int pin_cache,
    int pin_per_handshake)
{
	pbuf_put_str(req, pinentry);
	pbuf_put_u32(req, pin_cache > 0 ? (uint32_t)pin_cache : 0);
	pbuf_put_u8(req, pin_per_handshake ? PROTO_OPEN_LOGOUT_EACH : 0);
}

int
helper_parse_open(struct pbuf *reply, struct helper_identity *out)
{
	const unsigned char	*der, *label, *serial, *kc[PROTO_MAX_KEY_CERTS];
	size_t			 len, llen, slen, kl[PROTO_MAX_KEY_CERTS];
	uint32_t		 nkc, i;
	int			 r;

	memset(out, 0, sizeof(*out));
	out->handle = pbuf_get_u32(reply);
	out->keytype = pbuf_get_u8(reply);
	out->caps = pbuf_get_u32(reply);
	der = pbuf_get_bytes(reply, &len, PROTO_MAX_FIELD);
	label = pbuf_get_bytes(reply, &llen, sizeof(out->label) - 1);
	serial = pbuf_get_bytes(reply, &slen, sizeof(out->serial) - 1);
	if ((nkc = pbuf_get_u32(reply)) > PROTO_MAX_KEY_CERTS)
		return P11A_ERR_PROTOCOL;
	for (i = 0; i < nkc; i++)
		kc[i] = pbuf_get_bytes(reply, &kl[i], PROTO_MAX_FIELD);
	if ((r = pbuf_end(reply)) != 0)
		return r;
	if (out->keytype != PROTO_KEY_RSA && out->keytype != PROTO_KEY_EC)
		return P11A_ERR_PROTOCOL;
	if (memchr(label, '\0', llen) != NULL ||
	    memchr(serial, '\0', slen) != NULL)
		return P11A_ERR_PROTOCOL;
	memcpy(out->label, label, llen);
	memcpy(out->serial, serial, slen);
	if (len > 0 && (out->cert = d2i_X509(NULL, &der, (long)len)) == NULL)
		return P11A_ERR_NO_CERT;
	/* one that does not parse could hide the key from a policy */
	for (i = 0; i < nkc; i++) {
		if ((out->key_certs[i] = d2i_X509(NULL, &kc[i], (long)kl[i])) ==
		    NULL) {
			helper_identity_clear(out);
			return P11A_ERR_NO_CERT;
		}
		out->nkey_certs++;
	}
	return 0;
}

void
helper_identity_clear(struct helper_identity *hid)
{
	int	 i;

	X509_free(hid->cert);
	hid->cert = NULL;
	for (i = 0; i < hid->nkey_certs; i++)
		X509_free(hid->key_certs[i]);
	hid->nkey_certs = 0;
}

int
helper_open(struct helper *h, const char *key_uri, const char *cert,
    const char *pin_source, int timeout_ms, struct helper_identity *out)
{
	struct pbuf	 req, reply;
	int		 r;

	pbuf_init(&req);
	pbuf_init(&reply);
	helper_put_open(&req, key_uri, cert, pin_source);
	if ((r = helper_call(h, PROTO_OPEN, &req, &reply, timeout_ms)) != 0)
		goto out;
	if ((r = helper_parse_open(&reply, out)) == P11A_ERR_NO_CERT)
		snprintf(h->err, sizeof(h->err), "%s: the certificate on the "
		    "token is not valid DER X.509", key_uri);
	else if (r != 0)
		snprintf(h->err, sizeof(h->err), "token helper: %s",
		    p11a_strerror(r));
out:
	pbuf_clear(&req);
	pbuf_clear(&reply);
	return r;
}
