/*
 * p11agent: identities and their token helpers (identity.h).
 *
 * Identities are opened from the event loop, asynchronously, so that a
 * slow or hung module delays nothing else and a signal stops the agent
 * at once.  A helper that exits (a crash, a lost token) or hangs (a
 * request past its deadline) is restarted at a bounded rate, and its
 * identities are opened again in their original order, so their key
 * handles stay the same; a reopened identity whose key or certificate
 * changed (another card) gets new TLS contexts, or is refused.  Open
 * tunnels do not need the helper and keep flowing meanwhile.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "p11agent/agent.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/policy.h"
#include "p11agent/proto.h"
#include "p11agent/tunnel.h"

#define OPEN_TIMEOUT_MS		60000
#define CARD_PROBE_MS		2000	/* looking for a card still out */
#define PROBE_WAIT_MS		10000
#define PROBE_TIMEOUT_MS	6000	/* a registry module that hangs */
#define RESTART_MIN_MS		1000
#define RESTART_MAX_MS		60000
#define PIN_MAX_LEN		256
#define PIN_ENV_MAX		(64 + PIN_MAX_LEN + 2)	/* NAME=PIN */

static int
same_module(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static const char *
module_name(const struct module_rt *s)
{
	if (s->module != NULL)
		return s->module;
	return s->registry_name ? s->registry_name : "p11-kit registry";
}

/* ---- PINs from the environment: for the helpers only */

static void
pin_env_free(struct agent *a)
{
	int	 i;

	for (i = 0; i < a->npin_env; i++)
		identity_pin_kv_free(a->pin_env[i]);
	free(a->pin_env);
	a->pin_env = NULL;
	a->npin_env = 0;
}

/* A locked "NAME=VALUE" buffer; NULL when out of memory. */
static char *
pin_kv_new(const char *name, const char *val, size_t len)
{
	char	*kv;

	if ((kv = calloc(1, PIN_ENV_MAX)) == NULL)
		return NULL;
	if (mlock(kv, PIN_ENV_MAX) == -1)
		log_debug("mlock: %s (the PIN may be swapped)",
		    strerror(errno));
	snprintf(kv, PIN_ENV_MAX, "%s=%.*s", name, (int)len, val);
	return kv;
}

void
identity_pin_kv_free(char *kv)
{
	if (kv == NULL)
		return;
	OPENSSL_cleanse(kv, PIN_ENV_MAX);
	munlock(kv, PIN_ENV_MAX);
	free(kv);
}

static int
pin_env_has(struct agent *a, const char *name)
{
	size_t	 len = strlen(name);
	int	 i;

	for (i = 0; i < a->npin_env; i++)
		if (strncmp(a->pin_env[i], name, len) == 0 &&
		    a->pin_env[i][len] == '=')
			return 1;
	return 0;
}

static int
pin_env_add(struct agent *a, char *kv)
{
	char	**v;

	if ((v = reallocarray(a->pin_env, a->npin_env + 2,
	    sizeof(*v))) == NULL) {
		identity_pin_kv_free(kv);
		return P11A_ERR_NOMEM;
	}
	a->pin_env = v;
	v[a->npin_env++] = kv;
	v[a->npin_env] = NULL;
	return 0;
}

/* Moves one env:NAME PIN into a locked buffer and out of the environment. */
static int
pin_env_take(struct agent *a, const char *name)
{
	char	*kv, *val;

	if (pin_env_has(a, name))
		return 0;	/* two identities, one variable */
	if ((val = getenv(name)) == NULL)
		return 0;	/* the helper will say it is not set */
	if (strlen(name) + strlen(val) + 2 > PIN_ENV_MAX) {
		log_err("pin = env:%s: the value is longer than 256 bytes",
		    name);
		return P11A_ERR_PIN_SOURCE;
	}
	if ((kv = pin_kv_new(name, val, strlen(val))) == NULL)
		return P11A_ERR_NOMEM;
	/* the bytes of the original environment too (/proc/PID/environ) */
	OPENSSL_cleanse(val, strlen(val));
	unsetenv(name);
	return pin_env_add(a, kv);
}

/* The fd of "fd:N", or -1. */
static int
pin_fd_number(const char *source)
{
	char	*end;
	long	 n;

	if (strncmp(source, "fd:", 3) != 0 || source[3] < '0' ||
	    source[3] > '9')
		return -1;
	errno = 0;
	n = strtol(source + 3, &end, 10);
	if (errno != 0 || *end != '\0' || n < 3 || n > 65535)
		return -1;
	return (int)n;
}

/* Reads one PIN line (at most 256 bytes and a newline) from fd. */
static int
pin_fd_read(int fd, char *buf, size_t bufsz, size_t *lenp, const char *who)
{
	ssize_t	 n;
	size_t	 len = 0;

	while (len < bufsz && (len == 0 || buf[len - 1] != '\n')) {
		if ((n = read(fd, buf + len, bufsz - len)) == -1 &&
		    errno == EINTR)
			continue;
		if (n == -1) {
			log_err("%s: cannot read file descriptor %d: %s "
			    "(is it open? e.g. %d<FILE)", who, fd,
			    strerror(errno), fd);
			return P11A_ERR_PIN_SOURCE;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len == 0 || len > PIN_MAX_LEN) {
		log_err("%s: file descriptor %d %s", who, fd, len == 0 ?
		    "gave no PIN (end of file before any data)" :
		    "gave a PIN longer than 256 bytes");
		return P11A_ERR_PIN_SOURCE;
	}
	*lenp = len;
	return 0;
}

int
identity_pin_fd(const char *source, const char *who, char **kvp,
    char **srcp)
{
	char	 buf[PIN_MAX_LEN + 2], name[32], *kv = NULL, *src = NULL;
	size_t	 len;
	int	 fd, r;

	if ((fd = pin_fd_number(source)) == -1) {
		log_err("%s: '%s' is not fd:N with N >= 3", who, source);
		return P11A_ERR_PIN_SOURCE;
	}
	snprintf(name, sizeof(name), "P11AGENT_PIN_FD_%d", fd);
	r = pin_fd_read(fd, buf, sizeof(buf), &len, who);
	(void)close(fd);
	if (r != 0)
		goto out;
	if ((kv = pin_kv_new(name, buf, len)) == NULL ||
	    asprintf(&src, "env:%s", name) == -1) {
		src = NULL;
		r = P11A_ERR_NOMEM;
		goto out;
	}
	*kvp = kv;
	*srcp = src;
	kv = src = NULL;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	identity_pin_kv_free(kv);
	free(src);
	return r;
}

/* pin = fd:N: read once, then an env: PIN under P11AGENT_PIN_FD_N. */
static int
pin_fd_take(struct agent *a, struct cfg_identity *c)
{
	char	 who[128], name[32], *kv = NULL;
	int	 r;

	snprintf(name, sizeof(name), "P11AGENT_PIN_FD_%d",
	    pin_fd_number(c->pin));
	if (pin_env_has(a, name))
		return asprintf(&c->pin_src, "env:%s", name) == -1 ?
		    (c->pin_src = NULL, P11A_ERR_NOMEM) : 0;
	snprintf(who, sizeof(who), "identity %s: pin = %s", c->name, c->pin);
	if ((r = identity_pin_fd(c->pin, who, &kv, &c->pin_src)) != 0)
		return r;
	return pin_env_add(a, kv);
}

int
identity_take_env_pins(struct agent *a)
{
	struct cfg_identity	*c;
	int			 r;

	for (c = a->cfg->identities; c != NULL; c = c->next) {
		if (c->pin == NULL)
			continue;
		if (strncmp(c->pin, "env:", 4) == 0 &&
		    (r = pin_env_take(a, c->pin + 4)) != 0)
			return r;
		if (strncmp(c->pin, "fd:", 3) == 0 &&
		    (r = pin_fd_take(a, c)) != 0)
			return r;
	}
	return 0;
}

/* The PIN source the helper is given: env:NAME for fd:N. */
static const char *
pin_source(const struct cfg_identity *c)
{
	return c->pin_src != NULL ? c->pin_src : c->pin;
}

static void
put_open(struct pbuf *req, const struct cfg_identity *c)
{
	helper_put_open(req, c->key, c->cert, pin_source(c));
	helper_put_open_login(req, c->pinentry, c->pin_cache,
	    c->pin_per_handshake);
}

/* The PIN variables of the identities on this module, for its helper. */
static char **
pin_env_for(struct agent *a, const char *module)
{
	struct cfg_identity	*c;
	const char		 *src;
	char			**env;
	size_t			  n = 0, len;
	int			  i;

	if ((env = calloc(a->npin_env + 1, sizeof(*env))) == NULL)
		return NULL;
	for (i = 0; i < a->npin_env; i++)
		for (c = a->cfg->identities; c != NULL; c = c->next) {
			src = pin_source(c);
			if (src == NULL || strncmp(src, "env:", 4) != 0 ||
			    !same_module(c->module, module))
				continue;
			len = strlen(src + 4);
			if (strncmp(a->pin_env[i], src + 4, len) == 0 &&
			    a->pin_env[i][len] == '=') {
				env[n++] = a->pin_env[i];
				break;
			}
		}
	return env;
}

/* ---- modules and their helpers */

static int	watch_module(struct module_rt *);
static void	module_remove(struct module_rt *);
static void	module_retire(struct module_rt *);

/*
 * The helper for a module path, for a registry module (name), or the
 * registry's lister (both NULL); started if there is none yet.
 */
static struct module_rt *
module_for(struct agent *a, const char *module, const char *name)
{
	struct module_rt	**mods, *s = NULL;
	struct helper_opts	  o;
	char			**env = NULL, err[1024];
	int			  i, r;

	for (i = 0; i < a->nmods; i++)
		if (same_module(a->mods[i]->module, module) &&
		    same_module(a->mods[i]->registry_name, name)) {
			/* retired in this batch, wanted again: it stays */
			a->mods[i]->retiring = 0;
			return a->mods[i];
		}
	/* each module_rt is its own allocation: identities point to it */
	mods = reallocarray(a->mods, a->nmods + 1, sizeof(*mods));
	if (mods == NULL)
		goto nomem;
	a->mods = mods;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (module != NULL && (s->module = strdup(module)) == NULL) ||
	    (name != NULL && (s->registry_name = strdup(name)) == NULL) ||
	    (env = pin_env_for(a, module)) == NULL)
		goto nomem;
	s->agent = a;
	memset(&o, 0, sizeof(o));
	o.module = module;
	o.registry_name = name;
	o.allow = a->cfg->agent.module_allow;
	o.nallow = a->cfg->agent.nmodule_allow;
	o.env = env;
	o.token_poll_ms = a->cfg->agent.token_poll_ms;
	r = helper_start(&o, &s->helper, err, sizeof(err));
	free(env);	/* the strings are the agent's; the helper copied */
	if (r != 0) {
		log_err("%s (for %s)", err, module ? module : name ? name :
		    "the p11-kit registry");
		goto fail;
	}
	s->backoff_ms = RESTART_MIN_MS;
	helper_set_event_cb(s->helper, identity_event, s);
	a->mods[a->nmods++] = s;
	if (watch_module(s) != 0) {
		module_remove(s);
		return NULL;
	}
	return s;
nomem:
	log_err("out of memory");
fail:
	if (s != NULL) {
		free(s->module);
		free(s->registry_name);
	}
	free(s);
	return NULL;
}

static int
module_in_use(struct agent *a, struct module_rt *s)
{
	struct identity	*id;

	for (id = a->identities; id != NULL; id = id->next)
		if (id->mod == s)
			return 1;
	return 0;
}

/* Ends a helper and forgets it; never from inside its own callbacks. */
static void
module_remove(struct module_rt *s)
{
	struct agent	*a = s->agent;
	pid_t		 pid;
	int		 i;

	for (i = 0; i < a->nmods && a->mods[i] != s; i++)
		;
	if (i == a->nmods)
		return;
	memmove(&a->mods[i], &a->mods[i + 1], (a->nmods - i - 1) *
	    sizeof(*a->mods));
	a->nmods--;
	loop_set(&s->w, 0);
	loop_set(&s->pw, 0);
	pid = helper_pid(s->helper);
	log_debug("token helper for %s (pid %d): no identity needs it; "
	    "stopping it", module_name(s), (int)pid);
	if (helper_discard(s->helper))
		log_debug("token helper (pid %d), not needed, is gone",
		    (int)pid);
	free(s->module);
	free(s->registry_name);
	free(s);
}

static void
module_remove_deferred(void *arg)
{
	struct module_rt	*s = arg;

	s->remove_queued = 0;
	if (s->retiring)	/* not taken back meanwhile (module_for) */
		module_remove(s);
}

/* Removes the module after the current batch of events, once. */
static void
module_retire(struct module_rt *s)
{
	s->retiring = 1;
	if (s->remove_queued)
		return;
	s->remove_queued = 1;
	loop_defer(module_remove_deferred, s);
}

/* What a reload compares: a renewed certificate file is a new identity. */
static void
cert_stat(const char *path, struct stat *st)
{
	if (stat(path, st) == -1)
		memset(st, 0, sizeof(*st));
}

static int
cert_file_same(const struct identity *id, const struct cfg_identity *c)
{
	struct stat	 st;

	if (c->cert == NULL || strncmp(c->cert, "pkcs11:", 7) == 0)
		return 1;
	cert_stat(c->cert, &st);
	return st.st_ino == id->cert_st.st_ino &&
	    st.st_dev == id->cert_st.st_dev &&
	    st.st_size == id->cert_st.st_size &&
	    st.st_mtim.tv_sec == id->cert_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == id->cert_st.st_mtim.tv_nsec;
}

static X509 *
cert_from_file(const char *path, char *err, size_t errlen)
{
	FILE	*fp;
	X509	*x;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if ((x = PEM_read_X509(fp, NULL, NULL, NULL)) == NULL)
		snprintf(err, errlen, "no PEM certificate in it");
	fclose(fp);
	return x;
}

/*
 * Turns an OPEN_OK reply into the identity's key: the certificate from
 * the token or from cert = FILE, and the EVP_PKEY signed by the helper.
 */
static int
open_finish(struct identity *id, struct pbuf *reply,
    struct helper_identity *hid, EVP_PKEY **pkey, char *err, size_t errlen)
{
	struct cfg_identity	*c = id->cfg;
	int			 i, r;

	memset(hid, 0, sizeof(*hid));
	if ((r = helper_parse_open(reply, hid)) != 0) {
		snprintf(err, errlen, "%s", r == P11A_ERR_NO_CERT ?
		    "the certificate on the token is not valid DER X.509" :
		    "malformed reply from the token helper");
		goto fail;
	}
	if (c->cert != NULL && strncmp(c->cert, "pkcs11:", 7) != 0) {
		cert_stat(c->cert, &id->cert_st);	/* a reload looks */
		X509_free(hid->cert);
		if ((hid->cert = cert_from_file(c->cert, err, errlen)) ==
		    NULL) {
			r = P11A_ERR_NO_CERT;
			goto fail;
		}
	}
	/* the certificate presented must hold the key's public key, which
	 * the token's certificates for the key show */
	for (i = 0; hid->cert != NULL && i < hid->nkey_certs; i++)
		if (X509_get0_pubkey(hid->key_certs[i]) == NULL ||
		    EVP_PKEY_eq(X509_get0_pubkey(hid->cert),
		    X509_get0_pubkey(hid->key_certs[i])) != 1)
			break;
	if (hid->cert != NULL && i < hid->nkey_certs) {
		snprintf(err, errlen, "cert = %s: its public key is not the "
		    "key's (the token's certificate for the key has another)",
		    c->cert);
		r = P11A_ERR_NO_CERT;
		goto fail;
	}
	if ((r = rkey_new(id->mod->helper, hid, c->sign_timeout * 1000,
	    pkey)) != 0) {
		snprintf(err, errlen, "%s", r == P11A_ERR_NO_CERT ? "the "
		    "certificate is not for a key of this type" :
		    p11a_strerror(r));
		goto fail;
	}
	return 0;
fail:
	helper_identity_clear(hid);
	return r;
}

/* The token the key was opened on (a policy's token-label, the audit
 * trail, status). */
static void
set_token(struct identity *id, const struct helper_identity *hid)
{
	if (hid->label[0] == '\0' && hid->serial[0] == '\0')
		return;
	snprintf(id->tok_label, sizeof(id->tok_label), "%s", hid->label);
	snprintf(id->tok_serial, sizeof(id->tok_serial), "%s", hid->serial);
}

/* An identity could not be opened: logged, and the first kept for a
 * reload's answer. */
static void
open_error(struct agent *a, const struct cfg_identity *c, const char *why)
{
	log_err("%s:%d: [identity %s] key: %s", a->cfg->path, c->key_line,
	    c->name, why);
	if (!a->open_failed)
		snprintf(a->open_err, sizeof(a->open_err), "%s:%d: [identity "
		    "%s] key: %s", a->cfg->path, c->key_line, c->name, why);
	a->open_failed = 1;
}

/* An identity has its answer; the last one ends the start-up. */
static void
start_settled(struct agent *a)
{
	int	 i;

	if (--a->opening != 0)
		return;
	/* registry modules that hold none of our tokens: let them go */
	for (i = 0; i < a->nmods; i++)
		if (a->mods[i]->module == NULL &&
		    !module_in_use(a, a->mods[i]))
			module_retire(a->mods[i]);
	if (a->opened_cb != NULL && !a->stopping)
		a->opened_cb(a, a->open_failed);
}

/* The answer to an identity's first OPEN. */
static void
opened(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct identity		*id = arg;
	struct agent		*a = id->agent;
	struct cfg_identity	*c = id->cfg;
	char			 msg[512];

	if (err == 0 && open_finish(id, reply, &id->hid, &id->pkey, msg,
	    sizeof(msg)) != 0) {
		err = P11A_ERR_NO_CERT;
		why = msg;
	}
	if (err != 0)
		open_error(a, c, why ? why : p11a_strerror(err));
	else {
		set_token(id, &id->hid);
		log_debug("identity %s: open on %s", c->name,
		    module_name(id->mod));
	}
	start_settled(a);
}

/* Sends the identity's OPEN to the helper of its module, id->mod. */
static int
open_send(struct agent *a, struct identity *id)
{
	struct cfg_identity	*c = id->cfg;
	struct pbuf		 req;
	int			 r;

	pbuf_init(&req);
	put_open(&req, c);
	r = helper_request(id->mod->helper, PROTO_OPEN, &req, OPEN_TIMEOUT_MS,
	    opened, id);
	pbuf_clear(&req);
	if (r != 0)
		log_err_code(r, "identity %s: cannot ask its token helper",
		    c->name);
	return r;
}



/* ---- registry mode: every registered module in a helper of its own */

static void
identity_failed(struct identity *id, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
identity_failed(struct identity *id, const char *fmt, ...)
{
	struct agent	*a = id->agent;
	char		 msg[2048];
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	open_error(a, id->cfg, msg);
	start_settled(a);
}

static void
hits_free(struct identity *id)
{
	int	 i;

	for (i = 0; i < id->nhits; i++) {
		free(id->hits[i].uri);
		free(id->hits[i].desc);
	}
	free(id->hits);
	id->hits = NULL;
	id->nhits = 0;
}

/*
 * Does the key URI name its token (token= or serial= in the path, the
 * part before '?')?  Then a module that did not answer cannot hold
 * another token the URI means, unless two tokens share that label.
 */
static int
uri_names_token(const char *uri)
{
	const char	*p = uri + strlen("pkcs11:");
	size_t		 n;

	while (*p != '\0' && *p != '?') {
		n = strcspn(p, ";?");
		if ((n > 6 && strncmp(p, "token=", 6) == 0) ||
		    (n > 7 && strncmp(p, "serial=", 7) == 0))
			return 1;
		p += n;
		if (*p == ';')
			p++;
	}
	return 0;
}

/* Every module answered the PROBE: exactly one token, or refuse. */
static void
probe_decide(struct identity *id)
{
	char	 list[1536] = "";
	size_t	 n;
	int	 i;

	if (id->nhits == 1 && id->probe_unknown > 0 &&
	    !uri_names_token(id->cfg->key)) {
		identity_failed(id, "%s: %s in %s matches, but %d module%s "
		    "did not say whether %s a token this URI means too, and a "
		    "PIN goes to one card only; add token= or serial= to the "
		    "URI, or set module = PATH%s", id->cfg->key,
		    id->hits[0].desc, module_name(id->hits[0].mod),
		    id->probe_unknown, id->probe_unknown == 1 ? "" : "s",
		    id->probe_unknown == 1 ? "it holds" : "they hold",
		    id->probe_err);
		hits_free(id);
		return;
	}
	if (id->agent->stopping) {
		/* the agent is stopping: no login now, on any token */
		hits_free(id);
		start_settled(id->agent);
		return;
	}
	if (id->nhits == 1) {
		id->mod = id->hits[0].mod;
		log_info("identity %s: %s in %s", id->cfg->name,
		    id->hits[0].desc, module_name(id->mod));
		hits_free(id);
		if (open_send(id->agent, id) != 0)
			identity_failed(id, "cannot ask its token helper");
		return;
	}
	for (i = 0; i < id->nhits; i++) {
		n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "; %s in %s: %s",
		    id->hits[i].desc, module_name(id->hits[i].mod),
		    id->hits[i].uri);
	}
	if (id->nhits == 0)
		identity_failed(id, "%s: no token in the p11-kit registry "
		    "matches%s; run 'p11agent tokens' to see them",
		    id->cfg->key, id->probe_err);
	else
		identity_failed(id, "%s: %d tokens could be meant and a PIN "
		    "goes to one card only; add token= or serial= to the "
		    "URI%s%s", id->cfg->key, id->nhits, list, id->probe_err);
	hits_free(id);
}

struct probe_req {
	struct identity		*id;
	struct module_rt	*mod;
};

static void
probed(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct probe_req	*pr = arg;
	struct identity		*id = pr->id;
	struct helper_probe	 p;
	struct probe_hit	*h;
	char			 msg[1024], *cut;
	size_t			 n, len, key;
	uint32_t		 i;

	memset(&p, 0, sizeof(p));
	if (err == 0 && (err = helper_parse_probe(reply, &p)) != 0)
		why = "malformed reply";
	if (err != 0 && err != P11A_ERR_NO_TOKEN)
		id->probe_unknown++;	/* it may hold a token, or not */
	if (err == P11A_ERR_TIMEOUT)
		log_warn("token helper for %s: no answer to the lookup of "
		    "identity %s within %d ms (the module hangs?); going on "
		    "without it", module_name(pr->mod), id->cfg->name,
		    PROBE_TIMEOUT_MS);
	if (err != 0) {
		/* "KEY: no token matches; ...; run 'p11agent tokens'...":
		 * the key and the advice are said once, by probe_decide */
		snprintf(msg, sizeof(msg), "%s", err == P11A_ERR_TIMEOUT ?
		    "no answer in time, it may hang" : why ? why :
		    p11a_strerror(err));
		if ((cut = strstr(msg, "; run 'p11agent tokens'")) != NULL)
			*cut = '\0';
		key = strlen(id->cfg->key);
		n = strncmp(msg, id->cfg->key, key) == 0 &&
		    strncmp(msg + key, ": ", 2) == 0 ? key + 2 : 0;
		len = strlen(id->probe_err);
		snprintf(id->probe_err + len, sizeof(id->probe_err) - len,
		    "; module %s: %s", module_name(pr->mod), msg + n);
	} else if ((h = reallocarray(id->hits, id->nhits + p.n,
	    sizeof(*h))) != NULL) {
		log_debug("token helper for %s: %u candidates for identity %s",
		    module_name(pr->mod), p.n, id->cfg->name);
		id->hits = h;
		for (i = 0; i < p.n; i++) {
			h = &id->hits[id->nhits++];
			h->mod = pr->mod;
			h->uri = p.tokens[i].uri;
			h->desc = p.tokens[i].desc;
			p.tokens[i].uri = p.tokens[i].desc = NULL;
		}
	}
	helper_probe_clear(&p);
	free(pr);
	if (--id->probes_left == 0)
		probe_decide(id);
}

static int
probe_send(struct identity *id, struct module_rt *s)
{
	struct probe_req	*pr;
	struct pbuf		 req;
	int			 r;

	if ((pr = calloc(1, sizeof(*pr))) == NULL)
		return P11A_ERR_NOMEM;
	pr->id = id;
	pr->mod = s;
	pbuf_init(&req);
	helper_put_probe(&req, id->cfg->key);
	r = helper_request(s->helper, PROTO_PROBE, &req, PROBE_TIMEOUT_MS,
	    probed, pr);
	pbuf_clear(&req);
	if (r != 0)
		free(pr);
	return r;
}

/* The registry's modules are known: a helper and a PROBE for each. */
static void
modules_listed(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct module_rt	*lister = arg, *s;
	struct agent		*a = lister->agent;
	struct helper_modules	 m;
	struct identity		*id;
	struct module_rt	**mods = NULL;
	uint32_t		 i, n = 0;

	memset(&m, 0, sizeof(m));
	module_retire(lister);
	if (err == 0 && (err = helper_parse_modules(reply, &m)) != 0)
		why = "malformed reply";
	if (err == 0 && m.n > 0 &&
	    (mods = calloc(m.n, sizeof(*mods))) == NULL)
		err = P11A_ERR_NOMEM;
	for (i = 0; err == 0 && i < m.n; i++)
		if (m.mods[i].name != NULL &&
		    (s = module_for(a, NULL, m.mods[i].name)) != NULL)
			mods[n++] = s;
	if (err == 0)
		log_debug("registry: %u modules, each in a helper of its own",
		    n);
	for (id = a->identities; id != NULL; id = id->next) {
		/* (a retired one is not of this round: not counted in it) */
		if (id->cfg->module != NULL || id->mod != NULL || id->retired)
			continue;
		if (err != 0) {
			identity_failed(id, "the p11-kit registry: %s",
			    why ? why : p11a_strerror(err));
			continue;
		}
		if (n == 0) {
			identity_failed(id, "no PKCS#11 module is registered "
			    "with p11-kit (see p11-kit list-modules); set "
			    "module = PATH");
			continue;
		}
		id->probes_left = 0;
		for (i = 0; i < n; i++)
			if (probe_send(id, mods[i]) == 0)
				id->probes_left++;
		if (id->probes_left == 0)
			identity_failed(id, "cannot ask the modules' helpers");
	}
	free(mods);
	helper_modules_clear(&m);
}

static int
registry_start(struct agent *a)
{
	struct module_rt	*lister;
	struct pbuf		 req;
	int			 r;

	if ((lister = module_for(a, NULL, NULL)) == NULL)
		return P11A_ERR_HELPER;
	pbuf_init(&req);
	r = helper_request(lister->helper, PROTO_MODULES, &req,
	    PROBE_TIMEOUT_MS, modules_listed, lister);
	pbuf_clear(&req);
	return r;
}

int
identity_open_start(struct agent *a, void (*cb)(struct agent *, int))
{
	struct cfg_tunnel	*t;
	struct identity		*id, **tail = &a->identities;
	int			 r, registry = 0;

	a->opened_cb = cb;
	a->opening = 1;		/* until every request is out */
	a->open_failed = 0;
	a->open_err[0] = '\0';
	while (*tail != NULL)	/* a reload adds to those it keeps */
		tail = &(*tail)->next;
	/* once a request is out, every outcome goes through start_settled */
	for (t = a->cfg->tunnels; t != NULL; t = t->next) {
		if (identity_find(a, t->identity) != NULL)
			continue;
		if ((id = calloc(1, sizeof(*id))) == NULL) {
			log_err("out of memory");
			a->open_failed = 1;
			snprintf(a->open_err, sizeof(a->open_err), "out of "
			    "memory");
			break;
		}
		id->agent = a;
		id->cfg = t->identity;
		id->fresh = a->reloading;
		*tail = id;
		tail = &id->next;
		a->opening++;
		if (id->cfg->module == NULL) {
			registry = 1;	/* found by the modules' PROBEs */
			continue;
		}
		if ((id->mod = module_for(a, id->cfg->module, NULL)) != NULL &&
		    (id->mod->dead || id->mod->given_up)) {
			open_error(a, id->cfg, id->mod->given_up ? "the token "
			    "helper of its module was stopped after a refused "
			    "PIN or a failed start (see the log); restart "
			    "p11agent to use this configuration" : "the token "
			    "helper of its module is restarting; try again in "
			    "a few seconds");
			a->opening--;
		} else if (id->mod == NULL || open_send(a, id) != 0) {
			open_error(a, id->cfg, "its token helper cannot be "
			    "started or asked (see the log)");
			a->opening--;
		}
	}
	if (registry && (r = registry_start(a)) != 0)
		for (id = a->identities; id != NULL; id = id->next)
			if (id->cfg->module == NULL && id->mod == NULL &&
			    !id->retired && id->probes_left == 0)
				identity_failed(id, "cannot look into the "
				    "p11-kit registry: %s", p11a_strerror(r));
	start_settled(a);
	return 0;
}

struct identity *
identity_find(struct agent *a, struct cfg_identity *c)
{
	struct identity	*id;

	for (id = a->identities; id != NULL; id = id->next)
		if (id->cfg == c)
			return id;
	return NULL;
}

static void	retired_to_end(struct agent *);

static void
identity_free(struct identity *id)
{
	hits_free(id);
	EVP_PKEY_free(id->pkey);
	helper_identity_clear(&id->hid);
	free(id);
}

/* ---- reload (agent/reload.c) */

/* What the token side of an identity is: the same key through the same
 * module with the same PIN source and login keeps its helper and login. */
static int
token_side_same(const struct cfg_identity *a, const struct cfg_identity *b)
{
	return config_str_same(a->key, b->key) && config_str_same(a->cert, b->cert) &&
	    config_str_same(a->pin, b->pin) && config_str_same(a->module, b->module) &&
	    config_str_same(a->pinentry, b->pinentry) &&
	    a->pin_cache == b->pin_cache && a->sign_timeout == b->sign_timeout &&
	    a->pin_per_handshake == b->pin_per_handshake;
}

static int
cfg_in_use(const struct config *cfg, const struct cfg_identity *c)
{
	const struct cfg_tunnel	*t;

	for (t = cfg->tunnels; t != NULL; t = t->next)
		if (t->identity == c)
			return 1;
	return 0;
}

/* pin = env: and fd: PINs are read when the agent starts, never later. */
static int
pin_known(struct agent *a, struct cfg_identity *c, char *err, size_t errlen)
{
	struct identity	*id;

	if (c->pin == NULL)
		return 0;
	if (strncmp(c->pin, "fd:", 3) == 0) {
		for (id = a->identities; id != NULL; id = id->next)
			if (!id->fresh && config_str_same(id->cfg->pin, c->pin) &&
			    id->cfg->pin_src != NULL)
				return (c->pin_src = strdup(id->cfg->pin_src))
				    == NULL ? P11A_ERR_NOMEM : 0;
	} else if (strncmp(c->pin, "env:", 4) != 0 ||
	    pin_env_has(a, c->pin + 4))
		return 0;
	snprintf(err, errlen, "%s:%d: [identity %s] pin: %s is read only when "
	    "the agent starts; restart p11agent to use it, or give another "
	    "PIN source", a->cfg->path, c->line, c->name, c->pin);
	return P11A_ERR_CONFIG;
}

int
identity_reload_begin(struct agent *a, char *err, size_t errlen)
{
	struct cfg_identity	*c;
	struct identity		*id;
	int			 r;

	for (c = a->cfg->identities; c != NULL; c = c->next) {
		if (!cfg_in_use(a->cfg, c))
			continue;
		for (id = a->identities; id != NULL; id = id->next)
			if (!id->retired && !id->kept &&
			    token_side_same(id->cfg, c) &&
			    cert_file_same(id, c))
				break;
		if (id == NULL) {
			if ((r = pin_known(a, c, err, errlen)) != 0)
				return r;
			continue;
		}
		if (id->cfg->pin_src != NULL &&
		    (c->pin_src = strdup(id->cfg->pin_src)) == NULL)
			return P11A_ERR_NOMEM;
		id->prev_cfg = id->cfg;
		id->cfg = c;
		id->kept = 1;
	}
	return 0;
}

/* Ends the helpers no identity needs any more, once none of them has
 * work of its own in flight (a restart's reopens, a reinsertion). */
static void
modules_unused_retire(struct agent *a)
{
	struct module_rt	*s;
	int			 i;

	a->mods_check = 0;
	for (i = 0; i < a->nmods; i++) {
		s = a->mods[i];
		if (module_in_use(a, s) || s->retiring)
			continue;
		if (s->reopening || s->reinserting || a->opening ||
		    a->reloading)
			a->mods_check = 1;	/* again at a later tick */
		else
			module_retire(s);
	}
}

void
identity_reload_abort(struct agent *a)
{
	struct identity	*id;

	/* the new ones retire: a request of a helper restart may still
	 * point at one; identity_retired_free() frees them when none does */
	for (id = a->identities; id != NULL; id = id->next) {
		if (id->fresh) {
			id->fresh = 0;
			id->retired = 1;
		}
		if (id->kept) {
			id->cfg = id->prev_cfg;
			id->prev_cfg = NULL;
			id->kept = 0;
		}
	}
	retired_to_end(a);
	a->mods_check = 1;
}

/* The retired identities go to the end of the list: status lists the
 * others and stops at the first retired one. */
static void
retired_to_end(struct agent *a)
{
	struct identity	**pp = &a->identities, *id, *gone = NULL, **gt = &gone;

	while ((id = *pp) != NULL) {
		if (id->retired) {
			*pp = id->next;
			*gt = id;
			gt = &id->next;
			continue;
		}
		pp = &id->next;
	}
	*gt = NULL;
	*pp = gone;
}

int
identity_reload_commit(struct agent *a)
{
	struct identity	*id;
	int		 n = 0;

	for (id = a->identities; id != NULL; id = id->next) {
		if (!id->kept && !id->fresh && !id->retired) {
			log_info("identity %s: replaced or removed by the "
			    "reload; it goes after its last connection",
			    id->cfg->name);
			id->retired = 1;
			n++;
		}
		id->kept = id->fresh = 0;
		id->prev_cfg = NULL;
	}
	retired_to_end(a);
	return n;
}

int
identity_retired_free(struct agent *a)
{
	struct identity		**pp = &a->identities, *id;
	struct tunnel_rt	*rt;
	int			 left = 0;

	/* not while identities open: PROBEs and their hits hold modules
	 * that no identity holds yet */
	if (a->opening || a->reloading) {
		for (id = a->identities; id != NULL; id = id->next)
			left += id->retired;
		return left;
	}
	while ((id = *pp) != NULL) {
		for (rt = a->tunnels; id->retired && rt != NULL &&
		    rt->id != id; rt = rt->next)
			;
		/* a restart's reopen or a card probe may point at it */
		if (!id->retired || rt != NULL || id->probing ||
		    (id->mod != NULL && id->mod->reopening)) {
			left += id->retired;
			pp = &id->next;
			continue;
		}
		*pp = id->next;
		log_debug("identity %s: retired, its last tunnel gone",
		    id->cfg->name);
		identity_free(id);
		a->mods_check = 1;
	}
	if (a->mods_check)
		modules_unused_retire(a);
	return left;
}

void
identity_close_all(struct agent *a)
{
	struct identity	*id;
	struct helper	**hs;
	int		 i;

	a->opened_cb = NULL;
	/* the helpers first: requests in flight fail while ids exist;
	 * they finalise their modules at once, not one by one */
	for (i = 0; i < a->nmods; i++) {
		loop_set(&a->mods[i]->w, 0);	/* before the fds close */
		loop_set(&a->mods[i]->pw, 0);
	}
	if ((hs = calloc(a->nmods > 0 ? a->nmods : 1, sizeof(*hs))) != NULL) {
		for (i = 0; i < a->nmods; i++)
			hs[i] = a->mods[i]->helper;
		helper_stop_all(hs, a->nmods);
		free(hs);
	}
	for (i = 0; i < a->nmods; i++) {
		helper_free(a->mods[i]->helper);
		free(a->mods[i]->module);
		free(a->mods[i]->registry_name);
		free(a->mods[i]);
	}
	free(a->mods);
	a->mods = NULL;
	a->nmods = 0;
	while ((id = a->identities) != NULL) {
		a->identities = id->next;
		identity_free(id);
	}
	pin_env_free(a);
	rkey_cleanup();
}

/* ---- keeping helpers alive */

static void	reopen_uri(const struct identity *, char *, size_t);
static void	reinserted(struct identity *);
static int	other_card(const struct identity *, int);
static void	card_name(const char *, const char *, char *, size_t);
static void	reinsert_deferred(void *);
static void	reopen_uri(const struct identity *, char *, size_t);

static void
module_died(struct module_rt *s, const char *why)
{
	struct identity	*id;

	if (s->dead)
		return;
	s->dead = 1;
	s->reopening = 0;
	loop_set(&s->w, 0);
	loop_set(&s->pw, 0);
	/* its logins are over: so are the TLS sessions they made */
	for (id = s->agent->identities; id != NULL; id = id->next)
		if (id->mod == s)
			tunnels_flush_sessions(s->agent, id, "its token helper "
			    "is gone (a new one logs in again)");
	if (!module_in_use(s->agent, s)) {
		log_warn("token helper for %s (pid %d) %s", module_name(s),
		    (int)helper_pid(s->helper), why);
		return;		/* none of our identities is on it */
	}
	if (s->given_up) {
		log_err("token helper for %s (pid %d) %s; not restarting it: "
		    "fix its identities as said above, then run 'p11agent "
		    "unlock' (or restart p11agent)",
		    module_name(s), (int)helper_pid(s->helper), why);
		return;
	}
	s->restart_at = clock_now_ms() + s->backoff_ms;
	log_err("token helper for %s (pid %d) %s; restarting it in %d ms",
	    module_name(s), (int)helper_pid(s->helper), why, s->backoff_ms);
	if (s->backoff_ms < RESTART_MAX_MS)
		s->backoff_ms *= 2;
}

static void
on_helper(struct watch *w, uint32_t events)
{
	struct module_rt	*s = w->arg;

	if (helper_read(s->helper) < 0)
		module_died(s, "exited");
}

/* The process ended, even if something else still holds its channel. */
static void
on_helper_exit(struct watch *w, uint32_t events)
{
	struct module_rt	*s = w->arg;

	helper_fail_all(s->helper, P11A_ERR_HELPER);
	module_died(s, "exited");
}

static int
watch_module(struct module_rt *s)
{
	if (s->w.cb != NULL && s->w.events != 0)
		return 0;	/* already watched */
	loop_watch_init(&s->w, helper_fd(s->helper), on_helper, s);
	loop_watch_init(&s->pw, helper_pidfd(s->helper), on_helper_exit, s);
	if (loop_set(&s->w, EPOLLIN) != 0 ||
	    (s->pw.fd != -1 && loop_set(&s->pw, EPOLLIN) != 0))
		return P11A_ERR_SYSTEM;
	return 0;
}

/* Errors that only the user can fix: retrying could lock the card. */
static int
needs_user(int err)
{
	switch (err) {
	case P11A_ERR_PIN_INCORRECT:
	case P11A_ERR_PIN_LOCKED:
	case P11A_ERR_PIN_FINAL_TRY:
	case P11A_ERR_PIN_SOURCE:
	case P11A_ERR_PERM:
		return 1;
	default:
		return 0;
	}
}

static int
same_cert(X509 *a, X509 *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return X509_cmp(a, b) == 0;
}

static void
subject(X509 *x, char *buf, size_t len)
{
	if (x == NULL)
		snprintf(buf, len, "(none)");
	else
		X509_NAME_oneline(X509_get_subject_name(x), buf, (int)len);
}

/*
 * What changed between the identity as it was and as reopened, or NULL.
 * The handle, key type and capabilities come from the helper; the
 * certificate (and with it the public key) from the token or the file.
 */
static const char	HANDLE_ONLY[] = "its key handle";

static const char *
what_changed(const struct helper_identity *old,
    const struct helper_identity *new)
{
	if (new->keytype != old->keytype)
		return "its key type";
	if (!same_cert(old->cert, new->cert))
		return "its certificate";
	if (EVP_PKEY_eq(X509_get0_pubkey(old->cert),
	    X509_get0_pubkey(new->cert)) != 1)
		return "its public key";
	if (new->caps != old->caps)
		return "its token's signature mechanisms";
	/* the same key under another handle: the helper numbers its keys
	 * in the order they are opened, which a reload changes */
	if (new->handle != old->handle)
		return HANDLE_ONLY;
	return NULL;
}

/*
 * The identity came back different (another card in the reader): take
 * the new key and certificate and rebuild the TLS contexts of its
 * tunnels; 0, or < 0 when it cannot be used (the caller refuses it).
 */
static int
identity_replace(struct identity *id, struct helper_identity *hid,
    EVP_PKEY *pkey, const char *what)
{
	struct helper_identity	 old = id->hid;
	EVP_PKEY		*oldkey = id->pkey;
	char			 was[256], now[256];
	int			 r;

	subject(old.cert, was, sizeof(was));
	subject(hid->cert, now, sizeof(now));
	id->hid = *hid;
	id->pkey = pkey;
	if (what == HANDLE_ONLY) {
		/* new contexts for the new handle; the sessions stay */
		if ((r = tunnels_rebuild_tls(id->agent, id, NULL)) != 0) {
			id->hid = old;
			id->pkey = oldkey;
			return r;
		}
		log_debug("identity %s: open again as key %u (was %u)",
		    id->cfg->name, hid->handle, old.handle);
		helper_identity_clear(&old);
		EVP_PKEY_free(oldkey);
		return 0;
	}
	if ((r = tunnels_rebuild_tls(id->agent, id, "the identity's key or "
	    "certificate changed")) != 0) {
		id->hid = old;
		id->pkey = oldkey;
		tunnels_flush_sessions(id->agent, id, "its token came back with "
		    "a key its tunnels cannot use");
		log_err("identity %s: the token came back with a different "
		    "key (%s changed; certificate was %s, now %s) that its "
		    "tunnels cannot use; refusing it", id->cfg->name, what,
		    was, now);
		return r;
	}
	log_warn("identity %s: the token came back with a different key (%s "
	    "changed; certificate was %s, now %s); its tunnels now use the "
	    "new one", id->cfg->name, what, was, now);
	helper_identity_clear(&old);
	EVP_PKEY_free(oldkey);
	return 0;
}

/* The reply to a re-OPEN after a restart. */
struct reopen {
	struct module_rt	*mod;
	struct identity		*id;
};

static int
reopen_check(struct identity *id, struct pbuf *reply)
{
	struct helper_identity	 hid;
	EVP_PKEY		*pkey = NULL;
	const char		*what;
	char			 err[512];
	int			 r;

	if ((r = open_finish(id, reply, &hid, &pkey, err, sizeof(err))) != 0) {
		log_err("identity %s: cannot open it again: %s",
		    id->cfg->name, err);
		return r;
	}
	/* another card (on-reinsert = any) must be bound by the policies
	 * that were applied to the identity's tunnels */
	if (!policy_rebind_same(id->agent, id, &hid, err, sizeof(err))) {
		log_err("identity %s: the card put in (token '%s' serial %s) "
		    "is not used: %s; restart p11agent to apply the policies "
		    "to it", id->cfg->name, hid.label, hid.serial, err);
		helper_identity_clear(&hid);
		EVP_PKEY_free(pkey);
		return P11A_ERR_TLS;	/* not tried again by itself */
	}
	set_token(id, &hid);
	if ((what = what_changed(&id->hid, &hid)) == NULL) {
		helper_identity_clear(&hid);
		EVP_PKEY_free(pkey);
		return 0;
	}
	if ((r = identity_replace(id, &hid, pkey, what)) == 0)
		return 0;
	helper_identity_clear(&hid);
	EVP_PKEY_free(pkey);
	return r;
}

static int	other_card(const struct identity *, int);

/*
 * A reopen of a card that is still out (another card of the module came
 * back, or the helper was restarted for another reason): marked, and
 * decided when every reopen of this restart has answered (round_done).
 * 1 if so.
 */
static int
still_out(struct identity *id, int err)
{
	if (!id->absent ||
	    (err != P11A_ERR_NO_TOKEN && err != P11A_ERR_TOKEN_ABSENT))
		return 0;
	if (err == P11A_ERR_NO_TOKEN)
		(void)other_card(id, err);
	id->card_wait = 1;
	id->probe_at = clock_now_ms() + CARD_PROBE_MS;
	return 1;
}

/*
 * Every reopen of a restart has answered.  Cards still out while another
 * identity of the helper works: the helper stays for that one, and they
 * are looked for by PROBE.  All out: the helper is replaced with the
 * back-off (a fresh C_Initialize also sees a module's changed slots).
 */
static void
round_done(struct module_rt *s)
{
	struct agent	*a = s->agent;
	struct identity	*id;
	char		 card[96];
	int		 present = 0;

	for (id = a->identities; id != NULL; id = id->next)
		if (id->mod == s && !id->absent && !id->retired)
			present = 1;
	for (id = a->identities; id != NULL; id = id->next) {
		if (id->mod != s || !id->card_wait)
			continue;
		if (!present) {
			id->card_wait = 0;
			continue;
		}
		card_name(id->tok_label, id->tok_serial, card, sizeof(card));
		log_info("identity %s: token %s is still out; the other "
		    "identities of its module go on, and p11agent looks for "
		    "the card every %d s", id->cfg->name, card,
		    CARD_PROBE_MS / 1000);
	}
	if (!present) {
		helper_kill(s->helper);
		return;
	}
	log_info("token helper for %s is back", module_name(s));
	s->backoff_ms = RESTART_MIN_MS;
}

static void
reopened(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct reopen	*ro = arg;
	struct identity	*id = ro->id;

	if (err == P11A_ERR_HELPER || err == P11A_ERR_CLOSED)
		;		/* the helper died meanwhile: said elsewhere */
	else if (!ro->mod->dead && still_out(id, err)) {
		if (--ro->mod->reopening == 0)
			round_done(ro->mod);
	} else if (!ro->mod->dead) {
		if (err != 0 && !other_card(id, err))
			log_err("identity %s: cannot open it again: %s",
			    id->cfg->name, why);
		else if (err == 0)
			err = reopen_check(id, reply);
		if (err != 0) {
			/* a PIN is never tried again by itself, nor is a
			 * key its tunnels cannot use (P11A_ERR_TLS) */
			if (needs_user(err) || err == P11A_ERR_TLS)
				ro->mod->given_up = 1;
			helper_kill(ro->mod->helper);
		} else {
			reinserted(id);
			if (--ro->mod->reopening == 0)
				round_done(ro->mod);
		}
	}
	free(ro);
}

static void
restart(struct agent *a, struct module_rt *s)
{
	struct identity	*id;
	struct reopen	*ro;
	struct pbuf	 req;
	char		 uri[PROTO_MAX_STRING];
	int		 r;

	if ((r = helper_restart(s->helper)) != 0) {
		log_err("token helper for %s: %s", module_name(s),
		    helper_error(s->helper));
		s->dead = 0;
		module_died(s, "could not be started again");
		return;
	}
	s->dead = 0;
	s->killed = 0;
	s->restarts++;
	if (watch_module(s) != 0)
		return;
	for (id = a->identities; id != NULL; id = id->next) {
		/* a retired identity's tunnels only finish their connections:
		 * its key is not opened (nor its PIN asked for) again */
		if (id->mod == s && id->retired)
			id->absent = 1;	/* its handle may be another key's now */
		if (id->mod != s || id->retired ||
		    (ro = calloc(1, sizeof(*ro))) == NULL)
			continue;
		ro->mod = s;
		ro->id = id;
		pbuf_init(&req);
		reopen_uri(id, uri, sizeof(uri));
		helper_put_open(&req, uri, id->cfg->cert,
		    pin_source(id->cfg));
		helper_put_open_login(&req, id->cfg->pinentry,
		    id->cfg->pin_cache, id->cfg->pin_per_handshake);
		if (helper_request(s->helper, PROTO_OPEN, &req, OPEN_TIMEOUT_MS,
		    reopened, ro) == 0)
			s->reopening++;
		else
			free(ro);
		pbuf_clear(&req);
	}
}

/* The answer to a card_wait PROBE: the card is back when it shows. */
static void
card_probed(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct identity		*id = arg;
	struct module_rt	*s = id->mod;
	struct helper_probe	 p;
	char			 card[96];

	(void)why;
	id->probing = 0;
	id->probe_at = clock_now_ms() + CARD_PROBE_MS;
	memset(&p, 0, sizeof(p));
	if (err != 0 || helper_parse_probe(reply, &p) != 0 || p.n == 0) {
		helper_probe_clear(&p);
		return;
	}
	helper_probe_clear(&p);
	if (!id->card_wait || s->dead || s->reinserting || s->agent->stopping)
		return;
	id->card_wait = 0;
	card_name(id->tok_label, id->tok_serial, card, sizeof(card));
	log_info("identity %s: token %s shows in a reader again", id->cfg->name,
	    card);
	s->reinserting = 1;
	loop_defer(reinsert_deferred, s);
}

static void
card_probe(struct identity *id)
{
	struct pbuf	 req;
	char		 uri[PROTO_MAX_STRING];

	pbuf_init(&req);
	reopen_uri(id, uri, sizeof(uri));
	helper_put_probe(&req, uri);
	if (helper_request(id->mod->helper, PROTO_PROBE, &req, PROBE_WAIT_MS,
	    card_probed, id) == 0)
		id->probing = 1;
	else
		id->probe_at = clock_now_ms() + CARD_PROBE_MS;
	pbuf_clear(&req);
}

void
helpers_tick(struct agent *a, long now)
{
	struct identity		*id;
	struct module_rt	*s;
	pid_t			 gone[8];
	int			 i;

	for (i = helper_reap_orphans(gone, 8); i > 0; i--)
		log_debug("token helper (pid %d), not needed, is gone",
		    (int)gone[i - 1]);
	for (id = a->identities; id != NULL; id = id->next)
		if (id->card_wait && !id->probing && now >= id->probe_at &&
		    !id->retired && id->mod != NULL && !id->mod->dead &&
		    !id->mod->reinserting)
			card_probe(id);
	for (i = 0; i < a->nmods; i++) {
		s = a->mods[i];
		if (s->dead) {
			/* a registry module none of ours is on: let it be */
			if (!s->given_up && now >= s->restart_at &&
			    module_in_use(a, s))
				restart(a, s);
		} else if (helper_expire(s->helper, now) && !s->killed) {
			log_warn("token helper for %s (pid %d) has not answered "
			    "for longer than the request's timeout; killing it",
			    module_name(s), (int)helper_pid(s->helper));
			s->killed = 1;
			helper_kill(s->helper);
		}
	}
}

/* At shutdown: every request in flight fails now. */
void
helpers_fail_all(struct agent *a)
{
	int	 i;

	a->stopping = 1;
	for (i = 0; i < a->nmods; i++)
		helper_fail_all(a->mods[i]->helper, P11A_ERR_CLOSED);
}

/* ---- card removal and reinsertion (PROTO_EVENT) */

#define EVENT_MAX_HANDLES	1024

/* A PROTO_EVENT payload (docs/helper-protocol.md), decoded and checked. */
struct token_event {
	int		 kind;		/* 1 removed, 2 inserted */
	uint32_t	 n;
	uint32_t	 handles[EVENT_MAX_HANDLES];
	char		 label[33];
	char		 serial[17];
	uint32_t	 flags;		/* CKF_* token flags (inserted) */
	uint32_t	 ckr;
};

#define EV_REMOVED	1
#define EV_INSERTED	2
/* token flags that say a login failed since the last good one */
#define EV_PIN_FLAGS	(0x10000 | 0x20000 | 0x40000)	/* COUNT_LOW,
					 * FINAL_TRY, LOCKED */

/* A field of at most len - 1 printable bytes (untrusted), else "?". */
static void
event_str(struct pbuf *b, char *out, size_t len)
{
	char	*v = pbuf_get_str(b);
	size_t	 i;

	out[0] = '\0';
	if (v != NULL && strlen(v) < len) {
		for (i = 0; v[i] != '\0'; i++)
			if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
				v[i] = '?';
		memcpy(out, v, strlen(v) + 1);
	} else if (v != NULL)
		snprintf(out, len, "?");
	free(v);
}

static int
event_parse(struct pbuf *b, struct token_event *ev)
{
	uint32_t	 i;

	memset(ev, 0, sizeof(*ev));
	ev->kind = pbuf_get_u8(b);
	ev->n = pbuf_get_u32(b);
	if (ev->n > EVENT_MAX_HANDLES)
		return P11A_ERR_PROTOCOL;
	for (i = 0; i < ev->n; i++)
		ev->handles[i] = pbuf_get_u32(b);
	event_str(b, ev->label, sizeof(ev->label));
	event_str(b, ev->serial, sizeof(ev->serial));
	ev->flags = pbuf_get_u32(b);
	ev->ckr = pbuf_get_u32(b);
	if (pbuf_end(b) != 0 || (ev->kind != EV_REMOVED &&
	    ev->kind != EV_INSERTED))
		return P11A_ERR_PROTOCOL;
	return 0;
}

/* Is the (open) identity one of the event's keys? */
static int
event_has(const struct token_event *ev, const struct module_rt *s,
    const struct identity *id)
{
	uint32_t	 i;

	if (id->mod != s || id->pkey == NULL)
		return 0;
	for (i = 0; i < ev->n; i++)
		if (ev->handles[i] == id->hid.handle)
			return 1;
	return 0;
}

/* "'LABEL' (serial S)" for the log. */
static void
card_name(const char *label, const char *serial, char *buf, size_t len)
{
	snprintf(buf, len, "'%s' (serial %s)", label[0] ? label : "?",
	    serial[0] ? serial : "unknown");
}

static void
on_removed(struct module_rt *s, const struct token_event *ev)
{
	struct agent	*a = s->agent;
	struct identity	*id;
	char		 card[96], why[160];
	int		 n;

	for (id = a->identities; id != NULL; id = id->next) {
		if (!event_has(ev, s, id))
			continue;
		if (id->absent) {	/* another card, seen meanwhile */
			log_info("identity %s: the card in its reader "
			    "(serial %s) was removed too", id->cfg->name,
			    ev->serial[0] ? ev->serial : "unknown");
			continue;
		}
		id->absent = 1;
		id->removals++;
		snprintf(id->tok_label, sizeof(id->tok_label), "%s",
		    ev->label);
		snprintf(id->tok_serial, sizeof(id->tok_serial), "%s",
		    ev->serial);
		card_name(id->tok_label, id->tok_serial, card, sizeof(card));
		log_warn("identity %s: token %s was removed; insert it again "
		    "(new connections fail until then)", id->cfg->name, card);
		/* a session must not outlive its card */
		tunnels_flush_sessions(a, id, "its identity's card was pulled");
		if (id->cfg->on_removal != CFG_REMOVAL_CLOSE)
			continue;
		snprintf(why, sizeof(why), "token %s was removed "
		    "(on-removal = close)", card);
		n = tunnels_close_identity(a, id, why);
		log_info("identity %s: on-removal = close: %d open "
		    "connection%s closed", id->cfg->name, n, n == 1 ? "" : "s");
	}
}

/* A PIN from a file, the environment or a descriptor: asked of nobody. */
static int
pin_is_stored(const struct cfg_identity *c)
{
	const char	*p = pin_source(c);

	return p != NULL && (strncmp(p, "file:", 5) == 0 ||
	    strncmp(p, "env:", 4) == 0 || strncmp(p, "fd:", 3) == 0);
}

/*
 * May this card bring the identity back?  The card removed (same
 * serial), or with on-reinsert = any any card; a card this helper cannot
 * read is left to the new helper, which is given the serial in the key
 * URI (reopen_uri).  A stored PIN is not offered again to a card that
 * reports a failed login.
 */
static int
may_reopen(const struct identity *id, const struct token_event *ev)
{
	char	 card[96], was[96];

	card_name(ev->label, ev->serial, card, sizeof(card));
	card_name(id->tok_label, id->tok_serial, was, sizeof(was));
	if (id->cfg->on_reinsert == CFG_REINSERT_SAME && ev->serial[0] &&
	    strcmp(ev->serial, id->tok_serial) != 0) {
		log_warn("identity %s: token %s was inserted, not the card "
		    "that was removed (%s); waiting for that one "
		    "(on-reinsert = same-card; set on-reinsert = any to take "
		    "any card matching the key URI)", id->cfg->name, card,
		    was);
		return 0;
	}
	if ((ev->flags & EV_PIN_FLAGS) && pin_is_stored(id->cfg)) {
		log_err("identity %s: token %s reports a failed login (token "
		    "flags 0x%x); the PIN from %s is not tried on it again: "
		    "check it, log in once with the token's own tool, then "
		    "take the card out and put it back", id->cfg->name,
		    card, ev->flags & EV_PIN_FLAGS, id->cfg->pin);
		return 0;
	}
	if (ev->serial[0] == '\0')
		log_info("identity %s: a token is back in the reader of %s "
		    "(C_GetTokenInfo gave CKR 0x%x here); a new helper "
		    "will look", id->cfg->name, was, ev->ckr);
	else
		log_info("identity %s: token %s was inserted; opening it "
		    "again", id->cfg->name, card);
	return 1;
}

static void
reinsert_deferred(void *arg)
{
	struct module_rt	*s = arg;

	s->reinserting = 0;
	if (s->agent->stopping || s->given_up)
		return;
	/* as module_died does, without the back-off: the card is back */
	loop_set(&s->w, 0);
	loop_set(&s->pw, 0);
	s->dead = 1;
	s->reopening = 0;
	log_info("token helper for %s (pid %d): a card was put in; a new "
	    "helper opens its identities", module_name(s),
	    (int)helper_pid(s->helper));
	restart(s->agent, s);
}

static void
on_inserted(struct module_rt *s, const struct token_event *ev)
{
	struct identity	*id;
	int		 go = 0;

	for (id = s->agent->identities; id != NULL; id = id->next)
		if (event_has(ev, s, id) && id->absent && !id->retired &&
		    may_reopen(id, ev))
			go = 1;
	if (!go || s->reinserting)
		return;
	/* not from inside this helper's read loop */
	s->reinserting = 1;
	loop_defer(reinsert_deferred, s);
}

void
identity_event(void *arg, uint32_t type, uint32_t rid, struct pbuf *msg)
{
	struct module_rt	*s = arg;
	struct token_event	 ev;

	if (type != PROTO_EVENT)
		return;		/* a kind this agent does not know */
	if (event_parse(msg, &ev) != 0) {
		log_warn("token helper for %s: malformed event ignored",
		    module_name(s));
		return;
	}
	if (ev.kind == EV_REMOVED)
		on_removed(s, &ev);
	else
		on_inserted(s, &ev);
}

/*
 * The key URI of a reopen: with on-reinsert = same-card and the removed
 * card's serial known, the serial is added to its path, so that the new
 * helper's choice of token (made before any PIN is sent) takes that card
 * only.  A URI that names a serial already is kept.
 */
static void
reopen_uri(const struct identity *id, char *buf, size_t len)
{
	const char	*key = id->cfg->key, *rest = key + strlen("pkcs11:");
	const char	*p;
	size_t		 off;

	snprintf(buf, len, "%s", key);
	if (!id->absent || id->cfg->on_reinsert != CFG_REINSERT_SAME ||
	    id->tok_serial[0] == '\0' || strstr(key, "serial=") != NULL)
		return;
	off = (size_t)snprintf(buf, len, "pkcs11:serial=");
	for (p = id->tok_serial; *p != '\0' && off + 4 < len; p++) {
		if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '.' ||
		    *p == '_')
			buf[off++] = *p;
		else
			off += (size_t)snprintf(buf + off, len - off, "%%%02X",
			    (unsigned char)*p);
	}
	snprintf(buf + off, len - off, "%s%s", *rest != '\0' && *rest != '?' ?
	    ";" : "", rest);
}

/* A reopen worked: the identity's card is usable again. */
static void
reinserted(struct identity *id)
{
	char	 card[96];

	if (!id->absent)
		return;
	id->absent = 0;
	card_name(id->tok_label, id->tok_serial, card, sizeof(card));
	log_info("identity %s: token %s is back; new connections use it",
	    id->cfg->name, card);
}

/*
 * A reopen with the removed card's serial in the URI found no token: the
 * card in the reader is another one.  Said (instead of "no token
 * matches"); the helper is restarted with back-off until that card is
 * back.  1 if that was it.
 */
static int
other_card(const struct identity *id, int err)
{
	if (err != P11A_ERR_NO_TOKEN || !id->absent ||
	    id->cfg->on_reinsert != CFG_REINSERT_SAME ||
	    id->tok_serial[0] == '\0' || strstr(id->cfg->key, "serial=") !=
	    NULL)
		return 0;
	log_warn("identity %s: the card in the reader is not the one removed "
	    "(serial %s); waiting for that one (on-reinsert = same-card; set "
	    "on-reinsert = any to take any card matching the key URI)",
	    id->cfg->name, id->tok_serial);
	return 1;
}
