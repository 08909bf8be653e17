/*
 * p11agent: listing modules, slots, tokens, keys and certificates, each
 * with its pkcs11: URI (for 'p11agent tokens').  Runs in the helper.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <openssl/objects.h>
#include <openssl/x509.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "token_int.h"

#define MAX_SLOTS	64
#define MAX_OBJECTS	256

static void
put_record(struct pbuf *out, int kind, P11KitUri *uri, P11KitUriType type,
    const char *desc)
{
	char	*s = NULL;

	if (uri != NULL && p11_kit_uri_format(uri, type, &s) != P11_KIT_URI_OK)
		s = NULL;
	pbuf_put_u8(out, (uint8_t)kind);
	pbuf_put_str(out, s ? s : "");
	pbuf_put_str(out, desc);
	free(s);
}

static CK_ULONG
attr_len(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
    CK_ATTRIBUTE_TYPE type)
{
	CK_ATTRIBUTE	 a = { type, NULL, 0 };

	if (m->C_GetAttributeValue(s, h, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return 0;
	return a.ulValueLen;
}

/* Reads a small attribute into buf; returns its length or 0. */
static CK_ULONG
attr_get(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
    CK_ATTRIBUTE_TYPE type, void *buf, CK_ULONG size)
{
	CK_ATTRIBUTE	 a = { type, buf, size };

	if (m->C_GetAttributeValue(s, h, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return 0;
	return a.ulValueLen;
}

static const char *
attr_bool(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
    CK_ATTRIBUTE_TYPE type, const char *yes, const char *no)
{
	CK_BBOOL	 b = CK_FALSE;

	if (attr_get(m, s, h, type, &b, sizeof(b)) != sizeof(b))
		return "";
	return b ? yes : no;
}

static void
describe_ec(const uint8_t *params, CK_ULONG len, char *out, size_t size)
{
	const unsigned char	*p = params;
	ASN1_OBJECT		*oid;
	int			 nid = NID_undef;

	if ((oid = d2i_ASN1_OBJECT(NULL, &p, (long)len)) != NULL) {
		nid = OBJ_obj2nid(oid);
		ASN1_OBJECT_free(oid);
	}
	snprintf(out, size, "EC %s", nid == NID_X9_62_prime256v1 ? "P-256" :
	    nid == NID_secp384r1 ? "P-384" : nid == NID_secp521r1 ? "P-521" :
	    nid != NID_undef ? OBJ_nid2sn(nid) : "(unknown curve)");
}

static void
describe_key(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
    CK_OBJECT_CLASS cls, char *out, size_t size)
{
	CK_KEY_TYPE	 kt = (CK_KEY_TYPE)-1;
	CK_ULONG	 bits = 0, n;
	uint8_t		 params[128];
	char		 alg[64];

	attr_get(m, s, h, CKA_KEY_TYPE, &kt, sizeof(kt));
	if (kt == CKK_RSA) {
		if (attr_get(m, s, h, CKA_MODULUS_BITS, &bits, sizeof(bits)) !=
		    sizeof(bits))
			bits = attr_len(m, s, h, CKA_MODULUS) * 8;
		snprintf(alg, sizeof(alg), "RSA %lu", (unsigned long)bits);
	} else if (kt == CKK_EC) {
		n = attr_get(m, s, h, CKA_EC_PARAMS, params, sizeof(params));
		describe_ec(params, n, alg, sizeof(alg));
	} else
		snprintf(alg, sizeof(alg), "key type 0x%lx", (unsigned long)kt);
	if (cls != CKO_PRIVATE_KEY) {
		snprintf(out, size, "public key, %s", alg);
		return;
	}
	snprintf(out, size, "private key, %s%s%s%s", alg,
	    attr_bool(m, s, h, CKA_SENSITIVE, ", sensitive", ", NOT sensitive"),
	    attr_bool(m, s, h, CKA_EXTRACTABLE, ", EXTRACTABLE",
	    ", not extractable"),
	    attr_bool(m, s, h, CKA_ALWAYS_AUTHENTICATE,
	    ", PIN for each signature", ""));
}

static void
describe_cert(struct token_ctx *ctx, CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s,
    CK_OBJECT_HANDLE h, char *out, size_t size)
{
	const unsigned char	*p;
	uint8_t			*der = NULL;
	size_t			 len;
	X509			*x = NULL;
	char			 subj[256];

	snprintf(out, size, "certificate (unreadable)");
	if (token_read_cert(ctx, m, s, h, &der, &len) != 0)
		goto out;
	p = der;
	if ((x = d2i_X509(NULL, &p, (long)len)) == NULL)
		goto out;
	X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	snprintf(out, size, "certificate %s", subj);
out:
	token_clear_error(ctx);
	X509_free(x);
	free(der);
}

static void
list_class(struct token_ctx *ctx, CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s,
    CK_TOKEN_INFO *ti, CK_OBJECT_CLASS cls, struct pbuf *out)
{
	CK_ATTRIBUTE		 tmpl = { CKA_CLASS, &cls, sizeof(cls) };
	CK_OBJECT_HANDLE	 objs[MAX_OBJECTS];
	CK_ULONG		 n = 0, i;
	CK_ATTRIBUTE		 a;
	P11KitUri		*uri;
	uint8_t			 buf[256];
	char			 desc[512];

	if (m->C_FindObjectsInit(s, &tmpl, 1) != CKR_OK)
		return;
	if (m->C_FindObjects(s, objs, MAX_OBJECTS, &n) != CKR_OK)
		n = 0;
	m->C_FindObjectsFinal(s);
	for (i = 0; i < n; i++) {
		if ((uri = p11_kit_uri_new()) == NULL)
			return;
		memcpy(p11_kit_uri_get_token_info(uri), ti, sizeof(*ti));
		p11_kit_uri_set_attribute(uri, &tmpl);
		a.type = CKA_ID;
		a.pValue = buf;
		if ((a.ulValueLen = attr_get(m, s, objs[i], CKA_ID, buf,
		    sizeof(buf))) > 0)
			p11_kit_uri_set_attribute(uri, &a);
		a.type = CKA_LABEL;
		if ((a.ulValueLen = attr_get(m, s, objs[i], CKA_LABEL, buf,
		    sizeof(buf))) > 0)
			p11_kit_uri_set_attribute(uri, &a);
		if (cls == CKO_CERTIFICATE)
			describe_cert(ctx, m, s, objs[i], desc, sizeof(desc));
		else
			describe_key(m, s, objs[i], cls, desc, sizeof(desc));
		put_record(out, cls == CKO_CERTIFICATE ? PROTO_LIST_CERT :
		    PROTO_LIST_KEY, uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, desc);
		p11_kit_uri_free(uri);
	}
}

/*
 * What to list: tokens matching filter (all if NULL); log in with
 * pin_source to the one token selected (module index, slot), if any.
 */
struct list_args {
	const char	*pin_source;
	P11KitUri	*filter;
	int		 login;
	size_t		 login_mod;
	CK_SLOT_ID	 login_slot;
	int		 ntokens;	/* token records listed */
};

static int
token_wanted(const struct list_args *a, const CK_TOKEN_INFO *ti)
{
	return a->filter == NULL || p11_kit_uri_match_token_info(a->filter, ti);
}

static void
list_token(struct token_ctx *ctx, size_t i, CK_SLOT_ID slot,
    struct list_args *a, struct pbuf *out)
{
	CK_FUNCTION_LIST	*m = ctx->mods[i];
	CK_TOKEN_INFO		 ti;
	struct token_key	 k;
	P11KitUri		*uri;
	char			 desc[512];

	if (m->C_GetTokenInfo(slot, &ti) != CKR_OK || !token_wanted(a, &ti))
		return;
	a->ntokens++;
	if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
		put_record(out, PROTO_LIST_TOKEN, NULL, 0,
		    "token not initialized");
		return;
	}
	token_describe(&ti, desc, sizeof(desc));
	if ((uri = p11_kit_uri_new()) == NULL)
		return;
	memcpy(p11_kit_uri_get_token_info(uri), &ti, sizeof(ti));
	put_record(out, PROTO_LIST_TOKEN, uri, P11_KIT_URI_FOR_TOKEN, desc);
	p11_kit_uri_free(uri);
	memset(&k, 0, sizeof(k));
	k.mod = m;
	k.slot = slot;
	k.flags = ti.flags;
	memcpy(k.label, ti.label, sizeof(k.label));
	memcpy(k.serial, ti.serialNumber, sizeof(k.serial));
	if (m->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
	    &k.session) != CKR_OK)
		return;
	/* the PIN goes to the selected token only */
	if (a->login && i == a->login_mod && slot == a->login_slot &&
	    token_login(ctx, &k, a->pin_source) != 0) {
		snprintf(desc, sizeof(desc), "login failed: %s",
		    token_error(ctx));
		put_record(out, PROTO_LIST_TOKEN, NULL, 0, desc);
		token_clear_error(ctx);
	}
	list_class(ctx, m, k.session, &ti, CKO_PRIVATE_KEY, out);
	list_class(ctx, m, k.session, &ti, CKO_PUBLIC_KEY, out);
	list_class(ctx, m, k.session, &ti, CKO_CERTIFICATE, out);
	m->C_CloseSession(k.session);
}

/* "slot N: DESCRIPTION", or "slot N" when the slot has none. */
static void
describe_slot(CK_SLOT_ID id, const CK_SLOT_INFO *si, char *out, size_t size)
{
	char	 sdesc[65];
	int	 present = (si->flags & CKF_TOKEN_PRESENT) != 0;

	TOKEN_UNPAD(si->slotDescription, sdesc);
	if (sdesc[0] != '\0')
		snprintf(out, size, "slot %lu: %s%s", (unsigned long)id, sdesc,
		    present ? "" : " (no token)");
	else
		snprintf(out, size, "slot %lu (no description%s)",
		    (unsigned long)id, present ? "" : ", no token");
}

static void
list_module(struct token_ctx *ctx, size_t i, struct list_args *a,
    struct pbuf *out)
{
	CK_SLOT_ID	 slots[MAX_SLOTS];
	CK_SLOT_INFO	 si;
	CK_INFO		 info;
	P11KitUri	*uri;
	char		 desc[512], *name, lib[33], manuf[33];
	CK_ULONG	 n = MAX_SLOTS, j;

	if (a->filter != NULL && !token_module_matches(ctx, i, a->filter))
		return;
	name = token_module_name(ctx, i);
	if (token_module_init(ctx, i) != 0 ||
	    ctx->mods[i]->C_GetInfo(&info) != CKR_OK) {
		snprintf(desc, sizeof(desc), "%s: %s", name ? name : "?",
		    token_error(ctx));
		token_clear_error(ctx);
		put_record(out, PROTO_LIST_MODULE, NULL, 0, desc);
		free(name);
		return;
	}
	TOKEN_UNPAD(info.libraryDescription, lib);
	TOKEN_UNPAD(info.manufacturerID, manuf);
	snprintf(desc, sizeof(desc), "%s (%s, %s)", name ? name : "?", lib,
	    manuf);
	free(name);
	if ((uri = p11_kit_uri_new()) == NULL)
		return;
	memcpy(p11_kit_uri_get_module_info(uri), &info, sizeof(info));
	put_record(out, PROTO_LIST_MODULE, uri, P11_KIT_URI_FOR_MODULE, desc);
	p11_kit_uri_free(uri);
	if (ctx->mods[i]->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
		return;
	for (j = 0; j < n; j++) {
		if (ctx->mods[i]->C_GetSlotInfo(slots[j], &si) != CKR_OK)
			continue;
		describe_slot(slots[j], &si, desc, sizeof(desc));
		put_record(out, PROTO_LIST_SLOT, NULL, 0, desc);
		if (si.flags & CKF_TOKEN_PRESENT)
			list_token(ctx, i, slots[j], a, out);
	}
}

/* A filter that matched no token: say what was searched. */
static int
no_match(struct token_ctx *ctx, P11KitUri *filter, const char *what)
{
	struct token_scan	*sc;
	int			 r;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return P11A_ERR_NOMEM;
	if ((r = token_scan(ctx, filter, sc)) == 0) {
		token_no_match(ctx, sc, what);
		r = P11A_ERR_NO_TOKEN;
	}
	free(sc);
	return r;
}

int
token_list(struct token_ctx *ctx, const char *pin_source, const char *filter,
    struct pbuf *out)
{
	struct list_args	 a;
	struct token_cand	 c;
	P11KitUri		*all = NULL;
	size_t			 i;
	int			 r = 0, pr;

	memset(&a, 0, sizeof(a));
	a.pin_source = pin_source;
	if (filter != NULL) {
		if ((a.filter = p11_kit_uri_new()) == NULL)
			return P11A_ERR_NOMEM;
		if ((pr = p11_kit_uri_parse(filter, P11_KIT_URI_FOR_ANY,
		    a.filter)) != P11_KIT_URI_OK) {
			token_seterr(ctx, 0, "%s: %s", filter,
			    p11_kit_uri_message(pr));
			r = P11A_ERR_URI;
			goto out;
		}
	}
	/* a PIN is for one token: the one the filter selects, as for OPEN */
	if (pin_source != NULL) {
		if (a.filter == NULL && (all = p11_kit_uri_new()) == NULL) {
			r = P11A_ERR_NOMEM;
			goto out;
		}
		if ((r = token_select(ctx, a.filter ? a.filter : all,
		    filter ? filter : "(no URI)", &c)) != 0)
			goto out;
		a.login = 1;
		a.login_mod = c.mod;
		a.login_slot = c.slot;
	}
	for (i = 0; i < ctx->nmods; i++)
		list_module(ctx, i, &a, out);
	if ((r = out->err) != 0)
		token_seterr(ctx, 0, "the listing is too large");
	else if (a.filter != NULL && a.ntokens == 0)
		r = no_match(ctx, a.filter, filter);
out:
	p11_kit_uri_free(all);
	p11_kit_uri_free(a.filter);
	return r;
}
