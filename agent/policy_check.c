/*
 * p11agent: administrator policies bound to identities and enforced
 * (policy.h): at start-up, check and reload on the configuration, and
 * for each accepted connection on its peer.
 */
#include "config.h"

#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "p11agent/agent.h"
#include "p11agent/config.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/peer.h"
#include "p11agent/policy.h"
#include "policy_int.h"

#define MAX_GROUPS	1024	/* supplementary groups looked at */

/* ---- binding */

/* n bytes of s, percent-decoded, into out. */
static void
pct_decode(const char *s, size_t n, char *out, size_t len)
{
	const char	*e = s + n;
	unsigned int	 c;
	size_t		 o = 0;

	for (; s < e && o + 1 < len; s++) {
		if (*s == '%' && e - s >= 3 && isxdigit((unsigned char)s[1]) &&
		    isxdigit((unsigned char)s[2]) && sscanf(s + 1, "%2x", &c) ==
		    1) {
			out[o++] = (char)c;
			s += 2;
		} else
			out[o++] = *s;
	}
	out[o] = '\0';
}

/* The value of attribute attr in a pkcs11: URI's path, percent-decoded:
 * the last one given, as p11-kit takes it (token=a;token=b is b). */
static int
uri_attr(const char *uri, const char *attr, char *out, size_t len)
{
	const char	*s = uri + 7, *e;
	size_t		 al = strlen(attr);
	int		 found = 0;

	if (strncmp(uri, "pkcs11:", 7) != 0)
		return 0;
	while (*s != '\0' && *s != '?') {
		e = s + strcspn(s, ";?");
		if ((size_t)(e - s) > al && strncmp(s, attr, al) == 0 &&
		    s[al] == '=') {
			pct_decode(s + al + 1, (size_t)(e - s - al - 1), out,
			    len);
			found = 1;
		}
		s = *e == ';' ? e + 1 : e;
	}
	return found;
}

/* An attribute of the identity's key: the token's label and serial as
 * its helper reported them once it opened (whatever the URI says or
 * leaves out), the others from the key URI. */
static int
key_attr(const struct cfg_identity *ci, const struct identity *id,
    const char *attr, char *out, size_t len)
{
	if (id != NULL && strcmp(attr, "token") == 0 && id->tok_label[0]) {
		snprintf(out, len, "%s", id->tok_label);
		return 1;
	}
	if (id != NULL && strcmp(attr, "serial") == 0 && id->tok_serial[0]) {
		snprintf(out, len, "%s", id->tok_serial);
		return 1;
	}
	return uri_attr(ci->key, attr, out, len);
}

/*
 * key = PATTERN: written as attributes (pkcs11:token=Bank*;type=private),
 * each must be in the key URI with a value it matches, in any order and
 * beside others; otherwise (pkcs11:*, pkcs11:*token=X;*) the pattern is
 * matched against the URI as written.
 */
static int
key_matches(const char *pattern, const struct cfg_identity *ci,
    const struct identity *id)
{
	const char	*uri = ci->key;
	char		 name[64], want[256], have[256];
	const char	*s, *e, *eq;

	for (s = pattern + 7; *s != '\0'; s = *e == ';' ? e + 1 : e) {
		e = s + strcspn(s, ";");
		eq = memchr(s, '=', (size_t)(e - s));
		if (eq == NULL || eq == s || (size_t)(eq - s) >= sizeof(name) ||
		    strspn(s, "abcdefghijklmnopqrstuvwxyz-") != (size_t)(eq - s))
			return fnmatch(pattern, uri, 0) == 0;
	}
	if (pattern[7] == '\0')
		return fnmatch(pattern, uri, 0) == 0;
	for (s = pattern + 7; *s != '\0'; s = *e == ';' ? e + 1 : e) {
		e = s + strcspn(s, ";");
		eq = memchr(s, '=', (size_t)(e - s));
		snprintf(name, sizeof(name), "%.*s", (int)(eq - s), s);
		pct_decode(eq + 1, (size_t)(e - eq - 1), want, sizeof(want));
		if (!key_attr(ci, id, name, have, sizeof(have)) ||
		    fnmatch(want, have, 0) != 0)
			return 0;
	}
	return 1;
}

static int
name_matches(const char *pattern, const X509_NAME *nm)
{
	BIO	*b;
	char	 buf[1024];
	int	 n, r = 0;

	if (nm == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
		return 0;
	/* UTF-8 as it is (RFC 2253 alone escapes it: K\\C3\\B6ln) */
	if (X509_NAME_print_ex(b, nm, 0, XN_FLAG_RFC2253 &
	    ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
	    (n = BIO_read(b, buf, sizeof(buf) - 1)) >= 0) {
		buf[n] = '\0';
		r = fnmatch(pattern, buf, 0) == 0;
	}
	BIO_free(b);
	return r;
}

/* The certificate selectors the policy gives match cert. */
static int
cert_binds(const struct policy *pol, X509 *cert)
{
	unsigned char	 md[32];
	unsigned int	 mdlen = 0;

	if (cert == NULL)
		return 0;
	if (pol->has_sha && (X509_digest(cert, EVP_sha256(), md, &mdlen) !=
	    1 || mdlen != 32 || memcmp(md, pol->sha, 32) != 0))
		return 0;
	if (pol->issuer != NULL && !name_matches(pol->issuer,
	    X509_get_issuer_name(cert)))
		return 0;
	if (pol->subject != NULL && !name_matches(pol->subject,
	    X509_get_subject_name(cert)))
		return 0;
	return 1;
}

/*
 * Every selector the policy gives matches the identity.  Its token is the
 * one the helper opened the key on; its certificate either the one it
 * presents or, when cert = names another, the token's own certificate for
 * the key (so a second certificate for the key does not escape).
 */
static int
binds(const struct policy *pol, const struct cfg_identity *ci,
    const struct identity *id)
{
	char		 v[256];
	int		 i;

	if (pol->key != NULL && !key_matches(pol->key, ci, id))
		return 0;
	if (pol->label != NULL && !(key_attr(ci, id, "token", v, sizeof(v)) &&
	    fnmatch(pol->label, v, 0) == 0))
		return 0;
	if (pol->serial != NULL && !(key_attr(ci, id, "serial", v,
	    sizeof(v)) && fnmatch(pol->serial, v, 0) == 0))
		return 0;
	if (pol->has_sha || pol->issuer != NULL || pol->subject != NULL) {
		if (id == NULL)
			return 0;
		if (cert_binds(pol, id->hid.cert))
			return 1;
		for (i = 0; i < id->hid.nkey_certs; i++)
			if (cert_binds(pol, id->hid.key_certs[i]))
				return 1;
		return 0;
	}
	return 1;
}

/* ---- enforcement at start-up, check and reload */

struct ctx {
	const char	*conf;
	int		 bad;
};

/* "CONF:LINE: [SECTION] WHAT REASON policy P (FILE:LINE: KEY = VALUE)" */
static void
violation(struct ctx *c, int line, const char *section, const char *what,
    const char *reason, const struct policy *pol, enum pkey k)
{
	log_err("%s:%d: [%s] %s %s policy %s (%s:%d: %s = %s)", c->conf, line,
	    section, what, reason, pol->name, pol->file, pol->lines[k],
	    pkey_names[k], pol->vals[k]);
	c->bad++;
}

static int
host_allowed(const struct policy *pol, const char *host, int port)
{
	int	 i;

	for (i = 0; i < pol->nhosts; i++)
		if (policy_host_match(&pol->hosts[i], host, port))
			return 1;
	return 0;
}

static int
uid_in_groups(long uid, const long *groups, int ngroups)
{
	struct passwd	 pw, *res = NULL;
	gid_t		 g[MAX_GROUPS];
	char		 buf[4096];
	int		 n = MAX_GROUPS, i, j;

	if (ngroups == 0 || getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf),
	    &res) != 0 || res == NULL)
		return 0;
	if (getgrouplist(pw.pw_name, pw.pw_gid, g, &n) == -1)
		n = MAX_GROUPS;
	for (i = 0; i < n; i++)
		for (j = 0; j < ngroups; j++)
			if ((long)g[i] == groups[j])
				return 1;
	return 0;
}

static int
long_in(long v, const long *list, int n)
{
	int	 i;

	for (i = 0; i < n; i++)
		if (list[i] == v)
			return 1;
	return 0;
}

static void
check_connect(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	char	 what[400];
	int	 port = atoi(t->connect_port);

	if (pol->nhosts == 0)
		return;
	if (!host_allowed(pol, t->connect_host, port)) {
		snprintf(what, sizeof(what), "connect = %s%s%s:%s",
		    strchr(t->connect_host, ':') ? "[" : "", t->connect_host,
		    strchr(t->connect_host, ':') ? "]" : "", t->connect_port);
		violation(c, t->connect_line ? t->connect_line : t->line, sec,
		    what, "is outside", pol, P_CONNECT);
	}
	if (t->server_name != NULL && !host_allowed(pol, t->server_name,
	    port)) {
		snprintf(what, sizeof(what), "server-name = %s",
		    t->server_name);
		violation(c, t->server_name_line ? t->server_name_line :
		    t->line, sec, what, "is outside", pol, P_CONNECT);
	}
}

static void
check_principals(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	char	 what[128];
	int	 i;

	if (pol->nusers == 0 && pol->ngroups == 0)
		return;
	for (i = 0; i < t->nallow_users; i++) {
		if (long_in((long)t->allow_users[i], pol->users, pol->nusers) ||
		    uid_in_groups((long)t->allow_users[i], pol->groups,
		    pol->ngroups))
			continue;
		snprintf(what, sizeof(what), "allow-users: uid %ld",
		    (long)t->allow_users[i]);
		violation(c, t->allow_users_line, sec, what, "is outside", pol,
		    pol->nusers ? P_ALLOW_USERS : P_ALLOW_GROUPS);
	}
	for (i = 0; i < t->nallow_groups; i++) {
		if (long_in((long)t->allow_groups[i], pol->groups,
		    pol->ngroups))
			continue;
		snprintf(what, sizeof(what), "allow-groups: gid %ld",
		    (long)t->allow_groups[i]);
		violation(c, t->allow_groups_line, sec, what, "is outside", pol,
		    pol->ngroups ? P_ALLOW_GROUPS : P_ALLOW_USERS);
	}
}

static void
check_tls(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	if (pol->tls_min == 0)
		return;
	if (t->tls_min_line == 0 && t->tls_min < pol->tls_min)
		t->tls_min = pol->tls_min;	/* filled in */
	if (t->tls_min < pol->tls_min)
		violation(c, t->tls_min_line, sec, t->tls_min ==
		    TLS1_2_VERSION ? "tls-min = 1.2" : "tls-min = 1.3",
		    "is below the floor of", pol, P_TLS_MIN);
	else if (t->tls_max < t->tls_min)
		violation(c, t->tls_max_line ? t->tls_max_line : t->line, sec,
		    "tls-max = 1.2", "is below the floor of", pol, P_TLS_MIN);
}

static int
same_file(const char *a, const char *b)
{
	char	 ra[PATH_MAX], rb[PATH_MAX];

	if (strcmp(a, b) == 0)
		return 1;
	return realpath(a, ra) != NULL && realpath(b, rb) != NULL &&
	    strcmp(ra, rb) == 0;
}

static void
check_ca(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	char	 what[PATH_MAX + 16];

	if (pol->ca == NULL)
		return;
	if (t->ca_dir != NULL) {
		snprintf(what, sizeof(what), "ca-dir = %s", t->ca_dir);
		violation(c, t->ca_dir_line ? t->ca_dir_line : t->line, sec,
		    what, "trusts CAs besides the one of", pol, P_CA);
	}
	if (t->ca == NULL) {
		if ((t->ca = strdup(pol->ca)) == NULL) {
			log_err("out of memory");
			c->bad++;
		}
		return;
	}
	if (!same_file(t->ca, pol->ca)) {
		snprintf(what, sizeof(what), "ca = %s", t->ca);
		violation(c, t->ca_line ? t->ca_line : t->line, sec, what,
		    "is not the CA of", pol, P_CA);
	}
}

static void
check_pins(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	char	 what[128], b64[64];
	int	 i, j;

	if (pol->npins == 0)
		return;
	if (t->npins == 0) {
		memcpy(t->pins, pol->pins, sizeof(t->pins));
		t->npins = pol->npins;
		return;
	}
	for (i = 0; i < t->npins; i++) {
		for (j = 0; j < pol->npins; j++)
			if (memcmp(t->pins[i], pol->pins[j], 32) == 0)
				break;
		if (j < pol->npins)
			continue;
		EVP_EncodeBlock((unsigned char *)b64, t->pins[i], 32);
		snprintf(what, sizeof(what), "pin-sha256 = %s", b64);
		violation(c, t->pins_line ? t->pins_line : t->line, sec, what,
		    "is not among the pins of", pol, P_PIN_SHA256);
	}
}

static void
check_ocsp(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	if (pol->ocsp != CFG_OCSP_REQUIRE)
		return;
	if (t->ocsp_line == 0)
		t->ocsp = CFG_OCSP_REQUIRE;
	else if (t->ocsp != CFG_OCSP_REQUIRE)
		violation(c, t->ocsp_line, sec, t->ocsp == CFG_OCSP_NO ?
		    "ocsp = no" : "ocsp = request", "is weaker than", pol,
		    P_OCSP);
}

static unsigned
source_kind(const char *pin)
{
	if (pin == NULL || strcmp(pin, "pinentry") == 0)
		return SRC_PINENTRY;
	if (strncmp(pin, "file:", 5) == 0)
		return SRC_FILE;
	if (strncmp(pin, "env:", 4) == 0)
		return SRC_ENV;
	if (strncmp(pin, "fd:", 3) == 0)
		return SRC_FD;
	if (strcmp(pin, "systemd-ask-password") == 0)
		return SRC_ASK;
	return SRC_NONE;
}

/* A PIN for every handshake: no session is resumed. */
static void
check_resume(struct ctx *c, struct cfg_tunnel *t, const char *sec,
    const struct policy *pol)
{
	if (!pol->pin_per_handshake)
		return;
	if (t->session_cache == CFG_SESSION_YES)
		violation(c, t->line, sec, "session-cache = yes", "resumes "
		    "sessions without a PIN, which is forbidden by", pol,
		    P_PIN_PER_HANDSHAKE);
	else
		t->session_cache = CFG_SESSION_NO;
}

static void
check_identity(struct ctx *c, struct cfg_identity *ci,
    const struct policy *pol)
{
	char		 sec[64], what[128];
	unsigned	 kind = source_kind(ci->pin);

	snprintf(sec, sizeof(sec), "identity %s", ci->name);
	if (pol->pin_cache_max >= 0 && ci->pin_cache > pol->pin_cache_max) {
		snprintf(what, sizeof(what), "pin-cache = %d", ci->pin_cache);
		violation(c, ci->pin_cache_line, sec, what, "is longer than "
		    "the pin-cache-max of", pol, P_PIN_CACHE_MAX);
	}
	if (pol->on_removal == CFG_REMOVAL_CLOSE) {
		if (ci->on_removal_line == 0)
			ci->on_removal = CFG_REMOVAL_CLOSE;
		else if (ci->on_removal != CFG_REMOVAL_CLOSE)
			violation(c, ci->on_removal_line, sec,
			    "on-removal = keep", "is not what is required by",
			    pol, P_ON_REMOVAL);
	}
	/* not filled in: the token was opened with the identity's own
	 * setting, so the configuration must say it */
	if (pol->pin_per_handshake) {
		if (!ci->pin_per_handshake)
			violation(c, ci->pin_per_handshake_line ?
			    ci->pin_per_handshake_line : ci->line, sec,
			    ci->pin_per_handshake_line ?
			    "pin-per-handshake = no" : "no pin-per-handshake = "
			    "yes", "is not what is required by", pol,
			    P_PIN_PER_HANDSHAKE);
		if (ci->pin_cache > 0) {
			snprintf(what, sizeof(what), "pin-cache = %d",
			    ci->pin_cache);
			violation(c, ci->pin_cache_line, sec, what, "keeps a "
			    "PIN, which is forbidden by", pol,
			    P_PIN_PER_HANDSHAKE);
		}
	}
	if (pol->sources != 0 && (pol->sources & kind) == 0) {
		snprintf(what, sizeof(what), "pin = %s%s%s",
		    policy_src_name(kind),
		    kind == SRC_FILE || kind == SRC_ENV || kind == SRC_FD ?
		    ":..." : "", ci->pin == NULL ? " (the default)" : "");
		violation(c, ci->pin_line ? ci->pin_line : ci->line, sec, what,
		    "is a PIN source forbidden by", pol, P_PIN_SOURCES);
	}
}

/* A reload rebuilds a tunnel whose policies changed (agent/tunnel.c
 * compares t->text). */
static void
text_policy(struct cfg_tunnel *t, const struct policy *pol)
{
	size_t	 had = t->text != NULL ? strlen(t->text) : 0;
	size_t	 add = strlen(pol->name) + strlen(pol->file) +
		    strlen(pol->text) + 16;
	char	*n;

	if ((n = realloc(t->text, had + add)) == NULL)
		return;		/* the tunnel is rebuilt anyway */
	snprintf(n + had, add, "#policy %s %s\n%s", pol->name, pol->file,
	    pol->text);
	t->text = n;
}

static void
bind_identities(struct agent *a, struct ctx *c)
{
	struct cfg_identity	*ci;
	struct policy		*pol;

	for (ci = a->cfg->identities; ci != NULL; ci = ci->next) {
		ci->npolicies = 0;
		for (pol = a->cfg->policies->first; pol != NULL;
		    pol = pol->next) {
			if (!binds(pol, ci, identity_find(a, ci)))
				continue;
			if (ci->npolicies == POLICY_MAX_BOUND) {
				log_err("%s:%d: [identity %s]: more than %d "
				    "policies bind it (the last: %s, %s:%d)",
				    c->conf, ci->line, ci->name,
				    POLICY_MAX_BOUND, pol->name, pol->file,
				    pol->line);
				c->bad++;
				break;
			}
			ci->policies[ci->npolicies++] = pol;
			log_info("identity %s: bound by policy %s (%s:%d)",
			    ci->name, pol->name, pol->file, pol->line);
			check_identity(c, ci, pol);
		}
		/* a selector that missed fails open: said, so that it shows */
		if (ci->npolicies == 0)
			log_info("identity %s: no policy binds it (%d read)",
			    ci->name, policy_count(a->cfg->policies));
	}
}

int
policy_rebind_same(const struct agent *a, const struct identity *id,
    const struct helper_identity *hid, char *why, size_t len)
{
	const struct cfg_identity	*ci = id->cfg;
	const struct policy		*pol;
	struct identity			 now = *id;
	int				 i, was, is;

	if (policy_count(a->cfg->policies) == 0)
		return 1;
	now.hid = *hid;
	snprintf(now.tok_label, sizeof(now.tok_label), "%s", hid->label);
	snprintf(now.tok_serial, sizeof(now.tok_serial), "%s", hid->serial);
	for (pol = a->cfg->policies->first; pol != NULL; pol = pol->next) {
		for (was = 0, i = 0; i < ci->npolicies; i++)
			was |= ci->policies[i] == pol;
		if ((is = binds(pol, ci, &now)) == was)
			continue;
		snprintf(why, len, "policy %s (%s:%d) %s", pol->name,
		    pol->file, pol->line, is ? "binds it, and did not bind "
		    "the card the policies were applied to" : "bound the card "
		    "the policies were applied to, and does not bind it");
		return 0;
	}
	return 1;
}

int
policy_apply(struct agent *a)
{
	struct ctx		 c;
	struct cfg_tunnel	*t;
	const struct policy	*pol;
	char			 sec[64];
	int			 i;

	c.conf = a->cfg->path;
	c.bad = 0;
	if (policy_count(a->cfg->policies) == 0)
		return 0;
	bind_identities(a, &c);
	for (t = a->cfg->tunnels; t != NULL; t = t->next) {
		snprintf(sec, sizeof(sec), "tunnel %s", t->name);
		for (i = 0; i < t->identity->npolicies; i++) {
			pol = t->identity->policies[i];
			check_connect(&c, t, sec, pol);
			check_principals(&c, t, sec, pol);
			check_tls(&c, t, sec, pol);
			check_ca(&c, t, sec, pol);
			check_pins(&c, t, sec, pol);
			check_ocsp(&c, t, sec, pol);
			check_resume(&c, t, sec, pol);
			text_policy(t, pol);
		}
	}
	return c.bad;
}

/* ---- connection time */

static void
append(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
append(char *out, size_t len, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 n = strlen(out);

	if (n >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(out + n, len - n, fmt, ap);
	va_end(ap);
}

static int
program_allowed(const struct policy *pol, const char *exe)
{
	int	 i;

	for (i = 0; i < pol->nprograms; i++)
		if (fnmatch(pol->programs[i], exe, FNM_PATHNAME) == 0)
			return 1;
	return 0;
}

int
policy_peer(const struct cfg_tunnel *t, const struct peer *p, char *rule,
    size_t len)
{
	const struct cfg_identity	*ci = t->identity;
	const struct policy		*pol;
	int				 i, byuser;

	if (ci == NULL || ci->npolicies == 0)
		return -1;
	rule[0] = '\0';
	for (i = 0; i < ci->npolicies; i++) {
		pol = ci->policies[i];
		if (pol->nusers != 0 || pol->ngroups != 0) {
			byuser = long_in(p->uid, pol->users, pol->nusers);
			if (p->uid < 0 || (!byuser && !(p->gid >= 0 &&
			    long_in(p->gid, pol->groups, pol->ngroups)) &&
			    !uid_in_groups(p->uid, pol->groups,
			    pol->ngroups))) {
				snprintf(rule, len, "uid %ld is not in %s of "
				    "policy %s (%s:%d)", p->uid, pol->nusers ?
				    "allow-users" : "allow-groups", pol->name,
				    pol->file, pol->lines[pol->nusers ?
				    P_ALLOW_USERS : P_ALLOW_GROUPS]);
				return 0;
			}
			append(rule, len, "%spolicy %s (%s:%d: %s", rule[0] ?
			    "; " : "", pol->name, pol->file, pol->lines[byuser ?
			    P_ALLOW_USERS : P_ALLOW_GROUPS], byuser ?
			    "allow-users" : "allow-groups");
		}
		if (pol->nprograms != 0) {
			if (p->exe_shared) {
				snprintf(rule, len, "program unknown: the "
				    "connection's socket is held by %s and "
				    "another program, so allow-programs of "
				    "policy %s (%s:%d) cannot tell",
				    p->exe, pol->name, pol->file,
				    pol->lines[P_ALLOW_PROGRAMS]);
				return 0;
			}
			if (p->exe[0] == '\0' || !program_allowed(pol,
			    p->exe)) {
				snprintf(rule, len, "program %s is not in "
				    "allow-programs of policy %s (%s:%d)",
				    p->exe[0] ? p->exe : "(unknown)",
				    pol->name, pol->file,
				    pol->lines[P_ALLOW_PROGRAMS]);
				return 0;
			}
			if (pol->nusers != 0 || pol->ngroups != 0)
				append(rule, len, ", %d: allow-programs)",
				    pol->lines[P_ALLOW_PROGRAMS]);
			else
				append(rule, len, "%spolicy %s (%s:%d: "
				    "allow-programs)", rule[0] ? "; " : "",
				    pol->name, pol->file,
				    pol->lines[P_ALLOW_PROGRAMS]);
		} else if (pol->nusers != 0 || pol->ngroups != 0)
			append(rule, len, ")");
	}
	return 1;
}

_Static_assert(sizeof(((struct cfg_identity *)0)->policies) /
    sizeof(((struct cfg_identity *)0)->policies[0]) == POLICY_MAX_BOUND,
    "config.h's policies[] holds POLICY_MAX_BOUND");
