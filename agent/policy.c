/*
 * p11agent: administrator policies (policy.h, p11agent.policy(5)).
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <ini.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "p11agent/agent.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/inifile.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/peer.h"
#include "p11agent/policy.h"
#include "policy_int.h"

#ifndef P11AGENT_POLICY_DIR
#define P11AGENT_POLICY_DIR	"/etc/p11agent/policies.d"
#endif
#define TEXT_MAX	65536	/* a policy's settings, as read */

const char *const pkey_names[P_COUNT] = {
	"key", "token-label", "token-serial", "cert-sha256", "cert-issuer",
	"cert-subject", "connect", "allow-users", "allow-groups",
	"allow-programs", "tls-min", "ca", "pin-sha256", "ocsp",
	"pin-cache-max", "on-removal", "pin-sources", "pin-per-handshake",
};

/* keys that take a list and may be repeated (each line adds) */
static int
list_key(enum pkey k)
{
	return k == P_CONNECT || k == P_ALLOW_USERS || k == P_ALLOW_GROUPS ||
	    k == P_ALLOW_PROGRAMS || k == P_PIN_SHA256 || k == P_PIN_SOURCES;
}

/* pin-sources: the kinds of pin = */
static const struct {
	const char	*name;
	unsigned	 bit;
} src_kinds[] = {
	{ "pinentry", SRC_PINENTRY }, { "file", SRC_FILE }, { "env", SRC_ENV },
	{ "fd", SRC_FD }, { "systemd-ask-password", SRC_ASK },
	{ "none", SRC_NONE },
};

const char *
policy_src_name(unsigned bit)
{
	size_t	 i;

	for (i = 0; i < sizeof(src_kinds) / sizeof(src_kinds[0]); i++)
		if (src_kinds[i].bit == bit)
			return src_kinds[i].name;
	return "?";
}

static char	*policy_dir;	/* --policies DIR, or NULL */

const char *
policy_default_dir(void)
{
	return P11AGENT_POLICY_DIR;
}

void
policy_dir_set(const char *dir)
{
	free(policy_dir);
	policy_dir = dir != NULL ? strdup(dir) : NULL;
}

/* ---- the matchers */

void
policy_host_clear(struct policy_host *h)
{
	free(h->name);
	h->name = NULL;
}

static int
parse_ports(const char *s, struct policy_host *h)
{
	char	*end;
	long	 lo, hi;

	if (strcmp(s, "*") == 0) {
		h->port_lo = 1;
		h->port_hi = 65535;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	lo = strtol(s, &end, 10);
	hi = lo;
	if (errno == 0 && *end == '-' && end[1] >= '0' && end[1] <= '9')
		hi = strtol(end + 1, &end, 10);
	if (errno != 0 || *end != '\0' || lo < 1 || hi > 65535 || lo > hi)
		return -1;
	h->port_lo = (int)lo;
	h->port_hi = (int)hi;
	return 0;
}

/* ADDRESS/BITS or ADDRESS into h; the bits past the prefix must be 0. */
static int
parse_range(const char *s, int family, struct policy_host *h, char *err,
    size_t errlen)
{
	char		 a[64], *slash, *end;
	int		 max = family == AF_INET ? 32 : 128, i;
	long		 bits = max;

	if (strlen(s) >= sizeof(a))
		goto bad;
	snprintf(a, sizeof(a), "%s", s);
	if ((slash = strchr(a, '/')) != NULL) {
		*slash = '\0';
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (errno != 0 || *end != '\0' || end == slash + 1 ||
		    bits < 0 || bits > max) {
			snprintf(err, errlen, "'%s': the prefix length must be "
			    "0 to %d", s, max);
			return -1;
		}
	}
	if (inet_pton(family, a, h->addr) != 1)
		goto bad;
	for (i = (int)bits; i < max; i++)
		if (h->addr[i / 8] & (0x80 >> (i % 8))) {
			snprintf(err, errlen, "'%s': bits are set past the "
			    "/%ld prefix (the network is written with them "
			    "0, as 10.1.0.0/16)", s, bits);
			return -1;
		}
	h->family = family;
	h->prefix = (int)bits;
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not an %s address or range", s,
	    family == AF_INET ? "IPv4" : "IPv6");
	return -1;
}

int
policy_host_parse(const char *v, struct policy_host *h, char *err,
    size_t errlen)
{
	char		 host[300];
	const char	*colon, *hs = v, *he;
	size_t		 i, n;

	memset(h, 0, sizeof(*h));
	if (*v == '[') {
		if ((he = strchr(v, ']')) == NULL || he[1] != ':')
			goto form;
		hs = v + 1;
		colon = he + 1;
	} else {
		if ((colon = strrchr(v, ':')) == NULL)
			goto form;
		he = colon;
	}
	n = (size_t)(he - hs);
	if (n == 0 || n >= sizeof(host))
		goto form;
	memcpy(host, hs, n);
	host[n] = '\0';
	if (parse_ports(colon + 1, h) != 0) {
		snprintf(err, errlen, "'%s': the port must be a number, a "
		    "range LOW-HIGH (1 to 65535) or *", v);
		return -1;
	}
	if (*v == '[')
		return parse_range(host, AF_INET6, h, err, errlen);
	if (strchr(host, ':') != NULL) {
		snprintf(err, errlen, "'%s': an IPv6 address or range is "
		    "written in brackets, as [2001:db8::/32]:443", v);
		return -1;
	}
	if (strchr(host, '/') != NULL || strspn(host, "0123456789.") == n)
		return parse_range(host, AF_INET, h, err, errlen);
	/* 10.* would match the name 10.evil.example, never an address */
	if (strspn(host, "0123456789.*?") == n &&
	    strpbrk(host, "0123456789") != NULL) {
		snprintf(err, errlen, "'%s': an address pattern matches names "
		    "only (10.* matches 10.evil.example): write a range, as "
		    "10.0.0.0/8", v);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strchr("abcdefghijklmnopqrstuvwxyz0123456789-.*?_",
		    host[i] = (char)tolower((unsigned char)host[i])) == NULL) {
			snprintf(err, errlen, "'%s': a host pattern has "
			    "letters, digits, '-', '.', '_' and the wildcards "
			    "* and ?", v);
			return -1;
		}
	}
	if ((h->name = strdup(host)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
form:
	snprintf(err, errlen, "'%s' is not HOST:PORTS (a name pattern such as "
	    "*.bank.example, an IPv4 address or range, or one in brackets "
	    "for IPv6; ports: N, LOW-HIGH or *)", v);
	return -1;
}

static int
in_range(const struct policy_host *h, const unsigned char *a)
{
	int	 i;

	for (i = 0; i < h->prefix; i++)
		if ((a[i / 8] ^ h->addr[i / 8]) & (0x80 >> (i % 8)))
			return 0;
	return 1;
}

int
policy_host_match(const struct policy_host *h, const char *host, int port)
{
	unsigned char	 a[16];
	char		 name[300];
	size_t		 i, n = strlen(host);

	if (port < h->port_lo || port > h->port_hi || n >= sizeof(name))
		return 0;
	if (inet_pton(AF_INET, host, a) == 1)
		return h->name == NULL && h->family == AF_INET &&
		    in_range(h, a);
	if (inet_pton(AF_INET6, host, a) == 1)
		return h->name == NULL && h->family == AF_INET6 &&
		    in_range(h, a);
	if (h->name == NULL)
		return 0;	/* a name is not resolved to match a range */
	for (i = 0; i < n; i++)
		name[i] = (char)tolower((unsigned char)host[i]);
	if (n > 0 && name[n - 1] == '.')
		n--;
	name[n] = '\0';
	return fnmatch(h->name, name, 0) == 0;
}

/* ---- parsing */

struct parser {
	struct ini_in		 in;		/* file, line, first error */
	struct policy_set	*set;
	int			 section_headers;
	char			 secname[128];
	struct policy		*pol;
};

#define perr(p, ...)	ini_err(&(p)->in, __VA_ARGS__)


static void
policy_free(struct policy *pol)
{
	int	 i;

	if (pol == NULL)
		return;
	free(pol->name);
	free(pol->file);
	free(pol->text);
	for (i = 0; i < P_COUNT; i++)
		free(pol->vals[i]);
	free(pol->key);
	free(pol->label);
	free(pol->serial);
	free(pol->issuer);
	free(pol->subject);
	for (i = 0; i < pol->nhosts; i++)
		policy_host_clear(&pol->hosts[i]);
	for (i = 0; i < pol->nprograms; i++)
		free(pol->programs[i]);
	free(pol->ca);
	free(pol);
}

static struct policy *
find_policy(const struct policy_set *set, const char *name)
{
	struct policy	*pol;

	for (pol = set->first; pol != NULL; pol = pol->next)
		if (strcmp(pol->name, name) == 0)
			return pol;
	return NULL;
}


static int
new_section(struct parser *p, const char *section)
{
	struct policy	*pol, *was;
	const char	*name = section + 7;

	snprintf(p->secname, sizeof(p->secname), "%s", section);
	p->section_headers = p->in.headers;
	p->pol = NULL;
	if (strncmp(section, "policy ", 7) != 0)
		return perr(p, p->in.section_line, "[%s]: unknown section; a "
		    "policy file has [policy NAME] sections", section);
	if (!ini_name_ok(name))
		return perr(p, p->in.section_line, "[%s]: the name must be 1-40 "
		    "letters, digits, '-', '_' or '.'", section);
	if ((was = find_policy(p->set, name)) != NULL)
		return perr(p, p->in.section_line, "[%s]: defined twice (also "
		    "%s:%d)", section, was->file, was->line);
	if ((pol = calloc(1, sizeof(*pol))) == NULL)
		return perr(p, p->in.line, "out of memory");
	pol->pin_cache_max = -1;
	*p->set->tail = pol;
	p->set->tail = &pol->next;
	p->set->n++;
	p->pol = pol;
	pol->line = p->in.section_line;
	if ((pol->name = strdup(name)) == NULL ||
	    (pol->file = strdup(p->in.path)) == NULL)
		return perr(p, p->in.line, "out of memory");
	return 1;
}


static int
parse_pin(struct parser *p, const char *key, const char *s, size_t n)
{
	struct policy	*pol = p->pol;
	unsigned char	 raw[64];
	int		 len;

	if (n > 8 && strncmp(s, "sha256//", 8) == 0) {
		s += 8;
		n -= 8;
	}
	if (pol->npins == CONFIG_MAX_PINS)
		return perr(p, p->in.line, "[%s] %s: at most %d pins", p->secname,
		    key, CONFIG_MAX_PINS);
	len = n == 44 ? EVP_DecodeBlock(raw, (const unsigned char *)s, 44) :
	    -1;
	if (len != 33 || s[43] != '=' || s[42] == '=')
		return perr(p, p->in.line, "[%s] %s: '%.*s' is not the base64 of "
		    "a SHA-256 (44 characters)", p->secname, key,
		    (int)(n < 60 ? n : 60), s);
	memcpy(pol->pins[pol->npins++], raw, 32);
	return 1;
}

static int
parse_source(struct parser *p, const char *key, const char *tok)
{
	size_t	 i;

	for (i = 0; i < sizeof(src_kinds) / sizeof(src_kinds[0]); i++)
		if (strcmp(tok, src_kinds[i].name) == 0) {
			p->pol->sources |= src_kinds[i].bit;
			return 1;
		}
	return perr(p, p->in.line, "[%s] %s: '%s' is not one of pinentry, file, "
	    "env, fd, systemd-ask-password, none", p->secname, key, tok);
}

/* One entry of a list key. */
static int
list_item(struct parser *p, enum pkey k, const char *key, const char *tok)
{
	struct policy	*pol = p->pol;
	char		 err[300];
	long		 id;
	int		*count = k == P_CONNECT ? &pol->nhosts :
			    k == P_ALLOW_USERS ? &pol->nusers :
			    k == P_ALLOW_GROUPS ? &pol->ngroups :
			    &pol->nprograms;

	switch (k) {
	case P_PIN_SHA256:
		return parse_pin(p, key, tok, strlen(tok));
	case P_PIN_SOURCES:
		return parse_source(p, key, tok);
	default:
		break;
	}
	if (*count == POLICY_MAX_LIST)
		return perr(p, p->in.line, "[%s] %s: at most %d entries",
		    p->secname, key, POLICY_MAX_LIST);
	switch (k) {
	case P_CONNECT:
		if (policy_host_parse(tok, &pol->hosts[pol->nhosts], err,
		    sizeof(err)) != 0)
			return perr(p, p->in.line, "[%s] %s: %s", p->secname, key,
			    err);
		pol->nhosts++;
		return 1;
	case P_ALLOW_USERS:
	case P_ALLOW_GROUPS:
		if (config_lookup_id(k == P_ALLOW_GROUPS, tok, &id) != 0)
			return perr(p, p->in.line, "[%s] %s: '%s' is not a %s "
			    "known on this system nor a number", p->secname,
			    key, tok, k == P_ALLOW_GROUPS ? "group" : "user");
		if (k == P_ALLOW_USERS)
			pol->users[pol->nusers++] = id;
		else
			pol->groups[pol->ngroups++] = id;
		return 1;
	default:	/* P_ALLOW_PROGRAMS */
		if (tok[0] != '/')
			return perr(p, p->in.line, "[%s] %s: '%s' must be an "
			    "absolute path or path pattern, such as "
			    "/usr/bin/firefox or /usr/lib/firefox/*",
			    p->secname, key, tok);
		if ((pol->programs[pol->nprograms] = strdup(tok)) == NULL)
			return perr(p, p->in.line, "out of memory");
		pol->nprograms++;
		return 1;
	}
}

static int
parse_list(struct parser *p, enum pkey k, const char *key, const char *v)
{
	char	*copy, *tok, *save = NULL;
	int	 n = 0;

	if ((copy = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL && !p->in.failed;
	    tok = strtok_r(NULL, ", \t", &save), n++)
		list_item(p, k, key, tok);
	free(copy);
	/* "connect = ," would be a permission that permits nothing and
	 * restricts nothing */
	if (n == 0 && !p->in.failed)
		return perr(p, p->in.line, "[%s] %s: an empty list", p->secname,
		    key);
	return !p->in.failed;
}

/* A pattern: fnmatch(3) syntax, checked for a complete [...] class. */
static int
set_pattern(struct parser *p, const char *key, char **dst, const char *v)
{
	const char	*c;

	for (c = v; *c != '\0'; c++) {
		if (*c == '\\' && c[1] != '\0')
			c++;
		else if (*c == '[' && strchr(c + 1, ']') == NULL)
			return perr(p, p->in.line, "[%s] %s: '%s': '[' opens a "
			    "character class that no ']' closes (write \\[ for "
			    "the character)", p->secname, key, v);
	}
	if ((*dst = strdup(v)) == NULL)
		return perr(p, p->in.line, "out of memory");
	return 1;
}

static int
parse_sha(struct parser *p, const char *key, const char *v)
{
	struct policy	*pol = p->pol;
	size_t		 n = 0;
	const char	*c;
	int		 hi = -1, d;

	for (c = v; *c != '\0'; c++) {
		if (*c == ':')
			continue;
		if (*c >= '0' && *c <= '9')
			d = *c - '0';
		else if (*c >= 'a' && *c <= 'f')
			d = *c - 'a' + 10;
		else if (*c >= 'A' && *c <= 'F')
			d = *c - 'A' + 10;
		else
			break;
		if (n == 32)
			break;
		if (hi < 0)
			hi = d;
		else {
			pol->sha[n++] = (unsigned char)(hi << 4 | d);
			hi = -1;
		}
	}
	if (*c != '\0' || n != 32 || hi >= 0)
		return perr(p, p->in.line, "[%s] %s: '%.80s' is not a SHA-256 in "
		    "hex (64 digits, colons allowed, as 'openssl x509 "
		    "-fingerprint -sha256' prints)", p->secname, key, v);
	pol->has_sha = 1;
	return 1;
}

static int
parse_number(struct parser *p, const char *key, const char *v, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || end == v || n < 0 || n > 86400)
		return perr(p, p->in.line, "[%s] %s: '%s' is not a number of "
		    "seconds between 0 and 86400", p->secname, key, v);
	*out = (int)n;
	return 1;
}

static int
one_value(struct parser *p, enum pkey k, const char *key, const char *v)
{
	struct policy	*pol = p->pol;

	switch (k) {
	case P_KEY:
		if (strncmp(v, "pkcs11:", 7) != 0)
			return perr(p, p->in.line, "[%s] key: '%s' is not a "
			    "pkcs11: URI pattern", p->secname, v);
		return set_pattern(p, key, &pol->key, v);
	case P_TOKEN_LABEL:
		return set_pattern(p, key, &pol->label, v);
	case P_TOKEN_SERIAL:
		return set_pattern(p, key, &pol->serial, v);
	case P_CERT_ISSUER:
		return set_pattern(p, key, &pol->issuer, v);
	case P_CERT_SUBJECT:
		return set_pattern(p, key, &pol->subject, v);
	case P_CERT_SHA256:
		return parse_sha(p, key, v);
	case P_TLS_MIN:
		if (strcmp(v, "1.2") == 0)
			pol->tls_min = TLS1_2_VERSION;
		else if (strcmp(v, "1.3") == 0)
			pol->tls_min = TLS1_3_VERSION;
		else
			return perr(p, p->in.line, "[%s] %s: '%s' must be 1.2 or "
			    "1.3", p->secname, key, v);
		return 1;
	case P_CA:
		if (v[0] != '/')
			return perr(p, p->in.line, "[%s] %s: '%s' must be an "
			    "absolute path", p->secname, key, v);
		if ((pol->ca = strdup(v)) == NULL)
			return perr(p, p->in.line, "out of memory");
		return 1;
	case P_OCSP:
		if (strcmp(v, "require") != 0)
			return perr(p, p->in.line, "[%s] %s: '%s': the only value "
			    "is require (a good stapled OCSP response)",
			    p->secname, key, v);
		pol->ocsp = CFG_OCSP_REQUIRE;
		return 1;
	case P_PIN_CACHE_MAX:
		return parse_number(p, key, v, &pol->pin_cache_max);
	case P_ON_REMOVAL:
		if (strcmp(v, "close") != 0)
			return perr(p, p->in.line, "[%s] %s: '%s': the only value "
			    "is close", p->secname, key, v);
		pol->on_removal = CFG_REMOVAL_CLOSE;
		return 1;
	case P_PIN_PER_HANDSHAKE:
		if (strcmp(v, "yes") != 0)
			return perr(p, p->in.line, "[%s] %s: '%s': the only value "
			    "is yes (the PIN asked for every full handshake)",
			    p->secname, key, v);
		pol->pin_per_handshake = 1;
		return 1;
	default:
		return 0;
	}
}

/* Keeps what was written: "VALUE" or "V1, V2" over repeated lines. */
static int
keep_value(struct parser *p, enum pkey k, const char *key, const char *v)
{
	struct policy	*pol = p->pol;
	size_t		 had = pol->vals[k] != NULL ? strlen(pol->vals[k]) : 0;
	size_t		 tl = pol->text != NULL ? strlen(pol->text) : 0;
	size_t		 add = strlen(v) + 3, tadd = strlen(key) + strlen(v) + 2;
	char		*n;

	if (had + add > TEXT_MAX || tl + tadd > TEXT_MAX)
		return perr(p, p->in.line, "[%s] %s: too many settings",
		    p->secname, key);
	if ((n = realloc(pol->vals[k], had + add)) == NULL)
		return perr(p, p->in.line, "out of memory");
	snprintf(n + had, add, "%s%s", had ? ", " : "", v);
	pol->vals[k] = n;
	if ((n = realloc(pol->text, tl + tadd + 1)) == NULL)
		return perr(p, p->in.line, "out of memory");
	snprintf(n + tl, tadd + 1, "%s=%s\n", key, v);
	pol->text = n;
	if (pol->lines[k] == 0)
		pol->lines[k] = p->in.line;
	return 1;
}

static int
handler(void *arg, const char *section, const char *key, const char *value)
{
	struct parser	*p = arg;
	int		 k;

	if (p->in.failed)
		return 1;
	if (*section == '\0')
		return perr(p, p->in.line, "%s: outside of any section; put it "
		    "under [policy NAME]", key);
	if (strcmp(section, p->secname) == 0 &&
	    p->in.headers != p->section_headers)
		return perr(p, p->in.section_line, "[%s]: defined twice (also "
		    "line %d)", section, p->pol != NULL ? p->pol->line : 0);
	if (strcmp(section, p->secname) != 0 && !new_section(p, section))
		return 0;
	if (p->pol == NULL)
		return 0;
	for (k = 0; k < P_COUNT; k++)
		if (strcmp(pkey_names[k], key) == 0)
			break;
	if (k == P_COUNT)
		return perr(p, p->in.line, "[%s] %s: unknown key", p->secname,
		    key);
	if (*value == '\0')
		return perr(p, p->in.line, "[%s] %s: empty value", p->secname,
		    key);
	if (!list_key(k) && p->pol->lines[k] != 0)
		return perr(p, p->in.line, "[%s] %s: given twice (also line %d)",
		    p->secname, key, p->pol->lines[k]);
	if (!keep_value(p, k, key, value))
		return 0;
	if (list_key(k))
		return parse_list(p, k, key, value);
	return one_value(p, k, key, value);
}

/* Each policy of this file has a selector and a permission. */
static int
finish(struct parser *p, struct policy *from)
{
	struct policy	*pol;
	int		 k, sel, perm;

	for (pol = from; pol != NULL; pol = pol->next) {
		for (k = 0, sel = 0, perm = 0; k < P_COUNT; k++) {
			if (pol->lines[k] == 0)
				continue;
			if (k < P_SELECTORS)
				sel++;
			else
				perm++;
		}
		if (sel == 0)
			return perr(p, pol->line, "[policy %s]: no selector: "
			    "say which identities it binds (key, token-label, "
			    "token-serial, cert-sha256, cert-issuer or "
			    "cert-subject)", pol->name);
		if (perm == 0)
			return perr(p, pol->line, "[policy %s]: it allows "
			    "everything: give at least one of connect, "
			    "allow-users, allow-groups, allow-programs, "
			    "tls-min, ca, pin-sha256, ocsp, pin-cache-max, "
			    "on-removal, pin-sources", pol->name);
	}
	return 1;
}

static int
new_set(struct policy_set **set)
{
	if (*set != NULL)
		return 0;
	if ((*set = calloc(1, sizeof(**set))) == NULL)
		return P11A_ERR_NOMEM;
	(*set)->tail = &(*set)->first;
	return 0;
}

/* Only root, or the user running the agent, may have written it (as
 * sshd's StrictModes): a policy anybody can change is none. */
static int
trusted_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat	 st;

	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return 0;
	}
	if (st.st_uid != 0 && st.st_uid != getuid()) {
		snprintf(err, errlen, "%s: owned by uid %ld, neither root nor "
		    "this user: not read (chown root)", path, (long)st.st_uid);
		return 0;
	}
	if ((st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) &&
	    st.st_gid != 0)) {
		snprintf(err, errlen, "%s: writable by %s (mode %04o): not "
		    "read (chmod go-w)", path, (st.st_mode & S_IWOTH) ?
		    "every user" : "its group", (unsigned)(st.st_mode & 07777));
		return 0;
	}
	return 1;
}

int
policy_load_file(const char *path, struct policy_set **set, char *err,
    size_t errlen)
{
	struct parser	 p;
	struct policy	**tail;
	int		 r;

	if (new_set(set) != 0) {
		snprintf(err, errlen, "out of memory");
		return P11A_ERR_NOMEM;
	}
	memset(&p, 0, sizeof(p));
	p.set = *set;
	p.in.path = path;
	p.in.header_form = "[policy NAME]";
	p.in.err = err;
	p.in.errlen = errlen;
	tail = p.set->tail;
	if ((p.in.fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return P11A_ERR_CONFIG;
	}
	if (!trusted_file(fileno(p.in.fp), path, err, errlen)) {
		fclose(p.in.fp);
		return P11A_ERR_CONFIG;
	}
	r = ini_parse_stream(ini_read_line, &p.in, handler, &p);
	if (ferror(p.in.fp) && !p.in.failed)
		perr(&p, p.in.line, "read error: %s", strerror(errno));
	fclose(p.in.fp);
	if (r > 0 && !p.in.failed)
		perr(&p, r, "syntax error: expected [policy NAME], key = "
		    "value or a # comment");
	if (!p.in.failed)
		finish(&p, *tail);
	return p.in.failed ? P11A_ERR_CONFIG : 0;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
is_policy_name(const char *n)
{
	size_t	 l = strlen(n);

	return l > 7 && n[0] != '.' && strcmp(n + l - 7, ".policy") == 0;
}

int
policy_load_dir(const char *dir, struct policy_set **out, char *err,
    size_t errlen)
{
	struct policy_set	*set = NULL;
	struct dirent		*de;
	struct stat		 st;
	DIR			*d = NULL;
	char			**names = NULL, **v, path[PATH_MAX];
	int			 n = 0, i, r = P11A_ERR_CONFIG, given;

	if (dir == NULL)
		dir = policy_dir;
	given = dir != NULL;
	if (dir == NULL)
		dir = P11AGENT_POLICY_DIR;
	if (new_set(&set) != 0)
		goto nomem;
	if ((d = opendir(dir)) == NULL) {
		if (!given && errno == ENOENT) {
			*out = set;	/* none installed: no policy */
			return 0;
		}
		snprintf(err, errlen, "policies: %s: %s%s", dir,
		    strerror(errno), errno == ENOTDIR ? " (--policies names "
		    "a directory of *.policy files)" : "");
		goto out;
	}
	/* a directory anybody may write to lets anybody add a policy, or
	 * take one away */
	if (!trusted_file(dirfd(d), dir, err, errlen))
		goto out;
	while ((de = readdir(d)) != NULL) {
		if (!is_policy_name(de->d_name))
			continue;
		if (n == POLICY_MAX_FILES) {
			snprintf(err, errlen, "policies: %s: more than %d "
			    "*.policy files", dir, POLICY_MAX_FILES);
			goto out;
		}
		if ((v = reallocarray(names, n + 1, sizeof(*names))) == NULL)
			goto nomem;
		names = v;
		if ((names[n] = strdup(de->d_name)) == NULL)
			goto nomem;
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s: not a regular file", path);
			goto out;
		}
		if ((r = policy_load_file(path, &set, err, errlen)) != 0)
			goto out;
	}
	*out = set;
	set = NULL;
	r = 0;
	goto out;
nomem:
	snprintf(err, errlen, "out of memory");
	r = P11A_ERR_NOMEM;
out:
	if (d != NULL)
		closedir(d);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	policy_set_free(set);
	return r;
}

void
policy_set_free(struct policy_set *set)
{
	struct policy	*pol;

	if (set == NULL)
		return;
	while ((pol = set->first) != NULL) {
		set->first = pol->next;
		policy_free(pol);
	}
	free(set);
}

int
policy_count(const struct policy_set *set)
{
	return set != NULL ? set->n : 0;
}
