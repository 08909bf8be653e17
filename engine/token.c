/*
 * p11agent: the token layer (PKCS#11 through p11-kit).  Runs only in the
 * token helper process; see token.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "token_int.h"

#define MAX_SLOTS	64
#define MAX_MECHS	512
#define MAX_CERT	(60 * 1024)

void
token_seterr(struct token_ctx *ctx, unsigned long ckr, const char *fmt, ...)
{
	va_list	 ap;

	if (ctx->err[0] != '\0')
		return;		/* the first error sticks */
	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	ctx->ckr = ckr;
}

const char *
token_error(const struct token_ctx *ctx)
{
	return ctx->err[0] ? ctx->err : "no error";
}

unsigned long
token_error_ckr(const struct token_ctx *ctx)
{
	return ctx->ckr;
}

/*
 * PKCS#11 2.40, 5.1.1: after CKR_GENERAL_ERROR "the computer and/or token
 * is in an inconsistent state".
 */
int
token_error_unknown_state(const struct token_ctx *ctx)
{
	return ctx->ckr == CKR_GENERAL_ERROR;
}

void
token_clear_error(struct token_ctx *ctx)
{
	ctx->err[0] = '\0';
	ctx->ckr = 0;
}

/* Maps a CKR to our code; a lost session or token means "restart me". */
int
token_rv_code(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_HOST_MEMORY:
		return P11A_ERR_NOMEM;
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_ERROR:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return P11A_ERR_TOKEN_ABSENT;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
		return P11A_ERR_MECHANISM;
	case CKR_PIN_INCORRECT:
		return P11A_ERR_PIN_INCORRECT;
	case CKR_PIN_LOCKED:
		return P11A_ERR_PIN_LOCKED;
	default:
		return P11A_ERR_TOKEN;
	}
}

/*
 * Module paths allowed without a module-allow pattern (fnmatch without
 * flags: a '*' also matches '/').
 */
static const char *const default_allow[] = {
	"/usr/lib*/*",
	"/usr/local/lib*/*",
};

/*
 * Is the real path allowed: does a default or -a pattern match it, or
 * does a pattern name an existing file that resolves to it?  (The agent
 * passes the module of 'p11agent tokens -m' as a pattern.)
 */
static int
module_allowed(const struct token_opts *o, const char *real)
{
	char	 p[PATH_MAX];
	size_t	 i;
	int	 j;

	for (i = 0; i < sizeof(default_allow) / sizeof(default_allow[0]); i++)
		if (fnmatch(default_allow[i], real, 0) == 0)
			return 1;
	for (j = 0; j < o->nallow; j++) {
		if (fnmatch(o->allow[j], real, 0) == 0)
			return 1;
		if (realpath(o->allow[j], p) != NULL && strcmp(p, real) == 0)
			return 1;
	}
	return 0;
}

/*
 * Checks one step of the walk down to the module: fd is the entry name
 * (a directory, or the module itself when last), at depth levels above
 * the module (0: the module, 1: its directory).  Root or the user must
 * own it and no one else may write it; a root-owned sticky directory
 * (like /tmp) may be an ancestor, since others cannot rename or remove
 * what they do not own there, but not the module's own directory, where
 * anyone could add a hard link to another file of the user's under the
 * module's name.
 */
static int
check_step(struct token_ctx *ctx, int fd, const char *real, const char *name,
    int depth)
{
	struct stat	 st;
	char		 what[PATH_MAX + 32];

	if (depth == 0)
		snprintf(what, sizeof(what), "module %s:", real);
	else
		snprintf(what, sizeof(what), "module %s: %s %s%s", real,
		    depth == 1 ? "its directory" : "the directory", name,
		    depth == 1 ? "" : " above it");
	if (fstat(fd, &st) == -1) {
		token_seterr(ctx, 0, "%s %s", what, strerror(errno));
		return P11A_ERR_MODULE;
	}
	if (depth == 0 && !S_ISREG(st.st_mode)) {
		token_seterr(ctx, 0, "%s not a regular file", what);
		return P11A_ERR_MODULE;
	}
	if (st.st_uid != 0 && st.st_uid != getuid()) {
		token_seterr(ctx, 0, "%s %sowned by uid %u; it must be owned "
		    "by root or you", what, depth ? "is " : "",
		    (unsigned)st.st_uid);
		return P11A_ERR_PERM;
	}
	if ((st.st_mode & 022) == 0 ||
	    (depth > 1 && st.st_uid == 0 && (st.st_mode & S_ISVTX)))
		return 0;
	if (depth == 0)
		token_seterr(ctx, 0, "%s mode %03o: it is writable by group or "
		    "others; it must be writable only by root or you (chmod "
		    "go-w %s)", what, (unsigned)(st.st_mode & 0777), real);
	else
		token_seterr(ctx, 0, "%s is writable by group or others (mode "
		    "%04o), who could replace the module; it must be writable "
		    "only by root or you", what, (unsigned)(st.st_mode & 07777));
	return P11A_ERR_PERM;
}

/*
 * Opens the real path from / down, one component at a time (O_PATH,
 * O_NOFOLLOW: a symlink put in after realpath fails the walk), checking
 * each descriptor; on success *fdp is an O_PATH descriptor of the module.
 */
static int
open_checked(struct token_ctx *ctx, const char *real, int *fdp)
{
	char		 dir[PATH_MAX], *p, *slash;
	const char	*s;
	int		 depth = 0, dfd = -1, fd = -1, r;

	for (s = real; (s = strchr(s, '/')) != NULL; s++)
		depth++;	/* the levels from / down to the module */
	if ((dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1) {
		token_seterr(ctx, 0, "module %s: /: %s", real, strerror(errno));
		return P11A_ERR_MODULE;
	}
	if ((r = check_step(ctx, dfd, real, "/", depth)) != 0)
		goto out;
	snprintf(dir, sizeof(dir), "%s", real);
	for (p = dir + 1; depth-- > 0; p = slash + 1) {
		if ((slash = strchr(p, '/')) != NULL)
			*slash = '\0';	/* dir: the path down to p */
		fd = openat(dfd, p, O_PATH | O_NOFOLLOW | O_CLOEXEC |
		    (depth > 0 ? O_DIRECTORY : 0));
		if (fd == -1) {
			token_seterr(ctx, 0, "module %s: %s: %s (changed "
			    "while it was checked?)", real, dir,
			    strerror(errno));
			r = P11A_ERR_MODULE;
			goto out;
		}
		if ((r = check_step(ctx, fd, real, dir, depth)) != 0)
			goto out;
		close(dfd);
		dfd = fd;
		fd = -1;
		if (slash == NULL)
			break;
		*slash = '/';
	}
	*fdp = dfd;
	dfd = -1;
out:
	if (fd != -1)
		close(fd);
	if (dfd != -1)
		close(dfd);
	return r;
}

/*
 * A module path given by the user is loaded only if, after realpath, it
 * is allowed (module_allowed) and neither it nor a directory on its way
 * from / can be replaced by anyone but root or the user (open_checked).
 * On success *fdp is an O_PATH descriptor of the checked file.
 */
static int
check_module_path(struct token_ctx *ctx, const struct token_opts *o,
    char *real, int *fdp)
{
	const char	*path = o->module;

	if (path[0] != '/') {
		token_seterr(ctx, 0, "module %s: the path must be absolute",
		    path);
		return P11A_ERR_MODULE;
	}
	if (realpath(path, real) == NULL) {
		token_seterr(ctx, 0, "module %s: %s", path, strerror(errno));
		return P11A_ERR_MODULE;
	}
	if (!module_allowed(o, real)) {
		token_seterr(ctx, 0, "module %s: not in a directory allowed "
		    "for modules (/usr/lib*/*, /usr/local/lib*/*); if you "
		    "trust it, add 'module-allow = %s' to the [agent] section "
		    "of the configuration", real, real);
		return P11A_ERR_PERM;
	}
	return open_checked(ctx, real, fdp);
}

/*
 * Loads the checked descriptor through /proc/self/fd/N, so the file
 * loaded is the file checked, whatever was renamed meanwhile.  p11-kit
 * then knows the module by that name: ctx->path keeps the real one.
 */
static int
load_one(struct token_ctx *ctx, const struct token_opts *o)
{
	char	 real[PATH_MAX], fdpath[64];
	int	 fd = -1, r;

	if ((r = check_module_path(ctx, o, real, &fd)) != 0)
		goto out;
	if ((ctx->mods = calloc(2, sizeof(*ctx->mods))) == NULL ||
	    (ctx->inited = calloc(1, sizeof(*ctx->inited))) == NULL ||
	    (ctx->path = strdup(real)) == NULL) {
		r = P11A_ERR_NOMEM;
		goto out;
	}
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	if ((ctx->mods[0] = p11_kit_module_load(fdpath, 0)) == NULL) {
		token_seterr(ctx, 0, "module %s: %s", real,
		    p11_kit_message() ? p11_kit_message() : "cannot load");
		r = P11A_ERR_MODULE;
		goto out;
	}
	ctx->nmods = 1;
out:
	if (fd != -1)
		close(fd);	/* the loader holds its own mapping */
	return r;
}

/* Keeps only the registry module named name; releases the others. */
static int
keep_registry_module(struct token_ctx *ctx, const char *name)
{
	char	 names[512], *have;
	size_t	 i, len = 0;
	int	 found = -1;

	names[0] = '\0';
	for (i = 0; ctx->mods[i] != NULL; i++) {
		have = p11_kit_module_get_name(ctx->mods[i]);
		if (found == -1 && have != NULL && strcmp(have, name) == 0)
			found = (int)i;
		if (len < sizeof(names))
			len += snprintf(names + len, sizeof(names) - len,
			    "%s%s", i ? ", " : "", have ? have : "?");
		free(have);
	}
	if (found == -1) {
		token_seterr(ctx, 0, "p11-kit registry: no module named '%s' "
		    "(registered: %s)", name, i ? names : "none");
		return P11A_ERR_MODULE;
	}
	/* not initialised yet: releasing is all they need */
	for (i = 0; ctx->mods[i] != NULL; i++)
		if ((int)i != found)
			p11_kit_module_release(ctx->mods[i]);
	ctx->mods[0] = ctx->mods[found];
	ctx->mods[1] = NULL;
	return 0;
}

static int
load_registry(struct token_ctx *ctx, const struct token_opts *o)
{
	size_t	 n;
	int	 r;

	ctx->registry = 1;
	/* loads the modules without initialising them */
	ctx->mods = p11_kit_modules_load(NULL, 0);
	if (ctx->mods == NULL) {
		token_seterr(ctx, 0, "p11-kit: %s", p11_kit_message() ?
		    p11_kit_message() : "cannot load the module registry");
		return P11A_ERR_MODULE;
	}
	if (o->registry_name != NULL &&
	    (r = keep_registry_module(ctx, o->registry_name)) != 0)
		return r;
	for (n = 0; ctx->mods[n] != NULL; n++)
		;
	ctx->nmods = n;
	if ((ctx->inited = calloc(n + 1, sizeof(*ctx->inited))) == NULL)
		return P11A_ERR_NOMEM;
	return 0;
}

int
token_ctx_new(const struct token_opts *o, struct token_ctx **out)
{
	struct token_ctx	*ctx;
	int			 r;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		return P11A_ERR_NOMEM;
	r = o->module ? load_one(ctx, o) : load_registry(ctx, o);
	*out = ctx;		/* even on error: it holds the message */
	return r;
}

static void
key_free(struct token_key *k)
{
	int	 i;

	if (k == NULL)
		return;
	free(k->cert);
	for (i = 0; i < k->nkey_certs; i++)
		free(k->key_cert[i]);
	free(k->key_uri);
	free(k->pin_source);
	free(k->pinentry);
	free(k);
}

void
token_ctx_free(struct token_ctx *ctx)
{
	struct token_key	*k, *next;
	size_t			 i;

	if (ctx == NULL)
		return;
	for (k = ctx->keys; k != NULL; k = next) {
		next = k->next;
		key_free(k);
	}
	token_slots_free(ctx);
	for (i = 0; i < ctx->nmods; i++)
		if (ctx->inited[i])
			p11_kit_module_finalize(ctx->mods[i]);
	if (ctx->registry)
		p11_kit_modules_release(ctx->mods);
	else if (ctx->mods != NULL && ctx->mods[0] != NULL)
		p11_kit_module_release(ctx->mods[0]);
	if (!ctx->registry)
		free(ctx->mods);
	free(ctx->inited);
	free(ctx->path);
	OPENSSL_cleanse(ctx, sizeof(*ctx));
	free(ctx);
}

/* The module's file: p11-kit knows one loaded by path as /proc/self/fd/N. */
char *
token_module_file(struct token_ctx *ctx, size_t i)
{
	if (!ctx->registry && ctx->path != NULL)
		return strdup(ctx->path);
	return p11_kit_module_get_filename(ctx->mods[i]);
}

char *
token_module_name(struct token_ctx *ctx, size_t i)
{
	char	*s;

	if ((s = token_module_file(ctx, i)) == NULL)
		s = p11_kit_module_get_name(ctx->mods[i]);
	return s;
}

/* Initialises module i once; 0 or an error code. */
int
token_module_init(struct token_ctx *ctx, size_t i)
{
	CK_RV	 rv;
	char	*name;

	if (ctx->inited[i])
		return 0;
	rv = p11_kit_module_initialize(ctx->mods[i]);
	if (rv != CKR_OK) {
		name = token_module_name(ctx, i);
		token_seterr(ctx, rv, "module %s: C_Initialize: %s",
		    name ? name : "?", token_ckr_name(rv));
		free(name);
		return P11A_ERR_MODULE;
	}
	ctx->inited[i] = 1;
	return 0;
}

/* Present slots of module i into slots[]; returns the count or < 0. */
int
token_slots(struct token_ctx *ctx, size_t i, CK_SLOT_ID *slots)
{
	CK_ULONG	 n = MAX_SLOTS;
	CK_RV		 rv;

	rv = ctx->mods[i]->C_GetSlotList(CK_TRUE, slots, &n);
	if (rv != CKR_OK) {
		token_seterr(ctx, rv, "C_GetSlotList: %s", token_ckr_name(rv));
		return token_rv_code(rv);
	}
	return (int)n;
}

/* Does the URI's module part (module-name, module-path) allow module i? */
int
token_module_matches(struct token_ctx *ctx, size_t i, P11KitUri *uri)
{
	const char	*want;
	char		*have;
	int		 ok = 1;

	if ((want = p11_kit_uri_get_module_name(uri)) != NULL) {
		have = p11_kit_module_get_name(ctx->mods[i]);
		ok = have != NULL && strcmp(have, want) == 0;
		free(have);
	}
	if (ok && (want = p11_kit_uri_get_module_path(uri)) != NULL) {
		have = token_module_file(ctx, i);
		ok = have != NULL && strcmp(have, want) == 0;
		free(have);
	}
	return ok;
}

/* The one token the URI selects, judged before any login. */
static int
find_token(struct token_ctx *ctx, P11KitUri *uri, const char *uristr,
    struct token_key *k)
{
	struct token_cand	 c;
	int			 r;

	if ((r = token_select(ctx, uri, uristr, &c)) != 0)
		return r;
	k->mod = ctx->mods[c.mod];
	k->slot = c.slot;
	k->flags = c.ti.flags;
	memcpy(k->label, c.ti.label, sizeof(c.ti.label));
	memcpy(k->serial, c.ti.serialNumber, sizeof(k->serial));
	return 0;
}

/* A blank-padded PKCS#11 string field of n bytes as a C string. */
void
token_unpad(const CK_UTF8CHAR *field, size_t n, char *out)
{
	memcpy(out, field, n);
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\0'))
		n--;
	out[n] = '\0';
}

/* The token label as a C string; out has room for 33 bytes. */
void
token_label(const CK_UTF8CHAR *label, char *out)
{
	token_unpad(label, 32, out);
}

/* Finds exactly one object of class cls matching tmpl; 0 or an error. */
int
token_find_one(struct token_ctx *ctx, CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s,
    CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *out, CK_ULONG *count)
{
	CK_OBJECT_HANDLE	 h[2];
	CK_RV			 rv;

	*count = 0;
	if ((rv = m->C_FindObjectsInit(s, tmpl, n)) != CKR_OK) {
		token_seterr(ctx, rv, "C_FindObjectsInit: %s",
		    token_ckr_name(rv));
		return token_rv_code(rv);
	}
	rv = m->C_FindObjects(s, h, 2, count);
	m->C_FindObjectsFinal(s);
	if (rv != CKR_OK) {
		token_seterr(ctx, rv, "C_FindObjects: %s", token_ckr_name(rv));
		return token_rv_code(rv);
	}
	if (*count > 0)
		*out = h[0];
	return 0;
}

static int	 uri_template_as(P11KitUri *, CK_OBJECT_CLASS *, CK_ATTRIBUTE *,
		    CK_ULONG *, int);

/* Builds a search template from the URI's attributes with class cls. */
static int
uri_template(P11KitUri *uri, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *tmpl,
    CK_ULONG *n)
{
	return uri_template_as(uri, cls, tmpl, n, 0);
}

/*
 * As uri_template; with other_class, the URI's own class (type=private)
 * is left out: the key's public key or certificate is looked for.
 */
static int
uri_template_as(P11KitUri *uri, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *tmpl,
    CK_ULONG *n, int other_class)
{
	CK_ATTRIBUTE	*a;
	CK_ULONG	 i, na;

	a = p11_kit_uri_get_attributes(uri, &na);
	tmpl[0].type = CKA_CLASS;
	tmpl[0].pValue = cls;
	tmpl[0].ulValueLen = sizeof(*cls);
	*n = 1;
	for (i = 0; i < na && *n < 4; i++) {
		if (a[i].type == CKA_CLASS) {
			if (other_class)
				continue;
			if (a[i].ulValueLen != sizeof(CK_OBJECT_CLASS) ||
			    *(CK_OBJECT_CLASS *)a[i].pValue != *cls)
				return P11A_ERR_URI;
			continue;
		}
		tmpl[(*n)++] = a[i];
	}
	return 0;
}

static int
find_key(struct token_ctx *ctx, struct token_key *k, P11KitUri *uri,
    const char *uristr)
{
	CK_OBJECT_CLASS	 cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE	 tmpl[4], ta;
	CK_ULONG	 n, count;
	CK_BBOOL	 always = CK_FALSE;
	int		 r;

	if (uri_template(uri, &cls, tmpl, &n) != 0) {
		token_seterr(ctx, 0, "%s: the key URI must name a private key "
		    "(type=private)", uristr);
		return P11A_ERR_URI;
	}
	if ((r = token_find_one(ctx, k->mod, k->session, tmpl, n, &k->obj,
	    &count)) != 0)
		return r;
	if (count != 1) {
		token_seterr(ctx, 0, "%s: %s", uristr, count == 0 ?
		    "no private key matches on the token (after login); run "
		    "'p11agent tokens --pin SOURCE' to see the keys" :
		    "more than one private key matches; add id= or object=");
		return P11A_ERR_NO_KEY;
	}
	ta.type = CKA_KEY_TYPE;
	ta.pValue = &k->keytype;
	ta.ulValueLen = sizeof(k->keytype);
	k->idlen = sizeof(k->id);
	if (k->mod->C_GetAttributeValue(k->session, k->obj, &ta, 1) != CKR_OK) {
		token_seterr(ctx, 0, "%s: cannot read the key type", uristr);
		return P11A_ERR_TOKEN;
	}
	ta.type = CKA_ALWAYS_AUTHENTICATE;
	ta.pValue = &always;
	ta.ulValueLen = sizeof(always);
	k->always_auth = k->mod->C_GetAttributeValue(k->session, k->obj, &ta,
	    1) == CKR_OK && ta.ulValueLen == sizeof(always) && always;
	ta.type = CKA_ID;
	ta.pValue = k->id;
	ta.ulValueLen = sizeof(k->id);
	if (k->mod->C_GetAttributeValue(k->session, k->obj, &ta, 1) == CKR_OK)
		k->idlen = ta.ulValueLen;
	else
		k->idlen = 0;
	return 0;
}

/* Reads a certificate's DER value. */
int
token_read_cert(struct token_ctx *ctx, CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s,
    CK_OBJECT_HANDLE h, uint8_t **der, size_t *len)
{
	CK_ATTRIBUTE	 a = { CKA_VALUE, NULL, 0 };
	CK_RV		 rv;

	if ((rv = m->C_GetAttributeValue(s, h, &a, 1)) != CKR_OK ||
	    a.ulValueLen == 0 || a.ulValueLen > MAX_CERT) {
		token_seterr(ctx, rv, "cannot read the certificate: %s",
		    rv ? token_ckr_name(rv) : "empty or too large");
		return P11A_ERR_NO_CERT;
	}
	if ((a.pValue = malloc(a.ulValueLen)) == NULL)
		return P11A_ERR_NOMEM;
	if ((rv = m->C_GetAttributeValue(s, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		token_seterr(ctx, rv, "cannot read the certificate: %s",
		    token_ckr_name(rv));
		return P11A_ERR_NO_CERT;
	}
	*der = a.pValue;
	*len = a.ulValueLen;
	return 0;
}

static int
find_cert(struct token_ctx *ctx, struct token_key *k, const char *cert_uri,
    const char *key_uri)
{
	CK_OBJECT_CLASS	 cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE	 tmpl[4];
	CK_OBJECT_HANDLE h;
	CK_ULONG	 n = 2, count;
	P11KitUri	*uri = NULL;
	int		 r;

	tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, k->id, k->idlen };
	if (cert_uri != NULL) {
		uri = p11_kit_uri_new();
		if (p11_kit_uri_parse(cert_uri, P11_KIT_URI_FOR_OBJECT, uri) !=
		    P11_KIT_URI_OK || uri_template(uri, &cls, tmpl, &n) != 0) {
			token_seterr(ctx, 0, "%s: not a certificate URI",
			    cert_uri);
			r = P11A_ERR_URI;
			goto out;
		}
	} else if (k->idlen == 0) {
		token_seterr(ctx, 0, "%s: the key has no CKA_ID to find its "
		    "certificate by; set cert = URI or FILE", key_uri);
		r = P11A_ERR_NO_CERT;
		goto out;
	}
	if ((r = token_find_one(ctx, k->mod, k->session, tmpl, n, &h,
	    &count)) != 0)
		goto out;
	if (count == 0) {
		token_seterr(ctx, 0, "%s: no certificate on the token %s; "
		    "write one with the same id or set cert = FILE",
		    cert_uri ? cert_uri : key_uri, cert_uri ? "matches" :
		    "has the key's id");
		r = P11A_ERR_NO_CERT;
		goto out;
	}
	r = token_read_cert(ctx, k->mod, k->session, h, &k->cert, &k->certlen);
out:
	p11_kit_uri_free(uri);
	return r;
}

/* The token's certificates with the key's CKA_ID (up to
 * PROTO_MAX_KEY_CERTS): what a policy's certificate selectors see besides
 * the one presented; none is no error. */
static void
find_key_certs(struct token_ctx *ctx, struct token_key *k)
{
	CK_OBJECT_CLASS	 cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE	 tmpl[2];
	CK_OBJECT_HANDLE h[PROTO_MAX_KEY_CERTS];
	CK_ULONG	 count = 0, i;
	char		 saved[sizeof(ctx->err)];

	if (k->idlen == 0)
		return;
	memcpy(saved, ctx->err, sizeof(saved));
	tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, k->id, k->idlen };
	if (k->mod->C_FindObjectsInit(k->session, tmpl, 2) != CKR_OK)
		return;
	if (k->mod->C_FindObjects(k->session, h, PROTO_MAX_KEY_CERTS,
	    &count) != CKR_OK)
		count = 0;
	k->mod->C_FindObjectsFinal(k->session);
	for (i = 0; i < count && i < PROTO_MAX_KEY_CERTS; i++)
		if (token_read_cert(ctx, k->mod, k->session, h[i],
		    &k->key_cert[k->nkey_certs],
		    &k->key_certlen[k->nkey_certs]) == 0)
			k->nkey_certs++;
	memcpy(ctx->err, saved, sizeof(saved));	/* not this one's */
}

static void
read_caps(struct token_key *k)
{
	CK_MECHANISM_TYPE	 mechs[MAX_MECHS];
	CK_ULONG		 n = MAX_MECHS, i;

	k->caps = 0;
	if (k->mod->C_GetMechanismList(k->slot, mechs, &n) != CKR_OK)
		return;
	for (i = 0; i < n; i++) {
		switch (mechs[i]) {
		case CKM_RSA_PKCS:	k->caps |= PROTO_CAP_RSA_PKCS1; break;
		case CKM_RSA_X_509:	k->caps |= PROTO_CAP_RSA_RAW; break;
		case CKM_RSA_PKCS_PSS:	k->caps |= PROTO_CAP_RSA_PSS; break;
		case CKM_ECDSA:		k->caps |= PROTO_CAP_ECDSA; break;
		}
	}
}

/*
 * Without a login: the key's type and CKA_ID from its public key or, when
 * the token shows none, its certificate (found by the URI's id= and
 * object=).  0, P11A_ERR_NO_KEY when neither shows, or an error.
 */
static int
find_public(struct token_ctx *ctx, struct token_key *k, P11KitUri *uri)
{
	CK_OBJECT_CLASS	 cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE	 tmpl[4], ta[2];
	CK_OBJECT_HANDLE h;
	CK_ULONG	 n, count;
	const uint8_t	*p;
	uint8_t		*der;
	size_t		 len;
	X509		*x;
	int		 r, type;

	if (uri_template_as(uri, &cls, tmpl, &n, 1) != 0)
		return P11A_ERR_NO_KEY;
	if ((r = token_find_one(ctx, k->mod, k->session, tmpl, n, &h,
	    &count)) != 0)
		return r;
	ta[0] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &k->keytype, sizeof(k->keytype) };
	ta[1] = (CK_ATTRIBUTE){ CKA_ID, k->id, sizeof(k->id) };
	if (count == 1 && k->mod->C_GetAttributeValue(k->session, h, ta, 2) ==
	    CKR_OK && ta[1].ulValueLen <= sizeof(k->id)) {
		k->idlen = ta[1].ulValueLen;
		return 0;
	}
	cls = CKO_CERTIFICATE;
	if (uri_template_as(uri, &cls, tmpl, &n, 1) != 0)
		return P11A_ERR_NO_KEY;
	if ((r = token_find_one(ctx, k->mod, k->session, tmpl, n, &h,
	    &count)) != 0)
		return r;
	/* the first call may have set the length to "unavailable" */
	ta[1] = (CK_ATTRIBUTE){ CKA_ID, k->id, sizeof(k->id) };
	if (count != 1 || k->mod->C_GetAttributeValue(k->session, h, &ta[1],
	    1) != CKR_OK || ta[1].ulValueLen > sizeof(k->id))
		return P11A_ERR_NO_KEY;
	k->idlen = ta[1].ulValueLen;
	if ((r = token_read_cert(ctx, k->mod, k->session, h, &der, &len)) != 0)
		return r;
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	type = x != NULL ? EVP_PKEY_get_base_id(X509_get0_pubkey(x)) : 0;
	X509_free(x);
	free(der);
	if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC)
		return P11A_ERR_NO_KEY;
	k->keytype = type == EVP_PKEY_RSA ? CKK_RSA : CKK_EC;
	return 0;
}

/*
 * The private key, after a deferred login: the same URI must now give a
 * key of the type and CKA_ID that its public objects showed.
 */
static int
find_deferred(struct token_ctx *ctx, struct token_key *k)
{
	P11KitUri	*uri;
	CK_KEY_TYPE	 type = k->keytype;
	CK_OBJECT_HANDLE obj = k->obj;
	uint8_t		 id[sizeof(k->id)];
	size_t		 idlen = k->idlen;
	int		 r, always = k->always_auth;

	memcpy(id, k->id, idlen);
	if ((uri = p11_kit_uri_new()) == NULL)
		return P11A_ERR_NOMEM;
	if (p11_kit_uri_parse(k->key_uri, P11_KIT_URI_FOR_ANY, uri) !=
	    P11_KIT_URI_OK)
		r = P11A_ERR_URI;
	else
		r = find_key(ctx, k, uri, k->key_uri);
	p11_kit_uri_free(uri);
	if (r == 0 && (k->keytype != type || k->idlen != idlen ||
	    memcmp(k->id, id, idlen) != 0)) {
		token_seterr(ctx, 0, "%s: after login the private key is not "
		    "the one its certificate or public key named (another key "
		    "type or CKA_ID); add id= to the key URI", k->key_uri);
		r = P11A_ERR_NO_KEY;
	}
	if (r == 0)
		k->deferred = 0;
	else {	/* as it was: the next signature checks again */
		k->keytype = type;
		k->obj = obj;
		memcpy(k->id, id, idlen);
		k->idlen = idlen;
		k->always_auth = always;
	}
	return r;
}

static int
open_key(struct token_ctx *ctx, struct token_key *k, P11KitUri *uri,
    const struct token_open_opts *o)
{
	const char	*key_uri = o->key_uri, *cert_uri = o->cert_uri;
	CK_RV		 rv;
	int		 r;

	if ((r = find_token(ctx, uri, key_uri, k)) != 0)
		return r;
	if ((k->ts = token_slot_get(ctx, k->mod, k->slot)) == NULL)
		return P11A_ERR_NOMEM;
	rv = k->mod->C_OpenSession(k->slot, CKF_SERIAL_SESSION, NULL, NULL,
	    &k->session);
	if (rv != CKR_OK) {
		token_seterr(ctx, rv, "%s: C_OpenSession: %s", key_uri,
		    token_ckr_name(rv));
		return token_rv_code(rv);
	}
	if (!token_source_interactive(o->pin_source) ||
	    !(k->flags & CKF_LOGIN_REQUIRED) || token_logged_in(ctx, k))
		r = token_login_for(ctx, k, NULL, NULL);
	else if ((r = find_key(ctx, k, uri, key_uri)) == P11A_ERR_NO_KEY) {
		/* not visible before login: the first signature logs in */
		token_clear_error(ctx);
		if ((r = find_public(ctx, k, uri)) == 0)
			k->deferred = 1;
		else if (r == P11A_ERR_NO_KEY) {
			token_clear_error(ctx);
			r = token_login_for(ctx, k, NULL, NULL);
		}
	} else if (r == 0)
		k->deferred = -1;	/* found already */
	if (r != 0)
		return r;
	if (k->deferred == 0 && (r = find_key(ctx, k, uri, key_uri)) != 0)
		return r;
	if (k->deferred == -1)
		k->deferred = 0;
	if (k->keytype != CKK_RSA && k->keytype != CKK_EC) {
		token_seterr(ctx, 0, "%s: key type %lu is neither RSA nor EC",
		    key_uri, (unsigned long)k->keytype);
		return P11A_ERR_MECHANISM;
	}
	if (cert_uri == NULL || strncmp(cert_uri, "pkcs11:", 7) == 0)
		if ((r = find_cert(ctx, k, cert_uri, key_uri)) != 0)
			return r;
	find_key_certs(ctx, k);
	read_caps(k);
	return 0;
}

static char *
dup_or_null(const char *s, int *failed)
{
	char	*d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		*failed = 1;
	return d;
}

int
token_open_opts(struct token_ctx *ctx, const struct token_open_opts *o,
    struct token_key **out)
{
	struct token_key	*k = NULL;
	P11KitUri		*uri = NULL;
	int			 r, pr, nomem = 0;

	if ((uri = p11_kit_uri_new()) == NULL ||
	    (k = calloc(1, sizeof(*k))) == NULL) {
		r = P11A_ERR_NOMEM;
		goto out;
	}
	k->key_uri = dup_or_null(o->key_uri, &nomem);
	k->pin_source = dup_or_null(o->pin_source, &nomem);
	k->pinentry = dup_or_null(o->pinentry, &nomem);
	k->pin_cache = o->pin_cache;
	k->logout_each = o->logout_each;
	if (o->pin_source != NULL && strncmp(o->pin_source, "env:", 4) == 0 &&
	    pin_env_hide(o->pin_source + 4) != 0)
		nomem = 1;
	if (nomem) {
		r = P11A_ERR_NOMEM;
		goto out;
	}
	pr = p11_kit_uri_parse(o->key_uri, P11_KIT_URI_FOR_ANY, uri);
	if (pr != P11_KIT_URI_OK) {
		token_seterr(ctx, 0, "%s: %s", o->key_uri,
		    p11_kit_uri_message(pr));
		r = P11A_ERR_URI;
		goto out;
	}
	if ((r = open_key(ctx, k, uri, o)) != 0) {
		if (k->session != 0)
			k->mod->C_CloseSession(k->session);
		goto out;
	}
	k->next = ctx->keys;
	ctx->keys = k;
	*out = k;
	k = NULL;
out:
	key_free(k);
	p11_kit_uri_free(uri);
	return r;
}

int
token_open(struct token_ctx *ctx, const char *key_uri, const char *cert_uri,
    const char *pin_source, struct token_key **out)
{
	struct token_open_opts	 o;

	memset(&o, 0, sizeof(o));
	o.key_uri = key_uri;
	o.cert_uri = cert_uri;
	o.pin_source = pin_source;
	return token_open_opts(ctx, &o, out);
}

int
token_key_type(const struct token_key *k)
{
	return k->keytype == CKK_RSA ? PROTO_KEY_RSA : PROTO_KEY_EC;
}

uint32_t
token_key_caps(const struct token_key *k)
{
	return k->caps;
}

void
token_key_token(const struct token_key *k, char *label, char *serial)
{
	token_label(k->label, label);
	TOKEN_UNPAD(k->serial, serial);
}

const uint8_t *
token_key_cert(const struct token_key *k, size_t *len)
{
	*len = k->certlen;
	return k->cert;
}

const uint8_t *
token_key_own_cert(const struct token_key *k, int i, size_t *len)
{
	if (i < 0 || i >= k->nkey_certs) {
		*len = 0;
		return NULL;
	}
	*len = k->key_certlen[i];
	return k->key_cert[i];
}

static int
pss_params(int hash, uint32_t saltlen, CK_RSA_PKCS_PSS_PARAMS *p)
{
	switch (hash) {
	case PROTO_HASH_SHA256:
		p->hashAlg = CKM_SHA256;
		p->mgf = CKG_MGF1_SHA256;
		break;
	case PROTO_HASH_SHA384:
		p->hashAlg = CKM_SHA384;
		p->mgf = CKG_MGF1_SHA384;
		break;
	case PROTO_HASH_SHA512:
		p->hashAlg = CKM_SHA512;
		p->mgf = CKG_MGF1_SHA512;
		break;
	default:
		return P11A_ERR_INVALID;
	}
	p->sLen = saltlen;
	return 0;
}

/*
 * A new session in place of one left with an operation active (a failed
 * context login): opened first, so the token stays logged in.
 */
static void
renew_session(struct token_ctx *ctx, struct token_key *k)
{
	CK_SESSION_HANDLE	 s;

	if (k->mod->C_OpenSession(k->slot, CKF_SERIAL_SESSION, NULL, NULL,
	    &s) != CKR_OK) {
		/* no second session: the old one must go all the same,
		 * and the token may log out with it */
		k->mod->C_CloseSession(k->session);
		if (k->mod->C_OpenSession(k->slot, CKF_SERIAL_SESSION, NULL,
		    NULL, &s) != CKR_OK)
			s = CK_INVALID_HANDLE;
		k->session = s;
		token_slot_logged_out(ctx, k->ts);
		return;
	}
	k->mod->C_CloseSession(k->session);
	k->session = s;
}

static int
sign_once(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, struct pin *pin, CK_MECHANISM *mech,
    const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen)
{
	CK_ULONG	 n = *siglen;
	CK_RV		 rv;
	int		 r;

	if ((rv = k->mod->C_SignInit(k->session, mech, k->obj)) != CKR_OK)
		goto fail;
	if (k->always_auth &&
	    (r = token_login_context(ctx, k, rq, pin)) != 0) {
		renew_session(ctx, k);
		return r;
	}
	rv = k->mod->C_Sign(k->session, (CK_BYTE_PTR)data, len, sig, &n);
	if (rv != CKR_OK)
		goto fail;
	*siglen = n;
	return 0;
fail:
	token_seterr(ctx, rv, "signing (mechanism 0x%lx): %s",
	    (unsigned long)mech->mechanism, token_ckr_name(rv));
	return token_rv_code(rv);
}

int
token_sign_for(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, int alg, int hash, uint32_t saltlen,
    const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen)
{
	CK_RSA_PKCS_PSS_PARAMS	 pss;
	CK_MECHANISM		 mech = { 0, NULL, 0 };
	struct pin		*pin = NULL;
	int			 r;

	switch (alg) {
	case PROTO_ALG_RSA_PKCS1:	mech.mechanism = CKM_RSA_PKCS; break;
	case PROTO_ALG_RSA_RAW:		mech.mechanism = CKM_RSA_X_509; break;
	case PROTO_ALG_ECDSA:		mech.mechanism = CKM_ECDSA; break;
	case PROTO_ALG_RSA_PSS:
		if (pss_params(hash, saltlen, &pss) != 0) {
			token_seterr(ctx, 0, "RSA-PSS with unknown hash %d",
			    hash);
			return P11A_ERR_INVALID;
		}
		mech.mechanism = CKM_RSA_PKCS_PSS;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
		break;
	default:
		token_seterr(ctx, 0, "unknown signature algorithm %d", alg);
		return P11A_ERR_INVALID;
	}
	/* pin-per-handshake: a login of its own, whatever another key of
	 * the token (or the open) left, with no PIN kept from before */
	if (k->logout_each)
		token_logout_key(ctx, k);
	/* the PIN typed for this login also serves its context login */
	if ((r = token_login_for(ctx, k, rq, k->always_auth || k->deferred ?
	    &pin : NULL)) != 0)
		goto out;
	if (k->deferred && (r = find_deferred(ctx, k)) != 0)
		goto out;
	r = sign_once(ctx, k, rq, pin, &mech, data, len, sig, siglen);
	if (r != 0 && token_error_ckr(ctx) == CKR_USER_NOT_LOGGED_IN &&
	    k->ts->logged_in) {
		/* logged out behind our back (another program, the card
		 * reset): once more, after a new login */
		token_clear_error(ctx);
		token_slot_logged_out(ctx, k->ts);
		if ((r = token_login_for(ctx, k, rq, &pin)) == 0 &&
		    (r = find_deferred(ctx, k)) == 0)
			r = sign_once(ctx, k, rq, pin, &mech, data, len, sig,
			    siglen);
	}
out:
	/* pin-per-handshake: nothing of this login outlives the signature */
	if (k->logout_each)
		token_logout_key(ctx, k);
	pin_free(pin);
	return r;
}

int
token_sign(struct token_ctx *ctx, struct token_key *k, int alg, int hash,
    uint32_t saltlen, const uint8_t *data, size_t len, uint8_t *sig,
    size_t *siglen)
{
	return token_sign_for(ctx, k, NULL, alg, hash, saltlen, data, len,
	    sig, siglen);
}
