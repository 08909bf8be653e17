/*
 * hold: many TCP connections in one process (epoll, non-blocking), for
 * bench/scale.
 *
 *	hold connect HOST:PORT N [-c INFLIGHT] [-t SECONDS]
 *		opens N connections to HOST:PORT, at most INFLIGHT (default
 *		200) of them still waiting for their echo, and on each sends
 *		a line naming it and reads the same line back; then holds
 *		them and obeys commands read from stdin, one per line:
 *		"close" (closes them all) or "await-eof SECONDS" (says
 *		"awaiting", then waits for the peer to end each one, closing
 *		it then).
 *	hold echo
 *		listens on an ephemeral loopback port, prints "port P", and
 *		echoes what every connection sends; on "close" from stdin it
 *		closes every connection, on "count" it prints how many are
 *		open.  It exits when stdin ends.
 *
 * Results go to stdout, one line each, for the script; problems go to
 * stderr naming the connection.  Exit status: 0, or 1 after any error.
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG		"hold"
#define MAX_CONNS	100000
#define MSG_LEN		24	/* "hold 0000000123 .......\n" */
#define ECHO_BUF	512
#define MAX_EVENTS	256
#define ERRORS_SHOWN	20	/* more are counted, not printed */
#define TAG_STDIN	((uint64_t)-1)
#define TAG_LISTEN	((uint64_t)-2)

enum cstate { S_CONNECTING, S_ECHO, S_HELD, S_CLOSED };

struct cconn {
	int		 fd;
	enum cstate	 state;
	uint8_t		 got;		/* bytes of the echo read */
	char		 buf[MSG_LEN];
};

struct econn {
	int		 fd;
	size_t		 len, off;
	char		 buf[ECHO_BUF];
};

static int		 epfd = -1;
static long		 nerrors;
static char		 line[256];
static size_t		 linelen;

static void __attribute__((format(printf, 1, 2)))
problem(const char *fmt, ...)
{
	va_list	 ap;

	if (nerrors++ >= ERRORS_SHOWN)
		return;
	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static long
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void
watch(int op, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event	 ev = { .events = events, .data.u64 = tag };

	if (epoll_ctl(epfd, op, fd, &ev) == -1)
		die("epoll_ctl(fd %d): %s", fd, strerror(errno));
}

static void
usage(void)
{
	fprintf(stderr, "usage: " PROG " connect HOST:PORT N [-c INFLIGHT] "
	    "[-t SECONDS]\n       " PROG " echo\n");
	exit(2);
}

static long
number(const char *s, long min, long max, const char *what)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max)
		die("%s: '%s' is not a number from %ld to %ld", what, s, min,
		    max);
	return v;
}

/* The soft descriptor limit raised to the hard one; dies if too low. */
static void
need_fds(long n)
{
	struct rlimit	 rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		die("getrlimit: %s", strerror(errno));
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		die("setrlimit: %s", strerror(errno));
	if (rl.rlim_cur < (rlim_t)n)
		die("the descriptor limit is %llu; %ld are needed (prlimit "
		    "--nofile)", (unsigned long long)rl.rlim_cur, n);
}

/*
 * One line from stdin into `line' (without its newline): 1 with a line,
 * 0 without one yet, -1 at the end of stdin.
 */
static int
read_command(void)
{
	char	*nl;
	ssize_t	 n;

	if ((nl = memchr(line, '\n', linelen)) == NULL) {
		if (linelen == sizeof(line) - 1)
			die("stdin: a command longer than %zu bytes",
			    sizeof(line) - 2);
		n = read(0, line + linelen, sizeof(line) - 1 - linelen);
		if (n == 0)
			return -1;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		linelen += (size_t)n;
		if ((nl = memchr(line, '\n', linelen)) == NULL)
			return 0;
	}
	*nl = '\0';
	return 1;
}

/* The command read_command returned is done with. */
static void
command_done(void)
{
	size_t	 n = strlen(line) + 1;

	memmove(line, line + n, linelen - n);
	linelen -= n;
}

/* ---- connect */

static struct cconn	*cc;
static long		 ncc;

static void
cc_msg(long i, char *out)
{
	char	 tmp[64];

	/* i < MAX_CONNS: always MSG_LEN bytes */
	snprintf(tmp, sizeof(tmp), "hold %010ld .......\n", i);
	memcpy(out, tmp, MSG_LEN);
}

static void
cc_close(long i, enum cstate to)
{
	if (cc[i].fd != -1)
		close(cc[i].fd);	/* leaves the epoll set too */
	cc[i].fd = -1;
	cc[i].state = to;
}

static int
cc_start(long i, const struct sockaddr_in *sin)
{
	int	 fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		problem("connection %ld: socket: %s", i, strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) == -1 &&
	    errno != EINPROGRESS) {
		problem("connection %ld: connect: %s", i, strerror(errno));
		close(fd);
		return -1;
	}
	cc[i].fd = fd;
	cc[i].state = S_CONNECTING;
	watch(EPOLL_CTL_ADD, fd, EPOLLOUT, (uint64_t)i);
	return 0;
}

/* Connected: send the line (it fits any socket buffer at once). */
static int
cc_send(long i)
{
	char		 msg[MSG_LEN];
	int		 err = 0, one = 1;
	socklen_t	 len = sizeof(err);
	ssize_t		 n;

	if (getsockopt(cc[i].fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		problem("connection %ld: connect: %s", i, strerror(err));
		return -1;
	}
	setsockopt(cc[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	cc_msg(i, msg);
	if ((n = write(cc[i].fd, msg, MSG_LEN)) != MSG_LEN) {
		problem("connection %ld: write: %s", i, n < 0 ?
		    strerror(errno) : "short");
		return -1;
	}
	cc[i].state = S_ECHO;
	watch(EPOLL_CTL_MOD, cc[i].fd, EPOLLIN | EPOLLRDHUP, (uint64_t)i);
	return 0;
}

/* Reads the echo: 1 when complete and right, 0 for more, -1 on error. */
static int
cc_echo(long i)
{
	char	 want[MSG_LEN];
	ssize_t	 n;

	n = read(cc[i].fd, cc[i].buf + cc[i].got, MSG_LEN - cc[i].got);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		problem("connection %ld: %s after %u bytes of its echo", i,
		    n == 0 ? "end of stream" : strerror(errno),
		    (unsigned)cc[i].got);
		return -1;
	}
	cc[i].got += (uint8_t)n;
	if (cc[i].got < MSG_LEN)
		return 0;
	cc_msg(i, want);
	if (memcmp(want, cc[i].buf, MSG_LEN) != 0) {
		problem("connection %ld: the echo differs: '%.*s'", i,
		    MSG_LEN - 1, cc[i].buf);
		return -1;
	}
	/* held: only an end of stream or stray data wakes it now */
	cc[i].state = S_HELD;
	return 1;
}

/* A held connection woke: stray data or an end.  1 if it ended. */
static int
cc_held_event(long i, int awaiting)
{
	char	 b[64];
	ssize_t	 n;

	n = read(cc[i].fd, b, sizeof(b));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n > 0) {
		problem("connection %ld: %zd unexpected bytes while held", i,
		    n);
		return 0;
	}
	if (!awaiting)
		problem("connection %ld: %s while held", i, n == 0 ?
		    "closed by the peer" : strerror(errno));
	else if (n < 0)
		problem("connection %ld: %s instead of an end of stream", i,
		    strerror(errno));
	cc_close(i, S_CLOSED);
	return 1;
}

static void
parse_hostport(const char *s, struct sockaddr_in *sin)
{
	const char	*colon = strrchr(s, ':');
	char		 host[64];

	if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
		die("'%s': not HOST:PORT (an IPv4 address and a port)", s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)number(colon + 1, 1, 65535, "port"));
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		die("'%s': not an IPv4 address", host);
}

/* Opens all; returns how many are held. */
static long
cc_open_all(const struct sockaddr_in *sin, long inflight, long timeout_s)
{
	struct epoll_event	 ev[MAX_EVENTS];
	long			 next = 0, pending = 0, held = 0, i, deadline;
	int			 n, k, r;

	deadline = now_ms() + timeout_s * 1000L;
	while (next < ncc || pending > 0) {
		while (next < ncc && pending < inflight) {
			if (cc_start(next, sin) == 0)
				pending++;
			else
				cc[next].state = S_CLOSED;
			next++;
		}
		if (now_ms() > deadline) {
			problem("%ld connections still not echoed after %ld s",
			    pending, timeout_s);
			break;
		}
		if ((n = epoll_wait(epfd, ev, MAX_EVENTS, 1000)) < 0 &&
		    errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (k = 0; k < n; k++) {
			if (ev[k].data.u64 == TAG_STDIN)
				continue;	/* commands wait */
			i = (long)ev[k].data.u64;
			switch (cc[i].state) {
			case S_CONNECTING:
				r = cc_send(i) == 0 ? 0 : -1;
				break;
			case S_ECHO:
				r = cc_echo(i);
				break;
			case S_HELD:
				cc_held_event(i, 0);
				if (cc[i].state == S_CLOSED)
					held--;
				continue;
			default:
				continue;
			}
			if (r < 0)
				cc_close(i, S_CLOSED);
			if (r != 0)
				pending--;
			if (r > 0)
				held++;
		}
	}
	return held;
}

/* After "await-eof": every held connection must end within the time. */
static long
cc_await_eof(long held, long timeout_s)
{
	struct epoll_event	 ev[MAX_EVENTS];
	long			 ended = 0, i, deadline;
	int			 n, k;

	deadline = now_ms() + timeout_s * 1000L;
	while (ended < held && now_ms() < deadline) {
		if ((n = epoll_wait(epfd, ev, MAX_EVENTS, 1000)) < 0 &&
		    errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (k = 0; k < n; k++) {
			if (ev[k].data.u64 == TAG_STDIN)
				continue;
			i = (long)ev[k].data.u64;
			if (cc[i].state == S_HELD && cc_held_event(i, 1))
				ended++;
		}
	}
	if (ended < held) {
		for (i = 0, k = 0; i < ncc; i++)
			if (cc[i].state == S_HELD && k++ < 5)
				problem("connection %ld: not ended by the "
				    "peer within %ld s", i, timeout_s);
		problem("%ld of %ld connections not ended by the peer",
		    held - ended, held);
	}
	return ended;
}

/* Waits for a command on stdin; held connections are watched meanwhile. */
static int
cc_command(long *held)
{
	struct epoll_event	 ev[MAX_EVENTS];
	long			 i;
	int			 n, k, r;

	while ((r = read_command()) == 0) {
		if ((n = epoll_wait(epfd, ev, MAX_EVENTS, -1)) < 0 &&
		    errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (k = 0; k < n; k++) {
			if (ev[k].data.u64 == TAG_STDIN)
				continue;
			i = (long)ev[k].data.u64;
			if (cc[i].state == S_HELD && cc_held_event(i, 0))
				(*held)--;
		}
	}
	return r;
}

static int
cmd_connect(int argc, char **argv)
{
	struct sockaddr_in	 sin;
	long			 inflight = 200, timeout_s = 120, held, i, t0;
	long			 ended;
	int			 ch;

	if (argc < 3)
		usage();
	parse_hostport(argv[1], &sin);
	ncc = number(argv[2], 1, MAX_CONNS, "N");
	optind = 3;
	while ((ch = getopt(argc, argv, "c:t:")) != -1) {
		switch (ch) {
		case 'c':
			inflight = number(optarg, 1, MAX_CONNS, "-c");
			break;
		case 't':
			timeout_s = number(optarg, 1, 86400, "-t");
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	need_fds(ncc + 16);
	if ((cc = calloc((size_t)ncc, sizeof(*cc))) == NULL)
		die("out of memory for %ld connections", ncc);
	for (i = 0; i < ncc; i++)
		cc[i].fd = -1;
	t0 = now_ms();
	held = cc_open_all(&sin, inflight, timeout_s);
	printf("open %ld of %ld in %ld ms\n", held, ncc, now_ms() - t0);
	fflush(stdout);
	watch(EPOLL_CTL_ADD, 0, EPOLLIN, TAG_STDIN);
	while (cc_command(&held) > 0) {
		t0 = now_ms();
		if (strcmp(line, "close") == 0) {
			for (i = 0; i < ncc; i++)
				if (cc[i].state == S_HELD)
					cc_close(i, S_CLOSED);
			printf("closed %ld in %ld ms\n", held, now_ms() - t0);
			held = 0;
		} else if (strncmp(line, "await-eof ", 10) == 0) {
			printf("awaiting\n");	/* the peers may close now */
			fflush(stdout);
			ended = cc_await_eof(held, number(line + 10, 1, 86400,
			    "await-eof"));
			printf("ended %ld of %ld in %ld ms\n", ended, held,
			    now_ms() - t0);
			held -= ended;
		} else
			die("stdin: unknown command '%s'", line);
		fflush(stdout);
		command_done();
	}
	return nerrors != 0;
}

/* ---- echo */

static struct econn	**ec;	/* by descriptor */
static long		 nec, ecmax;

static void
ec_close(struct econn *e)
{
	close(e->fd);
	ec[e->fd] = NULL;
	free(e);
	nec--;
}

static void
ec_accept(int lfd)
{
	struct econn	*e;
	int		 fd, one = 1, n;

	for (n = 0; n < 64; n++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				problem("accept: %s", strerror(errno));
			return;
		}
		if (fd >= ecmax || (e = calloc(1, sizeof(*e))) == NULL) {
			problem("no room for connection fd %d", fd);
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		e->fd = fd;
		ec[fd] = e;
		nec++;
		watch(EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)fd);
	}
}

/* Echoes what there is; a peer's end closes the connection. */
static void
ec_event(struct econn *e)
{
	ssize_t	 n;

	if (e->len == 0) {
		n = read(e->fd, e->buf, sizeof(e->buf));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			if (n < 0 && errno != ECONNRESET)
				problem("echo fd %d: read: %s", e->fd,
				    strerror(errno));
			ec_close(e);
			return;
		}
		e->len = (size_t)n;
		e->off = 0;
	}
	n = write(e->fd, e->buf + e->off, e->len - e->off);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		watch(EPOLL_CTL_MOD, e->fd, EPOLLOUT, (uint64_t)e->fd);
		return;
	}
	if (n < 0) {
		problem("echo fd %d: write: %s", e->fd, strerror(errno));
		ec_close(e);
		return;
	}
	if ((e->off += (size_t)n) < e->len) {
		watch(EPOLL_CTL_MOD, e->fd, EPOLLOUT, (uint64_t)e->fd);
		return;
	}
	e->len = e->off = 0;
	watch(EPOLL_CTL_MOD, e->fd, EPOLLIN, (uint64_t)e->fd);
}

static int
ec_listen(void)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	int			 fd, one = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, 4096) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == -1)
		die("listen: %s", strerror(errno));
	printf("port %u\n", ntohs(sin.sin_port));
	fflush(stdout);
	return fd;
}

static int
cmd_echo(int argc, char **argv)
{
	struct epoll_event	 ev[MAX_EVENTS];
	struct rlimit		 rl;
	long			 i, n0;
	int			 lfd, n, k, r;

	if (argc != 1)
		usage();
	need_fds(64);
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		die("getrlimit: %s", strerror(errno));
	ecmax = rl.rlim_cur > MAX_CONNS ? MAX_CONNS : (long)rl.rlim_cur;
	if ((ec = calloc((size_t)ecmax, sizeof(*ec))) == NULL)
		die("out of memory");
	lfd = ec_listen();
	watch(EPOLL_CTL_ADD, lfd, EPOLLIN, TAG_LISTEN);
	watch(EPOLL_CTL_ADD, 0, EPOLLIN, TAG_STDIN);
	for (;;) {
		if ((n = epoll_wait(epfd, ev, MAX_EVENTS, -1)) < 0 &&
		    errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (k = 0; k < n; k++) {
			if (ev[k].data.u64 == TAG_LISTEN)
				ec_accept(lfd);
			else if (ev[k].data.u64 != TAG_STDIN &&
			    ec[ev[k].data.u64] != NULL)
				ec_event(ec[ev[k].data.u64]);
		}
		while ((r = read_command()) > 0) {
			if (strcmp(line, "close") == 0) {
				n0 = nec;
				for (i = 0; i < ecmax; i++)
					if (ec[i] != NULL)
						ec_close(ec[i]);
				printf("closed %ld\n", n0);
			} else if (strcmp(line, "count") == 0)
				printf("conns %ld\n", nec);
			else
				die("stdin: unknown command '%s'", line);
			fflush(stdout);
			command_done();
		}
		if (r < 0)
			break;
	}
	return nerrors != 0;
}

int
main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		die("epoll_create1: %s", strerror(errno));
	/* commands are read when they are there, never waited for */
	if (fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK) == -1)
		die("stdin: %s", strerror(errno));
	if (strcmp(argv[1], "connect") == 0)
		return cmd_connect(argc - 1, argv + 1);
	if (strcmp(argv[1], "echo") == 0)
		return cmd_echo(argc - 1, argv + 1);
	usage();
	return 2;
}
