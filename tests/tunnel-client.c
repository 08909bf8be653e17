/*
 * tunnel-client: the plaintext application used by the p11agent tests.
 *
 * Connects to the agent's local side and checks what comes back from the
 * tls-echo-server behind it: a byte-exact echo (roundtrip), a prompt close
 * (expect-close), the data of a server that closes first and then the end
 * of the stream (drain), that open tunnels keep flowing while a new
 * tunnel is being set up (latency), round trips of small pings (pings), or
 * it sends and reads back bulk data as fast as it can (flood).  With
 * burst it opens --count connections at once from this one process and
 * makes each a small round trip (no process per connection to schedule).  Every
 * wait is bounded by --timeout.
 */

#include <sys/types.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG			"tunnel-client"
#define LINE_MAX_LEN		4096
#define IO_CHUNK		65536
#define PING_LEN		64
#define WARMUP_PINGS		3
#define MIN_PENDING_PINGS	5
#define SHOW_MAX		256
#define NS_PER_MS		1000000LL
/* tls-echo-server --send: byte k of its data */
#define PATTERN(k)		((unsigned char)((k) % 251))
#define BURST_MAX		1000
#define BURST_BYTES_MAX		4096

struct addr {
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	const char		*text;
};

struct options {
	const char		*addr;
	const char		*mode;
	const char		*expect_subject;
	const char		*second_addr;
	unsigned long long	 bytes;
	long long		 max_ms;
	long long		 min_second_ms;
	long long		 p99_ms;	/* latency: 0, or a bound */
	long long		 count;
	double			 timeout_s;
	int			 have_bytes;
	int			 have_max;
	int			 have_min;
	int			 have_count;
	int			 ack;
	unsigned long long	 pause_after;	/* roundtrip: 0, or a pause */
};

struct linebuf {
	char	 buf[LINE_MAX_LEN + 1];
	size_t	 len;
	size_t	 line_len;	/* including '\n'; 0 while incomplete */
};

struct roundtrip {
	unsigned char		*data;
	unsigned long long	 total;
	unsigned long long	 nsent;
	unsigned long long	 nrecv;
	unsigned long long	 pause_at;	/* 0: none; else sent, then */
	int			 paused;	/* 1 until a line on stdin */
};

struct pinger {
	int		 fd;
	unsigned char	 out[PING_LEN];
	unsigned char	 in[PING_LEN];
	size_t		 nout;
	size_t		 nin;
	unsigned	 seq;
	int64_t		 t0;
};

enum second_state {
	B_CONNECTING,
	B_SENDING,
	B_READING,
	B_DONE
};

struct second {
	const struct addr	*addr;
	int			 fd;
	enum second_state	 state;
	struct linebuf		 lb;
	int64_t			 t0;
	int64_t			 elapsed;
};

static int64_t	 deadline;
static double	 timeout_s = 20;

static _Noreturn void
usage(void)
{
	fprintf(stderr,
	    "usage: " PROG " ADDR roundtrip --bytes N [--expect-subject STR]"
	    " [--pause-after N] [--timeout S]\n"
	    "       " PROG " ADDR expect-close [--timeout S]\n"
	    "       " PROG " ADDR drain --bytes N [--ack] [--timeout S]\n"
	    "       " PROG " ADDR latency --second-addr ADDR2 --max-ms M"
	    " --min-second-ms K [--p99-ms P] [--timeout S]\n"
	    "       " PROG " ADDR pings --count N --max-ms M [--timeout S]\n"
	    "       " PROG " ADDR burst --count N --bytes B [--timeout S]\n"
	    "       " PROG " ADDR flood [--timeout S]\n"
	    "ADDR is tcp:HOST:PORT, tcp:[IPv6]:PORT or unix:/path;"
	    " N may end in K, M or G (binary)\n");
	exit(2);
}

static _Noreturn void
usage_error(const char *fmt, ...)
{
	va_list	 ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see --help)\n");
	exit(2);
}

static _Noreturn void
fail(const char *fmt, ...)
{
	va_list	 ap;

	fflush(stdout);
	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static int64_t
now_ns(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long
to_ms(int64_t ns)
{
	return (long long)(ns / NS_PER_MS);
}

/* Milliseconds left before the deadline, rounded up, for poll(). */
static int
remaining_ms(void)
{
	int64_t	 left = deadline - now_ns();

	if (left <= 0)
		return 0;
	return (int)((left + NS_PER_MS - 1) / NS_PER_MS);
}

/* poll() until the deadline; returns 0 on timeout. */
static int
poll_deadline(struct pollfd *pfd, nfds_t n)
{
	int	 r;

	for (;;) {
		r = poll(pfd, n, remaining_ms());
		if (r >= 0)
			return r;
		if (errno != EINTR)
			fail("poll: %s", strerror(errno));
	}
}

static void
wait_ready(int fd, short events, const char *what)
{
	struct pollfd	 pfd;

	pfd.fd = fd;
	pfd.events = events;
	pfd.revents = 0;
	if (poll_deadline(&pfd, 1) == 0)
		fail("timeout after %g s %s", timeout_s, what);
}

static long long
parse_ll(const char *s, long long max, const char *name)
{
	char		*end;
	long long	 v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
		usage_error("%s: expected an integer in 0..%lld, got \"%s\"",
		    name, max, s);
	return v;
}

static unsigned long long
parse_bytes(const char *s)
{
	unsigned long long	 v, mult = 1;
	char			*end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *s == '-')
		usage_error("--bytes: bad number \"%s\"", s);
	if (*end == 'K' || *end == 'k')
		mult = 1ULL << 10;
	else if (*end == 'M' || *end == 'm')
		mult = 1ULL << 20;
	else if (*end == 'G' || *end == 'g')
		mult = 1ULL << 30;
	if (mult != 1)
		end++;
	if (*end != '\0' || v > (4ULL << 30) / mult)
		usage_error("--bytes: bad number \"%s\" (at most 4G)", s);
	return v * mult;
}

static double
parse_timeout(const char *s)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 86400)
		usage_error("--timeout: expected seconds in (0, 86400],"
		    " got \"%s\"", s);
	return v;
}

static void
check_mode_options(const struct options *o)
{
	int	 rt = strcmp(o->mode, "roundtrip") == 0;
	int	 lat = strcmp(o->mode, "latency") == 0;
	int	 pings = strcmp(o->mode, "pings") == 0;
	int	 dr = strcmp(o->mode, "drain") == 0;

	if (strcmp(o->mode, "burst") == 0) {
		if (!o->have_count || o->count == 0 || o->count > BURST_MAX ||
		    !o->have_bytes || o->bytes == 0 ||
		    o->bytes > BURST_BYTES_MAX || o->have_max ||
		    o->have_min || o->second_addr != NULL ||
		    o->expect_subject != NULL || o->ack)
			usage_error("burst needs --count N (1..%d) and --bytes B"
			    " (1..%d), only", BURST_MAX, BURST_BYTES_MAX);
		return;
	}
	if (!rt && !lat && !pings && !dr &&
	    strcmp(o->mode, "expect-close") != 0 &&
	    strcmp(o->mode, "flood") != 0)
		usage_error("unknown mode \"%s\"", o->mode);
	if (pings && (!o->have_count || !o->have_max || o->count == 0 ||
	    o->have_min || o->second_addr != NULL || o->have_bytes ||
	    o->expect_subject != NULL))
		usage_error("pings needs --count N (N > 0) and --max-ms, only");
	if (!pings && o->have_count)
		usage_error("--count is for pings");
	if (!dr && o->ack)
		usage_error("--ack is for drain");
	if (o->pause_after != 0 && (!rt || o->pause_after >= o->bytes))
		usage_error("--pause-after N is for roundtrip, below --bytes");
	if (pings)
		return;
	if ((rt || dr) && !o->have_bytes)
		usage_error("%s needs --bytes N", o->mode);
	if (!rt && !dr && (o->have_bytes || o->expect_subject != NULL))
		usage_error("--bytes and --expect-subject are for roundtrip"
		    " and drain");
	if (lat && (o->second_addr == NULL || !o->have_max || !o->have_min))
		usage_error("latency needs --second-addr, --max-ms and"
		    " --min-second-ms");
	if (!lat && o->p99_ms > 0)
		usage_error("--p99-ms is for latency");
	if (!lat && (o->second_addr != NULL || o->have_max || o->have_min))
		usage_error("--second-addr, --max-ms and --min-second-ms are"
		    " for latency");
}

static void
parse_args(int argc, char *argv[], struct options *o)
{
	static const struct option longopts[] = {
		{ "bytes", required_argument, NULL, 'b' },
		{ "expect-subject", required_argument, NULL, 's' },
		{ "second-addr", required_argument, NULL, 'a' },
		{ "max-ms", required_argument, NULL, 'm' },
		{ "p99-ms", required_argument, NULL, '9' },
		{ "min-second-ms", required_argument, NULL, 'k' },
		{ "timeout", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "ack", no_argument, NULL, 'A' },
		{ "pause-after", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int	 ch;

	memset(o, 0, sizeof(*o));
	o->timeout_s = 20;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			o->bytes = parse_bytes(optarg);
			o->have_bytes = 1;
			break;
		case 's':
			o->expect_subject = optarg;
			break;
		case 'a':
			o->second_addr = optarg;
			break;
		case 'm':
			o->max_ms = parse_ll(optarg, 86400000, "--max-ms");
			o->have_max = 1;
			break;
		case '9':
			o->p99_ms = parse_ll(optarg, 86400000, "--p99-ms");
			break;
		case 'k':
			o->min_second_ms = parse_ll(optarg, 86400000,
			    "--min-second-ms");
			o->have_min = 1;
			break;
		case 't':
			o->timeout_s = parse_timeout(optarg);
			break;
		case 'n':
			o->count = parse_ll(optarg, 1000000, "--count");
			o->have_count = 1;
			break;
		case 'A':
			o->ack = 1;
			break;
		case 'P':
			o->pause_after = parse_bytes(optarg);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2)
		usage_error("expected ADDR and MODE");
	o->addr = argv[optind];
	o->mode = argv[optind + 1];
	check_mode_options(o);
}

static void
parse_unix(const char *path, struct addr *a)
{
	struct sockaddr_un	*su = (struct sockaddr_un *)&a->ss;
	size_t			 len = strlen(path);

	if (len == 0 || len >= sizeof(su->sun_path))
		usage_error("%s: empty or too long unix socket path", a->text);
	su->sun_family = AF_UNIX;
	memcpy(su->sun_path, path, len + 1);
	a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

static void
parse_tcp(const char *hostport, struct addr *a)
{
	struct addrinfo	 hints, *res;
	const char	*port, *end;
	char		 host[256];
	size_t		 hlen;
	int		 e;

	if (*hostport == '[') {
		hostport++;
		if ((end = strchr(hostport, ']')) == NULL || end[1] != ':')
			usage_error("%s: expected tcp:[IPv6]:PORT", a->text);
		port = end + 2;
	} else {
		if ((end = strrchr(hostport, ':')) == NULL)
			usage_error("%s: expected tcp:HOST:PORT", a->text);
		port = end + 1;
	}
	hlen = (size_t)(end - hostport);
	if (hlen == 0 || hlen >= sizeof(host) || *port == '\0')
		usage_error("%s: expected tcp:HOST:PORT", a->text);
	memcpy(host, hostport, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if ((e = getaddrinfo(host, port, &hints, &res)) != 0)
		usage_error("%s: need a numeric address and port: %s",
		    a->text, gai_strerror(e));
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
}

static void
parse_addr(const char *s, struct addr *a)
{
	memset(a, 0, sizeof(*a));
	a->text = s;
	if (strncmp(s, "unix:", 5) == 0)
		parse_unix(s + 5, a);
	else if (strncmp(s, "tcp:", 4) == 0)
		parse_tcp(s + 4, a);
	else
		usage_error("bad address \"%s\": expected tcp:HOST:PORT or"
		    " unix:/path", s);
}

/* Start a non-blocking connect; *pending is set if it is in progress. */
static int
connect_start(const struct addr *a, int *pending)
{
	int	 fd, on = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		fail("socket: %s", strerror(errno));
	if (a->ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	*pending = 0;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
		return fd;
	if (errno == EINPROGRESS || errno == EINTR) {
		*pending = 1;
		return fd;
	}
	fail("connect %s: %s", a->text, strerror(errno));
}

static void
connect_finish(int fd, const struct addr *a)
{
	socklen_t	 len = sizeof(int);
	int		 err = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0)
		fail("connect %s: %s", a->text, strerror(err));
}

static int
connect_wait(const struct addr *a)
{
	char	 what[128];
	int	 fd, pending;

	fd = connect_start(a, &pending);
	if (pending) {
		snprintf(what, sizeof(what), "connecting to %s", a->text);
		wait_ready(fd, POLLOUT, what);
		connect_finish(fd, a);
	}
	return fd;
}

/* Escape bytes for a one-line message. */
static void
escape(const unsigned char *p, size_t n, char *out, size_t size)
{
	size_t	 o = 0, i;

	out[0] = '\0';
	for (i = 0; i < n && o + 5 < size; i++) {
		if (p[i] == '\\')
			o += (size_t)snprintf(out + o, size - o, "\\\\");
		else if (p[i] == '\n')
			o += (size_t)snprintf(out + o, size - o, "\\n");
		else if (p[i] == '\r')
			o += (size_t)snprintf(out + o, size - o, "\\r");
		else if (p[i] >= 0x20 && p[i] < 0x7f)
			out[o++] = (char)p[i];
		else
			o += (size_t)snprintf(out + o, size - o, "\\x%02x",
			    p[i]);
	}
	out[o] = '\0';
}

/*
 * Read what is available into the line buffer.  Returns 1 once a full
 * line is there; fails on EOF, error or an overlong line.
 */
static int
line_feed(struct linebuf *lb, int fd, const char *who)
{
	char	 shown[4 * 80 + 8];
	char	*nl;
	ssize_t	 n;

	n = recv(fd, lb->buf + lb->len, LINE_MAX_LEN - lb->len, 0);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return 0;
	if (n == -1)
		fail("%s: reading the first line: %s", who, strerror(errno));
	if (n == 0) {
		escape((unsigned char *)lb->buf, lb->len < 80 ? lb->len : 80,
		    shown, sizeof(shown));
		fail("%s: connection closed before the first line"
		    " (got %zu bytes: \"%s\")", who, lb->len, shown);
	}
	lb->len += (size_t)n;
	lb->buf[lb->len] = '\0';
	if ((nl = memchr(lb->buf, '\n', lb->len)) != NULL) {
		lb->line_len = (size_t)(nl - lb->buf) + 1;
		return 1;
	}
	if (lb->len == LINE_MAX_LEN)
		fail("%s: no newline in the first %d bytes", who,
		    LINE_MAX_LEN);
	return 0;
}

static void
read_first_line(int fd, struct linebuf *lb, const char *who)
{
	char	 what[128];

	snprintf(what, sizeof(what), "waiting for the first line from %s",
	    who);
	memset(lb, 0, sizeof(*lb));
	do {
		wait_ready(fd, POLLIN, what);
	} while (!line_feed(lb, fd, who));
}

/* The subject= value ends at the last " version=" of the line. */
static void
check_subject(const struct linebuf *lb, const char *want)
{
	const char	*p, *v, *end = NULL;
	char		 subject[LINE_MAX_LEN + 1];
	size_t		 len;

	if (strncmp(lb->buf, "subject=", 8) != 0)
		fail("first line does not start with subject=");
	p = lb->buf + 8;
	for (v = p; (v = strstr(v, " version=")) != NULL; v++)
		end = v;
	len = end != NULL ? (size_t)(end - p) :
	    lb->line_len - 9;	/* drop "subject=" and "\n" */
	memcpy(subject, p, len);
	subject[len] = '\0';
	if (strstr(subject, want) == NULL)
		fail("subject \"%s\" does not contain \"%s\"", subject, want);
}

static void
fill_random(unsigned char *buf, size_t len)
{
	ssize_t	 n;
	size_t	 off = 0;

	while (off < len) {
		n = getrandom(buf + off, len - off > (1U << 20) ?
		    (1U << 20) : len - off, 0);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fail("getrandom: %s", strerror(errno));
		off += (size_t)n;
	}
}

/* Compare echoed bytes against what was sent, as they arrive. */
static void
check_echo(struct roundtrip *rt, const unsigned char *p, size_t n)
{
	size_t	 i;

	if (rt->nrecv + n > rt->nsent)
		fail("received more than was sent: %llu bytes after sending"
		    " %llu of %llu", rt->nrecv + n, rt->nsent, rt->total);
	if (memcmp(rt->data + rt->nrecv, p, n) != 0) {
		for (i = 0; rt->data[rt->nrecv + i] == p[i]; i++)
			;
		fail("echo differs at offset %llu: sent 0x%02x, got 0x%02x"
		    " (sent %llu of %llu, received %llu)", rt->nrecv + i,
		    rt->data[rt->nrecv + i], p[i], rt->nsent, rt->total,
		    rt->nrecv + n);
	}
	rt->nrecv += n;
}

static void
rt_send(struct roundtrip *rt, int fd)
{
	unsigned long long	 left = rt->total - rt->nsent;
	ssize_t			 n;

	if (rt->pause_at != 0 && rt->paused != 2 &&
	    rt->nsent + left > rt->pause_at)
		left = rt->pause_at - rt->nsent;

	n = send(fd, rt->data + rt->nsent, left > IO_CHUNK ? IO_CHUNK :
	    (size_t)left, MSG_NOSIGNAL);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n == -1)
		fail("send failed after %llu of %llu bytes (received %llu):"
		    " %s", rt->nsent, rt->total, rt->nrecv, strerror(errno));
	rt->nsent += (unsigned long long)n;
	if (rt->pause_at != 0 && rt->paused == 0 &&
	    rt->nsent == rt->pause_at) {
		/* the test acts now, with the tunnel open, then says go */
		printf("paused sent=%llu\n", rt->nsent);
		fflush(stdout);
		rt->paused = 1;
	}
	if (rt->nsent == rt->total && shutdown(fd, SHUT_WR) == -1)
		fail("shutdown(SHUT_WR): %s", strerror(errno));
}

/* Returns 1 on EOF. */
static int
rt_recv(struct roundtrip *rt, int fd)
{
	unsigned char	 buf[IO_CHUNK];
	ssize_t		 n;

	n = recv(fd, buf, sizeof(buf), 0);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return 0;
	if (n == -1)
		fail("recv failed after receiving %llu of %llu bytes"
		    " (sent %llu): %s", rt->nrecv, rt->total, rt->nsent,
		    strerror(errno));
	if (n == 0)
		return 1;
	check_echo(rt, buf, (size_t)n);
	return 0;
}

static void
rt_transfer(struct roundtrip *rt, int fd)
{
	struct pollfd	 pfd[2];
	char		 line[64];
	int		 eof = 0;

	if (rt->total == 0 && shutdown(fd, SHUT_WR) == -1)
		fail("shutdown(SHUT_WR): %s", strerror(errno));
	while (!eof) {
		pfd[0].fd = fd;
		pfd[0].events = POLLIN;
		if (rt->nsent < rt->total && rt->paused != 1)
			pfd[0].events |= POLLOUT;
		pfd[0].revents = 0;
		pfd[1].fd = rt->paused == 1 ? 0 : -1;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		if (poll_deadline(pfd, 2) == 0)
			fail("timeout after %g s: sent %llu of %llu bytes,"
			    " received %llu", timeout_s, rt->nsent, rt->total,
			    rt->nrecv);
		if (pfd[1].revents != 0) {
			if (read(0, line, sizeof(line)) <= 0)
				fail("--pause-after: stdin closed");
			rt->paused = 2;
		}
		if (pfd[0].revents & POLLOUT)
			rt_send(rt, fd);
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			eof = rt_recv(rt, fd);
	}
	if (rt->nsent < rt->total || rt->nrecv < rt->total)
		fail("connection closed early: sent %llu of %llu bytes,"
		    " received %llu", rt->nsent, rt->total, rt->nrecv);
}

static void
mode_roundtrip(const struct options *o, const struct addr *a)
{
	struct roundtrip	 rt;
	struct linebuf		 lb;
	int64_t			 t0;
	int			 fd;

	memset(&rt, 0, sizeof(rt));
	rt.total = o->bytes;
	rt.pause_at = o->pause_after;
	if ((rt.data = malloc(rt.total > 0 ? (size_t)rt.total : 1)) == NULL)
		fail("out of memory for %llu bytes", rt.total);
	fill_random(rt.data, (size_t)rt.total);
	t0 = now_ns();
	fd = connect_wait(a);
	read_first_line(fd, &lb, "the server");
	fwrite(lb.buf, 1, lb.line_len, stdout);
	fflush(stdout);
	if (o->expect_subject != NULL)
		check_subject(&lb, o->expect_subject);
	if (lb.len > lb.line_len)
		check_echo(&rt, (unsigned char *)lb.buf + lb.line_len,
		    lb.len - lb.line_len);
	rt_transfer(&rt, fd);
	close(fd);
	free(rt.data);
	printf("ok bytes=%llu ms=%lld\n", rt.total, to_ms(now_ns() - t0));
}

static void
mode_expect_close(const struct addr *a)
{
	unsigned char		 seen[SHOW_MAX], buf[4096];
	char			 shown[4 * SHOW_MAX + 1];
	unsigned long long	 total = 0;
	ssize_t			 n;
	int64_t			 t0;
	int			 fd;

	fd = connect_wait(a);
	t0 = now_ns();
	for (;;) {
		struct pollfd	 pfd = { fd, POLLIN, 0 };

		if (poll_deadline(&pfd, 1) == 0) {
			escape(seen, total < SHOW_MAX ? total : SHOW_MAX,
			    shown, sizeof(shown));
			fail("still open after %g s (received %llu bytes:"
			    " \"%s\")", timeout_s, total, shown);
		}
		n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			if (total < SHOW_MAX)
				memcpy(seen + total, buf, SHOW_MAX - total <
				    (size_t)n ? SHOW_MAX - total : (size_t)n);
			total += (unsigned long long)n;
		} else if (n == 0 || errno == ECONNRESET)
			break;
		else if (errno != EAGAIN && errno != EINTR)
			fail("recv: %s", strerror(errno));
	}
	close(fd);
	printf("closed after %lld ms bytes=%llu\n", to_ms(now_ns() - t0),
	    total);
	if (total > 0) {
		escape(seen, total < SHOW_MAX ? total : SHOW_MAX, shown,
		    sizeof(shown));
		fail("expected no data, received %llu bytes: \"%s\"", total,
		    shown);
	}
}

/* drain: check the next n bytes of the server's pattern */
static void
check_pattern(const unsigned char *p, size_t n, unsigned long long *got,
    unsigned long long want)
{
	size_t	 i;

	if (*got + n > want)
		fail("received more than the %llu bytes expected: %llu", want,
		    *got + n);
	for (i = 0; i < n; i++)
		if (p[i] != PATTERN(*got + i))
			fail("data differs at offset %llu: expected 0x%02x,"
			    " got 0x%02x", *got + i, PATTERN(*got + i), p[i]);
	*got += n;
}

/*
 * The server sends its first line and N bytes, then closes: read them
 * all, then the end of the stream (EOF or a reset).  With --ack, one byte
 * goes back once the N bytes are in.
 */
static void
mode_drain(const struct options *o, const struct addr *a)
{
	unsigned char		 buf[IO_CHUNK];
	unsigned long long	 got = 0;
	struct linebuf		 lb;
	const char		*end;
	ssize_t			 n;
	int64_t			 t0;
	int			 fd, acked = 0;

	t0 = now_ns();
	fd = connect_wait(a);
	read_first_line(fd, &lb, "the server");
	fwrite(lb.buf, 1, lb.line_len, stdout);
	if (o->expect_subject != NULL)
		check_subject(&lb, o->expect_subject);
	check_pattern((unsigned char *)lb.buf + lb.line_len,
	    lb.len - lb.line_len, &got, o->bytes);
	for (;;) {
		if (o->ack && !acked && got == o->bytes) {
			if (send(fd, "A", 1, MSG_NOSIGNAL) != 1)
				fail("sending the ack after %llu bytes: %s",
				    got, strerror(errno));
			acked = 1;
		}
		wait_ready(fd, POLLIN, "waiting for data or the end");
		n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			check_pattern(buf, (size_t)n, &got, o->bytes);
			continue;
		}
		if (n == 0 || errno == ECONNRESET)
			break;
		if (errno != EAGAIN && errno != EINTR)
			fail("recv after %llu bytes: %s", got, strerror(errno));
	}
	end = n == 0 ? "eof" : "reset";
	close(fd);
	printf("received bytes=%llu end=%s ms=%lld\n", got, end,
	    to_ms(now_ns() - t0));
	if (got != o->bytes)
		fail("the stream ended (%s) after %llu of %llu bytes", end,
		    got, o->bytes);
}

static void
ping_send(struct pinger *p)
{
	ssize_t	 n;

	if (p->nout == PING_LEN)
		return;
	n = send(p->fd, p->out + p->nout, PING_LEN - p->nout, MSG_NOSIGNAL);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n == -1)
		fail("A: send ping %u: %s", p->seq, strerror(errno));
	p->nout += (size_t)n;
}

static void
ping_start(struct pinger *p)
{
	size_t	 i;

	p->seq++;
	for (i = 0; i < PING_LEN; i++)
		p->out[i] = (unsigned char)(p->seq * 131 + i);
	p->nout = p->nin = 0;
	p->t0 = now_ns();
	ping_send(p);
}

/* Returns the round-trip time once the whole echo is in, else -1. */
static int64_t
ping_recv(struct pinger *p)
{
	ssize_t	 n;

	n = recv(p->fd, p->in + p->nin, PING_LEN - p->nin, 0);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return -1;
	if (n == -1)
		fail("A: recv ping %u: %s", p->seq, strerror(errno));
	if (n == 0)
		fail("A: connection closed during ping %u", p->seq);
	p->nin += (size_t)n;
	if (p->nin > p->nout)
		fail("A: received more than was sent in ping %u", p->seq);
	if (p->nin < PING_LEN)
		return -1;
	if (memcmp(p->in, p->out, PING_LEN) != 0)
		fail("A: ping %u echo differs from what was sent", p->seq);
	return now_ns() - p->t0;
}

static short
ping_events(const struct pinger *p)
{
	return POLLIN | (p->nout < PING_LEN ? POLLOUT : 0);
}

/* Handle poll results for A; returns the RTT of a finished ping or -1. */
static int64_t
ping_handle(struct pinger *p, short revents)
{
	if (revents & POLLOUT)
		ping_send(p);
	if (revents & (POLLIN | POLLHUP | POLLERR))
		return ping_recv(p);
	return -1;
}

static int64_t
ping_once(struct pinger *p)
{
	struct pollfd	 pfd;
	int64_t		 rtt;

	ping_start(p);
	do {
		pfd.fd = p->fd;
		pfd.events = ping_events(p);
		pfd.revents = 0;
		if (poll_deadline(&pfd, 1) == 0)
			fail("timeout after %g s in warm-up ping %u",
			    timeout_s, p->seq);
	} while ((rtt = ping_handle(p, pfd.revents)) < 0);
	return rtt;
}

static void
second_start(struct second *b, const struct addr *a)
{
	int	 pending;

	memset(b, 0, sizeof(*b));
	b->addr = a;
	b->t0 = now_ns();
	b->fd = connect_start(a, &pending);
	b->state = pending ? B_CONNECTING : B_SENDING;
}

static short
second_events(const struct second *b)
{
	return b->state == B_READING ? POLLIN : POLLOUT;
}

static void
second_handle(struct second *b)
{
	ssize_t	 n;

	if (b->state == B_CONNECTING) {
		connect_finish(b->fd, b->addr);
		b->state = B_SENDING;
	}
	if (b->state == B_SENDING) {
		n = send(b->fd, "x", 1, MSG_NOSIGNAL);
		if (n == -1 && errno != EAGAIN && errno != EINTR)
			fail("B: send: %s", strerror(errno));
		if (n == 1)
			b->state = B_READING;
		return;
	}
	if (b->state == B_READING && line_feed(&b->lb, b->fd, "B")) {
		b->elapsed = now_ns() - b->t0;
		b->state = B_DONE;
	}
}

static const char *
second_state_name(const struct second *b)
{
	switch (b->state) {
	case B_CONNECTING:
		return "still connecting";
	case B_SENDING:
		return "sending its first byte";
	case B_READING:
		return "waiting for its first line";
	default:
		return "done";
	}
}

/*
 * Ping on A back to back while B is being set up; the ping in flight when
 * B's first line arrives is completed and counted too.
 */
/* The round trips of ping_while_pending, for their 99th percentile. */
static int64_t	*rtts;
static size_t	 nrtts, rtts_cap;

static void
rtt_keep(int64_t rtt)
{
	int64_t	*n;

	if (nrtts == rtts_cap) {
		rtts_cap = rtts_cap ? rtts_cap * 2 : 1024;
		if ((n = realloc(rtts, rtts_cap * sizeof(*rtts))) == NULL)
			fail("out of memory");
		rtts = n;
	}
	rtts[nrtts++] = rtt;
}

static int
cmp_rtt(const void *x, const void *y)
{
	int64_t	 a = *(const int64_t *)x, b = *(const int64_t *)y;

	return (a > b) - (a < b);
}

static int64_t
rtt_p99(void)
{
	if (nrtts == 0)
		return 0;
	qsort(rtts, nrtts, sizeof(*rtts), cmp_rtt);
	return rtts[(nrtts * 99) / 100];
}

static void
ping_while_pending(struct pinger *p, struct second *b, unsigned *count,
    int64_t *max)
{
	struct pollfd	 pfd[2];
	int64_t		 rtt;

	ping_start(p);
	for (;;) {
		pfd[0].fd = p->fd;
		pfd[0].events = ping_events(p);
		pfd[1].fd = b->state == B_DONE ? -1 : b->fd;
		pfd[1].events = second_events(b);
		pfd[0].revents = pfd[1].revents = 0;
		if (poll_deadline(pfd, 2) == 0)
			fail("timeout after %g s: B %s, a_pings=%u",
			    timeout_s, second_state_name(b), *count);
		if (pfd[1].revents != 0)
			second_handle(b);
		if ((rtt = ping_handle(p, pfd[0].revents)) < 0)
			continue;
		(*count)++;
		rtt_keep(rtt);
		if (rtt > *max)
			*max = rtt;
		if (b->state == B_DONE)
			return;
		ping_start(p);
	}
}

static void
mode_latency(const struct options *o, const struct addr *a)
{
	struct addr	 a2;
	struct pinger	 p;
	struct second	 b;
	struct linebuf	 lb;
	unsigned	 count = 0, i;
	int64_t		 max = 0, p99;
	int		 ok = 1;

	parse_addr(o->second_addr, &a2);
	memset(&p, 0, sizeof(p));
	p.fd = connect_wait(a);
	read_first_line(p.fd, &lb, "A");
	if (lb.len > lb.line_len)
		fail("A: unexpected data after the first line");
	for (i = 0; i < WARMUP_PINGS; i++)
		ping_once(&p);
	second_start(&b, &a2);
	ping_while_pending(&p, &b, &count, &max);
	close(b.fd);
	close(p.fd);
	p99 = rtt_p99();
	printf("a_pings=%u a_max_ms=%lld a_p99_ms=%.1f b_first_line_ms=%lld\n",
	    count, to_ms(max), p99 / 1e6, to_ms(b.elapsed));
	fflush(stdout);
	if (o->p99_ms > 0 && p99 >= o->p99_ms * NS_PER_MS) {
		fprintf(stderr, PROG ": A stalled: p99 ping %.3f ms is not"
		    " below --p99-ms %lld\n", p99 / 1e6, o->p99_ms);
		ok = 0;
	}
	if (max >= o->max_ms * NS_PER_MS) {
		fprintf(stderr, PROG ": A stalled: max ping %.3f ms is not"
		    " below --max-ms %lld\n", max / 1e6, o->max_ms);
		ok = 0;
	}
	if (b.elapsed < o->min_second_ms * NS_PER_MS) {
		fprintf(stderr, PROG ": B's first line came after %.3f ms,"
		    " before --min-second-ms %lld\n", b.elapsed / 1e6,
		    o->min_second_ms);
		ok = 0;
	}
	if (count < MIN_PENDING_PINGS) {
		fprintf(stderr, PROG ": only %u pings on A while B was"
		    " pending, need %d\n", count, MIN_PENDING_PINGS);
		ok = 0;
	}
	if (!ok)
		exit(1);
}

/* N pings one after the other; fails if the slowest is not below M ms. */
static void
mode_pings(const struct options *o, const struct addr *a)
{
	struct pinger	 p;
	struct linebuf	 lb;
	long long	 i;
	int64_t		 rtt, max = 0, sum = 0;

	memset(&p, 0, sizeof(p));
	p.fd = connect_wait(a);
	read_first_line(p.fd, &lb, "the server");
	if (lb.len > lb.line_len)
		fail("unexpected data after the first line");
	for (i = 0; i < o->count; i++) {
		rtt = ping_once(&p);
		sum += rtt;
		if (rtt > max)
			max = rtt;
	}
	close(p.fd);
	printf("pings=%lld max_ms=%.3f mean_ms=%.3f\n", o->count, max / 1e6,
	    sum / 1e6 / (double)o->count);
	fflush(stdout);
	if (max >= o->max_ms * NS_PER_MS)
		fail("the slowest ping took %.3f ms, not below --max-ms %lld",
		    max / 1e6, o->max_ms);
}

static volatile sig_atomic_t	 flood_stop;

static void
on_term(int sig)
{
	flood_stop = 1;
}

/*
 * Sends random data and reads the echo back as fast as both go, until
 * SIGTERM or --timeout; prints "flowing" once 1 MiB has come back, and
 * the totals at the end.
 */
static void
mode_flood(const struct addr *a)
{
	static unsigned char	 out[IO_CHUNK], in[IO_CHUNK];
	unsigned long long	 sent = 0, got = 0;
	struct linebuf		 lb;
	struct pollfd		 pfd;
	struct sigaction	 sa;
	ssize_t			 n;
	int64_t			 t0;
	long long		 ms;
	int			 fd, said = 0, r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;	/* no SA_RESTART: poll returns */
	sigaction(SIGTERM, &sa, NULL);
	fill_random(out, sizeof(out));
	fd = connect_wait(a);
	read_first_line(fd, &lb, "the server");
	got = lb.len - lb.line_len;
	t0 = now_ns();
	while (!flood_stop) {
		pfd.fd = fd;
		pfd.events = POLLIN | POLLOUT;
		pfd.revents = 0;
		if ((r = poll(&pfd, 1, remaining_ms())) == 0)
			break;
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			fail("poll: %s", strerror(errno));
		if (pfd.revents & POLLOUT) {
			n = send(fd, out, sizeof(out), MSG_NOSIGNAL);
			if (n == -1 && errno != EAGAIN && errno != EINTR)
				fail("send after %llu bytes: %s", sent,
				    strerror(errno));
			if (n > 0)
				sent += (unsigned long long)n;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(fd, in, sizeof(in), 0);
			if (n == 0)
				fail("closed after %llu bytes back", got);
			if (n == -1 && errno != EAGAIN && errno != EINTR)
				fail("recv after %llu bytes: %s", got,
				    strerror(errno));
			if (n > 0)
				got += (unsigned long long)n;
			if (!said && got >= (1ULL << 20)) {
				printf("flowing\n");
				fflush(stdout);
				said = 1;
			}
		}
	}
	close(fd);
	ms = to_ms(now_ns() - t0);
	printf("flood: sent %llu bytes, %llu back in %lld ms (%.0f MB/s "
	    "each way)\n", sent, got, ms, ms > 0 ? got / 1e3 / (double)ms :
	    0.0);
}

/* burst: one connection's progress */
enum burst_state {
	U_CONNECTING,
	U_LINE,		/* waiting for the server's first line */
	U_ECHO,		/* sending the bytes, reading them back */
	U_DONE
};

struct burst_conn {
	int			 fd;
	enum burst_state	 state;
	struct linebuf		 lb;
	size_t			 sent, got;
	int64_t			 line_ns;	/* first line, from the start */
};

/* One step of connection k; returns 1 when it is done. */
static int
burst_step(struct burst_conn *u, int k, const struct addr *a,
    const unsigned char *data, size_t len, int64_t t0)
{
	unsigned char	 in[BURST_BYTES_MAX];
	char		 who[32];
	ssize_t		 n;

	snprintf(who, sizeof(who), "connection %d", k);
	if (u->state == U_CONNECTING) {
		connect_finish(u->fd, a);
		u->state = U_LINE;
		return 0;
	}
	if (u->state == U_LINE) {
		if (!line_feed(&u->lb, u->fd, who))
			return 0;
		if (u->lb.len > u->lb.line_len)
			fail("%s: unexpected data after the first line", who);
		u->line_ns = now_ns() - t0;
		u->state = U_ECHO;
	}
	if (u->sent < len) {
		n = send(u->fd, data + u->sent, len - u->sent, MSG_NOSIGNAL);
		if (n == -1 && errno != EAGAIN && errno != EINTR)
			fail("%s: send: %s", who, strerror(errno));
		if (n > 0)
			u->sent += (size_t)n;
		return 0;
	}
	n = recv(u->fd, in, len - u->got, 0);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n == -1)
		fail("%s: recv: %s", who, strerror(errno));
	if (n == 0)
		fail("%s: closed after %zu bytes of the echo", who, u->got);
	if (memcmp(in, data + u->got, (size_t)n) != 0)
		fail("%s: the echo differs from what was sent", who);
	u->got += (size_t)n;
	if (u->got < len)
		return 0;
	u->state = U_DONE;
	return 1;
}

static short
burst_events(const struct burst_conn *u, size_t len)
{
	if (u->state == U_CONNECTING || (u->state == U_ECHO && u->sent < len))
		return POLLOUT;
	return POLLIN;
}

/*
 * --count connections opened at once; each reads the server's first
 * line, sends --bytes and reads them back.  Prints when the first lines
 * came (the slowest) and when all were done.
 */
static void
mode_burst(const struct options *o, const struct addr *a)
{
	struct burst_conn	*u;
	struct pollfd		*pfd;
	unsigned char		 data[BURST_BYTES_MAX];
	size_t			 len = (size_t)o->bytes;
	int64_t			 t0, line_max = 0;
	int			 n = (int)o->count, left, k, pending;

	if ((u = calloc((size_t)n, sizeof(*u))) == NULL ||
	    (pfd = calloc((size_t)n, sizeof(*pfd))) == NULL)
		fail("out of memory");
	fill_random(data, len);
	t0 = now_ns();
	for (k = 0; k < n; k++) {
		u[k].fd = connect_start(a, &pending);
		u[k].state = pending ? U_CONNECTING : U_LINE;
	}
	for (left = n; left > 0;) {
		for (k = 0; k < n; k++) {
			pfd[k].fd = u[k].state == U_DONE ? -1 : u[k].fd;
			pfd[k].events = burst_events(&u[k], len);
			pfd[k].revents = 0;
		}
		if (poll_deadline(pfd, (nfds_t)n) == 0)
			fail("timeout after %g s: %d of %d connections not"
			    " done", timeout_s, left, n);
		for (k = 0; k < n; k++)
			if (pfd[k].revents != 0 &&
			    burst_step(&u[k], k, a, data, len, t0))
				left--;
	}
	for (k = 0; k < n; k++) {
		if (u[k].line_ns > line_max)
			line_max = u[k].line_ns;
		close(u[k].fd);
	}
	printf("burst=%d first_line_max_ms=%lld all_done_ms=%lld\n", n,
	    to_ms(line_max), to_ms(now_ns() - t0));
	fflush(stdout);
	free(u);
	free(pfd);
}

int
main(int argc, char *argv[])
{
	struct options	 o;
	struct addr	 a;

	parse_args(argc, argv, &o);
	parse_addr(o.addr, &a);
	signal(SIGPIPE, SIG_IGN);
	timeout_s = o.timeout_s;
	deadline = now_ns() + (int64_t)(o.timeout_s * 1e9);
	if (strcmp(o.mode, "roundtrip") == 0)
		mode_roundtrip(&o, &a);
	else if (strcmp(o.mode, "expect-close") == 0)
		mode_expect_close(&a);
	else if (strcmp(o.mode, "pings") == 0)
		mode_pings(&o, &a);
	else if (strcmp(o.mode, "flood") == 0)
		mode_flood(&a);
	else if (strcmp(o.mode, "drain") == 0)
		mode_drain(&o, &a);
	else if (strcmp(o.mode, "burst") == 0)
		mode_burst(&o, &a);
	else
		mode_latency(&o, &a);
	return 0;
}
