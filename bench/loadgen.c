/*
 * loadgen: the load client and plain backend of bench/run.
 *
 * As a client it talks plaintext to a proxy (p11agent, stunnel, nginx)
 * or, with --cert/--key/--ca, TLS itself to the upstream: the direct
 * ceiling.  As a backend (serve) it sits behind the upstream TLS server
 * and reads one command byte per connection: 'E' echoes the rest, 'D'
 * plus an 8-byte big-endian count sends that many bytes, 'U' plus a
 * count reads that many and answers one byte 'K'.  Each client mode
 * prints one line of key=value figures; every wait is bounded by
 * --timeout (socket timeouts).
 */

#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define PROG		"loadgen"
#define IO_CHUNK	65536
#define ECHO_BUF	16384
#define CONN_MSG	16
#define MAX_COUNT	10000000LL
#define MAX_PARALLEL	256
#define MAX_PORTS	64
#define RTT_WARMUP	100
#define EPOLL_EVENTS	64

struct options {
	const char	*mode;
	const char	*addr;
	const char	*burst_addr;
	const char	*cert;
	const char	*key;
	const char	*ca;
	const char	*servername;
	long long	 count;
	long long	 parallel;
	long long	 size;
	long long	 interval_us;
	long long	 base_ms;
	unsigned long long bytes;
	double		 timeout_s;
	int		 resume;
	int		 port;
};

/* one client connection: plaintext, or TLS when ssl is set */
struct conn {
	int	 fd;
	SSL	*ssl;
	int	 resumed;
};

/* a backend connection */
struct bconn {
	int		 fd;
	int		 mode;		/* 0 until the command byte */
	unsigned char	 hdr[9];
	size_t		 hlen;
	uint64_t	 left;
	unsigned char	 buf[ECHO_BUF];
	size_t		 off;
	size_t		 len;
	uint32_t	 events;
};

struct conn_job {
	long long	 next;
	long long	 count;
	long long	 resumed;
	pthread_mutex_t	 mu;
};

struct burst_worker {
	pthread_t	 th;
	int64_t		 first_ns;	/* since the release */
};

struct pinger {
	struct conn	*c;
	int64_t		*t0;		/* when each began */
	int64_t		*rtt;		/* its duration */
	size_t		 n;
	size_t		 cap;
	atomic_int	 stop;
};

static struct options	 opt;
static struct sockaddr_in target;
static struct sockaddr_in burst_target;
static SSL_CTX		*ctx;
static SSL_SESSION	*cached;
static pthread_mutex_t	 cache_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t release;
static int64_t		 release_ns;
static unsigned char	 pattern[IO_CHUNK];

static _Noreturn void
usage(void)
{
	fprintf(stderr,
	    "usage: " PROG " ports N\n"
	    "       " PROG " serve [--port P]\n"
	    "       " PROG " hold --count N\n"
	    "       " PROG " conn ADDR --count N [--parallel P] [TLS]\n"
	    "       " PROG " rtt ADDR --count N [--size B] [TLS]\n"
	    "       " PROG " download|upload ADDR --bytes N [TLS]\n"
	    "       " PROG " idle ADDR --count N [TLS]\n"
	    "       " PROG " burst ADDR --burst-addr ADDR2 --count N"
	    " [--interval-us U] [--base-ms M] [TLS]\n"
	    "TLS (the direct peer): --cert PEM --key PEM --ca PEM"
	    " [--servername NAME] [--resume]\n"
	    "ADDR is IPv4:PORT; every mode takes [--timeout S];"
	    " N for --bytes may end in K, M or G\n");
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

static _Noreturn void
fail_ssl(const char *what)
{
	char	 buf[256];
	unsigned long e = ERR_get_error();

	if (e == 0)
		fail("%s: %s", what, errno != 0 ? strerror(errno) :
		    "connection closed");
	ERR_error_string_n(e, buf, sizeof(buf));
	fail("%s: %s", what, buf);
}

static int64_t
now_ns(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* This process's user + system CPU time so far, in ms. */
static double
cpu_ms(void)
{
	struct rusage	 ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* This process's VmRSS in kB. */
static long
rss_kb(void)
{
	FILE	*f;
	char	 line[256];
	long	 kb = -1;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static long long
parse_ll(const char *s, long long min, long long max, const char *name)
{
	char		*end;
	long long	 v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		usage_error("%s: expected an integer in %lld..%lld, got \"%s\"",
		    name, min, max, s);
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
	if (*end != '\0' || v == 0 || v > (64ULL << 30) / mult)
		usage_error("--bytes: bad number \"%s\" (1 to 64G)", s);
	return v * mult;
}

static void
parse_addr(const char *s, struct sockaddr_in *sin)
{
	char		 host[64];
	const char	*colon;
	size_t		 hlen;

	if ((colon = strrchr(s, ':')) == NULL ||
	    (hlen = (size_t)(colon - s)) == 0 || hlen >= sizeof(host))
		usage_error("bad address \"%s\": expected IPv4:PORT", s);
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		usage_error("bad address \"%s\": expected IPv4:PORT", s);
	sin->sin_port = htons((uint16_t)parse_ll(colon + 1, 1, 65535,
	    "port"));
}

static void
parse_args(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "size", required_argument, NULL, 's' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "burst-addr", required_argument, NULL, 'B' },
		{ "interval-us", required_argument, NULL, 'i' },
		{ "base-ms", required_argument, NULL, 'm' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'a' },
		{ "servername", required_argument, NULL, 'S' },
		{ "resume", no_argument, NULL, 'r' },
		{ "port", required_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int	 ch;

	opt.parallel = 1;
	opt.size = 64;
	opt.interval_us = 1000;
	opt.base_ms = 1000;
	opt.timeout_s = 60;
	opt.servername = "localhost";
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			opt.count = parse_ll(optarg, 1, MAX_COUNT, "--count");
			break;
		case 'P':
			opt.parallel = parse_ll(optarg, 1, MAX_PARALLEL,
			    "--parallel");
			break;
		case 's':
			opt.size = parse_ll(optarg, 1, ECHO_BUF, "--size");
			break;
		case 'b':
			opt.bytes = parse_bytes(optarg);
			break;
		case 'B':
			opt.burst_addr = optarg;
			break;
		case 'i':
			opt.interval_us = parse_ll(optarg, 0, 1000000,
			    "--interval-us");
			break;
		case 'm':
			opt.base_ms = parse_ll(optarg, 1, 600000, "--base-ms");
			break;
		case 'c':
			opt.cert = optarg;
			break;
		case 'k':
			opt.key = optarg;
			break;
		case 'a':
			opt.ca = optarg;
			break;
		case 'S':
			opt.servername = optarg;
			break;
		case 'r':
			opt.resume = 1;
			break;
		case 'p':
			opt.port = (int)parse_ll(optarg, 0, 65535, "--port");
			break;
		case 't':
			opt.timeout_s = (double)parse_ll(optarg, 1, 86400,
			    "--timeout");
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage_error("expected a mode");
	opt.mode = argv[optind++];
	if (optind < argc)
		opt.addr = argv[optind++];
	if (optind != argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);
}

/* ---- TLS for the direct peer */

static int
new_session(SSL *ssl, SSL_SESSION *sess)
{
	pthread_mutex_lock(&cache_mu);
	SSL_SESSION_free(cached);
	cached = sess;
	pthread_mutex_unlock(&cache_mu);
	return 1;	/* we keep the reference */
}

static void
tls_setup(void)
{
	int	 n;

	n = (opt.cert != NULL) + (opt.key != NULL) + (opt.ca != NULL);
	if (n == 0) {
		if (opt.resume)
			usage_error("--resume is for TLS"
			    " (--cert, --key, --ca)");
		return;
	}
	if (n != 3)
		usage_error("TLS needs all of --cert, --key and --ca");
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		fail_ssl("SSL_CTX_new");
	if (SSL_CTX_use_certificate_chain_file(ctx, opt.cert) != 1)
		fail_ssl(opt.cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, opt.key, SSL_FILETYPE_PEM) != 1)
		fail_ssl(opt.key);
	if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1)
		fail_ssl(opt.ca);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (opt.resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, new_session);
	} else
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}

static void
set_timeouts(int fd)
{
	struct timeval	 tv;
	int		 one = 1;

	tv.tv_sec = (time_t)opt.timeout_s;
	tv.tv_usec = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
		fail("setsockopt: %s", strerror(errno));
}

static void
conn_open(struct conn *c, const struct sockaddr_in *to)
{
	SSL_SESSION	*sess = NULL;

	memset(c, 0, sizeof(*c));
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		fail("socket: %s", strerror(errno));
	set_timeouts(c->fd);
	if (connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) == -1)
		fail("connect to port %u: %s", ntohs(to->sin_port),
		    strerror(errno));
	if (ctx == NULL)
		return;
	if ((c->ssl = SSL_new(ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, opt.servername) != 1 ||
	    SSL_set1_host(c->ssl, opt.servername) != 1)
		fail_ssl("SSL_new");
	if (opt.resume) {
		pthread_mutex_lock(&cache_mu);
		if (cached != NULL && SSL_SESSION_up_ref(cached) == 1)
			sess = cached;
		pthread_mutex_unlock(&cache_mu);
		if (sess != NULL) {
			SSL_set_session(c->ssl, sess);
			SSL_SESSION_free(sess);
		}
	}
	if (SSL_connect(c->ssl) != 1)
		fail_ssl("TLS handshake");
	c->resumed = SSL_session_reused(c->ssl);
}

static void
conn_write(struct conn *c, const void *p, size_t len)
{
	const unsigned char	*b = p;
	ssize_t			 n;

	while (len > 0) {
		if (c->ssl != NULL) {
			size_t	 w;

			if (SSL_write_ex(c->ssl, b, len, &w) != 1)
				fail_ssl("TLS write");
			n = (ssize_t)w;
		} else if ((n = write(c->fd, b, len)) == -1) {
			if (errno == EINTR)
				continue;
			fail("write: %s", errno == EAGAIN ?
			    "timed out" : strerror(errno));
		}
		b += n;
		len -= (size_t)n;
	}
}

/* Read up to len bytes (at least one); fails on EOF or timeout. */
static size_t
conn_read_some(struct conn *c, void *p, size_t len)
{
	ssize_t	 n;

	if (c->ssl != NULL) {
		size_t	 r;

		if (SSL_read_ex(c->ssl, p, len, &r) != 1)
			fail_ssl("TLS read");
		return r;
	}
	for (;;) {
		if ((n = read(c->fd, p, len)) > 0)
			return (size_t)n;
		if (n == 0)
			fail("read: the connection closed early");
		if (errno != EINTR)
			fail("read: %s", errno == EAGAIN ?
			    "timed out" : strerror(errno));
	}
}

static void
conn_read_full(struct conn *c, void *p, size_t len)
{
	unsigned char	*b = p;
	size_t		 n;

	while (len > 0) {
		n = conn_read_some(c, b, len);
		b += n;
		len -= n;
	}
}

static void
conn_close(struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd != -1)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

/* One short connection: an echo of CONN_MSG bytes; returns resumed. */
static int
short_conn(const struct sockaddr_in *to, int64_t *first_ns)
{
	struct conn	 c;
	unsigned char	 out[CONN_MSG + 1], in[CONN_MSG];
	int		 resumed;

	out[0] = 'E';
	memset(out + 1, 'x', CONN_MSG);
	conn_open(&c, to);
	conn_write(&c, out, sizeof(out));
	conn_read_full(&c, in, 1);
	if (first_ns != NULL)
		*first_ns = now_ns() - release_ns;
	conn_read_full(&c, in + 1, CONN_MSG - 1);
	if (memcmp(in, out + 1, CONN_MSG) != 0)
		fail("the echo differs from what was sent");
	resumed = c.resumed;
	conn_close(&c);
	return resumed;
}

/* ---- client modes */

static void *
conn_thread(void *arg)
{
	struct conn_job	*j = arg;
	long long	 i;
	int		 r;

	for (;;) {
		pthread_mutex_lock(&j->mu);
		i = j->next++;
		pthread_mutex_unlock(&j->mu);
		if (i >= j->count)
			break;
		r = short_conn(&target, NULL);
		pthread_mutex_lock(&j->mu);
		j->resumed += r;
		pthread_mutex_unlock(&j->mu);
	}
	return NULL;
}

static void
mode_conn(void)
{
	struct conn_job	 j;
	pthread_t	 th[MAX_PARALLEL];
	int64_t		 t0, t1;
	double		 c0, s;
	long long	 i;

	if (opt.count == 0)
		usage_error("conn needs --count N");
	memset(&j, 0, sizeof(j));
	j.count = opt.count;
	pthread_mutex_init(&j.mu, NULL);
	c0 = cpu_ms();
	t0 = now_ns();
	for (i = 0; i < opt.parallel; i++)
		if ((errno = pthread_create(&th[i], NULL, conn_thread,
		    &j)) != 0)
			fail("pthread_create: %s", strerror(errno));
	for (i = 0; i < opt.parallel; i++)
		pthread_join(th[i], NULL);
	t1 = now_ns();
	s = (double)(t1 - t0) / 1e9;
	printf("conn count=%lld parallel=%lld secs=%.3f rate=%.1f"
	    " resumed=%lld cpu_ms=%.1f\n", opt.count, opt.parallel, s,
	    (double)opt.count / s, ctx != NULL ? j.resumed : -1LL,
	    cpu_ms() - c0);
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t	 x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* The q-th quantile (0..1) of n sorted values, in ms. */
static double
quantile_ms(const int64_t *v, size_t n, double q)
{
	size_t	 i;

	if (n == 0)
		return -1;
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return (double)v[i] / 1e6;
}

static void
ping(struct conn *c, unsigned char *out, unsigned char *in, size_t len)
{
	out[0]++;
	conn_write(c, out, len);
	conn_read_full(c, in, len);
	if (memcmp(in, out, len) != 0)
		fail("the echo differs from what was sent");
}

static void
mode_rtt(void)
{
	struct conn	 c;
	unsigned char	 out[ECHO_BUF], in[ECHO_BUF];
	int64_t		*v, t;
	size_t		 len = (size_t)opt.size;
	long long	 i;
	double		 c0;

	if (opt.count == 0)
		usage_error("rtt needs --count N");
	if ((v = calloc((size_t)opt.count, sizeof(*v))) == NULL)
		fail("out of memory");
	memset(out, 'p', len);
	conn_open(&c, &target);
	conn_write(&c, "E", 1);
	for (i = 0; i < RTT_WARMUP; i++)
		ping(&c, out, in, len);
	c0 = cpu_ms();
	for (i = 0; i < opt.count; i++) {
		t = now_ns();
		ping(&c, out, in, len);
		v[i] = now_ns() - t;
	}
	c0 = cpu_ms() - c0;
	conn_close(&c);
	qsort(v, (size_t)opt.count, sizeof(*v), cmp_i64);
	printf("rtt count=%lld size=%zu p50_ms=%.4f p99_ms=%.4f max_ms=%.4f"
	    " cpu_ms=%.1f\n", opt.count, len,
	    quantile_ms(v, (size_t)opt.count, 0.5),
	    quantile_ms(v, (size_t)opt.count, 0.99),
	    (double)v[opt.count - 1] / 1e6, c0);
	free(v);
}

static void
put_header(unsigned char *h, int cmd, uint64_t n)
{
	int	 i;

	h[0] = (unsigned char)cmd;
	for (i = 0; i < 8; i++)
		h[1 + i] = (unsigned char)(n >> (56 - 8 * i));
}

static void
mode_bulk(int upload)
{
	static unsigned char	 buf[IO_CHUNK];
	struct conn		 c;
	unsigned char		 h[9];
	uint64_t		 left = opt.bytes;
	int64_t			 t0;
	double			 c0, s;
	size_t			 n;

	if (opt.bytes == 0)
		usage_error("%s needs --bytes N", opt.mode);
	conn_open(&c, &target);
	put_header(h, upload ? 'U' : 'D', opt.bytes);
	c0 = cpu_ms();
	t0 = now_ns();
	conn_write(&c, h, sizeof(h));
	while (left > 0) {
		n = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
		if (upload)
			conn_write(&c, pattern, n);
		else
			n = conn_read_some(&c, buf, n);
		left -= n;
	}
	if (upload) {
		conn_read_full(&c, buf, 1);
		if (buf[0] != 'K')
			fail("upload: the sink did not acknowledge");
	}
	s = (double)(now_ns() - t0) / 1e9;
	c0 = cpu_ms() - c0;
	conn_close(&c);
	printf("%s bytes=%llu secs=%.3f mb_s=%.1f cpu_ms=%.1f\n", opt.mode,
	    opt.bytes, s, (double)opt.bytes / 1e6 / s, c0);
}

static void
raise_nofile(void)
{
	struct rlimit	 rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Open --count connections, one byte echoed on each, print "ready" and
 * hold them until standard input ends; then close them and say so.
 */
static void
mode_idle(void)
{
	struct conn	*c;
	unsigned char	 b[2] = { 'E', 'i' };
	long		 r0, r1;
	long long	 i;
	char		 line[64];

	if (opt.count == 0)
		usage_error("idle needs --count N");
	raise_nofile();
	if ((c = calloc((size_t)opt.count, sizeof(*c))) == NULL)
		fail("out of memory");
	r0 = rss_kb();
	for (i = 0; i < opt.count; i++) {
		conn_open(&c[i], &target);
		conn_write(&c[i], b, 2);
		conn_read_full(&c[i], line, 1);
	}
	r1 = rss_kb();
	printf("ready count=%lld rss0_kb=%ld rss1_kb=%ld\n", opt.count, r0, r1);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL)
		;
	for (i = 0; i < opt.count; i++)
		conn_close(&c[i]);
	free(c);
	printf("closed\n");
}

/*
 * Hold --count descriptors (of /dev/null) open until standard input
 * ends: a crowded machine, for what an accepted connection costs when
 * the agent looks through /proc.
 */
static void
mode_hold(void)
{
	char		 line[64];
	long long	 i;
	int		 fd;

	if (opt.count == 0)
		usage_error("hold needs --count N");
	raise_nofile();
	for (i = 0; i < opt.count; i++)
		if ((fd = open("/dev/null", O_RDONLY)) == -1)
			fail("descriptor %lld of %lld: %s", i + 1, opt.count,
			    strerror(errno));
	printf("ready count=%lld\n", opt.count);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL)
		;
}

static void *
burst_thread(void *arg)
{
	struct burst_worker	*w = arg;

	pthread_barrier_wait(&release);
	short_conn(&burst_target, &w->first_ns);
	return NULL;
}

static void
pinger_add(struct pinger *p, int64_t t0, int64_t rtt)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 4096;
		p->t0 = realloc(p->t0, p->cap * sizeof(*p->t0));
		p->rtt = realloc(p->rtt, p->cap * sizeof(*p->rtt));
		if (p->t0 == NULL || p->rtt == NULL)
			fail("out of memory");
	}
	p->t0[p->n] = t0;
	p->rtt[p->n] = rtt;
	p->n++;
}

/* Round trips on the open connection, one every --interval-us. */
static void *
pinger_thread(void *arg)
{
	struct pinger	*p = arg;
	unsigned char	 out[64], in[64];
	struct timespec	 ts;
	int64_t		 next = now_ns(), t;

	memset(out, 'q', sizeof(out));
	while (!atomic_load(&p->stop)) {
		t = now_ns();
		ping(p->c, out, in, sizeof(out));
		pinger_add(p, t, now_ns() - t);
		next += opt.interval_us * 1000;
		if (next < now_ns())
			next = now_ns();
		ts.tv_sec = (time_t)(next / 1000000000LL);
		ts.tv_nsec = (long)(next % 1000000000LL);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
		    NULL) == EINTR)
			;
	}
	return NULL;
}

/* p50 and p99 of the round trips that started in [from, to). */
static void
window_quantiles(const struct pinger *p, int64_t from, int64_t to,
    double *p50, double *p99, size_t *np)
{
	int64_t	*v;
	size_t	 i, n = 0;

	if ((v = calloc(p->n + 1, sizeof(*v))) == NULL)
		fail("out of memory");
	for (i = 0; i < p->n; i++)
		if (p->t0[i] >= from && p->t0[i] < to)
			v[n++] = p->rtt[i];
	qsort(v, n, sizeof(*v), cmp_i64);
	*p50 = quantile_ms(v, n, 0.5);
	*p99 = quantile_ms(v, n, 0.99);
	*np = n;
	free(v);
}

/*
 * The slow-token case: round trips on an open connection to ADDR, first
 * for --base-ms with nothing else going on, then while --count new
 * connections to --burst-addr start at once; reports both and the time
 * until the last of them has its first byte.
 */
static void
mode_burst(void)
{
	struct burst_worker	*w;
	unsigned char		 out[64], in[64];
	struct pinger		 p;
	struct conn		 c;
	struct timespec		 ts;
	pthread_t		 pt;
	int64_t			 t_base, all = 0, end;
	double			 b50, b99, q50, q99;
	size_t			 bn, qn;
	long long		 i;

	if (opt.count == 0 || opt.burst_addr == NULL)
		usage_error("burst needs --count N and --burst-addr ADDR");
	parse_addr(opt.burst_addr, &burst_target);
	raise_nofile();
	memset(out, 'w', sizeof(out));
	if ((w = calloc((size_t)opt.count, sizeof(*w))) == NULL)
		fail("out of memory");
	if ((errno = pthread_barrier_init(&release, NULL,
	    (unsigned)opt.count + 1)) != 0)
		fail("pthread_barrier_init: %s", strerror(errno));
	for (i = 0; i < opt.count; i++)
		if ((errno = pthread_create(&w[i].th, NULL, burst_thread,
		    &w[i])) != 0)
			fail("pthread_create: %s", strerror(errno));
	memset(&p, 0, sizeof(p));
	p.c = &c;
	conn_open(&c, &target);
	conn_write(&c, "E", 1);
	ping(&c, out, in, sizeof(out));	/* the tunnel is up */
	t_base = now_ns();
	if ((errno = pthread_create(&pt, NULL, pinger_thread, &p)) != 0)
		fail("pthread_create: %s", strerror(errno));
	end = t_base + opt.base_ms * 1000000LL;
	ts.tv_sec = (time_t)(end / 1000000000LL);
	ts.tv_nsec = (long)(end % 1000000000LL);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
	    NULL) == EINTR)
		;
	release_ns = now_ns();
	pthread_barrier_wait(&release);
	for (i = 0; i < opt.count; i++) {
		pthread_join(w[i].th, NULL);
		if (w[i].first_ns > all)
			all = w[i].first_ns;
	}
	atomic_store(&p.stop, 1);
	pthread_join(pt, NULL);
	conn_close(&c);
	window_quantiles(&p, t_base, release_ns, &b50, &b99, &bn);
	window_quantiles(&p, release_ns, release_ns + all, &q50, &q99, &qn);
	printf("burst count=%lld all_first_byte_ms=%.1f base_p50_ms=%.3f"
	    " base_p99_ms=%.3f base_n=%zu burst_p50_ms=%.3f burst_p99_ms=%.3f"
	    " burst_n=%zu\n", opt.count, (double)all / 1e6, b50, b99, bn,
	    q50, q99, qn);
	free(p.t0);
	free(p.rtt);
	free(w);
}

static void
mode_ports(void)
{
	struct sockaddr_in	 sin;
	socklen_t		 len;
	int			 fd[MAX_PORTS];
	long long		 n, i;

	if (opt.addr == NULL)
		usage_error("ports needs N");
	n = parse_ll(opt.addr, 1, MAX_PORTS, "N");
	for (i = 0; i < n; i++) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(sin);
		if ((fd[i] = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
		    bind(fd[i], (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
		    getsockname(fd[i], (struct sockaddr *)&sin, &len) == -1)
			fail("a free port: %s", strerror(errno));
		printf("%u\n", ntohs(sin.sin_port));
	}
	for (i = 0; i < n; i++)
		close(fd[i]);
}

/* ---- the backend */

static void
bconn_close(int ep, struct bconn *b)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, b->fd, NULL);
	close(b->fd);
	free(b);
}

static void
bconn_want(int ep, struct bconn *b, uint32_t events)
{
	struct epoll_event	 ev;

	if (b->events == events)
		return;
	ev.events = events;
	ev.data.ptr = b;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, b->fd, &ev) == -1)
		fail("epoll_ctl: %s", strerror(errno));
	b->events = events;
}

/* 0: wait for more; -1: close. */
static int
io_result(ssize_t n)
{
	if (n > 0)
		return 1;
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -1;
}

static int
backend_header(struct bconn *b)
{
	size_t	 want = b->hlen == 0 ? 1 : sizeof(b->hdr);
	ssize_t	 n;
	int	 r, i;

	n = read(b->fd, b->hdr + b->hlen, want - b->hlen);
	if ((r = io_result(n)) <= 0)
		return r;
	b->hlen += (size_t)n;
	if (b->hlen == 1 && b->hdr[0] == 'E') {
		b->mode = 'E';
		return 1;
	}
	if (b->hdr[0] != 'D' && b->hdr[0] != 'U')
		return -1;
	if (b->hlen < sizeof(b->hdr))
		return 1;
	for (i = 1; i < 9; i++)
		b->left = b->left << 8 | b->hdr[i];
	b->mode = b->hdr[0];
	return 1;
}

static int
backend_echo(int ep, struct bconn *b)
{
	ssize_t	 n;
	int	 r = 0;

	for (;;) {
		if (b->len == 0) {
			b->off = 0;
			n = read(b->fd, b->buf, sizeof(b->buf));
			if ((r = io_result(n)) <= 0)
				break;
			b->len = (size_t)n;
		}
		n = write(b->fd, b->buf + b->off, b->len);
		if ((r = io_result(n)) <= 0)
			break;
		b->off += (size_t)n;
		b->len -= (size_t)n;
	}
	if (r == 0)
		bconn_want(ep, b, b->len > 0 ? EPOLLOUT : EPOLLIN);
	return r;
}

static int
backend_source(int ep, struct bconn *b)
{
	unsigned char	 junk[256];
	ssize_t		 n;
	size_t		 len;
	int		 r;

	while (b->left > 0) {
		len = b->left < IO_CHUNK ? (size_t)b->left : IO_CHUNK;
		n = write(b->fd, pattern, len);
		if ((r = io_result(n)) <= 0)
			return r;
		b->left -= (uint64_t)n;
	}
	bconn_want(ep, b, EPOLLIN);
	n = read(b->fd, junk, sizeof(junk));
	return io_result(n) < 0 ? -1 : 0;
}

static int
backend_sink(struct bconn *b)
{
	static unsigned char	 buf[IO_CHUNK];
	ssize_t			 n;
	int			 r;

	for (;;) {
		n = read(b->fd, buf, sizeof(buf));
		if ((r = io_result(n)) <= 0)
			return r;
		if (b->left == 0 || (uint64_t)n > b->left)
			return -1;
		b->left -= (uint64_t)n;
		if (b->left == 0 && write(b->fd, "K", 1) != 1)
			return -1;
	}
}

static void
backend_event(int ep, struct bconn *b)
{
	int	 r = 1;

	while (r > 0 && b->mode == 0)
		r = backend_header(b);
	if (r < 0) {
		bconn_close(ep, b);
		return;
	}
	if (r == 0)
		return;
	if (b->mode == 'E')
		r = backend_echo(ep, b);
	else if (b->mode == 'D') {
		if (b->left > 0)
			bconn_want(ep, b, EPOLLOUT);
		r = backend_source(ep, b);
	} else
		r = backend_sink(b);
	if (r < 0)
		bconn_close(ep, b);
}

static void
backend_accept(int ep, int lfd)
{
	struct epoll_event	 ev;
	struct bconn		*b;
	int			 fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) != -1) {
		if ((b = calloc(1, sizeof(*b))) == NULL)
			fail("out of memory");
		b->fd = fd;
		b->events = EPOLLIN;
		ev.events = EPOLLIN;
		ev.data.ptr = b;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
			fail("epoll_ctl: %s", strerror(errno));
	}
	if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR)
		fail("accept: %s", strerror(errno));
}

static void
mode_serve(void)
{
	struct epoll_event	 ev[EPOLL_EVENTS];
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);
	int			 lfd, ep, n, i, one = 1;

	raise_nofile();
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)opt.port);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) == -1 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 4096) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) == -1)
		fail("listen on 127.0.0.1:%d: %s", opt.port, strerror(errno));
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		fail("epoll_create1: %s", strerror(errno));
	ev[0].events = EPOLLIN;
	ev[0].data.ptr = NULL;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev[0]) == -1)
		fail("epoll_ctl: %s", strerror(errno));
	printf("%u\n", ntohs(sin.sin_port));
	fflush(stdout);
	for (;;) {
		if ((n = epoll_wait(ep, ev, EPOLL_EVENTS, -1)) == -1) {
			if (errno == EINTR)
				continue;
			fail("epoll_wait: %s", strerror(errno));
		}
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == NULL)
				backend_accept(ep, lfd);
			else
				backend_event(ep, ev[i].data.ptr);
		}
	}
}

int
main(int argc, char *argv[])
{
	size_t	 i;

	signal(SIGPIPE, SIG_IGN);
	parse_args(argc, argv);
	for (i = 0; i < sizeof(pattern); i++)
		pattern[i] = (unsigned char)(i % 251);
	if (strcmp(opt.mode, "ports") == 0) {
		mode_ports();
		return 0;
	}
	if (strcmp(opt.mode, "hold") == 0) {
		mode_hold();
		return 0;
	}
	if (strcmp(opt.mode, "serve") == 0) {
		if (opt.addr != NULL)
			usage_error("serve takes no address");
		mode_serve();
	}
	if (opt.addr == NULL)
		usage_error("%s needs ADDR", opt.mode);
	parse_addr(opt.addr, &target);
	tls_setup();
	if (strcmp(opt.mode, "conn") == 0)
		mode_conn();
	else if (strcmp(opt.mode, "rtt") == 0)
		mode_rtt();
	else if (strcmp(opt.mode, "download") == 0)
		mode_bulk(0);
	else if (strcmp(opt.mode, "upload") == 0)
		mode_bulk(1);
	else if (strcmp(opt.mode, "idle") == 0)
		mode_idle();
	else if (strcmp(opt.mode, "burst") == 0)
		mode_burst();
	else
		usage_error("unknown mode \"%s\"", opt.mode);
	SSL_CTX_free(ctx);
	SSL_SESSION_free(cached);
	return 0;
}
