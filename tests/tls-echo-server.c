/*
 * tls-echo-server: the upstream used by the p11agent tests.
 *
 * Listens on 127.0.0.1 (ephemeral port, printed on stdout), forks one
 * child per connection, sends one line describing the TLS session and
 * then echoes every byte back until the client closes.  With --plain it
 * speaks no TLS at all, to check that the agent refuses such an upstream.
 * With --send N --close HOW it sends N bytes of a fixed pattern instead
 * and closes first: with close_notify, with a bare TCP FIN, or with a TCP
 * RST.  --full-backlog never answers a SYN: a connect to it hangs.
 * For the server-trust tests: --ocsp-staple FILE staples that DER OCSP
 * response when the client asks for one, --tls-max 1.0|1.1|1.2|1.3 caps
 * the version (1.0 and 1.1 at security level 0, which they need), --alpn
 * LIST chooses the first of LIST the client offers ("none": never one),
 * --ciphers LIST sets the TLS 1.2 suites, --seclevel 0 lets it serve an
 * RSA-1024 key or a SHA-1 signed certificate.  --old-hello 1.0|1.1 speaks
 * no TLS but answers the ClientHello with a ServerHello of that version,
 * as a server of the old versions only that does not refuse first.
 * --ipv6 listens on [::1] instead.
 */

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PROG		"tls-echo-server"
#define ECHO_BUF	16384
#define SUBJECT_MAX	3000
#define INFO_MAX	4000
#define PLAIN_GREETING	"HELLO this is not TLS\r\n"
/* --send: byte k of the data is PATTERN(k); tunnel-client checks it */
#define PATTERN(k)	((unsigned char)((k) % 251))
#define FILLERS		3	/* --full-backlog: connections that fill it */

enum io_result {
	IO_OK,
	IO_EOF,
	IO_ERR
};

/* --close: how the server ends a --send connection */
enum close_how {
	CLOSE_NONE,	/* echo until the client closes */
	CLOSE_NOTIFY,	/* close_notify, then wait for the peer's */
	CLOSE_FIN,	/* close(2) without close_notify */
	CLOSE_RST	/* after one byte from the peer: a TCP RST */
};

struct options {
	const char	*cert;
	const char	*key;
	const char	*ca;
	const char	*port_file;
	int		 require_cert;
	int		 resume;	/* --resume: tickets and a cache */
	int		 version;	/* 0: TLS 1.2 .. 1.3 */
	int		 plain;
	int		 silent;	/* plain, and never says a word */
	int		 old_hello;	/* --old-hello: that version */
	int		 closed;	/* bound, not listening: refuses */
	int		 full_backlog;	/* listening, never accepting */
	int		 timeout_ms;
	long		 max_conns;	/* 0: unlimited */
	unsigned long long send;	/* --send N */
	enum close_how	 close_how;
	const char	*ocsp_staple;	/* DER file */
	int		 tls_max;	/* --tls-max; 0: as --tls1.x */
	const char	*alpn;		/* "h2,http/1.1" or "none" */
	const char	*ciphers;	/* TLS 1.2 suites */
	int		 seclevel;	/* -1: OpenSSL's */
};

/* --ocsp-staple and --alpn, for the callbacks */
static unsigned char	*staple;
static long		 staple_len;
static unsigned char	 alpn_wire[256];
static unsigned int	 alpn_wire_len;

struct conn {
	int			 fd;
	SSL			*ssl;	/* NULL with --plain */
	int			 timeout_ms;
	unsigned long		 id;
	char			 peer[64];
	char			 err[512];
	unsigned long long	 echoed;
	int			 silent;
	int			 old_hello;
	unsigned long long	 send;
	enum close_how		 close_how;
};

struct children {
	pid_t	*pids;
	size_t	 n;
	size_t	 cap;
};

static volatile sig_atomic_t got_term;
static int		 want_port;	/* --port: this one, not any */
static int		 want_v6;	/* --ipv6: on [::1], not 127.0.0.1 */

static _Noreturn void
usage(void)
{
	fprintf(stderr,
	    "usage: " PROG " --cert F --key F [--ca F] [--require-cert] [--resume]\n"
	    "           [--tls1.2 | --tls1.3] [--port P] [--port-file F] [--timeout S]"
	    " [--max-conns N]\n"
	    "           [--send N --close notify|fin|rst] [--ocsp-staple FILE]\n"
	    "           [--tls-max 1.0|1.1|1.2|1.3] [--alpn LIST|none]"
	    " [--ciphers LIST] [--seclevel N] [--ipv6]\n"
	    "       " PROG " --plain | --silent | --closed | --full-backlog"
	    " | --old-hello 1.0|1.1"
	    " [--port-file F]\n"
	    "           [--timeout S] [--max-conns N]\n");
	exit(2);
}

static _Noreturn void
die(const char *fmt, ...)
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
usage_error(const char *msg)
{
	fprintf(stderr, PROG ": %s (see --help)\n", msg);
	exit(2);
}

/* Drain the OpenSSL error queue into buf as one line. */
static void
ssl_errors(char *buf, size_t size)
{
	const char	*data;
	unsigned long	 e;
	size_t		 len = 0;
	int		 flags;
	char		 one[256];

	buf[0] = '\0';
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		ERR_error_string_n(e, one, sizeof(one));
		if (len < size)
			len += snprintf(buf + len, size - len, "%s%s%s%s",
			    len ? "; " : "", one,
			    (flags & ERR_TXT_STRING) && *data ? ": " : "",
			    (flags & ERR_TXT_STRING) ? data : "");
	}
	if (buf[0] == '\0')
		snprintf(buf, size, "no OpenSSL error reported");
}

static _Noreturn void
die_ssl(const char *what)
{
	char	 buf[1024];

	ssl_errors(buf, sizeof(buf));
	die("%s: %s", what, buf);
}

static long
parse_long(const char *s, long min, long max, const char *name)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, PROG ": %s: expected an integer in %ld..%ld,"
		    " got \"%s\"\n", name, min, max, s);
		exit(2);
	}
	return v;
}

/* Seconds, fractions allowed; returns milliseconds. */
static int
parse_timeout(const char *s)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0.001) ||
	    v > 86400) {
		fprintf(stderr, PROG ": --timeout: expected seconds in"
		    " [0.001, 86400], got \"%s\"\n", s);
		exit(2);
	}
	return (int)(v * 1000);
}

static enum close_how
parse_close(const char *s)
{
	if (strcmp(s, "notify") == 0)
		return CLOSE_NOTIFY;
	if (strcmp(s, "fin") == 0)
		return CLOSE_FIN;
	if (strcmp(s, "rst") == 0)
		return CLOSE_RST;
	fprintf(stderr, PROG ": --close: expected notify, fin or rst, got"
	    " \"%s\"\n", s);
	exit(2);
}

static int
parse_version(const char *s)
{
	if (strcmp(s, "1.0") == 0)
		return TLS1_VERSION;
	if (strcmp(s, "1.1") == 0)
		return TLS1_1_VERSION;
	if (strcmp(s, "1.2") == 0)
		return TLS1_2_VERSION;
	if (strcmp(s, "1.3") == 0)
		return TLS1_3_VERSION;
	fprintf(stderr, PROG ": --tls-max: expected 1.0, 1.1, 1.2 or 1.3, got"
	    " \"%s\"\n", s);
	exit(2);
}

/* --alpn a,b,c: the wire format (RFC 7301) */
static void
parse_alpn(const char *s)
{
	size_t	 n;

	if (strcmp(s, "none") == 0)
		return;
	while (*s != '\0') {
		n = strcspn(s, ",");
		if (n == 0 || n > 255 || alpn_wire_len + 1 + n >
		    sizeof(alpn_wire))
			usage_error("--alpn: a list of names, as h2,http/1.1");
		alpn_wire[alpn_wire_len++] = (unsigned char)n;
		memcpy(alpn_wire + alpn_wire_len, s, n);
		alpn_wire_len += (unsigned int)n;
		s += n + (s[n] == ',');
	}
}

static void
parse_args(int argc, char *argv[], struct options *o)
{
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'a' },
		{ "require-cert", no_argument, NULL, 'r' },
		{ "resume", no_argument, NULL, 'R' },
		{ "tls1.2", no_argument, NULL, '2' },
		{ "tls1.3", no_argument, NULL, '3' },
		{ "plain", no_argument, NULL, 'p' },
		{ "silent", no_argument, NULL, 's' },
		{ "old-hello", required_argument, NULL, 'H' },
		{ "ipv6", no_argument, NULL, '6' },
		{ "closed", no_argument, NULL, 'x' },
		{ "full-backlog", no_argument, NULL, 'b' },
		{ "send", required_argument, NULL, 'n' },
		{ "close", required_argument, NULL, 'C' },
		{ "port-file", required_argument, NULL, 'f' },
		{ "port", required_argument, NULL, 'P' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "ocsp-staple", required_argument, NULL, 'O' },
		{ "tls-max", required_argument, NULL, 'V' },
		{ "alpn", required_argument, NULL, 'A' },
		{ "ciphers", required_argument, NULL, 'S' },
		{ "seclevel", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int	 ch;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = 20 * 1000;
	o->seclevel = -1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->cert = optarg;
			break;
		case 'k':
			o->key = optarg;
			break;
		case 'a':
			o->ca = optarg;
			break;
		case 'r':
			o->require_cert = 1;
			break;
		case 'R':
			o->resume = 1;
			break;
		case '2':
			o->version = TLS1_2_VERSION;
			break;
		case '3':
			o->version = TLS1_3_VERSION;
			break;
		case 'p':
			o->plain = 1;
			break;
		case 's':
			o->plain = o->silent = 1;
			break;
		case '6':
			want_v6 = 1;
			break;
		case 'H':
			o->plain = 1;
			if ((o->old_hello = parse_version(optarg)) >
			    TLS1_1_VERSION)
				usage_error("--old-hello: 1.0 or 1.1");
			break;
		case 'x':
			o->plain = o->closed = 1;
			break;
		case 'b':
			o->plain = o->full_backlog = 1;
			break;
		case 'n':
			o->send = (unsigned long long)parse_long(optarg, 0,
			    1L << 30, "--send");
			break;
		case 'C':
			o->close_how = parse_close(optarg);
			break;
		case 'f':
			o->port_file = optarg;
			break;
		case 'P':	/* a server restarted on the port it had */
			want_port = (int)parse_long(optarg, 1, 65535,
			    "--port");
			break;
		case 't':
			o->timeout_ms = parse_timeout(optarg);
			break;
		case 'm':
			o->max_conns = parse_long(optarg, 1, 1000000,
			    "--max-conns");
			break;
		case 'O':
			o->ocsp_staple = optarg;
			break;
		case 'V':
			o->tls_max = parse_version(optarg);
			break;
		case 'A':
			o->alpn = optarg;
			break;
		case 'S':
			o->ciphers = optarg;
			break;
		case 'L':
			o->seclevel = (int)parse_long(optarg, 0, 5,
			    "--seclevel");
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage_error("unexpected argument");
	if ((o->close_how != CLOSE_NONE) != (o->send > 0))
		usage_error("--send N and --close HOW go together");
	if (o->plain && o->close_how != CLOSE_NONE)
		usage_error("--send and --close are for TLS");
	if (o->plain)
		return;
	if (o->cert == NULL || o->key == NULL)
		usage_error("--cert and --key are required (unless --plain)");
	if (o->require_cert && o->ca == NULL)
		usage_error("--require-cert needs --ca");
	if (o->tls_max != 0 && o->version != 0)
		usage_error("--tls-max or --tls1.x, not both");
	if (o->alpn != NULL)
		parse_alpn(o->alpn);
}

/* The staple, read once (the children share it). */
static void
read_staple(const char *path)
{
	BIO	*b;
	char	 buf[4096];
	int	 n;

	if ((b = BIO_new_file(path, "rb")) == NULL)
		die_ssl(path);
	while ((n = BIO_read(b, buf, sizeof(buf))) > 0) {
		if (staple_len + n > 1L << 20)
			die("%s: larger than 1 MB", path);
		if ((staple = realloc(staple, (size_t)(staple_len + n))) ==
		    NULL)
			die("out of memory");
		memcpy(staple + staple_len, buf, (size_t)n);
		staple_len += n;
	}
	BIO_free(b);
	if (staple_len == 0)
		die("%s: empty", path);
}

/* The client asked for the certificate's status: the staple. */
static int
staple_cb(SSL *ssl, void *arg)
{
	unsigned char	*copy;

	(void)arg;
	if ((copy = OPENSSL_memdup(staple, (size_t)staple_len)) == NULL)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, staple_len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* --alpn: ours in our order, the first the client offers; none else. */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char	*sel;

	(void)ssl;
	(void)arg;
	if (alpn_wire_len == 0 || SSL_select_next_proto(&sel, outlen,
	    alpn_wire, alpn_wire_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
make_ctx(const struct options *o)
{
	STACK_OF(X509_NAME)	*names;
	SSL_CTX			*ctx;
	int			 mode = SSL_VERIFY_NONE;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		die_ssl("SSL_CTX_new");
	if (o->tls_max != 0 && o->tls_max < TLS1_2_VERSION) {
		/* OpenSSL 3 speaks TLS 1.0 and 1.1 at level 0 only */
		SSL_CTX_set_security_level(ctx, 0);
		if (!SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"))
			die_ssl("--tls-max: the cipher list");
	}
	if (!SSL_CTX_set_min_proto_version(ctx, o->version ? o->version :
	    o->tls_max != 0 && o->tls_max < TLS1_2_VERSION ? o->tls_max :
	    TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, o->version ? o->version :
	    o->tls_max ? o->tls_max : TLS1_3_VERSION))
		die_ssl("setting the TLS version range");
	if (o->ciphers != NULL && !SSL_CTX_set_cipher_list(ctx, o->ciphers))
		die_ssl("--ciphers");
	if (o->seclevel >= 0)
		SSL_CTX_set_security_level(ctx, o->seclevel);
	if (o->ocsp_staple != NULL) {
		read_staple(o->ocsp_staple);
		SSL_CTX_set_tlsext_status_cb(ctx, staple_cb);
	}
	if (o->alpn != NULL)
		SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1)
		die_ssl(o->cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)
		die_ssl(o->key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		die_ssl("--key does not match --cert");
	if (o->ca != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1)
			die_ssl(o->ca);
		if ((names = SSL_load_client_CA_file(o->ca)) == NULL)
			die_ssl(o->ca);
		SSL_CTX_set_client_CA_list(ctx, names);
		mode = SSL_VERIFY_PEER;
		if (o->require_cert)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	}
	SSL_CTX_set_verify(ctx, mode, NULL);
	if (o->resume) {
		/* tickets (shared by the forked children: the keys are made
		 * here) and the session IDs of this process */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)
		    PROG, sizeof(PROG) - 1);
		return ctx;
	}
	/* Every connection must be a full handshake (the client signs). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
}

/* backlog -1: bound, not listening */
/* --ipv6: [::1] */
static int
listen_local6(int *port, int backlog)
{
	struct sockaddr_in6	 sin6;
	socklen_t		 len = sizeof(sin6);
	int			 fd, on = 1;

	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		die("socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		die("SO_REUSEADDR: %s", strerror(errno));
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	sin6.sin6_port = htons(want_port);
	if (bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == -1)
		die("bind [::1]:%d: %s", want_port, strerror(errno));
	if (listen(fd, backlog) == -1)
		die("listen: %s", strerror(errno));
	if (getsockname(fd, (struct sockaddr *)&sin6, &len) == -1)
		die("getsockname: %s", strerror(errno));
	*port = ntohs(sin6.sin6_port);
	return fd;
}

static int
listen_local(int *port, int backlog)
{
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);
	int			 fd, on = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		die("socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		die("SO_REUSEADDR: %s", strerror(errno));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(want_port);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		die("bind 127.0.0.1:%d: %s", want_port, strerror(errno));
	if (backlog >= 0 && listen(fd, backlog) == -1)
		die("listen: %s", strerror(errno));
	if (getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		die("getsockname: %s", strerror(errno));
	*port = ntohs(sin.sin_port);
	return fd;
}

/*
 * --full-backlog: the socket listens with a backlog of 0 and never
 * accepts.  One connection completes and fills the accept queue; the
 * kernel then drops every further SYN, so later connects hang.  The
 * connections stay open until the server is killed.
 */
static void
fill_backlog(int port, int timeout_ms)
{
	struct sockaddr_in	 sin;
	struct pollfd		 pfd;
	socklen_t		 len = sizeof(int);
	int			 i, fd, err = 0;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	for (i = 0; i < FILLERS; i++) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1)
			die("socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 &&
		    errno != EINPROGRESS)
			die("filling the backlog: connect: %s",
			    strerror(errno));
		if (i > 0)
			continue;	/* these stay in SYN-SENT */
		/* the first one must be in the accept queue */
		pfd.fd = fd;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		if (poll(&pfd, 1, timeout_ms) != 1)
			die("filling the backlog: the first connect did not"
			    " complete");
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
		    err != 0)
			die("filling the backlog: connect: %s",
			    strerror(err ? err : errno));
	}
}

static void
write_port_file(const char *path, int port)
{
	char	 tmp[4096];
	FILE	*fp;
	int	 bad;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
	    (long)getpid()) >= (int)sizeof(tmp))
		die("--port-file: path too long");
	if ((fp = fopen(tmp, "w")) == NULL)
		die("%s: %s", tmp, strerror(errno));
	fprintf(fp, "%d\n", port);
	bad = fflush(fp) != 0 || ferror(fp);
	if (fclose(fp) != 0 || bad) {
		unlink(tmp);
		die("%s: write failed", tmp);
	}
	if (rename(tmp, path) == -1) {
		unlink(tmp);
		die("rename %s -> %s: %s", tmp, path, strerror(errno));
	}
}

static void
announce_port(const struct options *o, int port)
{
	if (o->port_file != NULL)
		write_port_file(o->port_file, port);
	printf("%d\n", port);
	if (fflush(stdout) != 0)
		die("stdout: %s", strerror(errno));
}

static void
on_term(int sig)
{
	(void)sig;
	got_term = 1;
}

static void
on_chld(int sig)
{
	(void)sig;
}

/*
 * Block the signals we handle; they are only delivered inside ppoll()
 * with the returned mask, so no wakeup can be lost.
 */
static void
setup_signals(sigset_t *waitmask)
{
	struct sigaction	 sa;
	sigset_t		 block;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	if (sigprocmask(SIG_BLOCK, &block, waitmask) == -1)
		die("sigprocmask: %s", strerror(errno));
	sigdelset(waitmask, SIGCHLD);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_chld;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
}

static void
reset_signals_in_child(pid_t parent)
{
	sigset_t	 none;

	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Die with the listener, so that killing it cleans up. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() != parent)
		_exit(1);
}

static void
conn_log(const struct conn *c, const char *fmt, ...)
{
	va_list	 ap;
	char	 msg[2048];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, PROG "[%ld]: conn %lu from %s: %s\n",
	    (long)getpid(), c->id, c->peer, msg);
}

static void
conn_set_err(struct conn *c, const char *op, const char *detail)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", op, detail);
}

/* Wait for events on the connection; IO_ERR (with c->err) on timeout. */
static int
conn_wait(struct conn *c, short events, const char *op)
{
	struct pollfd	 pfd;
	int		 n;

	pfd.fd = c->fd;
	pfd.events = events;
	pfd.revents = 0;
	do {
		n = poll(&pfd, 1, c->timeout_ms);
	} while (n == -1 && errno == EINTR);
	if (n == -1) {
		conn_set_err(c, op, strerror(errno));
		return IO_ERR;
	}
	if (n == 0) {
		snprintf(c->err, sizeof(c->err), "%s: timed out after %g s"
		    " waiting for the peer", op, c->timeout_ms / 1000.0);
		return IO_ERR;
	}
	return IO_OK;
}

/*
 * Interpret a failed SSL call: wait and return IO_OK to retry,
 * IO_EOF on close_notify, IO_ERR (with c->err) otherwise.
 */
static int
ssl_retry(struct conn *c, int ret, int saved_errno, const char *op)
{
	char	 buf[400];
	int	 e;

	e = SSL_get_error(c->ssl, ret);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		return conn_wait(c, POLLIN, op);
	case SSL_ERROR_WANT_WRITE:
		return conn_wait(c, POLLOUT, op);
	case SSL_ERROR_ZERO_RETURN:
		return IO_EOF;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			conn_set_err(c, op, saved_errno ?
			    strerror(saved_errno) : "unexpected EOF");
			return IO_ERR;
		}
		break;
	default:
		break;
	}
	if (ERR_GET_REASON(ERR_peek_error()) ==
	    SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		conn_set_err(c, op, "unexpected EOF (peer closed the TCP"
		    " connection without close_notify)");
		return IO_ERR;
	}
	ssl_errors(buf, sizeof(buf));
	conn_set_err(c, op, buf);
	return IO_ERR;
}

static int
plain_read(struct conn *c, void *buf, size_t len, size_t *got)
{
	ssize_t	 n;

	for (;;) {
		n = recv(c->fd, buf, len, 0);
		if (n > 0) {
			*got = (size_t)n;
			return IO_OK;
		}
		if (n == 0)
			return IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_set_err(c, "read", strerror(errno));
			return IO_ERR;
		}
		if (conn_wait(c, POLLIN, "read") != IO_OK)
			return IO_ERR;
	}
}

static int
conn_read(struct conn *c, void *buf, size_t len, size_t *got)
{
	int	 r, saved;

	if (c->ssl == NULL)
		return plain_read(c, buf, len, got);
	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_read_ex(c->ssl, buf, len, got);
		saved = errno;
		if (r == 1)
			return IO_OK;
		if ((r = ssl_retry(c, r, saved, "read")) != IO_OK)
			return r;
	}
}

static int
plain_write_all(struct conn *c, const unsigned char *buf, size_t len)
{
	ssize_t	 n;

	while (len > 0) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_set_err(c, "write", strerror(errno));
			return IO_ERR;
		}
		if (conn_wait(c, POLLOUT, "write") != IO_OK)
			return IO_ERR;
	}
	return IO_OK;
}

static int
conn_write_all(struct conn *c, const void *buf, size_t len)
{
	size_t	 done;
	int	 r, saved;

	if (c->ssl == NULL)
		return plain_write_all(c, buf, len);
	if (len == 0)
		return IO_OK;
	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_write_ex(c->ssl, buf, len, &done);
		saved = errno;
		if (r == 1)
			return IO_OK;
		r = ssl_retry(c, r, saved, "write");
		if (r == IO_EOF) {
			conn_set_err(c, "write", "peer already closed");
			return IO_ERR;
		}
		if (r != IO_OK)
			return r;
	}
}

static int
conn_handshake(struct conn *c)
{
	int	 r, saved;
	long	 vr;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_accept(c->ssl);
		saved = errno;
		if (r == 1)
			return IO_OK;
		r = ssl_retry(c, r, saved, "handshake failed");
		if (r == IO_EOF)
			conn_set_err(c, "handshake failed",
			    "peer sent close_notify");
		if (r != IO_OK)
			break;
	}
	vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK) {
		size_t	 len = strlen(c->err);

		snprintf(c->err + len, sizeof(c->err) - len,
		    " (client certificate: %s)",
		    X509_verify_cert_error_string(vr));
	}
	return IO_ERR;
}

static const char *
sigtype_name(int nid)
{
	const char	*sn;

	switch (nid) {
	case EVP_PKEY_RSA:
		return "RSA";
	case EVP_PKEY_RSA_PSS:
		return "RSA-PSS";
	case EVP_PKEY_EC:
		return "ECDSA";
	case EVP_PKEY_ED25519:
		return "Ed25519";
	case EVP_PKEY_ED448:
		return "Ed448";
	case EVP_PKEY_DSA:
		return "DSA";
	}
	sn = OBJ_nid2sn(nid);
	return sn != NULL ? sn : "-";
}

/* RFC 2253 subject of the client certificate, "-" if there is none. */
static void
peer_subject(SSL *ssl, char *buf, size_t size)
{
	X509	*cert;
	BIO	*bio;
	char	*data;
	long	 len;

	snprintf(buf, size, "-");
	if ((cert = SSL_get0_peer_certificate(ssl)) == NULL)
		return;
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return;
	if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
	    XN_FLAG_RFC2253) >= 0) {
		len = BIO_get_mem_data(bio, &data);
		if (len > 0)
			snprintf(buf, size, "%.*s", (int)len, data);
	}
	BIO_free(bio);
}

static int
send_info_line(struct conn *c, char *subject, size_t size)
{
	char	 line[INFO_MAX];
	int	 nid, len;

	peer_subject(c->ssl, subject, size);
	len = snprintf(line, sizeof(line), "subject=%s version=%s sigalg=%s\n",
	    subject, SSL_get_version(c->ssl),
	    SSL_get_peer_signature_type_nid(c->ssl, &nid) == 1 ?
	    sigtype_name(nid) : "-");
	if (len < 0 || (size_t)len >= sizeof(line)) {
		conn_set_err(c, "info line", "too long");
		return IO_ERR;
	}
	return conn_write_all(c, line, (size_t)len);
}

static int
echo_loop(struct conn *c)
{
	unsigned char	 buf[ECHO_BUF];
	size_t		 n;
	int		 r;

	for (;;) {
		if ((r = conn_read(c, buf, sizeof(buf), &n)) != IO_OK)
			return r;
		if (conn_write_all(c, buf, n) != IO_OK)
			return IO_ERR;
		c->echoed += n;
	}
}

/* After the peer's close_notify: send ours. */
static int
conn_shutdown(struct conn *c)
{
	int	 r, saved;

	if (c->ssl == NULL) {
		shutdown(c->fd, SHUT_WR);
		return IO_OK;
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_shutdown(c->ssl);
		saved = errno;
		if (r >= 0)
			return IO_OK;
		if ((r = ssl_retry(c, r, saved, "shutdown")) != IO_OK)
			return r == IO_EOF ? IO_OK : r;
	}
}

static int
serve_tls(struct conn *c)
{
	char	 subject[SUBJECT_MAX];

	if (conn_handshake(c) != IO_OK) {
		conn_log(c, "%s", c->err);
		return 1;
	}
	if (send_info_line(c, subject, sizeof(subject)) != IO_OK) {
		conn_log(c, "handshake ok, then %s", c->err);
		return 1;
	}
	conn_log(c, "handshake ok %s %s %s subject=%s",
	    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
	    SSL_session_reused(c->ssl) ? "resumed" : "full", subject);
	return 0;
}

/* --silent: accept, say nothing, wait for the client to give up. */
static int
serve_silent(struct conn *c)
{
	char	 buf[4096];
	ssize_t	 n;
	int	 fl;

	conn_log(c, "silent connection");
	if ((fl = fcntl(c->fd, F_GETFL)) != -1)
		fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
	while ((n = read(c->fd, buf, sizeof(buf))) > 0 ||
	    (n < 0 && errno == EINTR))
		;
	conn_log(c, "silent connection closed by the client");
	return 0;
}

/* --send N: the pattern, in chunks */
static int
send_pattern(struct conn *c)
{
	unsigned char		 buf[ECHO_BUF];
	unsigned long long	 k = 0;
	size_t			 i, n;

	while (k < c->send) {
		n = c->send - k < sizeof(buf) ? (size_t)(c->send - k) :
		    sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = PATTERN(k + i);
		if (conn_write_all(c, buf, n) != IO_OK)
			return IO_ERR;
		k += n;
	}
	return IO_OK;
}

/* Read until the peer has sent at least one byte. */
static int
wait_for_byte(struct conn *c)
{
	unsigned char	 buf[64];
	size_t		 n;
	int		 r;

	if ((r = conn_read(c, buf, sizeof(buf), &n)) == IO_EOF)
		conn_set_err(c, "waiting for a byte", "peer closed");
	return r;
}

/* --close notify: ours, then the peer's close_notify (data is skipped). */
static int
close_notify_both(struct conn *c)
{
	unsigned char	 buf[ECHO_BUF];
	size_t		 n;
	int		 r, saved;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_shutdown(c->ssl);
		saved = errno;
		if (r >= 0)
			break;
		if ((r = ssl_retry(c, r, saved, "shutdown")) != IO_OK)
			return r;
	}
	while ((r = conn_read(c, buf, sizeof(buf), &n)) == IO_OK)
		;
	return r == IO_EOF ? IO_OK : r;
}

/* --send N --close HOW: the server ends the connection. */
static int
serve_send_close(struct conn *c)
{
	struct linger	 lg = { 1, 0 };
	const char	*how = "";
	int		 r;

	if (send_pattern(c) != IO_OK) {
		conn_log(c, "sending %llu bytes: %s", c->send, c->err);
		return 1;
	}
	switch (c->close_how) {
	case CLOSE_NOTIFY:
		r = close_notify_both(c);
		how = "with close_notify both ways";
		break;
	case CLOSE_FIN:
		r = IO_OK;
		how = "without close_notify (TCP FIN)";
		break;
	default:
		/* the byte proves that the data arrived before the RST */
		r = wait_for_byte(c);
		how = "without close_notify (TCP RST)";
		if (r == IO_OK &&
		    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg,
		    sizeof(lg)) == -1) {
			conn_set_err(c, "SO_LINGER", strerror(errno));
			r = IO_ERR;
		}
		break;
	}
	if (r != IO_OK) {
		conn_log(c, "sent %llu bytes, then %s", c->send, c->err);
		return 1;
	}
	conn_log(c, "sent %llu bytes, closed first %s", c->send, how);
	return 0;
}

/* --old-hello: a ServerHello of that version to the first bytes (no
 * extensions, suite ECDHE-ECDSA-AES128-GCM-SHA256), then silence. */
static int
serve_old_hello(struct conn *c)
{
	unsigned char	 rec[5 + 4 + 38], buf[4096];
	size_t		 got;
	int		 r;

	memset(rec, 0, sizeof(rec));
	rec[0] = 22;				/* handshake */
	rec[1] = 3;
	rec[2] = (unsigned char)(c->old_hello & 0xff);
	rec[4] = 4 + 38;
	rec[5] = 2;				/* ServerHello */
	rec[8] = 38;
	rec[9] = 3;
	rec[10] = (unsigned char)(c->old_hello & 0xff);
	memset(rec + 11, 0x5a, 32);		/* random */
	rec[43] = 0;				/* no session id */
	rec[44] = 0xc0;
	rec[45] = 0x2b;
	rec[46] = 0;				/* no compression */
	if (plain_read(c, buf, sizeof(buf), &got) != IO_OK ||
	    got < 5 || buf[0] != 22) {
		conn_log(c, "old hello: no ClientHello");
		return 1;
	}
	if (plain_write_all(c, rec, sizeof(rec)) != IO_OK) {
		conn_log(c, "old hello: %s", c->err);
		return 1;
	}
	conn_log(c, "old hello: a ServerHello of version 0x%04x sent",
	    c->old_hello);
	while ((r = plain_read(c, buf, sizeof(buf), &got)) == IO_OK)
		;
	return r == IO_EOF ? 0 : 1;
}

static int
serve_conn(struct conn *c)
{
	int	 r;

	if (c->ssl != NULL) {
		if (serve_tls(c) != 0)
			return 1;
		if (c->close_how != CLOSE_NONE)
			return serve_send_close(c);
	} else if (c->silent) {
		return serve_silent(c);
	} else if (c->old_hello) {
		return serve_old_hello(c);
	} else {
		if (conn_write_all(c, PLAIN_GREETING,
		    sizeof(PLAIN_GREETING) - 1) != IO_OK) {
			conn_log(c, "plain: %s", c->err);
			return 1;
		}
		conn_log(c, "plain connection, greeting sent");
	}
	if ((r = echo_loop(c)) == IO_EOF)
		r = conn_shutdown(c);
	if (r != IO_OK) {
		conn_log(c, "closed after echoing %llu bytes: %s",
		    c->echoed, c->err);
		return 1;
	}
	conn_log(c, "closed cleanly after echoing %llu bytes%s", c->echoed,
	    c->ssl != NULL ? " (close_notify both ways)" : "");
	return 0;
}

static void
peer_name(int fd, char *buf, size_t size)
{
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);
	char			 ip[INET_ADDRSTRLEN];

	if (getpeername(fd, (struct sockaddr *)&sin, &len) == -1 ||
	    sin.sin_family != AF_INET ||
	    inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip)) == NULL) {
		snprintf(buf, size, "?");
		return;
	}
	snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(sin.sin_port));
}

static void
child_main(SSL_CTX *ctx, int fd, unsigned long id, const struct options *o)
{
	struct conn	 c;
	int		 status;

	memset(&c, 0, sizeof(c));
	c.fd = fd;
	c.id = id;
	c.timeout_ms = o->timeout_ms;
	c.silent = o->silent;
	c.old_hello = o->old_hello;
	c.send = o->send;
	c.close_how = o->close_how;
	peer_name(fd, c.peer, sizeof(c.peer));
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1)
		die("fcntl: %s", strerror(errno));
	if (ctx != NULL) {
		if ((c.ssl = SSL_new(ctx)) == NULL ||
		    SSL_set_fd(c.ssl, fd) != 1)
			die_ssl("SSL_new");
	}
	status = serve_conn(&c);
	SSL_free(c.ssl);
	SSL_CTX_free(ctx);
	close(fd);
	exit(status);
}

static pid_t
spawn_child(SSL_CTX *ctx, int lfd, int fd, unsigned long id,
    const struct options *o)
{
	pid_t	 parent = getpid(), pid;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(lfd);
		reset_signals_in_child(parent);
		child_main(ctx, fd, id, o);
	}
	close(fd);
	return pid;
}

static void
children_add(struct children *ch, pid_t pid)
{
	pid_t	*p;
	size_t	 cap;

	if (ch->n == ch->cap) {
		cap = ch->cap ? ch->cap * 2 : 16;
		if ((p = reallocarray(ch->pids, cap, sizeof(*p))) == NULL)
			die("out of memory");
		ch->pids = p;
		ch->cap = cap;
	}
	ch->pids[ch->n++] = pid;
}

static void
children_remove(struct children *ch, pid_t pid)
{
	size_t	 i;

	for (i = 0; i < ch->n; i++) {
		if (ch->pids[i] == pid) {
			ch->pids[i] = ch->pids[--ch->n];
			return;
		}
	}
}

static void
reap_children(struct children *ch)
{
	pid_t	 pid;
	int	 status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		children_remove(ch, pid);
}

/* On SIGTERM: end the connections still being served. */
static void
kill_children(struct children *ch)
{
	size_t	 i;

	for (i = 0; i < ch->n; i++)
		kill(ch->pids[i], SIGTERM);
	for (i = 0; i < ch->n; i++)
		while (waitpid(ch->pids[i], NULL, 0) == -1 && errno == EINTR)
			;
	ch->n = 0;
}

/* Returns the accepted socket, or -1 if there was nothing to accept. */
static int
accept_one(int lfd, const sigset_t *waitmask)
{
	struct pollfd	 pfd;
	int		 fd, one = 1;

	pfd.fd = lfd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (ppoll(&pfd, 1, NULL, waitmask) == -1) {
		if (errno == EINTR)
			return -1;
		die("poll: %s", strerror(errno));
	}
	if ((pfd.revents & POLLIN) == 0)
		return -1;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR && errno != ECONNABORTED)
		die("accept: %s", strerror(errno));
	/* like real servers: no Nagle delay on the line after the handshake */
	if (fd != -1)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void
serve(SSL_CTX *ctx, const struct options *o, int lfd,
    const sigset_t *waitmask)
{
	struct children	 ch = { NULL, 0, 0 };
	unsigned long	 accepted = 0;
	int		 fd;

	for (;;) {
		reap_children(&ch);
		if (got_term)
			break;
		if (o->max_conns > 0 &&
		    accepted >= (unsigned long)o->max_conns) {
			if (lfd != -1) {
				close(lfd);
				lfd = -1;
			}
			if (ch.n == 0)
				break;
			/* Children are bounded by their own timeouts. */
			ppoll(NULL, 0, NULL, waitmask);
			continue;
		}
		if ((fd = accept_one(lfd, waitmask)) == -1)
			continue;
		accepted++;
		children_add(&ch, spawn_child(ctx, lfd, fd, accepted, o));
	}
	kill_children(&ch);
	free(ch.pids);
	if (lfd != -1)
		close(lfd);
}

int
main(int argc, char *argv[])
{
	struct options	 o;
	SSL_CTX		*ctx = NULL;
	sigset_t	 waitmask;
	int		 lfd, port;

	parse_args(argc, argv, &o);
	if (!o.plain)
		ctx = make_ctx(&o);
	if (o.closed || o.full_backlog) {
		/* hold the port until killed: not listening (connections
		 * are refused), or never accepting (SYNs go unanswered) */
		lfd = listen_local(&port, o.closed ? -1 : 0);
		if (o.full_backlog)
			fill_backlog(port, o.timeout_ms);
		announce_port(&o, port);
		for (;;)
			pause();
	}
	setup_signals(&waitmask);
	lfd = want_v6 ? listen_local6(&port, 64) : listen_local(&port, 64);
	announce_port(&o, port);
	fprintf(stderr, PROG "[%ld]: listening on %s:%d (%s)\n",
	    (long)getpid(), want_v6 ? "[::1]" : "127.0.0.1", port,
	    o.plain ? "plain, no TLS" :
	    o.require_cert ? "TLS, client certificate required" : "TLS");
	serve(ctx, &o, lfd, &waitmask);
	SSL_CTX_free(ctx);
	return 0;
}
