/*
 * p11agent: the metrics listener (metrics.h).
 *
 * Each client goes READ (its request, bounded in size and time), WORK
 * (the status is built: agent/status.c asks the token helpers), WRITE
 * (the answer, bounded in time) and DRAIN (our side shut, what the client
 * still sends is read and dropped until it closes or a short while has
 * passed, so that closing does not reset an answer it has not read yet).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "p11agent/agent.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/listen.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/metrics.h"
#include "p11agent/status.h"

#define MX_DRAIN_MS	1000
#define MX_WARN_MS	10000	/* between two "refused" warnings */
#define MX_DRAIN_MAX	(64 * 1024)
#define MX_CTYPE	"text/plain; version=0.0.4; charset=utf-8"

enum mx_state { M_READ, M_WORK, M_WRITE, M_DRAIN };

struct mx_client {
	struct watch		 w;
	enum mx_state		 state;
	int			 gone;
	long			 deadline;
	int			 head;		/* HEAD: no body */
	char			 in[METRICS_MAX_REQUEST];
	size_t			 inlen;
	size_t			 drained;
	char			*out;
	size_t			 outlen, outoff;
	struct status_req	*sreq;
	struct mx_client	*next;
};

static struct {
	struct agent		*agent;
	struct listener		 ln;
	int			 open;
	struct mx_client	*clients;
	int			 nclients;
	unsigned long		 refused;	/* since the last warning */
	long			 warned;	/* when it was said */
} mx;

static void
client_free_deferred(void *arg)
{
	struct mx_client	*c = arg;

	free(c->out);
	free(c);
}

/* Closes the client now; its memory goes after this batch of events. */
static void
client_free(struct mx_client *c)
{
	struct mx_client	**pp;

	if (c->gone)
		return;
	c->gone = 1;
	for (pp = &mx.clients; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	mx.nclients--;
	status_cancel(c->sreq);
	loop_set(&c->w, 0);
	close(c->w.fd);
	c->w.fd = -1;
	loop_defer(client_free_deferred, c);
}

/* The answer is out: our side is shut, the client's rest dropped. */
static void
client_drain(struct mx_client *c)
{
	char	 buf[4096];
	ssize_t	 n;

	if (c->state != M_DRAIN) {
		c->state = M_DRAIN;
		c->deadline = clock_now_ms() + MX_DRAIN_MS;
		shutdown(c->w.fd, SHUT_WR);
		if (loop_set(&c->w, EPOLLIN) != 0) {
			client_free(c);
			return;
		}
	}
	for (;;) {
		n = recv(c->w.fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0 || (c->drained += (size_t)n) > MX_DRAIN_MAX) {
			client_free(c);
			return;
		}
	}
}

static void
client_write(struct mx_client *c)
{
	switch (listen_send_rest(c->w.fd, c->out, c->outlen, &c->outoff)) {
	case 0:
		if (loop_set(&c->w, EPOLLOUT) != 0)
			client_free(c);
		return;
	case -1:
		log_debug("metrics: a client left before its answer: %s",
		    strerror(errno));
		client_free(c);
		return;
	default:
		client_drain(c);
	}
}

/*
 * Sends the status line, headers and body (len bytes; for HEAD only
 * their length), then closes.
 */
static void
respond(struct mx_client *c, int code, const char *reason,
    const char *headers, const char *ctype, const char *body, size_t len)
{
	char	 head[512];
	int	 n;

	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: "
	    "%s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", code,
	    reason, ctype, len, headers != NULL ? headers : "");
	if (c->head)
		len = 0;
	free(c->out);
	if (n < 0 || (size_t)n >= sizeof(head) ||
	    (c->out = malloc((size_t)n + len)) == NULL) {
		c->out = NULL;
		client_free(c);
		return;
	}
	memcpy(c->out, head, (size_t)n);
	if (len > 0)
		memcpy(c->out + n, body, len);
	c->outlen = (size_t)n + len;
	c->outoff = 0;
	c->state = M_WRITE;
	c->deadline = clock_now_ms() + METRICS_WRITE_MS;
	client_write(c);
}

/* An error answer: its code, and one line saying why. */
static void
respond_error(struct mx_client *c, int code, const char *reason,
    const char *headers, const char *why)
{
	char	 body[512];
	int	 n;

	log_debug("metrics: %d %s: %s", code, reason, why);
	n = snprintf(body, sizeof(body), "%d %s: %s\n", code, reason, why);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = 0;
	respond(c, code, reason, headers, "text/plain; charset=utf-8", body,
	    (size_t)n);
}

/* The status is built: it is the body. */
static void
status_done(void *arg, char *text, size_t len, int cut)
{
	struct mx_client	*c = arg;

	c->sreq = NULL;
	if (text == NULL)
		respond_error(c, 500, "Internal Server Error", NULL,
		    "out of memory");
	else if (cut)
		respond_error(c, 500, "Internal Server Error", NULL, "the "
		    "metrics are larger than the 4 MiB an answer may have");
	else
		respond(c, 200, "OK", NULL, MX_CTYPE, text, len);
	free(text);
}

/* A token (RFC 9110 tchar): the method. */
static int
is_token(const char *s, size_t len)
{
	size_t	 i;

	if (len == 0)
		return 0;
	for (i = 0; i < len; i++)
		if (strchr("!#$%&'*+-.^_`|~", s[i]) == NULL &&
		    !(s[i] >= '0' && s[i] <= '9') &&
		    !(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= 'A' && s[i] <= 'Z'))
			return 0;
	return 1;
}

/* The request line "METHOD SP TARGET SP HTTP/1.x" of a whole request. */
/*
 * On a loopback port, a web page the user opens could reach the metrics
 * through a name it points at 127.0.0.1 (DNS rebinding): the Host header
 * must name loopback, and HTTP/1.1 must send one (RFC 9112, 3.2).  A Unix
 * socket or an allow-remote-listen port takes any.  1 if fine.
 */
static int
host_ok(const char *headers, int http11)
{
	const char	*h, *v, *e;
	char		 host[300];
	size_t		 n;

	if (strncmp(mx.ln.addr, "tcp:", 4) != 0 ||
	    mx.agent->cfg->agent.allow_remote)
		return 1;
	for (h = headers; h != NULL && *h != '\0'; h = e != NULL ? e + 1 :
	    NULL) {
		e = strchr(h, '\n');
		if (strncasecmp(h, "host:", 5) != 0)
			continue;
		v = h + 5 + strspn(h + 5, " \t");
		n = e != NULL ? (size_t)(e - v) : strlen(v);
		while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == ' ' ||
		    v[n - 1] == '\t'))
			n--;
		if (n >= sizeof(host))
			return 0;
		memcpy(host, v, n);
		host[n] = '\0';
		/* the port, if any, is the listener's business */
		if (host[0] == '[')
			return strncmp(host, "[::1]", 5) == 0 &&
			    (host[5] == '\0' || host[5] == ':');
		if ((e = strchr(host, ':')) != NULL)
			host[e - host] = '\0';
		return strcasecmp(host, "localhost") == 0 ||
		    strncmp(host, "127.", 4) == 0;
	}
	return !http11;
}

static void
request(struct mx_client *c, char *line, const char *headers)
{
	char	*sp1, *sp2, *target, *version, *q;
	size_t	 i;

	for (i = 0; line[i] != '\0'; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
			respond_error(c, 400, "Bad Request", NULL, "a control "
			    "character in the request line");
			return;
		}
	if ((sp1 = strchr(line, ' ')) == NULL ||
	    (sp2 = strchr(sp1 + 1, ' ')) == NULL ||
	    strchr(sp2 + 1, ' ') != NULL ||
	    !is_token(line, (size_t)(sp1 - line)) || sp1[1] != '/') {
		respond_error(c, 400, "Bad Request", NULL, "not an HTTP "
		    "request line (METHOD /PATH HTTP/1.1)");
		return;
	}
	*sp1 = *sp2 = '\0';
	target = sp1 + 1;
	version = sp2 + 1;
	if (strncmp(version, "HTTP/", 5) != 0 || strlen(version) != 8 ||
	    version[6] != '.' || version[5] < '0' || version[5] > '9' ||
	    version[7] < '0' || version[7] > '9') {
		respond_error(c, 400, "Bad Request", NULL, "not an HTTP "
		    "version (HTTP/1.1)");
		return;
	}
	if (version[5] != '1') {
		respond_error(c, 505, "HTTP Version Not Supported", NULL,
		    "HTTP/1.0 and HTTP/1.1 only");
		return;
	}
	c->head = strcmp(line, "HEAD") == 0;
	if (strcmp(line, "GET") != 0 && !c->head) {
		respond_error(c, 405, "Method Not Allowed", "Allow: GET, "
		    "HEAD\r\n", "GET /metrics only");
		return;
	}
	if ((q = strchr(target, '?')) != NULL)
		*q = '\0';
	if (strcmp(target, "/metrics") != 0) {
		respond_error(c, 404, "Not Found", NULL, "the metrics are at "
		    "/metrics");
		return;
	}
	if (!host_ok(headers, version[7] >= '1')) {
		respond_error(c, 400, "Bad Request", NULL, "the Host header "
		    "must name this machine's loopback (localhost, 127.0.0.1, "
		    "[::1])");
		return;
	}
	if (status_start(mx.agent, STATUS_PROMETHEUS, NULL, METRICS_MAX_BODY,
	    status_done, c, &c->sreq) != 0) {
		respond_error(c, 500, "Internal Server Error", NULL,
		    "out of memory");
		return;
	}
	c->state = M_WORK;
	loop_set(&c->w, 0);
}

/* The end of the headers: a blank line (CRLF CRLF, or bare LFs). */
static char *
request_end(struct mx_client *c)
{
	size_t	 i;

	for (i = 0; i + 1 < c->inlen; i++) {
		if (c->in[i] != '\n')
			continue;
		if (c->in[i + 1] == '\n' || (c->in[i + 1] == '\r' &&
		    i + 2 < c->inlen && c->in[i + 2] == '\n'))
			return c->in + i;
	}
	return NULL;
}

/* Reads the request; bounded, never blocking. */
static void
client_read(struct mx_client *c)
{
	char	*nl;
	ssize_t	 n;

	for (;;) {
		n = recv(c->w.fd, c->in + c->inlen, sizeof(c->in) - 1 -
		    c->inlen, MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			if (n == 0 && c->inlen > 0)
				respond_error(c, 400, "Bad Request", NULL,
				    "the request ends before its blank line");
			else
				client_free(c);
			return;
		}
		c->inlen += (size_t)n;
		c->in[c->inlen] = '\0';
		if (memchr(c->in, '\0', c->inlen) != NULL) {
			respond_error(c, 400, "Bad Request", NULL, "a NUL byte "
			    "in the request");
			return;
		}
		if (request_end(c) != NULL) {
			nl = strchr(c->in, '\n');
			*nl = '\0';
			if (nl > c->in && nl[-1] == '\r')
				nl[-1] = '\0';
			request(c, c->in, nl + 1);
			return;
		}
		if (c->inlen == sizeof(c->in) - 1) {
			respond_error(c, 431, "Request Header Fields Too Large",
			    NULL, "the request is longer than 8192 bytes");
			return;
		}
	}
}

static void
on_client(struct watch *w, uint32_t events)
{
	struct mx_client	*c = w->arg;

	(void)events;
	if (c->gone)
		return;
	switch (c->state) {
	case M_READ:
		client_read(c);
		break;
	case M_WRITE:
		client_write(c);
		break;
	case M_DRAIN:
		client_drain(c);
		break;
	default:
		break;
	}
}

static void
on_accept(struct listener *ln, int fd)
{
	static const char	 busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 43\r\n"
	    "Connection: close\r\nRetry-After: 1\r\n\r\n"
	    "too many metrics clients at once; try again\n";
	struct mx_client	*c;
	ssize_t			 n;

	(void)ln;
	if (mx.nclients >= METRICS_MAX_CLIENTS ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		/* said once per MX_WARN_MS: any local user can do this */
		mx.refused++;
		if (mx.warned == 0 || clock_now_ms() - mx.warned >= MX_WARN_MS) {
			log_warn("metrics: %s; refused %lu client%s since the "
			    "last such line", mx.nclients >= METRICS_MAX_CLIENTS ?
			    "more than 32 clients at once" : "out of memory",
			    mx.refused, mx.refused == 1 ? "" : "s");
			mx.warned = clock_now_ms();
			mx.refused = 0;
		}
		n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL |
		    MSG_DONTWAIT);
		(void)n;
		close(fd);
		return;
	}
	loop_watch_init(&c->w, fd, on_client, c);
	c->state = M_READ;
	c->deadline = clock_now_ms() + METRICS_READ_MS;
	c->next = mx.clients;
	mx.clients = c;
	mx.nclients++;
	if (loop_set(&c->w, EPOLLIN) != 0)
		client_free(c);
}

int
metrics_open(struct agent *a, int ready_fd)
{
	const struct cfg_agent	*ca = &a->cfg->agent;
	char			 err[512], line[200];
	int			 r;

	memset(&mx, 0, sizeof(mx));
	mx.agent = a;
	if (ca->metrics.kind == 0)
		return 0;
	status_init();
	if ((r = listen_open(&mx.ln, &ca->metrics, ca->allow_remote,
	    on_accept, NULL, err, sizeof(err))) != 0) {
		log_err("%s:%d: [agent] metrics: %s", a->cfg->path,
		    ca->metrics.line, err);
		return r;
	}
	mx.open = 1;
	log_info("metrics: serving GET /metrics on %s%s", mx.ln.addr,
	    ca->metrics.kind == LISTEN_TCP ? " (every local user may read "
	    "it)" : "");
	snprintf(line, sizeof(line), "metrics %s\n", mx.ln.addr);
	if (ready_fd != -1 && write(ready_fd, line, strlen(line)) < 0)
		log_warn_sys("ready fd");
	return 0;
}

void
metrics_tick(long now)
{
	struct mx_client	*c, *next;

	if (!mx.open)
		return;
	listen_tick(&mx.ln, now);
	for (c = mx.clients; c != NULL; c = next) {
		next = c->next;
		if (c->state == M_WORK || now < c->deadline)
			continue;
		if (c->state == M_READ) {
			/* one try to say it, then closed */
			respond_error(c, 408, "Request Timeout", NULL, "no "
			    "whole request within 3 s");
			if (!c->gone && c->state == M_WRITE)
				client_free(c);
		} else
			client_free(c);
	}
}

void
metrics_close(void)
{
	if (!mx.open)
		return;
	while (mx.clients != NULL)
		client_free(mx.clients);
	listen_close(&mx.ln);
	mx.open = 0;
}
