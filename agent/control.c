/*
 * p11agent: the control socket (control.h, docs/control-protocol.md).
 *
 * One listener (agent/listen.c: a Unix socket, mode 0600 in a directory
 * of ours with mode 0700), at most CTL_MAX_CLIENTS clients, each with one
 * request line and a deadline for it.  The requests are the table
 * `requests' below, and only there.  lock and unlock send PROTO_LOGOUT
 * or PROTO_UNLOCK to every token helper that runs and answer once each
 * has answered, failed or timed out; a client that leaves meanwhile does
 * not stop the request.  lock-after is checked on the agent's tick.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "p11agent/agent.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/control.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/identity.h"
#include "p11agent/listen.h"
#include "p11agent/log.h"
#include "p11agent/tunnel.h"
#include "p11agent/peer.h"
#include "p11agent/reload.h"
#include "p11agent/proto.h"
#include "p11agent/sd.h"
#include "p11agent/status.h"

#define CTL_MAX_CLIENTS		8
#define CTL_MAX_WORDS		8
#define CTL_MAX_OUT		(64 * 1024)	/* one answer */
#define CTL_LINE		1024		/* one line of it */
#define CTL_READ_MS		5000	/* for the request line */
#define CTL_WRITE_MS		5000	/* for the client to take the answer */
#define LOGOUT_TIMEOUT_MS	30000
#define UNLOCK_TIMEOUT_MS	120000	/* a PIN dialog: PROTO_BUSY extends */

enum ctl_state { C_READ, C_WORK, C_WRITE };

struct ctl_op;

struct ctl_client {
	struct watch		 w;
	enum ctl_state		 state;
	int			 gone;		/* freed after this batch */
	long			 deadline;	/* C_READ, C_WRITE */
	struct peer		 peer;
	char			 in[CONTROL_MAX_LINE];
	size_t			 inlen;
	char			*out;
	size_t			 outlen;
	size_t			 outoff;
	struct ctl_op		*op;		/* waiting for the helpers */
	struct status_req	*sreq;		/* a status, likewise */
	int			 cut;		/* an info line did not fit */
	struct ctl_client	*next;
};

/* What a request asks of every token helper. */
struct helper_ask {
	const char	*name;		/* "lock", "unlock" */
	const char	*done;		/* "locked", "unlocked" */
	const char	*did;		/* what each token had done to it */
	uint32_t	 type;
	int		 timeout_ms;
};

static const struct helper_ask ask_lock = {
	"lock", "locked", "logged out", PROTO_LOGOUT, LOGOUT_TIMEOUT_MS
};
static const struct helper_ask ask_unlock = {
	"unlock", "unlocked", "logged in", PROTO_UNLOCK, UNLOCK_TIMEOUT_MS
};

/* One helper's answer to a request. */
struct ctl_answer {
	struct ctl_op	*op;
	char		 who[320];	/* "token helper for M (pid N)" */
	int		 asked;		/* 0: it was not running */
	int		 restarted;	/* unlock: it is started again */
	int		 err;
	uint32_t	 tokens;
	char		 why[512];
};

struct ctl_op {
	const struct helper_ask	*ask;
	struct ctl_client	*c;	/* NULL: lock-after, or it left */
	int			 automatic;	/* lock-after's */
	char			 by[PATH_MAX + 128];	/* for the log */
	int			 pending;
	int			 n;
	struct ctl_answer	*ans;
};

typedef void (*ctl_fn)(struct ctl_client *, int argc, char **argv);

static void	req_lock(struct ctl_client *, int, char **);
static void	req_unlock(struct ctl_client *, int, char **);
static void	req_status(struct ctl_client *, int, char **);
static void	req_reload(struct ctl_client *, int, char **);

/* Every request of the protocol: status, reload, metrics go here. */
static const struct {
	const char	*name;
	ctl_fn		 fn;
	const char	*usage;
} requests[] = {
	{ "lock",	req_lock,	"lock [--idle SECONDS]" },
	{ "unlock",	req_unlock,	"unlock" },
	{ "status",	req_status,	"status [--json | --prometheus]" },
	{ "reload",	req_reload,	"reload" },
};

static struct {
	struct agent		*agent;
	struct listener		 ln;
	int			 open;
	struct ctl_client	*clients;
	struct ctl_client	*reload_client;	/* waits for the reload */
	int			 nclients;
	int			 ops;		/* requests waiting for helpers */
	int			 lock_after;	/* seconds; 0: off */
	long			 lock_mark;	/* last activity at the lock */
	long			 last_unlock;	/* an unlock logs in too */
	char			 user[64];	/* the agent's user's name */
} ctl;

/* ---- where the socket is */

int
control_path(const struct config *cfg, const char *opt, char **path,
    char *err, size_t errlen)
{
	const char	*xdg = getenv("XDG_RUNTIME_DIR");
	char		*p = NULL;

	if (opt != NULL && (opt[0] != '/' || strlen(opt) >= 108)) {
		snprintf(err, errlen, "--control: '%s' must be an absolute path "
		    "shorter than 108 bytes", opt);
		return P11A_ERR_INVALID;
	}
	if (opt != NULL)
		p = strdup(opt);
	else if (cfg != NULL && cfg->agent.control != NULL)
		p = strdup(cfg->agent.control);
	else if (xdg == NULL || xdg[0] != '/' || strlen(xdg) > 80) {
		snprintf(err, errlen, "XDG_RUNTIME_DIR is %s, so there is no "
		    "default place for the control socket: set control = PATH "
		    "in the [agent] section of the configuration (or give "
		    "--control PATH), or set XDG_RUNTIME_DIR", xdg == NULL ?
		    "not set" : xdg[0] != '/' ? "not an absolute path" :
		    "longer than 80 bytes");
		return P11A_ERR_CONFIG;
	} else if (asprintf(&p, "%s/p11agent/control", xdg) == -1)
		p = NULL;
	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return P11A_ERR_NOMEM;
	}
	*path = p;
	return 0;
}

/* ---- answers */

static void
client_free_deferred(void *arg)
{
	struct ctl_client	*c = arg;

	free(c->out);
	free(c);
}

/* Closes the client now; its memory goes after this batch of events. */
static void
client_free(struct ctl_client *c)
{
	struct ctl_client	**pp;

	if (c->gone)
		return;
	c->gone = 1;
	for (pp = &ctl.clients; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	ctl.nclients--;
	if (ctl.reload_client == c)
		ctl.reload_client = NULL;	/* the reload goes on */
	if (c->op != NULL)
		c->op->c = NULL;	/* the request goes on without it */
	status_cancel(c->sreq);
	loop_set(&c->w, 0);
	close(c->w.fd);
	c->w.fd = -1;
	loop_defer(client_free_deferred, c);
}

/* Appends one line of the answer; control characters become '?'. */
static void
say(struct ctl_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say(struct ctl_client *c, const char *fmt, ...)
{
	char	 line[CTL_LINE], *p;
	size_t	 len;
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	len = strlen(line);
	for (p = line; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	/* "* " lines stop short of the limit: the last line always fits */
	if ((line[0] == '*' && c->outlen + len + 1 > CTL_MAX_OUT - CTL_LINE) ||
	    c->outlen + len + 1 > CTL_MAX_OUT) {
		c->cut = 1;
		return;
	}
	if (c->out == NULL && (c->out = malloc(CTL_MAX_OUT)) == NULL)
		return;
	memcpy(c->out + c->outlen, line, len);
	c->outlen += len;
	c->out[c->outlen++] = '\n';
}

static void
client_write(struct ctl_client *c)
{
	switch (listen_send_rest(c->w.fd, c->out, c->outlen, &c->outoff)) {
	case 0:
		if (loop_set(&c->w, EPOLLOUT) != 0)
			client_free(c);
		return;
	case -1:
		log_debug("control: the client (pid %ld) left before its "
		    "answer: %s", c->peer.pid, strerror(errno));
		client_free(c);
		return;
	default:
		client_free(c);		/* one request per connection */
	}
}

/* The last line is in: send the answer, then close. */
static void
client_end(struct ctl_client *c)
{
	c->state = C_WRITE;
	c->deadline = clock_now_ms() + CTL_WRITE_MS;
	if (c->out == NULL) {
		client_free(c);	/* out of memory: nothing to say */
		return;
	}
	client_write(c);
}

/* ---- requests that go to every token helper */

static void
op_free(struct ctl_op *op)
{
	free(op->ans);
	free(op);
}

/* Every helper has answered: one line each, then the result. */
static void
op_done(struct ctl_op *op)
{
	struct ctl_client	*c = op->c;
	struct ctl_answer	*a;
	unsigned long		 tokens = 0;
	char			 sum[CTL_LINE];
	size_t			 len;
	int			 i, asked = 0, failed = 0, restarted = 0;

	if (op->ask == &ask_unlock)	/* counted from when it logged in */
		ctl.last_unlock = clock_now_ms();

	for (i = 0; i < op->n; i++) {
		a = &op->ans[i];
		if (!a->asked) {
			restarted += a->restarted;
			if (c != NULL)
				say(c, "* %s: %s", a->who, a->why);
			continue;
		}
		asked++;
		if (a->err != 0) {
			failed++;
			log_warn("%s: %s: %s", op->ask->name, a->who, a->why);
			if (c != NULL)
				say(c, "* %s: failed: %s", a->who, a->why);
			continue;
		}
		tokens += a->tokens;
		log_debug("%s: %s: %u token%s %s", op->ask->name, a->who,
		    a->tokens, a->tokens == 1 ? "" : "s", op->ask->did);
		if (c != NULL)
			say(c, "* %s: %u token%s %s", a->who, a->tokens,
			    a->tokens == 1 ? "" : "s", op->ask->did);
	}
	if (asked == 0)
		snprintf(sum, sizeof(sum), "no token helper is running, so "
		    "no token was %s", op->ask->did);
	else if (failed == 0)
		snprintf(sum, sizeof(sum), "%lu token%s %s (%d token helper%s)",
		    tokens, tokens == 1 ? "" : "s", op->ask->did, asked,
		    asked == 1 ? "" : "s");
	else
		snprintf(sum, sizeof(sum), "%lu token%s %s", tokens,
		    tokens == 1 ? "" : "s", op->ask->did);
	len = strlen(sum);
	if (restarted > 0)
		snprintf(sum + len, sizeof(sum) - len, "; %d token helper%s "
		    "started again", restarted, restarted == 1 ? "" : "s");
	if (failed == 0 && op->automatic)
		log_info("%s: %s; %s", op->ask->done, op->by, sum);
	else if (failed == 0)
		log_info("%s %s: %s", op->ask->done, op->by, sum);
	else
		log_warn("%s %s%s%s: %d of %d token helpers failed (said "
		    "above); %s", op->ask->name, op->automatic ? "(" : "",
		    op->by, op->automatic ? ")" : "", failed, asked, sum);
	if (c != NULL && failed == 0)
		say(c, "OK %s: %s", op->ask->done, sum);
	else if (c != NULL)
		say(c, "ERR failed %s: %d of %d token helpers failed (see "
		    "above); %s", op->ask->name, failed, asked, sum);
	if (c != NULL) {
		c->op = NULL;
		client_end(c);
	}
	ctl.ops--;
	op_free(op);
}

static void
answered(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct ctl_answer	*a = arg;
	struct ctl_op		*op = a->op;

	if (err == 0) {
		a->tokens = pbuf_get_u32(reply);
		if (pbuf_end(reply) != 0) {
			err = P11A_ERR_PROTOCOL;
			why = "malformed reply from the token helper";
		}
	}
	if ((a->err = err) != 0)
		snprintf(a->why, sizeof(a->why), "%s", err == P11A_ERR_TIMEOUT ?
		    "no answer in time" : why != NULL ? why :
		    p11a_strerror(err));
	if (--op->pending == 0)
		op_done(op);
}

/* The program and user that asked, for the PIN dialog (unlock). */
static void
asker(const struct ctl_client *c, char *buf, size_t len)
{
	const char	*prog = strrchr(c->peer.exe, '/');

	prog = prog != NULL ? prog + 1 : c->peer.exe[0] ? c->peer.exe : "?";
	snprintf(buf, len, "%s unlock (pid %ld, %s)", prog, c->peer.pid,
	    ctl.user);
}

/* A helper that does not run: nothing to ask it. */
static void
not_running(struct ctl_op *op, struct ctl_answer *a, struct module_rt *s)
{
	a->asked = 0;
	if (op->ask == &ask_unlock && s->given_up) {
		/* stopped after a refused PIN: the user says it is fixed */
		s->given_up = 0;
		s->backoff_ms = 1000;
		s->restart_at = clock_now_ms();
		a->restarted = 1;
		snprintf(a->why, sizeof(a->why), "was stopped after the token "
		    "refused its PIN; starting it again (it logs in as it "
		    "opens its identities)");
		log_info("unlock: token helper for %s: starting it again",
		    status_module_label(s));
	} else
		snprintf(a->why, sizeof(a->why), "not running (it is being "
		    "restarted); nothing to ask it");
}

/* The last signature or unlock: lock-after counts from it. */
static long
last_activity(void)
{
	long	 sign = rkey_last_sign_ms(), t;

	t = sign > ctl.last_unlock ? sign : ctl.last_unlock;
	/* a resumed handshake uses the login too, without a signature */
	return tunnels_last_handshake > t ? tunnels_last_handshake : t;
}

/*
 * Sends ask to every token helper; the answer (to c, or only to the log
 * when c is NULL) follows when all have answered.
 */
static void
op_start(struct ctl_client *c, const struct helper_ask *ask, const char *by)
{
	struct agent		*ag = ctl.agent;
	struct module_rt	*s;
	struct ctl_answer	*a;
	struct ctl_op		*op;
	struct pbuf		 req;
	char			 who[PATH_MAX + 128];
	int			 i, r;

	if ((op = calloc(1, sizeof(*op))) == NULL ||
	    (op->ans = calloc(ag->nmods > 0 ? ag->nmods : 1,
	    sizeof(*op->ans))) == NULL) {
		free(op);
		log_err("%s: out of memory", ask->name);
		if (c != NULL) {
			say(c, "ERR failed out of memory");
			client_end(c);
		}
		return;
	}
	op->ask = ask;
	op->c = c;
	op->automatic = c == NULL;
	snprintf(op->by, sizeof(op->by), "%s", by);
	if (c != NULL)
		asker(c, who, sizeof(who));
	else
		snprintf(who, sizeof(who), "p11agent lock-after");
	ctl.ops++;
	op->pending = 1;	/* until every request is out */
	for (i = 0; i < ag->nmods; i++) {
		s = ag->mods[i];
		if (s->retiring)
			continue;
		a = &op->ans[op->n++];
		a->op = op;
		snprintf(a->who, sizeof(a->who), "token helper for %s (pid %d)",
		    status_module_label(s), (int)helper_pid(s->helper));
		if (s->dead) {
			not_running(op, a, s);
			continue;
		}
		a->asked = 1;
		pbuf_init(&req);
		if (ask == &ask_unlock)
			pbuf_put_str(&req, who);
		r = req.err != 0 ? req.err : helper_request(s->helper,
		    ask->type, &req, ask->timeout_ms, answered, a);
		pbuf_clear(&req);
		if (r == 0) {
			op->pending++;
			continue;
		}
		a->err = r;
		snprintf(a->why, sizeof(a->why), "cannot ask it: %s",
		    p11a_strerror(r));
	}
	if (ask == &ask_lock) {
		ctl.lock_mark = last_activity();
		/* resuming a session would need no login: none are kept */
		tunnels_flush_sessions(ag, NULL, "the agent is locked");
	}
	if (c != NULL) {
		c->op = op;
		c->state = C_WORK;
		loop_set(&c->w, 0);
	}
	if (--op->pending == 0)
		op_done(op);
}

/* ---- the requests */

static void
by_client(const struct ctl_client *c, char *buf, size_t len)
{
	snprintf(buf, len, "by uid %ld pid %ld (%s)", c->peer.uid, c->peer.pid,
	    c->peer.exe[0] ? c->peer.exe : "program unknown");
}

static void
req_lock(struct ctl_client *c, int argc, char **argv)
{
	char	 by[PATH_MAX + 128], *end;
	long	 n;
	int	 was = ctl.lock_after;

	by_client(c, by, sizeof(by));
	if (argc == 1) {
		op_start(c, &ask_lock, by);
		return;
	}
	errno = 0;
	n = argc == 3 && strcmp(argv[1], "--idle") == 0 ?
	    strtol(argv[2], &end, 10) : -1;
	if (n < 0 || errno != 0 || *end != '\0' || end == argv[2] ||
	    n > CONFIG_MAX_LOCK_AFTER) {
		say(c, "ERR usage lock [--idle SECONDS] (SECONDS from 0, off, "
		    "to %d)", CONFIG_MAX_LOCK_AFTER);
		client_end(c);
		return;
	}
	ctl.lock_after = (int)n;
	log_info("lock-after set to %ld s%s (was %d s) %s", n, n == 0 ?
	    " (off)" : "", was, by);
	if (n == 0)
		say(c, "OK lock-after off (was %d s)", was);
	else
		say(c, "OK lock-after %ld s (was %d s): the agent locks when no "
		    "signature happened for %ld s", n, was, n);
	client_end(c);
}

static void
req_unlock(struct ctl_client *c, int argc, char **argv)
{
	char	 by[PATH_MAX + 128];

	if (argc != 1) {
		say(c, "ERR usage unlock");
		client_end(c);
		return;
	}
	by_client(c, by, sizeof(by));
	op_start(c, &ask_unlock, by);
}

/* The final line: OK, or an error if the answer was cut (never a part
 * passed off as the whole). */
static void
status_end(struct ctl_client *c)
{
	if (c->cut)
		say(c, "ERR too-long the status does not fit in the %d KiB of "
		    "a control answer (so many tunnels): nothing after the "
		    "lines above is complete", CTL_MAX_OUT / 1024);
	else
		say(c, "OK");
}

/* The status is built (agent/status.c): its lines, then the last. */
static void
status_done(void *arg, char *text, size_t len, int cut)
{
	struct ctl_client	*c = arg;

	c->sreq = NULL;
	if (text == NULL) {
		say(c, "ERR failed out of memory");
		client_end(c);
		return;
	}
	if (c->out == NULL)
		c->out = malloc(CTL_MAX_OUT);
	if (c->out != NULL && len <= CTL_MAX_OUT - CTL_LINE) {
		memcpy(c->out, text, len);
		c->outlen = len;
	}
	free(text);
	c->cut = cut;
	status_end(c);
	client_end(c);
}

static void
req_status(struct ctl_client *c, int argc, char **argv)
{
	enum status_format	 f;

	if (argc == 1)
		f = STATUS_TEXT;
	else if (argc == 2 && strcmp(argv[1], "--json") == 0)
		f = STATUS_JSON;
	else if (argc == 2 && strcmp(argv[1], "--prometheus") == 0)
		f = STATUS_PROMETHEUS;
	else {
		say(c, "ERR usage status [--json | --prometheus]");
		client_end(c);
		return;
	}
	/* the token helpers are asked first: the answer comes later */
	if (status_start(ctl.agent, f, "* ", CTL_MAX_OUT - CTL_LINE,
	    status_done, c, &c->sreq) != 0) {
		say(c, "ERR failed out of memory");
		client_end(c);
		return;
	}
	c->state = C_WORK;
	loop_set(&c->w, 0);
}

/* The reload's answer (agent/reload.c), to the client that asked. */
static void
reload_answer(void *arg, int err, const char *msg)
{
	struct ctl_client	*c = ctl.reload_client;

	(void)arg;
	ctl.reload_client = NULL;
	if (c == NULL)
		return;		/* it left; the log has the result */
	if (err == 0)
		say(c, "OK reloaded %s", msg);
	else
		say(c, "ERR reload-failed %s; the running configuration "
		    "stays", msg);
	client_end(c);
}

static void
req_reload(struct ctl_client *c, int argc, char **argv)
{
	char	 by[PATH_MAX + 128];

	if (argc != 1) {
		say(c, "ERR usage reload");
		client_end(c);
		return;
	}
	if (ctl.reload_client != NULL) {
		say(c, "ERR busy a reload is already under way");
		client_end(c);
		return;
	}
	by_client(c, by, sizeof(by));
	log_info("reload asked %s", by);
	c->state = C_WORK;
	loop_set(&c->w, 0);	/* nothing more to read; written at the end */
	ctl.reload_client = c;
	reload_start(ctl.agent, reload_answer, NULL);
}

void
control_set_lock_after(int seconds)
{
	if (ctl.lock_after == seconds)
		return;
	log_info("lock-after set to %d s%s by the configuration (was %d s)",
	    seconds, seconds == 0 ? " (off)" : "", ctl.lock_after);
	ctl.lock_after = seconds;
}

/* Splits the request into words and runs it from the table. */
static void
request(struct ctl_client *c, char *line)
{
	char	*argv[CTL_MAX_WORDS + 1], *save = NULL, *w;
	char	 list[256] = "";
	size_t	 i, n;
	int	 argc = 0;

	for (w = line; *w != '\0'; w++)
		if ((unsigned char)*w < 0x20 && *w != '\t') {
			say(c, "ERR bad-request control character 0x%02x in "
			    "the request", (unsigned char)*w);
			client_end(c);
			return;
		}
	for (w = strtok_r(line, " \t", &save); w != NULL;
	    w = strtok_r(NULL, " \t", &save)) {
		if (argc == CTL_MAX_WORDS) {
			say(c, "ERR bad-request more than %d words",
			    CTL_MAX_WORDS);
			client_end(c);
			return;
		}
		argv[argc++] = w;
	}
	argv[argc] = NULL;
	for (i = 0; argc > 0 && i < sizeof(requests) / sizeof(requests[0]);
	    i++)
		if (strcmp(argv[0], requests[i].name) == 0) {
			log_debug("control: '%s' from uid %ld pid %ld",
			    requests[i].name, c->peer.uid, c->peer.pid);
			requests[i].fn(c, argc, argv);
			return;
		}
	for (i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
		n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "%s%s", i ? "; " : "",
		    requests[i].usage);
	}
	if (argc == 0)
		say(c, "ERR bad-request empty request; requests: %s", list);
	else
		say(c, "ERR unknown-request '%.64s' is not a request; "
		    "requests: %s", argv[0], list);
	client_end(c);
}

/* Reads the request line; bounded, never blocking. */
static void
client_read(struct ctl_client *c)
{
	ssize_t	 n;
	char	*nl;

	for (;;) {
		n = recv(c->w.fd, c->in + c->inlen, sizeof(c->in) - c->inlen,
		    MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			if (n == 0 && c->inlen > 0) {
				say(c, "ERR bad-request the request does not "
				    "end with a newline");
				client_end(c);
			} else
				client_free(c);
			return;
		}
		c->inlen += (size_t)n;
		if ((nl = memchr(c->in, '\n', c->inlen)) != NULL) {
			*nl = '\0';
			if (nl > c->in && nl[-1] == '\r')
				nl[-1] = '\0';
			if (memchr(c->in, '\0', (size_t)(nl - c->in)) !=
			    NULL) {
				say(c, "ERR bad-request a NUL byte in the "
				    "request");
				client_end(c);
			} else
				request(c, c->in);
			return;
		}
		if (c->inlen == sizeof(c->in)) {
			log_warn("control: a request from uid %ld pid %ld is "
			    "longer than %d bytes; closed", c->peer.uid,
			    c->peer.pid, CONTROL_MAX_LINE);
			say(c, "ERR too-long the request is longer than %d "
			    "bytes", CONTROL_MAX_LINE);
			client_end(c);
			return;
		}
	}
}

static void
on_client(struct watch *w, uint32_t events)
{
	struct ctl_client	*c = w->arg;

	if (c->gone)
		return;
	if (c->state == C_READ)
		client_read(c);
	else if (c->state == C_WRITE)
		client_write(c);
}

static void
on_accept(struct listener *ln, int fd)
{
	static const char	 busy[] = "ERR busy too many control clients "
	    "at once; try again\n";
	struct ctl_client	*c;
	ssize_t			 n;

	if (ctl.nclients >= CTL_MAX_CLIENTS ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("control: %s; refused a client", ctl.nclients >=
		    CTL_MAX_CLIENTS ? "too many clients at once" :
		    "out of memory");
		n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL |
		    MSG_DONTWAIT);
		(void)n;
		close(fd);
		return;
	}
	peer_from_fd(fd, &c->peer);
	loop_watch_init(&c->w, fd, on_client, c);
	c->state = C_READ;
	c->deadline = clock_now_ms() + CTL_READ_MS;
	c->next = ctl.clients;
	ctl.clients = c;
	ctl.nclients++;
	log_debug("control: a client: uid %ld pid %ld (%d of at most %d)",
	    c->peer.uid, c->peer.pid, ctl.nclients, CTL_MAX_CLIENTS);
	if (c->peer.uid == -1 || c->peer.uid != (long)getuid()) {
		log_warn("control: refused uid %ld (program %s, pid %ld): only "
		    "uid %ld may control this agent", c->peer.uid,
		    c->peer.exe[0] ? c->peer.exe : "?", c->peer.pid,
		    (long)getuid());
		say(c, "ERR denied uid %ld may not control this agent (it runs "
		    "as uid %ld)", c->peer.uid, (long)getuid());
		client_end(c);
		return;
	}
	if (loop_set(&c->w, EPOLLIN) != 0)
		client_free(c);
}

/* ---- the socket */

/* Is an agent answering on path?  1 yes, 0 no, or -1 (stale: nobody). */
static int
probe(const char *path)
{
	struct sockaddr_un	 sun;
	int			 fd, r = 0;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		r = 1;
	else if (errno == ECONNREFUSED)
		r = -1;
	close(fd);
	return r;
}

/* The user named in messages: ours. */
static void
set_user(void)
{
	struct passwd	 pw, *res = NULL;
	char		 buf[4096];

	if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 &&
	    res != NULL)
		snprintf(ctl.user, sizeof(ctl.user), "%s", pw.pw_name);
	else
		snprintf(ctl.user, sizeof(ctl.user), "uid %ld",
		    (long)getuid());
}

/*
 * The socket systemd passed as "control" (agent/sd.c): served as it is;
 * clients find it only where they look (path), which is said if it is
 * elsewhere.
 */
static int
open_inherited(int fd, const char *path)
{
	char	 err[512];
	int	 r;

	if ((r = listen_adopt(&ctl.ln, fd, SD_CONTROL_NAME, 0, on_accept,
	    NULL, err, sizeof(err))) != 0) {
		log_err("control socket: %s", err);
		return r;
	}
	ctl.open = 1;
	set_user();
	if (path == NULL || strncmp(ctl.ln.addr, "unix:", 5) != 0 ||
	    strcmp(ctl.ln.addr + 5, path) != 0)
		log_warn("control socket: systemd passed %s, but p11agent "
		    "status, lock and unlock look for it at %s: make the "
		    "socket unit's ListenStream= and control = agree",
		    ctl.ln.addr, path != NULL ? path : "(no path: "
		    "XDG_RUNTIME_DIR is unset)");
	log_info("control socket %s (passed by systemd)", ctl.ln.addr);
	if (ctl.lock_after > 0)
		log_info("lock-after %d s: the tokens are logged out when no "
		    "signature happened for that long", ctl.lock_after);
	return 0;
}

int
control_open(struct agent *a, const char *path)
{
	struct cfg_listen	 l;
	char			 err[512];
	int			 r, was, fd;

	memset(&ctl, 0, sizeof(ctl));
	ctl.agent = a;
	status_init();
	ctl.lock_after = a->cfg->agent.lock_after;
	if (sd_listen_fd(SD_CONTROL_NAME, &fd) == 0)
		return open_inherited(fd, path);
	if (path == NULL)
		return 0;	/* the caller said why there is none */
	if ((was = probe(path)) == 1) {
		log_err("control socket %s: another p11agent is running and "
		    "answers there; stop it first, or give this one its own "
		    "control = PATH", path);
		return P11A_ERR_CONFIG;
	}
	memset(&l, 0, sizeof(l));
	l.kind = LISTEN_UNIX;
	l.path = (char *)path;
	if ((r = listen_open(&ctl.ln, &l, 0, on_accept, NULL, err,
	    sizeof(err))) != 0) {
		log_err("control socket: %s", err);
		return r;
	}
	ctl.open = 1;
	set_user();
	if (was == -1)
		log_info("control socket %s: replaced a stale socket (no agent "
		    "answered on it)", path);
	log_debug("control socket %s", path);
	if (ctl.lock_after > 0)
		log_info("lock-after %d s: the tokens are logged out when no "
		    "signature happened for that long", ctl.lock_after);
	return 0;
}

void
control_tick(struct agent *a, long now)
{
	struct ctl_client	*c, *next;
	char			 by[64];
	long			 last;

	status_tick(now);	/* the metrics listener's too */
	if (!ctl.open)
		return;
	for (c = ctl.clients; c != NULL; c = next) {
		next = c->next;
		if (c->state == C_WORK || now < c->deadline)
			continue;
		if (c->state == C_READ) {
			log_debug("control: no request from pid %ld within "
			    "%d ms; closed", c->peer.pid, CTL_READ_MS);
			say(c, "ERR timeout no request within %d s",
			    CTL_READ_MS / 1000);
			client_end(c);	/* one try to say it, then closed */
			if (!c->gone)
				client_free(c);
		} else {
			log_debug("control: pid %ld did not take its answer "
			    "within %d ms; closed", c->peer.pid, CTL_WRITE_MS);
			client_free(c);
		}
	}
	last = last_activity();
	if (ctl.lock_after > 0 && ctl.ops == 0 && !a->stopping &&
	    last > ctl.lock_mark && now - last >= ctl.lock_after * 1000L) {
		snprintf(by, sizeof(by), "no signature for %d s",
		    ctl.lock_after);
		op_start(NULL, &ask_lock, by);
	}
}

void
control_close(struct agent *a)
{
	if (!ctl.open)
		return;
	while (ctl.clients != NULL)
		client_free(ctl.clients);
	listen_close(&ctl.ln);
	ctl.open = 0;
}

/* ---- the command line's side */

/* Prints one line of the answer; 1 for the last (OK/ERR), else 0. */
static int
print_line(const char *line, int *status)
{
	const char	*msg;

	if (strncmp(line, "* ", 2) == 0) {
		printf("%s\n", line + 2);
		return 0;
	}
	if (strcmp(line, "OK") == 0 || strncmp(line, "OK ", 3) == 0) {
		if (line[2] != '\0')
			printf("%s\n", line + 3);
		*status = CONTROL_EXIT_OK;
		return 1;
	}
	*status = CONTROL_EXIT_FAILED;
	fflush(stdout);		/* the lines before it come first */
	if (strncmp(line, "ERR ", 4) == 0) {
		msg = strchr(line + 4, ' ');
		log_err("%s", msg != NULL ? msg + 1 : line + 4);
	} else
		log_err("the agent answered something unexpected: '%.200s'",
		    line);
	return 1;
}

/* Reads and prints the answer until its last line. */
static int
read_answer(int fd, const char *path, int timeout_ms)
{
	struct pollfd	 pfd = { .fd = fd, .events = POLLIN };
	char		 buf[CTL_MAX_OUT + 1], *nl, *p;
	size_t		 len = 0;
	long		 end = clock_now_ms() + timeout_ms;
	ssize_t		 n;
	int		 status = CONTROL_EXIT_FAILED;

	for (;;) {
		if (poll(&pfd, 1, (int)(end - clock_now_ms() > 0 ?
		    end - clock_now_ms() : 0)) == 0) {
			log_err("no answer from the agent at %s within %d s",
			    path, timeout_ms / 1000);
			return CONTROL_EXIT_FAILED;
		}
		if ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) == -1 &&
		    errno == EINTR)
			continue;
		if (n <= 0 || len + (size_t)n >= sizeof(buf) - 1) {
			log_err("the agent at %s %s", path, n < 0 ?
			    strerror(errno) : n == 0 ? "closed the connection "
			    "without an answer" : "sent too long an answer");
			return CONTROL_EXIT_FAILED;
		}
		len += (size_t)n;
		buf[len] = '\0';
		for (p = buf; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
			*nl = '\0';
			if (print_line(p, &status))
				return status;
		}
		memmove(buf, p, len - (size_t)(p - buf));
		len -= (size_t)(p - buf);
	}
}

int
control_request(const char *path, const char *req, int timeout_ms)
{
	struct sockaddr_un	 sun;
	const char		*p;
	char			 line[CONTROL_MAX_LINE + 1];
	int			 fd, n, r;

	for (p = req; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20) {
			log_err("a control character in the request");
			return CONTROL_EXIT_FAILED;
		}
	n = snprintf(line, sizeof(line), "%s\n", req);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		log_err("the request is longer than %d bytes", CONTROL_MAX_LINE);
		return CONTROL_EXIT_FAILED;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_err("%s: the path is too long for a socket", path);
		return CONTROL_EXIT_FAILED;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		log_err_sys("socket");
		return CONTROL_EXIT_FAILED;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (errno == ENOENT || errno == ECONNREFUSED) {
			log_err("no p11agent is running (%s at %s); start one "
			    "with p11agent run", errno == ENOENT ?
			    "no control socket" : "a stale control socket, "
			    "nobody answers,", path);
			r = CONTROL_EXIT_NO_AGENT;
		} else {
			log_err("cannot reach the agent's control socket %s: "
			    "%s", path, strerror(errno));
			r = CONTROL_EXIT_FAILED;
		}
		close(fd);
		return r;
	}
	/* a refusal (denied, busy) may come instead of reading it */
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n && errno != EPIPE &&
	    errno != ECONNRESET) {
		log_err("%s: %s", path, strerror(errno));
		close(fd);
		return CONTROL_EXIT_FAILED;
	}
	r = read_answer(fd, path, timeout_ms);
	close(fd);
	return r;
}
