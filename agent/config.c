/*
 * p11agent: configuration parsing (see config.h and p11agent.conf(5)).
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <ini.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/inifile.h"
#include "p11agent/log.h"
#include "p11agent/policy.h"
#include "p11agent/session.h"


enum keyword {
	K_KEY, K_CERT, K_PIN, K_MODULE, K_SIGN_TIMEOUT,
	K_PINENTRY_PROGRAM, K_PIN_CACHE, K_MAX_HANDSHAKES,
	K_PIN_SHA256,			/* SPKI pins of the upstream (tunnel) */
	K_LISTEN, K_CONNECT, K_IDENTITY, K_CA, K_SERVER_NAME, K_TLS_MIN,
	K_TLS_MAX, K_ALLOW_REMOTE, K_CONNECT_TIMEOUT, K_HANDSHAKE_TIMEOUT,
	K_IDLE_TIMEOUT, K_MAX_CONNECTIONS, K_MODULE_ALLOW, K_ALLOW_USERS,
	K_ALLOW_GROUPS,
	/* card removal (issue 6) */
	K_ON_REMOVAL, K_ON_REINSERT, K_TOKEN_POLL,
	K_PIN_PER_HANDSHAKE,		/* log out after each signature */
	K_CONTROL, K_LOCK_AFTER,	/* the control socket, lock (agent) */
	K_DRAIN_TIMEOUT,		/* SIGTERM: how long to drain */
	K_METRICS,			/* the metrics listener (agent) */
	/* TLS session resumption (tunnel) */
	K_SESSION_CACHE, K_SESSION_CACHE_SIZE, K_SESSION_LIFETIME,
	K_LOG, K_LOG_LEVEL,	/* logging (agent) */
	/* server trust (tunnel) */
	K_CA_DIR, K_CRL, K_OCSP, K_ALPN,
	K_COUNT
};

/* Keys whose value is a number: one per section (strings: set_str). */
static int
once_only(enum keyword kw)
{
	switch (kw) {
	case K_SIGN_TIMEOUT: case K_PIN_CACHE: case K_MAX_HANDSHAKES:
	case K_CONNECT_TIMEOUT:
	case K_HANDSHAKE_TIMEOUT: case K_IDLE_TIMEOUT: case K_MAX_CONNECTIONS:
	case K_TOKEN_POLL: case K_TLS_MIN: case K_TLS_MAX:
	case K_SESSION_CACHE_SIZE: case K_SESSION_LIFETIME:
	case K_ALLOW_REMOTE: case K_DRAIN_TIMEOUT: case K_LOG:
	case K_LOG_LEVEL: case K_OCSP: case K_PIN_PER_HANDSHAKE:
		return 1;
	default:
		return 0;
	}
}

enum section { S_NONE, S_IDENTITY, S_TUNNEL, S_AGENT };

static const struct {
	const char	*name;
	enum section	 section;
	enum keyword	 kw;
} keywords[] = {
	{ "key",		S_IDENTITY,	K_KEY },
	{ "cert",		S_IDENTITY,	K_CERT },
	{ "pin",		S_IDENTITY,	K_PIN },
	{ "module",		S_IDENTITY,	K_MODULE },
	{ "sign-timeout",	S_IDENTITY,	K_SIGN_TIMEOUT },
	{ "pinentry-program",	S_IDENTITY,	K_PINENTRY_PROGRAM },
	{ "pin-cache",		S_IDENTITY,	K_PIN_CACHE },
	{ "max-handshakes",	S_IDENTITY,	K_MAX_HANDSHAKES },
	{ "listen",		S_TUNNEL,	K_LISTEN },
	{ "connect",		S_TUNNEL,	K_CONNECT },
	{ "identity",		S_TUNNEL,	K_IDENTITY },
	{ "ca",			S_TUNNEL,	K_CA },
	{ "server-name",	S_TUNNEL,	K_SERVER_NAME },
	{ "pin-sha256",		S_TUNNEL,	K_PIN_SHA256 },
	{ "ca-dir",		S_TUNNEL,	K_CA_DIR },
	{ "crl",		S_TUNNEL,	K_CRL },
	{ "ocsp",		S_TUNNEL,	K_OCSP },
	{ "alpn",		S_TUNNEL,	K_ALPN },
	{ "tls-min",		S_TUNNEL,	K_TLS_MIN },
	{ "tls-max",		S_TUNNEL,	K_TLS_MAX },
	{ "allow-remote-listen", S_TUNNEL,	K_ALLOW_REMOTE },
	{ "allow-remote-listen", S_AGENT,	K_ALLOW_REMOTE },
	{ "connect-timeout",	S_TUNNEL,	K_CONNECT_TIMEOUT },
	{ "handshake-timeout",	S_TUNNEL,	K_HANDSHAKE_TIMEOUT },
	{ "idle-timeout",	S_TUNNEL,	K_IDLE_TIMEOUT },
	{ "allow-users",	S_TUNNEL,	K_ALLOW_USERS },
	{ "allow-groups",	S_TUNNEL,	K_ALLOW_GROUPS },
	{ "session-cache",	S_TUNNEL,	K_SESSION_CACHE },
	{ "session-cache-size",	S_TUNNEL,	K_SESSION_CACHE_SIZE },
	{ "session-lifetime",	S_TUNNEL,	K_SESSION_LIFETIME },
	/* a key in two sections: its entries next to each other */
	{ "max-connections",	S_TUNNEL,	K_MAX_CONNECTIONS },
	{ "max-connections",	S_AGENT,	K_MAX_CONNECTIONS },
	{ "module-allow",	S_AGENT,	K_MODULE_ALLOW },
	/* card removal */
	{ "on-removal",		S_IDENTITY,	K_ON_REMOVAL },
	{ "pin-per-handshake",	S_IDENTITY,	K_PIN_PER_HANDSHAKE },
	{ "on-reinsert",	S_IDENTITY,	K_ON_REINSERT },
	{ "token-poll",		S_AGENT,	K_TOKEN_POLL },
	{ "control",		S_AGENT,	K_CONTROL },
	{ "lock-after",		S_AGENT,	K_LOCK_AFTER },
	{ "drain-timeout",	S_AGENT,	K_DRAIN_TIMEOUT },
	{ "metrics",		S_AGENT,	K_METRICS },
	{ "log",		S_AGENT,	K_LOG },
	{ "log-level",		S_AGENT,	K_LOG_LEVEL },
};

struct parser {
	struct ini_in		 in;		/* file, line, first error */
	struct config		*cfg;
	int			 section_headers; /* headers at section start */
	enum section		 section;
	unsigned char		 seen[K_COUNT];	/* once_only keys */
	char			 secname[128];
	struct cfg_identity	*id;
	struct cfg_tunnel	*tun;
	struct cfg_identity	**id_tail;	/* keep the file's order */
	struct cfg_tunnel	**tun_tail;
};

#define perr(p, ...)	ini_err(&(p)->in, __VA_ARGS__)

/* inih reader that counts lines and refuses lines inih would cut. */

static int
parse_seconds(struct parser *p, const char *key, const char *v, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < 1 || n > 86400)
		return perr(p, p->in.line, "[%s] %s: '%s' is not a number of "
		    "seconds between 1 and 86400", p->secname, key, v);
	*out = (int)n;
	return 1;
}

static int
parse_range(struct parser *p, const char *key, const char *v, long lo,
    long hi, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < lo || n > hi)
		return perr(p, p->in.line, "[%s] %s: '%s' is not a number between "
		    "%ld and %ld", p->secname, key, v, lo, hi);
	*out = (int)n;
	return 1;
}

static int
parse_count(struct parser *p, const char *key, const char *v, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < 1 ||
	    n > CONFIG_MAX_CONNS)
		return perr(p, p->in.line, "[%s] %s: '%s' is not a number between "
		    "1 and %d", p->secname, key, v, CONFIG_MAX_CONNS);
	*out = (int)n;
	return 1;
}

static int
parse_bool(struct parser *p, const char *key, const char *v, int *out)
{
	if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0)
		*out = 1;
	else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0)
		*out = 0;
	else
		return perr(p, p->in.line, "[%s] %s: '%s' is not yes or no",
		    p->secname, key, v);
	return 1;
}

static int
parse_tls(struct parser *p, const char *key, const char *v, int *out)
{
	if (strcmp(v, "1.2") == 0)
		*out = TLS1_2_VERSION;
	else if (strcmp(v, "1.3") == 0)
		*out = TLS1_3_VERSION;
	else
		return perr(p, p->in.line, "[%s] %s: '%s' must be 1.2 or 1.3 "
		    "(older versions are not offered)", p->secname, key, v);
	return 1;
}

/* Splits "HOST:PORT" or "[V6]:PORT"; host and port are new strings. */
int
config_split_hostport(const char *s, char **host, char **port)
{
	const char	*colon, *h = s, *hend;

	if (*s == '[') {
		if ((hend = strchr(s, ']')) == NULL || hend[1] != ':')
			return -1;
		h = s + 1;
		colon = hend + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return -1;
		hend = colon;
	}
	if (hend == h || colon[1] == '\0' ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	    strtol(colon + 1, NULL, 10) > 65535)
		return -1;
	*host = strndup(h, (size_t)(hend - h));
	*port = strdup(colon + 1);
	return *host && *port ? 0 : -1;
}

/*
 * listen = systemd:NAME: NAME as FileDescriptorName= allows it (printable
 * ASCII but ':', at most 255), without blanks, and not the control
 * socket's.
 */
static int
fdname_ok(struct parser *p, const char *name)
{
	const char	*c;

#ifndef HAVE_LIBSYSTEMD
	return perr(p, p->in.line, "[%s] listen: systemd:%s: p11agent was built "
	    "without libsystemd, so it cannot take sockets from systemd; "
	    "use tcp: or unix:, or build it with libsystemd-dev installed",
	    p->secname, name);
#endif
	for (c = name; *c > ' ' && *c < 127 && *c != ':'; c++)
		;
	if (*name == '\0' || *c != '\0' || c - name > 255)
		return perr(p, p->in.line, "[%s] listen: 'systemd:%s': the name "
		    "must be a FileDescriptorName= of the .socket unit: 1 to "
		    "255 printable characters, no blank and no ':'",
		    p->secname, name);
	if (strcmp(name, "control") == 0)
		return perr(p, p->in.line, "[%s] listen: systemd:control is the "
		    "control socket's name; give the tunnel's socket another "
		    "FileDescriptorName=", p->secname);
	return 1;
}

/* tcp:ADDRESS:PORT, unix:/PATH or (listen only) systemd:NAME into l
 * (config_free frees what is set, also on error). */
static int
parse_addr(struct parser *p, const char *key, const char *v,
    struct cfg_listen *l)
{
	unsigned char		 addr[16];

	l->line = p->in.line;
	if (strncmp(v, "unix:", 5) == 0 && v[5] == '/') {
		l->kind = LISTEN_UNIX;
		if (strlen(v + 5) >= 108)
			return perr(p, p->in.line, "[%s] %s: the socket path "
			    "is longer than 107 bytes", p->secname, key);
		if ((l->path = strdup(v + 5)) == NULL)
			return perr(p, p->in.line, "out of memory");
	} else if (strncmp(v, "tcp:", 4) == 0) {
		l->kind = LISTEN_TCP;
		if (config_split_hostport(v + 4, &l->host, &l->port) != 0 ||
		    (inet_pton(AF_INET, l->host, addr) != 1 &&
		    inet_pton(AF_INET6, l->host, addr) != 1))
			return perr(p, p->in.line, "[%s] %s: '%s' is not "
			    "tcp:ADDRESS:PORT with an IP address such as "
			    "127.0.0.1 or [::1]", p->secname, key, v);
	} else if (strncmp(v, "systemd:", 8) == 0 &&
	    strcmp(key, "listen") == 0) {
		if (!fdname_ok(p, v + 8))
			return 0;
		l->kind = LISTEN_SYSTEMD;
		if ((l->fdname = strdup(v + 8)) == NULL)
			return perr(p, p->in.line, "out of memory");
	} else if (strcmp(key, "listen") == 0)
		return perr(p, p->in.line, "[%s] listen: '%s' is neither "
		    "tcp:ADDRESS:PORT, unix:/ABSOLUTE/PATH nor systemd:NAME",
		    p->secname, v);
	else
		return perr(p, p->in.line, "[%s] %s: '%s' is neither "
		    "tcp:ADDRESS:PORT nor unix:/ABSOLUTE/PATH", p->secname,
		    key, v);
	return 1;
}

static int
parse_listen(struct parser *p, const char *v)
{
	struct cfg_tunnel	*t = p->tun;

	if (t->nlisten == CONFIG_MAX_LISTEN)
		return perr(p, p->in.line, "[%s] listen: at most %d per tunnel",
		    p->secname, CONFIG_MAX_LISTEN);
	return parse_addr(p, "listen", v, &t->listen[t->nlisten++]);
}

/* [agent] metrics = tcp:ADDRESS:PORT | unix:/PATH (agent/metrics.c) */
static int
parse_metrics(struct parser *p, const char *v)
{
	struct cfg_agent	*a = &p->cfg->agent;

	if (a->metrics.kind != 0)
		return perr(p, p->in.line, "[agent] metrics: given twice (also "
		    "line %d)", a->metrics.line);
	return parse_addr(p, "metrics", v, &a->metrics);
}

static int
set_str(struct parser *p, const char *key, char **dst, const char *v)
{
	if (*dst != NULL)
		return perr(p, p->in.line, "[%s] %s: given twice", p->secname,
		    key);
	if (*v == '\0')
		return perr(p, p->in.line, "[%s] %s: empty value", p->secname,
		    key);
	if ((*dst = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	return 1;
}

/* "fd:N" with N a decimal descriptor number from 3 to 65535. */
static int
pin_fd_ok(const char *v)
{
	char	*end;
	long	 n;

	if (strncmp(v, "fd:", 3) != 0 || v[3] < '0' || v[3] > '9')
		return 0;
	errno = 0;
	n = strtol(v + 3, &end, 10);
	return errno == 0 && *end == '\0' && n >= 3 && n <= 65535;
}

/*
 * pin-sha256 = BASE64[, BASE64...]: SHA-256 hashes of the upstream's
 * SubjectPublicKeyInfo (DER), as HPKP and curl's --pinnedpubkey write
 * them (a "sha256//" in front is taken too); the line may be repeated.
 */
static int
parse_pins(struct parser *p, const char *key, const char *v)
{
	struct cfg_tunnel	*t = p->tun;
	unsigned char		 raw[64];
	char			 one[128];
	const char		*s = v, *e;
	size_t			 n;
	int			 len;

	while (*s != '\0') {
		s += strspn(s, " \t,");
		if (*s == '\0')
			break;
		n = strcspn(s, " \t,");
		e = s + n;
		if (n > 8 && strncmp(s, "sha256//", 8) == 0) {
			s += 8;
			n -= 8;
		}
		if (t->npins == CONFIG_MAX_PINS)
			return perr(p, p->in.line, "[%s] %s: at most %d pins",
			    p->secname, key, CONFIG_MAX_PINS);
		len = n == 44 ? EVP_DecodeBlock(raw, (const unsigned char *)s,
		    44) : -1;
		/* 32 bytes are 44 characters with one '=' of padding */
		if (len != 33 || s[43] != '=' || s[42] == '=') {
			snprintf(one, sizeof(one), "%.*s", (int)(n < 60 ? n : 60),
			    s);
			return perr(p, p->in.line, "[%s] %s: '%s' is not the "
			    "base64 of a SHA-256 (44 characters, as 'openssl "
			    "x509 -pubkey -noout -in CERT | openssl pkey -pubin "
			    "-outform DER | openssl dgst -sha256 -binary | "
			    "base64' prints)", p->secname, key, one);
		}
		memcpy(t->pins[t->npins++], raw, 32);
		s = e;
	}
	if (t->npins == 0)
		return perr(p, p->in.line, "[%s] %s: empty value", p->secname,
		    key);
	return 1;
}

/* crl = FILE: PEM CRLs (one file may hold several); the line may be
 * repeated.  Only the names are kept here; agent/tls.c loads them. */
static int
parse_crl(struct parser *p, const char *key, const char *v)
{
	struct cfg_tunnel	*t = p->tun;

	if (*v == '\0')
		return perr(p, p->in.line, "[%s] %s: empty value", p->secname,
		    key);
	if (t->ncrl == CONFIG_MAX_CRLS)
		return perr(p, p->in.line, "[%s] %s: at most %d files",
		    p->secname, key, CONFIG_MAX_CRLS);
	if ((t->crl[t->ncrl] = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	t->ncrl++;
	return 1;
}

/* ocsp = no | request | require */
static int
parse_ocsp(struct parser *p, const char *key, const char *v, int *out)
{
	if (strcmp(v, "no") == 0)
		*out = CFG_OCSP_NO;
	else if (strcmp(v, "request") == 0)
		*out = CFG_OCSP_REQUEST;
	else if (strcmp(v, "require") == 0)
		*out = CFG_OCSP_REQUIRE;
	else
		return perr(p, p->in.line, "[%s] %s: '%s' must be no, request or "
		    "require", p->secname, key, v);
	return 1;
}

/* alpn = PROTO[,PROTO...]: kept in the wire format (RFC 7301), each name
 * 1 to 255 printable bytes */
static int
parse_alpn(struct parser *p, const char *key, const char *v)
{
	struct cfg_tunnel	*t = p->tun;
	const char		*s = v;
	unsigned char		 w[CONFIG_MAX_ALPN];
	size_t			 n, i, len = 0;

	if (t->alpn_len != 0)
		return perr(p, p->in.line, "[%s] %s: given twice", p->secname,
		    key);
	while (*s != '\0') {
		s += strspn(s, " \t,");
		if (*s == '\0')
			break;
		n = strcspn(s, " \t,");
		for (i = 0; i < n; i++)
			if (s[i] <= ' ' || s[i] > '~')
				return perr(p, p->in.line, "[%s] %s: protocol "
				    "names are printable ASCII, as h2 or "
				    "http/1.1", p->secname, key);
		if (n > 255 || len + 1 + n > sizeof(w))
			return perr(p, p->in.line, "[%s] %s: the list is too "
			    "long (at most %zu bytes)", p->secname, key,
			    sizeof(w));
		w[len++] = (unsigned char)n;
		memcpy(w + len, s, n);
		len += n;
		s += n;
	}
	if (len == 0)
		return perr(p, p->in.line, "[%s] %s: empty value", p->secname,
		    key);
	if ((t->alpn = malloc(len)) == NULL)
		return perr(p, p->in.line, "out of memory");
	memcpy(t->alpn, w, len);
	t->alpn_len = (int)len;
	return 1;
}

/* ---- card removal: on-removal, on-reinsert, token-poll */

static int
parse_word(struct parser *p, const char *key, const char *v, int *out,
    const char *w1, int v1, const char *w2, int v2)
{
	if (*out != 0)
		return perr(p, p->in.line, "[%s] %s: given twice", p->secname,
		    key);
	if (strcmp(v, w1) == 0)
		*out = v1;
	else if (strcmp(v, w2) == 0)
		*out = v2;
	else
		return perr(p, p->in.line, "[%s] %s: '%s' must be %s or %s",
		    p->secname, key, v, w1, w2);
	return 1;
}

static int
parse_poll(struct parser *p, const char *key, const char *v, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v ||
	    n < CONFIG_MIN_TOKEN_POLL || n > CONFIG_MAX_TOKEN_POLL)
		return perr(p, p->in.line, "[%s] %s: '%s' is not a number of "
		    "milliseconds between %d and %d", p->secname, key, v,
		    CONFIG_MIN_TOKEN_POLL, CONFIG_MAX_TOKEN_POLL);
	*out = (int)n;
	return 1;
}

static int
removal_key(struct parser *p, enum keyword kw, const char *key,
    const char *v)
{
	switch (kw) {
	case K_ON_REMOVAL:
		return parse_word(p, key, v, &p->id->on_removal, "keep",
		    CFG_REMOVAL_KEEP, "close", CFG_REMOVAL_CLOSE);
	case K_ON_REINSERT:
		return parse_word(p, key, v, &p->id->on_reinsert, "same-card",
		    CFG_REINSERT_SAME, "any", CFG_REINSERT_ANY);
	case K_TOKEN_POLL:
		return parse_poll(p, key, v, &p->cfg->agent.token_poll_ms);
	default:
		return 0;
	}
}

static int
identity_key(struct parser *p, enum keyword kw, const char *key,
    const char *v)
{
	struct cfg_identity	*id = p->id;

	switch (kw) {
	case K_KEY:
		if (strncmp(v, "pkcs11:", 7) != 0)
			return perr(p, p->in.line, "[%s] key: '%s' is not a "
			    "pkcs11: URI (RFC 7512); 'p11agent tokens' lists "
			    "them", p->secname, v);
		id->key_line = p->in.line;
		return set_str(p, key, &id->key, v);
	case K_CERT:
		return set_str(p, key, &id->cert, v);
	case K_PIN:
		if (strncmp(v, "file:/", 6) != 0 && strncmp(v, "env:", 4) !=
		    0 && !pin_fd_ok(v) && strcmp(v, "systemd-ask-password") !=
		    0 && strcmp(v, "pinentry") != 0 && strcmp(v, "none") != 0)
			/* not echoed: it may be the PIN itself */
			return perr(p, p->in.line, "[%s] pin: not a PIN source "
			    "(the value is not shown: it may be the PIN); it "
			    "must be pinentry, file:/ABSOLUTE/PATH, env:NAME, "
			    "fd:N (N >= 3), systemd-ask-password or none",
			    p->secname);
		return set_str(p, key, &id->pin, v);
	case K_MODULE:
		if (v[0] != '/')
			return perr(p, p->in.line, "[%s] module: '%s' must be an "
			    "absolute path", p->secname, v);
		return set_str(p, key, &id->module, v);
	case K_SIGN_TIMEOUT:
		return parse_seconds(p, key, v, &id->sign_timeout);
	case K_PINENTRY_PROGRAM:
		if (v[0] != '/' && strchr(v, '/') != NULL)
			return perr(p, p->in.line, "[%s] pinentry-program: '%s' "
			    "must be an absolute path or a program name "
			    "looked up in PATH", p->secname, v);
		return set_str(p, key, &id->pinentry, v);
	case K_PIN_CACHE:
		if (strcmp(v, "0") == 0) {
			id->pin_cache = 0;
			return 1;
		}
		return parse_seconds(p, key, v, &id->pin_cache);
	case K_MAX_HANDSHAKES:
		return parse_range(p, key, v, 1, CFG_MAX_HANDSHAKES,
		    &id->max_handshakes);
	case K_PIN_PER_HANDSHAKE:
		return parse_bool(p, key, v, &id->pin_per_handshake);
	case K_ON_REMOVAL:
	case K_ON_REINSERT:
		return removal_key(p, kw, key, v);
	default:
		return 0;
	}
}

int
config_lookup_id(int group, const char *tok, long *out)
{
	struct passwd	 pw, *pres = NULL;
	struct group	 gr, *gres = NULL;
	char		 buf[16384], *end;
	unsigned long	 n;

	if (*tok != '\0' && strspn(tok, "0123456789") == strlen(tok)) {
		errno = 0;
		n = strtoul(tok, &end, 10);
		if (errno != 0 || n >= (unsigned long)UINT32_MAX)
			return -1;
		*out = (long)n;
		return 0;
	}
	if (group) {
		if (getgrnam_r(tok, &gr, buf, sizeof(buf), &gres) != 0 ||
		    gres == NULL)
			return -1;
		*out = (long)gr.gr_gid;
	} else {
		if (getpwnam_r(tok, &pw, buf, sizeof(buf), &pres) != 0 ||
		    pres == NULL)
			return -1;
		*out = (long)pw.pw_uid;
	}
	return 0;
}

/* allow-users / allow-groups = NAME|NUMBER[, ...]; repeated keys add. */
static int
allow_ids(struct parser *p, int group, const char *key, const char *v)
{
	struct cfg_tunnel	*t = p->tun;
	char			*copy, *tok, *save = NULL;
	int			*count = group ? &t->nallow_groups :
				    &t->nallow_users;
	long			 id;

	if ((copy = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	if (strspn(v, ", \t") == strlen(v))
		perr(p, p->in.line, "[%s] %s: empty value", p->secname, key);
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL && !p->in.failed;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (config_lookup_id(group, tok, &id) != 0) {
			perr(p, p->in.line, "[%s] %s: '%s' is not a %s known on "
			    "this system nor a number", p->secname, key, tok,
			    group ? "group" : "user");
			break;
		}
		if (*count == CONFIG_MAX_ALLOW) {
			perr(p, p->in.line, "[%s] %s: at most %d", p->secname,
			    key, CONFIG_MAX_ALLOW);
			break;
		}
		if (group)
			t->allow_groups[(*count)++] = (gid_t)id;
		else
			t->allow_users[(*count)++] = (uid_t)id;
	}
	free(copy);
	return !p->in.failed;
}

static int
tunnel_key(struct parser *p, enum keyword kw, const char *key, const char *v)
{
	struct cfg_tunnel	*t = p->tun;

	switch (kw) {
	case K_LISTEN:
		return parse_listen(p, v);
	case K_CONNECT:
		if (t->connect_host != NULL)
			return perr(p, p->in.line, "[%s] connect: given twice",
			    p->secname);
		if (config_split_hostport(v, &t->connect_host,
		    &t->connect_port) != 0)
			return perr(p, p->in.line, "[%s] connect: '%s' is not "
			    "HOST:PORT", p->secname, v);
		return 1;
	case K_IDENTITY:
		t->identity_line = p->in.line;
		return set_str(p, key, &t->identity_name, v);
	case K_CA:
		return set_str(p, key, &t->ca, v);
	case K_SERVER_NAME:
		return set_str(p, key, &t->server_name, v);
	case K_PIN_SHA256:
		return parse_pins(p, key, v);
	case K_CA_DIR:
		return set_str(p, key, &t->ca_dir, v);
	case K_CRL:
		return parse_crl(p, key, v);
	case K_OCSP:
		return parse_ocsp(p, key, v, &t->ocsp);
	case K_ALPN:
		return parse_alpn(p, key, v);
	case K_TLS_MIN:
		return parse_tls(p, key, v, &t->tls_min);
	case K_TLS_MAX:
		return parse_tls(p, key, v, &t->tls_max);
	case K_ALLOW_REMOTE:
		return parse_bool(p, key, v, &t->allow_remote);
	case K_SESSION_CACHE:
		return parse_word(p, key, v, &t->session_cache, "yes",
		    CFG_SESSION_YES, "no", CFG_SESSION_NO);
	case K_SESSION_CACHE_SIZE:
		return parse_range(p, key, v, 1, SESS_MAX_SIZE,
		    &t->session_cache_size);
	case K_SESSION_LIFETIME:
		return parse_seconds(p, key, v, &t->session_lifetime);
	case K_CONNECT_TIMEOUT:
		return parse_seconds(p, key, v, &t->connect_timeout);
	case K_HANDSHAKE_TIMEOUT:
		return parse_seconds(p, key, v, &t->handshake_timeout);
	case K_IDLE_TIMEOUT:
		return parse_seconds(p, key, v, &t->idle_timeout);
	case K_MAX_CONNECTIONS:
		return parse_count(p, key, v, &t->max_connections);
	case K_ALLOW_USERS:
		return allow_ids(p, 0, key, v);
	case K_ALLOW_GROUPS:
		return allow_ids(p, 1, key, v);
	default:
		return 0;
	}
}

static int
module_allow(struct parser *p, const char *v)
{
	struct cfg_agent	*a = &p->cfg->agent;
	char			*copy, *tok, *save = NULL;

	if ((copy = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (tok[0] != '/') {
			perr(p, p->in.line, "[agent] module-allow: '%s' must be "
			    "an absolute path pattern such as /opt/vendor/lib/"
			    "*.so", tok);
			break;
		}
		if (a->nmodule_allow == CONFIG_MAX_ALLOW) {
			perr(p, p->in.line, "[agent] module-allow: at most %d "
			    "patterns", CONFIG_MAX_ALLOW);
			break;
		}
		if ((a->module_allow[a->nmodule_allow] = strdup(tok)) ==
		    NULL) {
			perr(p, p->in.line, "out of memory");
			break;
		}
		a->nmodule_allow++;
	}
	free(copy);
	return !p->in.failed;
}

/* ---- [agent] control = PATH, lock-after = SECONDS (agent/control.c) */
static int
control_key(struct parser *p, enum keyword kw, const char *key,
    const char *v)
{
	struct cfg_agent	*a = &p->cfg->agent;
	char			*end;
	long			 n;

	if (kw == K_CONTROL) {
		if (v[0] != '/' || strlen(v) >= 108)
			return perr(p, p->in.line, "[agent] control: '%s' must be "
			    "an absolute path shorter than 108 bytes, such as "
			    "/run/user/UID/p11agent/control", v);
		return set_str(p, key, &a->control, v);
	}
	if (a->lock_after_line != 0)
		return perr(p, p->in.line, "[agent] lock-after: given twice (also "
		    "line %d)", a->lock_after_line);
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < 0 ||
	    n > CONFIG_MAX_LOCK_AFTER)
		return perr(p, p->in.line, "[agent] lock-after: '%s' is not a "
		    "number of seconds between 0 (off) and %d", v,
		    CONFIG_MAX_LOCK_AFTER);
	a->lock_after = (int)n;
	a->lock_after_line = p->in.line;
	return 1;
}

/* drain-timeout = SECONDS: 0 closes the connections at once */
static int
parse_drain(struct parser *p, const char *key, const char *v)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < 0 ||
	    n > CONFIG_MAX_DRAIN)
		return perr(p, p->in.line, "[agent] %s: '%s' is not a number of "
		    "seconds between 0 (close at once) and %d", key, v,
		    CONFIG_MAX_DRAIN);
	p->cfg->agent.drain_timeout = (int)n;
	p->cfg->agent.drain_set = 1;
	return 1;
}

/* ---- [agent] log = TARGET, log-level = LEVEL (agent/log.c) */
static int
log_key(struct parser *p, enum keyword kw, const char *key, const char *v)
{
	struct cfg_agent	*a = &p->cfg->agent;
	enum log_target		 t;
	enum log_level		 l;

	if (kw == K_LOG) {
		if (log_target_parse(v, &t) != 0)
			return perr(p, p->in.line, "[agent] %s: '%s' is not one of "
			    "auto, stderr, journal, syslog", key, v);
		a->log_target = t;
		return 1;
	}
	if (log_level_parse(v, &l) != 0)
		return perr(p, p->in.line, "[agent] %s: '%s' is not one of error, "
		    "warning, info, debug", key, v);
	a->log_level = (int)l + 1;
	return 1;
}

static int
agent_key(struct parser *p, enum keyword kw, const char *key, const char *v)
{
	switch (kw) {
	case K_LOG:
	case K_LOG_LEVEL:
		return log_key(p, kw, key, v);
	case K_MAX_CONNECTIONS:
		return parse_count(p, key, v, &p->cfg->agent.max_connections);
	case K_MODULE_ALLOW:
		return module_allow(p, v);
	case K_TOKEN_POLL:
		return removal_key(p, kw, key, v);
	case K_CONTROL:
	case K_LOCK_AFTER:
		return control_key(p, kw, key, v);
	case K_DRAIN_TIMEOUT:
		return parse_drain(p, key, v);
	case K_METRICS:
		return parse_metrics(p, v);
	case K_ALLOW_REMOTE:
		return parse_bool(p, key, v, &p->cfg->agent.allow_remote);
	default:
		return 0;
	}
}


/* Starts a new section when the name changes; "identity X"/"tunnel X". */
static int
new_section(struct parser *p, const char *section)
{
	const char	*name;

	snprintf(p->secname, sizeof(p->secname), "%s", section);
	p->section_headers = p->in.headers;
	p->id = NULL;
	p->tun = NULL;
	p->section = S_NONE;
	memset(p->seen, 0, sizeof(p->seen));
	if (strcmp(section, "agent") == 0) {
		if (p->cfg->agent.line != 0)
			return perr(p, p->in.section_line, "[agent]: defined "
			    "twice (also line %d)", p->cfg->agent.line);
		p->section = S_AGENT;
		p->cfg->agent.line = p->in.section_line;
		return 1;
	}
	if (strncmp(section, "identity ", 9) == 0) {
		name = section + 9;
		p->section = S_IDENTITY;
	} else if (strncmp(section, "tunnel ", 7) == 0) {
		name = section + 7;
		p->section = S_TUNNEL;
	} else
		return perr(p, p->in.section_line, "[%s]: unknown section; "
		    "sections are [agent], [identity NAME] and [tunnel NAME]",
		    section);
	if (!ini_name_ok(name))
		return perr(p, p->in.section_line, "[%s]: the name must be 1-40 "
		    "letters, digits, '-', '_' or '.'", section);
	if (p->section == S_IDENTITY) {
		if ((p->id = calloc(1, sizeof(*p->id))) == NULL)
			return perr(p, p->in.line, "out of memory");
		*p->id_tail = p->id;	/* config_free() frees it from here */
		p->id_tail = &p->id->next;
		p->id->line = p->in.section_line;
		if ((p->id->name = strdup(name)) == NULL)
			return perr(p, p->in.line, "out of memory");
	} else {
		if ((p->tun = calloc(1, sizeof(*p->tun))) == NULL)
			return perr(p, p->in.line, "out of memory");
		*p->tun_tail = p->tun;
		p->tun_tail = &p->tun->next;
		p->tun->line = p->in.section_line;
		if ((p->tun->name = strdup(name)) == NULL)
			return perr(p, p->in.line, "out of memory");
	}
	return 1;
}

/*
 * A section's settings as read, "key=value" lines in file order: a
 * reload keeps what an unchanged section runs (agent/reload.c).
 */
static int
text_add(struct parser *p, char **text, const char *key, const char *value)
{
	size_t	 had = *text != NULL ? strlen(*text) : 0;
	size_t	 add = strlen(key) + strlen(value) + 2;
	char	*t;

	if ((t = realloc(*text, had + add + 1)) == NULL)
		return perr(p, p->in.line, "out of memory");
	snprintf(t + had, add + 1, "%s=%s\n", key, value);
	*text = t;
	return 1;
}

/* The line of a key that a policy checks (agent/policy.c): the first. */
static void
note_line(struct parser *p, enum keyword kw)
{
	int	*l = NULL;

	if (p->section == S_IDENTITY)
		l = kw == K_PIN ? &p->id->pin_line : kw == K_PIN_CACHE ?
		    &p->id->pin_cache_line : kw == K_ON_REMOVAL ?
		    &p->id->on_removal_line : kw == K_PIN_PER_HANDSHAKE ?
		    &p->id->pin_per_handshake_line : NULL;
	else if (p->section == S_TUNNEL)
		l = kw == K_CONNECT ? &p->tun->connect_line :
		    kw == K_SERVER_NAME ? &p->tun->server_name_line :
		    kw == K_CA ? &p->tun->ca_line :
		    kw == K_CA_DIR ? &p->tun->ca_dir_line :
		    kw == K_PIN_SHA256 ? &p->tun->pins_line :
		    kw == K_OCSP ? &p->tun->ocsp_line :
		    kw == K_TLS_MIN ? &p->tun->tls_min_line :
		    kw == K_TLS_MAX ? &p->tun->tls_max_line :
		    kw == K_ALLOW_USERS ? &p->tun->allow_users_line :
		    kw == K_ALLOW_GROUPS ? &p->tun->allow_groups_line : NULL;
	if (l != NULL && *l == 0)
		*l = p->in.line;
}

static int
handler(void *arg, const char *section, const char *key, const char *value)
{
	struct parser	*p = arg;
	size_t		 i;

	if (p->in.failed)
		return 1;
	if (*section == '\0')
		return perr(p, p->in.line, "%s: outside of any section; put it "
		    "under [identity NAME] or [tunnel NAME]", key);
	if (strcmp(section, p->secname) == 0 &&
	    p->in.headers != p->section_headers)
		/* inih reports [x] ... [x] in a row as one section */
		return perr(p, p->in.section_line, "[%s]: defined twice (also "
		    "line %d)", section, p->section == S_IDENTITY ?
		    p->id->line : p->section == S_TUNNEL ? p->tun->line :
		    p->cfg->agent.line);
	if (strcmp(section, p->secname) != 0 && !new_section(p, section))
		return 0;
	for (i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
		if (strcmp(keywords[i].name, key) != 0)
			continue;
		if (keywords[i].section != p->section) {
			if (i + 1 < sizeof(keywords) / sizeof(keywords[0]) &&
			    strcmp(keywords[i + 1].name, key) == 0)
				continue;	/* also in another section */
			return perr(p, p->in.line, "[%s] %s: this key belongs in "
			    "a %s section", p->secname, key,
			    keywords[i].section == S_TUNNEL ? "[tunnel NAME]" :
			    keywords[i].section == S_AGENT ? "[agent]" :
			    "[identity NAME]");
		}
		/* a number or word given twice: the second would win */
		if (once_only(keywords[i].kw) && p->seen[keywords[i].kw]++)
			return perr(p, p->in.line, "[%s] %s: given twice",
			    p->secname, key);
		note_line(p, keywords[i].kw);
		switch (p->section) {
		case S_IDENTITY:
			return identity_key(p, keywords[i].kw, key, value);
		case S_TUNNEL:
			return tunnel_key(p, keywords[i].kw, key, value) &&
			    text_add(p, &p->tun->text, key, value);
		default:
			return agent_key(p, keywords[i].kw, key, value);
		}
	}
	return perr(p, p->in.line, "[%s] %s: unknown key", p->secname, key);
}

static struct cfg_identity *
find_identity(struct config *cfg, const char *name)
{
	struct cfg_identity	*id;

	for (id = cfg->identities; id != NULL; id = id->next)
		if (strcmp(id->name, name) == 0)
			return id;
	return NULL;
}

int
config_str_same(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
config_listen_same(const struct cfg_listen *a, const struct cfg_listen *b)
{
	return a->kind == b->kind && config_str_same(a->host, b->host) &&
	    config_str_same(a->port, b->port) &&
	    config_str_same(a->path, b->path) &&
	    config_str_same(a->fdname, b->fdname);
}

/* One address: tcp:HOST:0 is a port of its own each time, and systemd
 * names are checked where they are parsed. */
static int
listen_same(const struct cfg_listen *a, const struct cfg_listen *b)
{
	return (a->kind == LISTEN_UNIX || (a->kind == LISTEN_TCP &&
	    strcmp(a->port, "0") != 0)) && config_listen_same(a, b);
}

/* One address, one listen line: the second could never be opened (and a
 * reload would hand the first one's socket to either). */
static int
check_listen_twice(struct parser *p)
{
	struct cfg_tunnel	*s, *t;
	int			 i, j;

	for (s = p->cfg->tunnels; s != NULL; s = s->next)
		for (i = 0; i < s->nlisten; i++)
			for (t = s; t != NULL; t = t->next)
				for (j = t == s ? i + 1 : 0; j < t->nlisten;
				    j++)
					if (listen_same(&s->listen[i],
					    &t->listen[j]))
						return perr(p,
						    t->listen[j].line, "[tunnel "
						    "%s] listen: the same address "
						    "as [tunnel %s] on line %d",
						    t->name, s->name,
						    s->listen[i].line);
	return 1;
}

static int
check_duplicates(struct parser *p)
{
	struct cfg_identity	*a, *b;
	struct cfg_tunnel	*s, *t;

	for (a = p->cfg->identities; a != NULL; a = a->next)
		for (b = a->next; b != NULL; b = b->next)
			if (strcmp(a->name, b->name) == 0)
				return perr(p, a->line, "[identity %s]: "
				    "defined twice (also line %d)", a->name,
				    b->line);
	for (s = p->cfg->tunnels; s != NULL; s = s->next)
		for (t = s->next; t != NULL; t = t->next)
			if (strcmp(s->name, t->name) == 0)
				return perr(p, s->line, "[tunnel %s]: "
				    "defined twice (also line %d)", s->name,
				    t->line);
	return check_listen_twice(p);
}

/* One inherited socket serves one listen line: NAME is not used twice. */
static int
fdname_once(struct parser *p, const struct cfg_tunnel *t, int i)
{
	const struct cfg_tunnel	*o;
	const char		*name = t->listen[i].fdname;
	int			 j;

	for (o = p->cfg->tunnels; o != NULL; o = o->next)
		for (j = 0; j < o->nlisten; j++) {
			if (o == t && j == i)
				return 1;	/* only those before it */
			if (o->listen[j].kind == LISTEN_SYSTEMD &&
			    strcmp(o->listen[j].fdname, name) == 0)
				return perr(p, t->listen[i].line, "[tunnel %s] "
				    "listen: systemd:%s is taken already by "
				    "[tunnel %s] (line %d); one socket serves "
				    "one listen line", t->name, name, o->name,
				    o->listen[j].line);
		}
	return 1;
}

/* Checks what each section must have and fills in defaults. */
static int
finish(struct parser *p)
{
	struct cfg_identity	*id;
	struct cfg_tunnel	*t;
	int			 i;

	if (p->cfg->tunnels == NULL)
		return perr(p, p->in.line, "no [tunnel NAME] section: there is "
		    "nothing to do");
	for (id = p->cfg->identities; id != NULL; id = id->next) {
		if (id->key == NULL)
			return perr(p, id->line, "[identity %s]: missing key "
			    "(key = pkcs11:...)", id->name);
		if (id->sign_timeout == 0)
			id->sign_timeout = 30;
		if (id->max_handshakes == 0)
			id->max_handshakes = CFG_DEFAULT_HANDSHAKES;
		if (id->on_removal == 0)
			id->on_removal = CFG_REMOVAL_KEEP;
		if (id->on_reinsert == 0)
			id->on_reinsert = CFG_REINSERT_SAME;
		if (id->pin_per_handshake && id->pin_cache > 0)
			return perr(p, id->pin_per_handshake_line, "[identity "
			    "%s] pin-per-handshake = yes keeps no PIN: leave "
			    "pin-cache out (or 0)", id->name);
	}
	for (t = p->cfg->tunnels; t != NULL; t = t->next) {
		if (t->nlisten == 0)
			return perr(p, t->line, "[tunnel %s]: missing listen "
			    "(tcp:127.0.0.1:PORT or unix:/PATH)", t->name);
		for (i = 0; i < t->nlisten; i++)
			if (t->listen[i].kind == LISTEN_SYSTEMD &&
			    !fdname_once(p, t, i))
				return 0;
		if (t->connect_host == NULL)
			return perr(p, t->line, "[tunnel %s]: missing connect "
			    "(HOST:PORT)", t->name);
		if (t->identity_name == NULL)
			return perr(p, t->line, "[tunnel %s]: missing identity",
			    t->name);
		if ((t->identity = find_identity(p->cfg, t->identity_name)) ==
		    NULL)
			return perr(p, t->identity_line, "[tunnel %s] identity:"
			    " no [identity %s] section", t->name,
			    t->identity_name);
		if (t->tls_min == 0)
			t->tls_min = TLS1_2_VERSION;
		if (t->tls_max == 0)
			t->tls_max = TLS1_3_VERSION;
		if (t->tls_max < t->tls_min)
			return perr(p, t->line, "[tunnel %s]: tls-max is below "
			    "tls-min", t->name);
		if (t->connect_timeout == 0)
			t->connect_timeout = 10;
		if (t->handshake_timeout == 0)
			t->handshake_timeout = 60;
		if (t->idle_timeout == 0)
			t->idle_timeout = 600;
		if (t->max_connections == 0)
			t->max_connections = CONFIG_DEFAULT_CONNS;
		if (t->ocsp == 0)
			t->ocsp = CFG_OCSP_REQUEST;
		/* a PIN for every handshake: no session is resumed */
		if (t->identity->pin_per_handshake &&
		    t->session_cache == CFG_SESSION_YES)
			return perr(p, t->line, "[tunnel %s]: session-cache = "
			    "yes, but identity %s has pin-per-handshake = yes: "
			    "a resumed session needs no PIN; leave "
			    "session-cache out", t->name, t->identity->name);
		if (t->identity->pin_per_handshake)
			t->session_cache = CFG_SESSION_NO;
	}
	if (p->cfg->agent.max_connections == 0)
		p->cfg->agent.max_connections = CONFIG_DEFAULT_CONNS;
	if (p->cfg->agent.token_poll_ms == 0)
		p->cfg->agent.token_poll_ms = CONFIG_DEFAULT_TOKEN_POLL;
	if (!p->cfg->agent.drain_set)
		p->cfg->agent.drain_timeout = CONFIG_DEFAULT_DRAIN;
	return 1;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct parser	 p;
	int		 r;

	memset(&p, 0, sizeof(p));
	p.in.err = err;
	p.in.errlen = errlen;
	p.in.section_max = 1;
	if ((p.cfg = calloc(1, sizeof(*p.cfg))) == NULL ||
	    (p.in.path = p.cfg->path = strdup(path)) == NULL) {
		free(p.cfg);
		snprintf(err, errlen, "out of memory");
		return P11A_ERR_NOMEM;
	}
	if ((p.in.fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		config_free(p.cfg);
		return P11A_ERR_CONFIG;
	}
	p.id_tail = &p.cfg->identities;
	p.tun_tail = &p.cfg->tunnels;
	r = ini_parse_stream(ini_read_line, &p.in, handler, &p);
	fclose(p.in.fp);
	if (r > 0 && !p.in.failed)
		perr(&p, r, "syntax error: expected [section], key = value "
		    "or a # comment");
	if (!p.in.failed)
		check_duplicates(&p);
	if (!p.in.failed)
		finish(&p);
	if (p.in.failed) {
		config_free(p.cfg);
		return P11A_ERR_CONFIG;
	}
	*out = p.cfg;
	return 0;
}

void
config_free(struct config *cfg)
{
	struct cfg_identity	*id;
	struct cfg_tunnel	*t;
	int			 i;

	if (cfg == NULL)
		return;
	while ((id = cfg->identities) != NULL) {
		cfg->identities = id->next;
		free(id->name);
		free(id->key);
		free(id->cert);
		free(id->pin);
		free(id->pin_src);
		free(id->pinentry);
		free(id->module);
		free(id);
	}
	while ((t = cfg->tunnels) != NULL) {
		cfg->tunnels = t->next;
		for (i = 0; i < t->nlisten; i++) {
			free(t->listen[i].host);
			free(t->listen[i].port);
			free(t->listen[i].path);
			free(t->listen[i].fdname);
		}
		free(t->name);
		free(t->connect_host);
		free(t->connect_port);
		free(t->identity_name);
		free(t->ca);
		free(t->ca_dir);
		free(t->alpn);
		for (i = 0; i < t->ncrl; i++)
			free(t->crl[i]);
		free(t->server_name);
		free(t->text);
		free(t);
	}
	for (i = 0; i < cfg->agent.nmodule_allow; i++)
		free(cfg->agent.module_allow[i]);
	free(cfg->agent.control);
	free(cfg->agent.metrics.host);
	free(cfg->agent.metrics.port);
	free(cfg->agent.metrics.path);
	policy_set_free(cfg->policies);
	free(cfg->path);
	free(cfg);
}
