/*
 * p11agent: the agent's side of the wire to a token helper.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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
#define MAX_PENDING	256
#define EXIT_WAIT_MS	2000	/* for a helper to finalise its module */

/*
 * A request in flight.  The list is in sending order, which is the order
 * the helper serves them in; a request past its deadline has had its
 * callback (cb is then NULL) but stays until the helper answers it, so
 * the agent knows what the helper is busy with.
 */
struct helper_req {
	uint32_t		 id;
	long			 sent;
	int			 timeout_ms;
	helper_cb		 cb;
	void			*arg;
	struct helper_req	*next;
};

struct helper {
	char			*module;	/* NULL: p11-kit's registry */
	char			**argv;		/* the helper's command line */
	char			**env;		/* extra environment */
	pid_t			 pid;
	int			 pidfd;		/* readable when it exits */
	int			 fd;
	uint32_t		 next_id;
	struct helper_req	*pending;	/* oldest first */
	struct helper_req	**tail;
	int			 npending;
	long			 last_reply;
	char			 err[1024];
};

static const char *
helper_path(void)
{
	const char	*p = getenv("P11AGENT_HELPER");

	return p && *p ? p : P11AGENT_HELPER_PATH;
}

static void
child(int fd, char **argv, char **envp)
{
	const char	*path = helper_path();
	sigset_t	 none;
	int		 devnull;

	/* the agent blocks its signals for its signalfd: undo that */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (fd == 3)
		fcntl(fd, F_SETFD, 0);
	else if (dup2(fd, 3) == -1)
		_exit(127);
	close_range(4, ~0U, 0);	/* listeners, clients, the ready fd */
	if ((devnull = open("/dev/null", O_RDWR)) != -1) {
		dup2(devnull, 0);
		close(devnull);
	}
	dup2(2, 1);	/* a module's chatter must not reach our stdout */
	execve(path, argv, envp);
	fprintf(stderr, "p11agent: cannot run the token helper %s: %s\n",
	    path, strerror(errno));
	_exit(127);
}

/* The helper's environment: ours plus its own variables (PINs). */
static char **
helper_envp(struct helper *h)
{
	extern char	**environ;
	char		**envp;
	size_t		  n = 0, m = 0, i;

	while (environ[n] != NULL)
		n++;
	while (h->env != NULL && h->env[m] != NULL)
		m++;
	if ((envp = calloc(n + m + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		envp[i] = environ[i];
	for (i = 0; i < m; i++)
		envp[n + i] = h->env[i];
	return envp;
}

static int
spawn(struct helper *h)
{
	char	**envp;
	int	 sv[2];

	if ((envp = helper_envp(h)) == NULL)
		return P11A_ERR_NOMEM;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		free(envp);
		return P11A_ERR_SYSTEM;
	}
	if ((h->pid = fork()) == -1) {
		free(envp);
		close(sv[0]);
		close(sv[1]);
		return P11A_ERR_SYSTEM;
	}
	if (h->pid == 0)
		child(sv[1], h->argv, envp);
	free(envp);	/* the strings are environ's and h->env's */
	close(sv[1]);
	/* never block the agent on a full channel: EAGAIN is an error */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	h->fd = sv[0];
	h->pidfd = pidfd_open(h->pid, 0);
	if (h->pidfd != -1)
		fcntl(h->pidfd, F_SETFD, FD_CLOEXEC);
	return 0;
}

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
	size_t	 n = 0, ne = 0;
	int	 i, r;

	if ((r = strv_add(&h->argv, &n, "p11agent-helper")) != 0)
		return r;
	for (i = 0; i < o->nallow; i++)
		if ((r = strv_add(&h->argv, &n, "-a")) != 0 ||
		    (r = strv_add(&h->argv, &n, o->allow[i])) != 0)
			return r;
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

int
helper_start(const struct helper_opts *o, struct helper **out)
{
	struct helper	*h;
	int		 r;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return P11A_ERR_NOMEM;
	h->fd = h->pidfd = -1;
	h->next_id = 1;
	r = P11A_ERR_NOMEM;
	if ((o->module == NULL || (h->module = strdup(o->module)) != NULL) &&
	    (r = build_argv(h, o)) == 0 && (r = spawn(h)) == 0) {
		*out = h;
		return 0;
	}
	strv_free(h->argv);
	strv_free(h->env);
	free(h->module);
	free(h);
	return r;
}

/*
 * Closes the channel (the helper finalises its module and exits on EOF)
 * and reaps the process, killing it if it takes longer than a moment.
 */
static void
stop(struct helper *h)
{
	struct pollfd	 pfd = { .events = POLLIN };

	if (h->fd != -1)
		close(h->fd);
	h->fd = -1;
	if (h->pid <= 0)
		return;
	if ((pfd.fd = h->pidfd) == -1 || poll(&pfd, 1, EXIT_WAIT_MS) != 1)
		kill(h->pid, SIGKILL);
	waitpid(h->pid, NULL, 0);
	if (h->pidfd != -1)
		close(h->pidfd);
	h->pidfd = -1;
	h->pid = -1;
}

int
helper_restart(struct helper *h)
{
	helper_fail_all(h, P11A_ERR_HELPER);
	helper_kill(h);		/* dead or hung: nothing to wait for */
	stop(h);
	return spawn(h);
}

void
helper_kill(struct helper *h)
{
	if (h->pid > 0)
		kill(h->pid, SIGKILL);
}

void
helper_free(struct helper *h)
{
	if (h == NULL)
		return;
	helper_fail_all(h, P11A_ERR_CLOSED);
	stop(h);
	strv_free(h->argv);
	strv_free(h->env);
	free(h->module);
	free(h);
}

int
helper_fd(const struct helper *h)
{
	return h->fd;
}

int
helper_pidfd(const struct helper *h)
{
	return h->pidfd;
}

pid_t
helper_pid(const struct helper *h)
{
	return h->pid;
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
	} while (rid != id);
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

int
helper_request(struct helper *h, uint32_t type, const struct pbuf *req,
    int timeout_ms, helper_cb cb, void *arg)
{
	struct helper_req	*q;
	int			 r;

	if (h->npending >= MAX_PENDING)
		return P11A_ERR_BUSY;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return P11A_ERR_NOMEM;
	q->id = h->next_id++;
	q->sent = clock_now_ms();
	q->timeout_ms = timeout_ms;
	q->cb = cb;
	q->arg = arg;
	if ((r = proto_send(h->fd, type, q->id, req)) != 0) {
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
		if ((q = take(h, id)) == NULL)
			continue;	/* not ours: ignored */
		h->last_reply = clock_now_ms();
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

	for (q = h->pending; q != NULL; q = q->next) {
		if (q->cb == NULL || now < q->sent + q->timeout_ms)
			continue;
		q->cb(q->arg, P11A_ERR_TIMEOUT, "the token did not answer in "
		    "time", NULL);
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

int
helper_parse_open(struct pbuf *reply, struct helper_identity *out)
{
	const unsigned char	*der;
	size_t			 len;
	int			 r;

	out->cert = NULL;
	out->handle = pbuf_get_u32(reply);
	out->keytype = pbuf_get_u8(reply);
	out->caps = pbuf_get_u32(reply);
	der = pbuf_get_bytes(reply, &len, PROTO_MAX_FIELD);
	if ((r = pbuf_end(reply)) != 0)
		return r;
	if (out->keytype != PROTO_KEY_RSA && out->keytype != PROTO_KEY_EC)
		return P11A_ERR_PROTOCOL;
	if (len > 0 && (out->cert = d2i_X509(NULL, &der, (long)len)) == NULL)
		return P11A_ERR_NO_CERT;
	return 0;
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
