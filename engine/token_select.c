/*
 * p11agent: which token a key URI means, judged before any login, so that
 * a PIN never goes to the wrong card.  OPEN, PROBE and LIST --pin all ask
 * token_scan(); see token_int.h for the rule.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "token_int.h"

#define MAX_SLOTS	64
#define MAX_NAMED	600	/* room for token URIs in a message */

/* Appends to a fixed buffer; what does not fit is cut, never overrun. */
static void
sb_add(char *buf, size_t size, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 len = strlen(buf);

	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

void
token_describe(const CK_TOKEN_INFO *ti, char *out, size_t size)
{
	char	 label[33], manuf[33], model[17], serial[17];

	token_label(ti->label, label);
	TOKEN_UNPAD(ti->manufacturerID, manuf);
	TOKEN_UNPAD(ti->model, model);
	TOKEN_UNPAD(ti->serialNumber, serial);
	snprintf(out, size, "token '%s' (%s %s, serial %s)%s%s%s", label,
	    manuf, model, serial,
	    ti->flags & CKF_USER_PIN_LOCKED ? ", PIN LOCKED" : "",
	    ti->flags & CKF_USER_PIN_FINAL_TRY ? ", PIN final try" : "",
	    ti->flags & CKF_PROTECTED_AUTHENTICATION_PATH ? ", PIN pad" : "");
}

int
token_info_uri(const CK_TOKEN_INFO *ti, char **out)
{
	P11KitUri	*uri;
	char		*s = NULL;
	int		 r = 0;

	if ((uri = p11_kit_uri_new()) == NULL)
		return P11A_ERR_NOMEM;
	memcpy(p11_kit_uri_get_token_info(uri), ti, sizeof(*ti));
	if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_TOKEN, &s) !=
	    P11_KIT_URI_OK)
		r = P11A_ERR_NOMEM;
	else
		*out = s;
	p11_kit_uri_free(uri);
	return r;
}

/* The module's registry name, else its file name; never NULL. */
static char *
module_label(struct token_ctx *ctx, size_t i)
{
	char	*s;

	if ((s = p11_kit_module_get_name(ctx->mods[i])) == NULL &&
	    (s = token_module_file(ctx, i)) == NULL)
		s = strdup("(unnamed module)");
	return s;
}

/* 1 if an object matches tmpl, 0 if none, -1 if the token did not say. */
static int
find_any(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl,
    CK_ULONG n)
{
	CK_OBJECT_HANDLE	 h;
	CK_ULONG		 count = 0;
	CK_RV			 rv;

	if (m->C_FindObjectsInit(s, tmpl, n) != CKR_OK)
		return -1;
	rv = m->C_FindObjects(s, &h, 1, &count);
	m->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return -1;
	return count > 0;
}

/*
 * Does the token show, without a login, a certificate or public key with
 * the URI's id and label (attrs)?  A token that shows no certificate or
 * public key at all, or cannot be asked, may still hold the key: 1.  A
 * token that shows some, none of them matching: 0.
 */
static int
shows_match(CK_FUNCTION_LIST *m, CK_SLOT_ID slot, const CK_ATTRIBUTE *attrs,
    CK_ULONG nattrs)
{
	static const CK_OBJECT_CLASS classes[] = {
		CKO_CERTIFICATE, CKO_PUBLIC_KEY };
	CK_OBJECT_CLASS		 cls;
	CK_ATTRIBUTE		 tmpl[3];
	CK_SESSION_HANDLE	 s;
	size_t			 c;
	int			 found = 0, any = 0;

	if (m->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) !=
	    CKR_OK)
		return 1;
	tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	memcpy(tmpl + 1, attrs, nattrs * sizeof(*attrs));
	for (c = 0; c < 2 && !found; c++) {
		cls = classes[c];
		/* a match, or the token would not say: keep it */
		found = find_any(m, s, tmpl, 1 + nattrs) != 0;
	}
	for (c = 0; c < 2 && !found && !any; c++) {
		cls = classes[c];
		any = find_any(m, s, tmpl, 1) == 1;
	}
	m->C_CloseSession(s);
	return found || !any;
}

/* The URI's object attributes that a public object can show. */
static CK_ULONG
object_attrs(P11KitUri *uri, CK_ATTRIBUTE *out)
{
	CK_ATTRIBUTE	*a;
	CK_ULONG	 n = 0;

	if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)) != NULL)
		out[n++] = *a;
	if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)) != NULL)
		out[n++] = *a;
	return n;
}

/* What one module's slots held: adds candidates; describes the module. */
static void
scan_slots(struct token_ctx *ctx, size_t i, P11KitUri *uri,
    struct token_scan *sc, const char *name)
{
	CK_FUNCTION_LIST	*m = ctx->mods[i];
	CK_SLOT_ID		 slots[MAX_SLOTS];
	CK_TOKEN_INFO		 ti;
	CK_ATTRIBUTE		 attrs[2];
	CK_ULONG		 nattrs;
	int			 n, j, present = 0, uninit = 0, hidden = 0;

	if ((n = token_slots(ctx, i, slots)) < 0) {
		sb_add(sc->searched, sizeof(sc->searched),
		    "%s%s (C_GetSlotList failed)", sc->nsearched++ ? ", " : "",
		    name);
		return;
	}
	nattrs = object_attrs(uri, attrs);
	for (j = 0; j < n; j++) {
		if (m->C_GetTokenInfo(slots[j], &ti) != CKR_OK)
			continue;
		present++;
		if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
			uninit++;
			continue;
		}
		if (!p11_kit_uri_match_token_info(uri, &ti))
			continue;
		if (nattrs > 0 && !shows_match(m, slots[j], attrs, nattrs)) {
			hidden++;
			continue;
		}
		if (sc->ncand < PROTO_MAX_CANDIDATES)
			sc->cand[sc->ncand] = (struct token_cand){ i, slots[j],
			    ti };
		sc->ncand++;
	}
	sb_add(sc->searched, sizeof(sc->searched), "%s%s (", sc->nsearched++ ?
	    ", " : "", name);
	if (present == 0)
		sb_add(sc->searched, sizeof(sc->searched), "no token");
	else
		sb_add(sc->searched, sizeof(sc->searched), "%d token%s",
		    present, present == 1 ? "" : "s");
	if (uninit > 0)
		sb_add(sc->searched, sizeof(sc->searched), ": %d not "
		    "initialised", uninit);
	if (hidden > 0)
		sb_add(sc->searched, sizeof(sc->searched), "%s%d showing no "
		    "certificate or public key with the URI's id/object",
		    uninit > 0 ? ", " : ": ", hidden);
	sb_add(sc->searched, sizeof(sc->searched), ")");
}

int
token_scan(struct token_ctx *ctx, P11KitUri *uri, struct token_scan *sc)
{
	CK_INFO		 info;
	size_t		 i;
	char		*name;
	int		 had_error = ctx->err[0] != '\0';
	unsigned long	 ckr;

	memset(sc, 0, sizeof(*sc));
	/* p11-kit matches nothing to a URI with an attribute it does not
	 * know: say that, without waking a module */
	if (p11_kit_uri_any_unrecognized(uri)) {
		sc->unrecognized = 1;
		return 0;
	}
	for (i = 0; i < ctx->nmods; i++) {
		if ((name = module_label(ctx, i)) == NULL)
			return P11A_ERR_NOMEM;
		if (!token_module_matches(ctx, i, uri)) {
			sb_add(sc->excluded, sizeof(sc->excluded), "%s%s",
			    sc->nexcluded++ ? ", " : "", name);
		} else if (token_module_init(ctx, i) != 0) {
			/* forget the module's error: the scan reports it */
			ckr = had_error ? 0 : token_error_ckr(ctx);
			if (!had_error)
				token_clear_error(ctx);
			sb_add(sc->searched, sizeof(sc->searched), "%s%s (did "
			    "not start: %s)", sc->nsearched++ ? ", " : "", name,
			    ckr ? token_ckr_name(ckr) : "C_Initialize failed");
		} else if (ctx->mods[i]->C_GetInfo(&info) != CKR_OK ||
		    !p11_kit_uri_match_module_info(uri, &info)) {
			sb_add(sc->excluded, sizeof(sc->excluded), "%s%s",
			    sc->nexcluded++ ? ", " : "", name);
		} else
			scan_slots(ctx, i, uri, sc, name);
		free(name);
	}
	if (!had_error)
		token_clear_error(ctx);
	return 0;
}

void
token_no_match(struct token_ctx *ctx, const struct token_scan *sc,
    const char *what)
{
	if (sc->unrecognized)
		token_seterr(ctx, 0, "%s: no token matches: the URI has an "
		    "attribute p11-kit does not know, and then it matches "
		    "nothing (module-name= and module-path= belong in the "
		    "query, after '?': pkcs11:token=LABEL?module-name=NAME); "
		    "run 'p11agent tokens' to see the URIs", what);
	else if (ctx->nmods == 0)
		token_seterr(ctx, 0, "%s: no token matches: no PKCS#11 module "
		    "is loaded (is p11-kit's module registry empty?)", what);
	else if (sc->nsearched == 0)
		token_seterr(ctx, 0, "%s: no token matches: the URI's module "
		    "attributes (module-name, module-path, library-*) rule out "
		    "every module (%s), so none was searched; run 'p11agent "
		    "tokens' to see them", what, sc->excluded);
	else
		token_seterr(ctx, 0, "%s: no token matches; searched %s%s%s; "
		    "run 'p11agent tokens' to see them", what, sc->searched,
		    sc->nexcluded ? "; not searched, ruled out by the URI's "
		    "module attributes: " : "", sc->nexcluded ? sc->excluded :
		    "");
}

/* More than one candidate: name each by its token URI. */
static void
ambiguous(struct token_ctx *ctx, const struct token_scan *sc,
    const char *what)
{
	char	 named[MAX_NAMED] = "", *s;
	int	 i, shown = 0;

	for (i = 0; i < sc->ncand && i < PROTO_MAX_CANDIDATES; i++) {
		if (token_info_uri(&sc->cand[i].ti, &s) != 0)
			break;
		if (strlen(named) + strlen(s) + 5 < sizeof(named) - 20) {
			sb_add(named, sizeof(named), "%s'%s'", shown ? ", " :
			    "", s);
			shown++;
		}
		free(s);
	}
	if (shown < sc->ncand)
		sb_add(named, sizeof(named), " and %d more", sc->ncand - shown);
	token_seterr(ctx, 0, "%s: %d tokens match: %s; a PIN is for one token "
	    "only, so none was sent: name the one you mean with token= or "
	    "serial= in the URI", what, sc->ncand, named);
}

int
token_select(struct token_ctx *ctx, P11KitUri *uri, const char *what,
    struct token_cand *out)
{
	struct token_scan	*sc;
	int			 r;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return P11A_ERR_NOMEM;
	if ((r = token_scan(ctx, uri, sc)) != 0)
		goto out;
	if (sc->ncand == 0) {
		token_no_match(ctx, sc, what);
		r = P11A_ERR_NO_TOKEN;
	} else if (sc->ncand > 1) {
		ambiguous(ctx, sc, what);
		r = P11A_ERR_INVALID;
	} else
		*out = sc->cand[0];
out:
	free(sc);
	return r;
}

int
token_probe(struct token_ctx *ctx, const char *key_uri, struct pbuf *out)
{
	struct token_scan	*sc = NULL;
	P11KitUri		*uri = NULL;
	char			 desc[512], *s;
	int			 i, n, r, pr;

	if ((uri = p11_kit_uri_new()) == NULL ||
	    (sc = calloc(1, sizeof(*sc))) == NULL) {
		r = P11A_ERR_NOMEM;
		goto out;
	}
	if ((pr = p11_kit_uri_parse(key_uri, P11_KIT_URI_FOR_ANY, uri)) !=
	    P11_KIT_URI_OK) {
		token_seterr(ctx, 0, "%s: %s", key_uri,
		    p11_kit_uri_message(pr));
		r = P11A_ERR_URI;
		goto out;
	}
	if ((r = token_scan(ctx, uri, sc)) != 0)
		goto out;
	if (sc->ncand == 0) {
		/* none: an error with the reason, as OPEN would say it */
		token_no_match(ctx, sc, key_uri);
		r = P11A_ERR_NO_TOKEN;
		goto out;
	}
	n = sc->ncand < PROTO_MAX_CANDIDATES ? sc->ncand :
	    PROTO_MAX_CANDIDATES;
	pbuf_put_u32(out, (uint32_t)n);
	for (i = 0; i < n; i++) {
		if ((r = token_info_uri(&sc->cand[i].ti, &s)) != 0)
			goto out;
		token_describe(&sc->cand[i].ti, desc, sizeof(desc));
		pbuf_put_str(out, s);
		pbuf_put_str(out, desc);
		free(s);
	}
	if ((r = out->err) != 0)
		token_seterr(ctx, 0, "%s: the probe reply is too large",
		    key_uri);
out:
	free(sc);
	p11_kit_uri_free(uri);
	return r;
}

int
token_modules(struct token_ctx *ctx, struct pbuf *out)
{
	char	*name, *file;
	size_t	 i;
	int	 r;

	if (ctx->nmods > PROTO_MAX_MODULES) {
		token_seterr(ctx, 0, "%zu modules are loaded, more than the "
		    "%d a reply can list", ctx->nmods, PROTO_MAX_MODULES);
		return P11A_ERR_TOO_LARGE;
	}
	pbuf_put_u32(out, (uint32_t)ctx->nmods);
	for (i = 0; i < ctx->nmods; i++) {
		name = p11_kit_module_get_name(ctx->mods[i]);
		file = token_module_file(ctx, i);
		pbuf_put_str(out, name);
		pbuf_put_str(out, file);
		free(name);
		free(file);
	}
	if ((r = out->err) != 0)
		token_seterr(ctx, 0, "the module list is too large");
	return r;
}
