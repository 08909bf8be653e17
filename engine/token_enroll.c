/*
 * p11agent: enrollment in the token helper: a key pair generated on the
 * token (GENKEY) and certificates written beside a key (IMPORT); see
 * include/p11agent/enroll.h.  Only public attributes are read: the
 * booleans of the new private key, and the public halves (CKA_MODULUS,
 * CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS, CKA_EC_POINT of the public key).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "p11agent/enroll.h"
#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "token_int.h"

#define MAX_MECHS	512
#define MAX_ATTR	1024	/* a modulus, an EC point or parameters */
#define MAX_LABEL	128

/* DER OIDs of the curves GENKEY offers. */
static const uint8_t	oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
	0x3d, 0x03, 0x01, 0x07 };
static const uint8_t	oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00,
	0x22 };

/* What one request works on: the token, its session, the key's names. */
struct enr {
	struct token_ctx	*ctx;
	struct token_key	 k;	/* mod, slot, flags, label, sess */
	CK_TOKEN_INFO		 ti;
	char			 name[33];	/* the token's label */
	const char		*uristr;
	CK_ATTRIBUTE		*id;		/* the URI's, or NULL */
	CK_ATTRIBUTE		*label;
};

static void
enr_close(struct enr *e)
{
	if (e->k.session != 0)
		e->k.mod->C_CloseSession(e->k.session);
	e->k.session = 0;
}

static int
parse_uri(struct token_ctx *ctx, const char *s, P11KitUri **out)
{
	P11KitUri	*u;
	int		 pr;

	if ((u = p11_kit_uri_new()) == NULL)
		return P11A_ERR_NOMEM;
	if ((pr = p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, u)) !=
	    P11_KIT_URI_OK) {
		token_seterr(ctx, 0, "%s: %s", s, p11_kit_uri_message(pr));
		p11_kit_uri_free(u);
		return P11A_ERR_URI;
	}
	*out = u;
	return 0;
}

/* A URI's type= must be absent or private. */
static int
check_class(struct token_ctx *ctx, P11KitUri *u, const char *s)
{
	CK_ATTRIBUTE	*a;

	a = p11_kit_uri_get_attribute(u, CKA_CLASS);
	if (a == NULL || (a->ulValueLen == sizeof(CK_OBJECT_CLASS) &&
	    *(CK_OBJECT_CLASS *)a->pValue == CKO_PRIVATE_KEY))
		return 0;
	token_seterr(ctx, 0, "%s: the key URI must name a private key "
	    "(type=private, or no type=)", s);
	return P11A_ERR_URI;
}

/* Selects the token (uri as token_select judges it), before any login;
 * refuses one whose flags forbid writing. */
static int
enr_select(struct enr *e, P11KitUri *sel, const char *doing)
{
	struct token_cand	 c;
	int			 r;

	if ((r = token_select(e->ctx, sel, e->uristr, &c)) != 0)
		return r;
	e->ti = c.ti;
	e->k.mod = e->ctx->mods[c.mod];
	e->k.slot = c.slot;
	e->k.flags = c.ti.flags;
	memcpy(e->k.label, c.ti.label, sizeof(e->k.label));
	memcpy(e->k.serial, c.ti.serialNumber, sizeof(e->k.serial));
	token_label(c.ti.label, e->name);
	if (c.ti.flags & CKF_WRITE_PROTECTED) {
		token_seterr(e->ctx, 0, "token '%s' is write-protected "
		    "(CKF_WRITE_PROTECTED): it cannot %s; use the card's own "
		    "tool or another token", e->name, doing);
		return P11A_ERR_READ_ONLY;
	}
	return 0;
}

/* A read/write session on the selected token, logged in. */
static int
enr_login(struct enr *e, const char *pin_source)
{
	CK_RV	 rv;

	rv = e->k.mod->C_OpenSession(e->k.slot, CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &e->k.session);
	if (rv != CKR_OK) {
		e->k.session = 0;
		token_seterr(e->ctx, rv, "token '%s': C_OpenSession (read/"
		    "write): %s", e->name, token_ckr_name(rv));
		return rv == CKR_TOKEN_WRITE_PROTECTED ? P11A_ERR_READ_ONLY :
		    token_rv_code(rv);
	}
	return token_login(e->ctx, &e->k, pin_source);
}

/* Reads one attribute of at most size bytes; its length, or -1. */
static long
get_attr(struct enr *e, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
    void *buf, CK_ULONG size)
{
	CK_ATTRIBUTE	 a = { type, buf, size };

	if (e->k.mod->C_GetAttributeValue(e->k.session, h, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return -1;
	return (long)a.ulValueLen;
}

/* A boolean attribute: 1, 0, or dflt when the token does not say. */
static int
get_bool(struct enr *e, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, int dflt)
{
	CK_BBOOL	 b = CK_FALSE;

	if (get_attr(e, h, type, &b, sizeof(b)) != (long)sizeof(b))
		return dflt;
	return b != CK_FALSE;
}

/* Finds objects matching tmpl: 0 with *count (0, 1 or 2) and *h. */
static int
find(struct enr *e, CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *h,
    CK_ULONG *count)
{
	return token_find_one(e->ctx, e->k.mod, e->k.session, tmpl, n, h,
	    count);
}

/* ---- public keys from token attributes */

static EVP_PKEY *
rsa_pub(const uint8_t *n, long nlen, const uint8_t *ex, long elen)
{
	OSSL_PARAM_BLD	*bld = NULL;
	OSSL_PARAM	*params = NULL;
	EVP_PKEY_CTX	*pc = NULL;
	EVP_PKEY	*pk = NULL;
	BIGNUM		*bn = NULL, *be = NULL;

	if ((bn = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
	    (be = BN_bin2bn(ex, (int)elen, NULL)) == NULL ||
	    (bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (pc = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(pc);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return pk;
}

static EVP_PKEY *
ec_pub_raw(const char *curve, const uint8_t *pt, size_t len)
{
	OSSL_PARAM	 params[3];
	EVP_PKEY_CTX	*pc;
	EVP_PKEY	*pk = NULL;

	params[0] = OSSL_PARAM_construct_utf8_string(
	    OSSL_PKEY_PARAM_GROUP_NAME, (char *)curve, 0);
	params[1] = OSSL_PARAM_construct_octet_string(
	    OSSL_PKEY_PARAM_PUB_KEY, (void *)pt, len);
	params[2] = OSSL_PARAM_construct_end();
	if ((pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(pc);
	return pk;
}

/*
 * CKA_EC_POINT is a DER OCTET STRING holding the point (PKCS#11); some
 * modules give the bare point.  The wrong reading is no point on the
 * curve, which OpenSSL refuses.
 */
static EVP_PKEY *
ec_pub(const uint8_t *params, long plen, const uint8_t *pt, long len)
{
	const unsigned char	*p = params;
	ASN1_OBJECT		*oid;
	ASN1_OCTET_STRING	*os;
	const char		*curve;
	EVP_PKEY		*pk = NULL;
	int			 nid = NID_undef;

	if ((oid = d2i_ASN1_OBJECT(NULL, &p, plen)) != NULL) {
		if (p == params + plen)
			nid = OBJ_obj2nid(oid);
		ASN1_OBJECT_free(oid);
	}
	if (nid == NID_undef || (curve = OBJ_nid2sn(nid)) == NULL)
		return NULL;
	p = pt;
	if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, len)) != NULL) {
		if (p == pt + len)
			pk = ec_pub_raw(curve, ASN1_STRING_get0_data(os),
			    (size_t)ASN1_STRING_length(os));
		ASN1_OCTET_STRING_free(os);
	}
	if (pk == NULL)
		pk = ec_pub_raw(curve, pt, (size_t)len);
	ERR_clear_error();
	return pk;
}

/*
 * The public key of object h (a public key, or for RSA a private key,
 * whose modulus and exponent are public): public attributes only.
 */
static int
token_pub(struct enr *e, CK_OBJECT_HANDLE h, CK_KEY_TYPE kt, EVP_PKEY **out)
{
	uint8_t		*a = NULL, *b = NULL;
	long		 alen, blen;
	EVP_PKEY	*pk = NULL;
	int		 r = P11A_ERR_TOKEN;

	if ((a = malloc(MAX_ATTR)) == NULL || (b = malloc(MAX_ATTR)) == NULL) {
		r = P11A_ERR_NOMEM;
		goto out;
	}
	if (kt == CKK_RSA) {
		alen = get_attr(e, h, CKA_MODULUS, a, MAX_ATTR);
		blen = get_attr(e, h, CKA_PUBLIC_EXPONENT, b, MAX_ATTR);
		if (alen > 0 && blen > 0)
			pk = rsa_pub(a, alen, b, blen);
	} else {
		alen = get_attr(e, h, CKA_EC_PARAMS, a, MAX_ATTR);
		blen = get_attr(e, h, CKA_EC_POINT, b, MAX_ATTR);
		if (alen > 0 && blen > 0)
			pk = ec_pub(a, alen, b, blen);
	}
	if (pk == NULL) {
		token_seterr(e->ctx, 0, "token '%s': cannot read the public "
		    "key (%s)", e->name, kt == CKK_RSA ? "CKA_MODULUS, "
		    "CKA_PUBLIC_EXPONENT" : "CKA_EC_PARAMS, CKA_EC_POINT");
		goto out;
	}
	*out = pk;
	r = 0;
out:
	free(a);
	free(b);
	return r;
}

/* ---- GENKEY */

/* Is the mechanism on the token's list, with the size in its range? */
static int
check_mech(struct enr *e, int keytype, uint32_t bits)
{
	CK_MECHANISM_TYPE	 want, mechs[MAX_MECHS];
	CK_MECHANISM_INFO	 mi;
	CK_ULONG		 n = MAX_MECHS, i;
	const char		*alg, *mname;
	CK_RV			 rv;

	alg = keytype == PROTO_KEY_RSA ? "RSA" : "EC";
	want = keytype == PROTO_KEY_RSA ? CKM_RSA_PKCS_KEY_PAIR_GEN :
	    CKM_EC_KEY_PAIR_GEN;
	mname = keytype == PROTO_KEY_RSA ? "CKM_RSA_PKCS_KEY_PAIR_GEN" :
	    "CKM_EC_KEY_PAIR_GEN";
	if ((rv = e->k.mod->C_GetMechanismList(e->k.slot, mechs, &n)) !=
	    CKR_OK) {
		token_seterr(e->ctx, rv, "token '%s': C_GetMechanismList: %s",
		    e->name, token_ckr_name(rv));
		return token_rv_code(rv);
	}
	for (i = 0; i < n && mechs[i] != want; i++)
		;
	if (i == n) {
		token_seterr(e->ctx, 0, "token '%s' offers no %s key-pair "
		    "generation through PKCS#11 (C_GetMechanismList has no "
		    "%s); generate the key with the card's own tool and use "
		    "import-cert", e->name, alg, mname);
		return P11A_ERR_MECHANISM;
	}
	if ((rv = e->k.mod->C_GetMechanismInfo(e->k.slot, want, &mi)) !=
	    CKR_OK) {
		token_seterr(e->ctx, rv, "token '%s': C_GetMechanismInfo(%s): "
		    "%s", e->name, mname, token_ckr_name(rv));
		return token_rv_code(rv);
	}
	if (!(mi.flags & CKF_GENERATE_KEY_PAIR)) {
		token_seterr(e->ctx, 0, "token '%s' lists %s but not for key-"
		    "pair generation (no CKF_GENERATE_KEY_PAIR); generate the "
		    "key with the card's own tool and use import-cert",
		    e->name, mname);
		return P11A_ERR_MECHANISM;
	}
	if (mi.ulMaxKeySize != 0 && (bits < mi.ulMinKeySize ||
	    bits > mi.ulMaxKeySize)) {
		token_seterr(e->ctx, 0, "token '%s' generates %s keys of %lu "
		    "to %lu bits only (CKM_INFO of %s), not %u: choose a "
		    "--type in that range", e->name, alg,
		    (unsigned long)mi.ulMinKeySize,
		    (unsigned long)mi.ulMaxKeySize, mname, (unsigned)bits);
		return P11A_ERR_MECHANISM;
	}
	return 0;
}

/* No object with the new key's id, no key with its label. */
static int
check_free(struct enr *e)
{
	static const CK_OBJECT_CLASS	 keys[] = { CKO_PRIVATE_KEY,
		CKO_PUBLIC_KEY };
	CK_OBJECT_CLASS		 cls;
	CK_ATTRIBUTE		 t[2];
	CK_OBJECT_HANDLE	 h;
	CK_ULONG		 count;
	size_t			 i;
	int			 r;

	if ((r = find(e, e->id, 1, &h, &count)) != 0)
		return r;
	if (count > 0) {
		token_seterr(e->ctx, 0, "%s: token '%s' already has an object "
		    "with that id; choose another id= (see 'p11agent tokens "
		    "--pin SOURCE')", e->uristr, e->name);
		return P11A_ERR_INVALID;
	}
	t[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	t[1] = *e->label;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		cls = keys[i];
		if ((r = find(e, t, 2, &h, &count)) != 0)
			return r;
		if (count > 0) {
			token_seterr(e->ctx, 0, "%s: token '%s' already has a "
			    "key with that label; choose another object=",
			    e->uristr, e->name);
			return P11A_ERR_INVALID;
		}
	}
	return 0;
}

static int
generate(struct enr *e, int keytype, uint32_t bits, CK_OBJECT_HANDLE *pub,
    CK_OBJECT_HANDLE *priv)
{
	static CK_BBOOL		 yes = CK_TRUE, no = CK_FALSE;
	static CK_BYTE		 f4[] = { 0x01, 0x00, 0x01 };
	CK_OBJECT_CLASS		 pubc = CKO_PUBLIC_KEY;
	CK_OBJECT_CLASS		 privc = CKO_PRIVATE_KEY;
	CK_KEY_TYPE		 kt = keytype == PROTO_KEY_RSA ? CKK_RSA :
	    CKK_EC;
	CK_MECHANISM		 mech = { 0, NULL, 0 };
	CK_ULONG		 modbits = bits;
	CK_ATTRIBUTE		 pt[9], st[12];
	CK_ULONG		 np = 0, ns = 0;
	CK_RV			 rv;

	pt[np++] = (CK_ATTRIBUTE){ CKA_CLASS, &pubc, sizeof(pubc) };
	pt[np++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &kt, sizeof(kt) };
	pt[np++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
	pt[np++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &no, sizeof(no) };
	pt[np++] = (CK_ATTRIBUTE){ CKA_VERIFY, &yes, sizeof(yes) };
	pt[np++] = *e->id;
	pt[np++] = *e->label;
	if (keytype == PROTO_KEY_RSA) {
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		pt[np++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &modbits,
		    sizeof(modbits) };
		pt[np++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, f4,
		    sizeof(f4) };
	} else {
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		pt[np++] = bits == 256 ?
		    (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p256,
		    sizeof(oid_p256) } :
		    (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p384,
		    sizeof(oid_p384) };
	}
	st[ns++] = (CK_ATTRIBUTE){ CKA_CLASS, &privc, sizeof(privc) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &kt, sizeof(kt) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &yes, sizeof(yes) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &yes, sizeof(yes) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, &no, sizeof(no) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_SIGN, &yes, sizeof(yes) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_DECRYPT, &no, sizeof(no) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_UNWRAP, &no, sizeof(no) };
	st[ns++] = (CK_ATTRIBUTE){ CKA_DERIVE, &no, sizeof(no) };
	st[ns++] = *e->id;
	st[ns++] = *e->label;
	rv = e->k.mod->C_GenerateKeyPair(e->k.session, &mech, pt, np, st, ns,
	    pub, priv);
	if (rv != CKR_OK) {
		token_seterr(e->ctx, rv, "token '%s': C_GenerateKeyPair: %s%s",
		    e->name, token_ckr_name(rv),
		    rv == CKR_TOKEN_WRITE_PROTECTED ?
		    " (the token is read-only)" : "");
		return rv == CKR_TOKEN_WRITE_PROTECTED ? P11A_ERR_READ_ONLY :
		    token_rv_code(rv);
	}
	return 0;
}

/* What the token says of the new private key; refused unless it is a
 * sensitive, never extractable signing-only key. */
static int
check_made(struct enr *e, CK_OBJECT_HANDLE priv, uint32_t *flags)
{
	uint32_t	 f = 0;

	if (get_bool(e, priv, CKA_SENSITIVE, 0))
		f |= ENROLL_KEY_SENSITIVE;
	if (get_bool(e, priv, CKA_EXTRACTABLE, 1))
		f |= ENROLL_KEY_EXTRACTABLE;
	if (get_bool(e, priv, CKA_SIGN, 0))
		f |= ENROLL_KEY_SIGN;
	if (get_bool(e, priv, CKA_DECRYPT, 0))
		f |= ENROLL_KEY_DECRYPT;
	if (get_bool(e, priv, CKA_UNWRAP, 0))
		f |= ENROLL_KEY_UNWRAP;
	if (get_bool(e, priv, CKA_DERIVE, 0))
		f |= ENROLL_KEY_DERIVE;
	*flags = f;
	if (f == (ENROLL_KEY_SENSITIVE | ENROLL_KEY_SIGN))
		return 0;
	token_seterr(e->ctx, 0, "token '%s' made a key that is not a "
	    "sensitive, never extractable signing key (flags 0x%x) although "
	    "asked for one; it was deleted again", e->name, (unsigned)f);
	return P11A_ERR_TOKEN;
}

/* The new key's URI: the token's attributes, id, object, type=private. */
static int
key_uri(struct enr *e, char **out)
{
	P11KitUri	*u;
	CK_OBJECT_CLASS	 cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE	 a = { CKA_CLASS, &cls, sizeof(cls) };
	char		*s = NULL;
	int		 r = P11A_ERR_NOMEM;

	if ((u = p11_kit_uri_new()) == NULL)
		return r;
	memcpy(p11_kit_uri_get_token_info(u), &e->ti, sizeof(e->ti));
	if (p11_kit_uri_set_attribute(u, e->id) == P11_KIT_URI_OK &&
	    p11_kit_uri_set_attribute(u, e->label) == P11_KIT_URI_OK &&
	    p11_kit_uri_set_attribute(u, &a) == P11_KIT_URI_OK &&
	    p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) ==
	    P11_KIT_URI_OK) {
		*out = s;
		r = 0;
	}
	p11_kit_uri_free(u);
	return r;
}

static int
check_genkey_args(struct enr *e, int keytype, uint32_t bits)
{
	if ((keytype == PROTO_KEY_RSA && (bits == 2048 || bits == 3072 ||
	    bits == 4096)) || (keytype == PROTO_KEY_EC && (bits == 256 ||
	    bits == 384)))
		return 0;
	token_seterr(e->ctx, 0, "%s: no key type %d of %u bits (RSA 2048, "
	    "3072, 4096; EC 256, 384)", e->uristr, keytype, (unsigned)bits);
	return P11A_ERR_INVALID;
}

static int
genkey_reply(struct enr *e, int keytype, CK_OBJECT_HANDLE pubh,
    uint32_t flags, struct pbuf *out)
{
	EVP_PKEY	*pk = NULL;
	uint8_t		*der = NULL;
	char		*uri = NULL;
	int		 len, r;

	if ((r = token_pub(e, pubh, keytype == PROTO_KEY_RSA ? CKK_RSA :
	    CKK_EC, &pk)) != 0 || (r = key_uri(e, &uri)) != 0)
		goto out;
	if ((len = i2d_PUBKEY(pk, &der)) <= 0 || len > ENROLL_MAX_SPKI) {
		r = P11A_ERR_TOO_LARGE;
		token_seterr(e->ctx, 0, "token '%s': the public key does not "
		    "encode", e->name);
		goto out;
	}
	pbuf_put_str(out, uri);
	pbuf_put_u8(out, (uint8_t)keytype);
	pbuf_put_bytes(out, der, (size_t)len);
	pbuf_put_u32(out, flags);
	r = out->err;
out:
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	free(uri);
	return r;
}

int
token_genkey(struct token_ctx *ctx, const char *uristr, int keytype,
    uint32_t bits, const char *pin_source, struct pbuf *out)
{
	struct enr		 e;
	P11KitUri		*u = NULL, *sel = NULL;
	CK_OBJECT_HANDLE	 pubh = 0, privh = 0;
	uint32_t		 flags = 0;
	int			 r, made = 0;

	memset(&e, 0, sizeof(e));
	e.ctx = ctx;
	e.uristr = uristr;
	if ((r = check_genkey_args(&e, keytype, bits)) != 0 ||
	    (r = parse_uri(ctx, uristr, &u)) != 0 ||
	    (r = parse_uri(ctx, uristr, &sel)) != 0 ||
	    (r = check_class(ctx, u, uristr)) != 0)
		goto out;
	e.id = p11_kit_uri_get_attribute(u, CKA_ID);
	e.label = p11_kit_uri_get_attribute(u, CKA_LABEL);
	if (e.id == NULL || e.id->ulValueLen == 0 || e.label == NULL ||
	    e.label->ulValueLen == 0) {
		token_seterr(ctx, 0, "%s: the URI must name the new key with "
		    "id= (its CKA_ID, e.g. id=%%11) and object= (its label)",
		    uristr);
		r = P11A_ERR_URI;
		goto out;
	}
	/* the new key's names exist nowhere yet: the token part selects */
	p11_kit_uri_clear_attribute(sel, CKA_ID);
	p11_kit_uri_clear_attribute(sel, CKA_LABEL);
	p11_kit_uri_clear_attribute(sel, CKA_CLASS);
	if ((r = enr_select(&e, sel, "store a new key")) != 0 ||
	    (r = check_mech(&e, keytype, bits)) != 0 ||
	    (r = enr_login(&e, pin_source)) != 0 ||
	    (r = check_free(&e)) != 0 ||
	    (r = generate(&e, keytype, bits, &pubh, &privh)) != 0)
		goto out;
	made = 1;
	if ((r = check_made(&e, privh, &flags)) != 0 ||
	    (r = genkey_reply(&e, keytype, pubh, flags, out)) != 0)
		goto out;
	made = 0;
out:
	if (made) {	/* a key nobody can use: do not leave it behind */
		e.k.mod->C_DestroyObject(e.k.session, privh);
		e.k.mod->C_DestroyObject(e.k.session, pubh);
	}
	enr_close(&e);
	p11_kit_uri_free(u);
	p11_kit_uri_free(sel);
	return r;
}

/* ---- IMPORT */

struct icert {
	X509		*x;
	const uint8_t	*der;
	size_t		 len;
	uint8_t		*subj, *iss, *serial;
	int		 subjlen, isslen, seriallen;
	char		 label[MAX_LABEL];
	int		 present;
};

static void
icert_clear(struct icert *c)
{
	X509_free(c->x);
	OPENSSL_free(c->subj);
	OPENSSL_free(c->iss);
	OPENSSL_free(c->serial);
	memset(c, 0, sizeof(*c));
}

static int
icert_parse(struct enr *e, struct icert *c, const uint8_t *der, size_t len,
    int i)
{
	const unsigned char	*p = der;

	c->der = der;
	c->len = len;
	if ((c->x = d2i_X509(NULL, &p, (long)len)) == NULL ||
	    p != der + len ||
	    (c->subjlen = i2d_X509_NAME(X509_get_subject_name(c->x),
	    &c->subj)) <= 0 ||
	    (c->isslen = i2d_X509_NAME(X509_get_issuer_name(c->x),
	    &c->iss)) <= 0 ||
	    (c->seriallen = i2d_ASN1_INTEGER(
	    (ASN1_INTEGER *)X509_get0_serialNumber(c->x), &c->serial)) <= 0) {
		ERR_clear_error();
		token_seterr(e->ctx, 0, "certificate %d is not valid DER "
		    "X.509", i + 1);
		return P11A_ERR_INVALID;
	}
	return 0;
}

/* The chain certificate's label: its subject's CN, else a number. */
static void
chain_label(struct icert *c, int i)
{
	X509_NAME	*n = X509_get_subject_name(c->x);
	int		 pos;
	ASN1_STRING	*s;

	pos = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
	if (pos >= 0 && (s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n,
	    pos))) != NULL && ASN1_STRING_length(s) > 0 &&
	    ASN1_STRING_length(s) < MAX_LABEL)
		snprintf(c->label, sizeof(c->label), "%.*s",
		    ASN1_STRING_length(s),
		    (const char *)ASN1_STRING_get0_data(s));
	else
		snprintf(c->label, sizeof(c->label), "chain certificate %d", i);
}

/* The key: exactly one private key as the URI names it; id, label, type. */
static int
import_key(struct enr *e, CK_OBJECT_HANDLE *h, CK_KEY_TYPE *kt, uint8_t *id,
    CK_ULONG *idlen, char *label)
{
	CK_OBJECT_CLASS	 cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE	 t[3];
	CK_ULONG	 n = 1, count;
	long		 len;
	int		 r;

	t[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	if (e->id != NULL)
		t[n++] = *e->id;
	if (e->label != NULL)
		t[n++] = *e->label;
	if ((r = find(e, t, n, h, &count)) != 0)
		return r;
	if (count != 1) {
		token_seterr(e->ctx, 0, "%s: %s", e->uristr, count == 0 ?
		    "no private key matches on the token (after login); run "
		    "'p11agent tokens --pin SOURCE' to see the keys" :
		    "more than one private key matches; add id= or object=");
		return P11A_ERR_NO_KEY;
	}
	if (get_attr(e, *h, CKA_KEY_TYPE, kt, sizeof(*kt)) !=
	    (long)sizeof(*kt) || (*kt != CKK_RSA && *kt != CKK_EC)) {
		token_seterr(e->ctx, 0, "%s: the key is neither RSA nor EC",
		    e->uristr);
		return P11A_ERR_MECHANISM;
	}
	if ((len = get_attr(e, *h, CKA_ID, id, 256)) <= 0) {
		token_seterr(e->ctx, 0, "%s: the key has no CKA_ID to write "
		    "its certificate with; use cert = FILE in its identity",
		    e->uristr);
		return P11A_ERR_NO_KEY;
	}
	*idlen = (CK_ULONG)len;
	if ((len = get_attr(e, *h, CKA_LABEL, label, MAX_LABEL - 1)) < 0)
		len = 0;
	label[len] = '\0';
	if (len == 0 || memchr(label, '\0', (size_t)len) != NULL)
		snprintf(label, MAX_LABEL, "certificate");
	return 0;
}

/* The key's public key: its public key object, else (RSA) the private
 * key's public attributes. */
static int
import_pub(struct enr *e, CK_OBJECT_HANDLE priv, CK_KEY_TYPE kt,
    uint8_t *id, CK_ULONG idlen, EVP_PKEY **pk)
{
	CK_OBJECT_CLASS		 cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE		 t[3];
	CK_OBJECT_HANDLE	 h;
	CK_ULONG		 count;
	int			 r;

	t[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	t[1] = (CK_ATTRIBUTE){ CKA_ID, id, idlen };
	t[2] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &kt, sizeof(kt) };
	if ((r = find(e, t, 3, &h, &count)) != 0)
		return r;
	if (count == 1)
		return token_pub(e, h, kt, pk);
	if (kt == CKK_RSA)
		return token_pub(e, priv, kt, pk);
	token_seterr(e->ctx, 0, "%s: token '%s' has no public key object with "
	    "the key's id, so the certificate cannot be checked against the "
	    "key; nothing was written", e->uristr, e->name);
	return P11A_ERR_NO_KEY;
}

/* Is c on the token (issuer and serial)?  Another certificate with the
 * key's id (id non-NULL) is a refusal. */
static int
import_check(struct enr *e, struct icert *c, uint8_t *id, CK_ULONG idlen)
{
	CK_OBJECT_CLASS		 cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE		 t[3];
	CK_OBJECT_HANDLE	 h;
	CK_ULONG		 count;
	int			 r;

	t[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	t[1] = (CK_ATTRIBUTE){ CKA_ISSUER, c->iss, (CK_ULONG)c->isslen };
	t[2] = (CK_ATTRIBUTE){ CKA_SERIAL_NUMBER, c->serial,
	    (CK_ULONG)c->seriallen };
	if ((r = find(e, t, 3, &h, &count)) != 0)
		return r;
	if (count > 0) {
		c->present = 1;
		return 0;
	}
	if (id == NULL)
		return 0;
	t[1] = (CK_ATTRIBUTE){ CKA_ID, id, idlen };
	if ((r = find(e, t, 2, &h, &count)) != 0)
		return r;
	if (count > 0) {
		token_seterr(e->ctx, 0, "%s: token '%s' already has another "
		    "certificate with the key's id; nothing was written "
		    "(delete the old one first, e.g. with pkcs11-tool "
		    "--delete-object --type cert --id ID)", e->uristr,
		    e->name);
		return P11A_ERR_INVALID;
	}
	return 0;
}

static int
import_write(struct enr *e, struct icert *c, uint8_t *id, CK_ULONG idlen,
    int i)
{
	static CK_BBOOL		 yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS		 cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE	 ct = CKC_X_509;
	CK_ATTRIBUTE		 t[10];
	CK_OBJECT_HANDLE	 h;
	CK_ULONG		 n = 0;
	CK_RV			 rv;

	t[n++] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	t[n++] = (CK_ATTRIBUTE){ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) };
	t[n++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
	t[n++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &no, sizeof(no) };
	t[n++] = (CK_ATTRIBUTE){ CKA_LABEL, c->label, strlen(c->label) };
	t[n++] = (CK_ATTRIBUTE){ CKA_VALUE, (void *)c->der, c->len };
	t[n++] = (CK_ATTRIBUTE){ CKA_SUBJECT, c->subj, (CK_ULONG)c->subjlen };
	t[n++] = (CK_ATTRIBUTE){ CKA_ISSUER, c->iss, (CK_ULONG)c->isslen };
	t[n++] = (CK_ATTRIBUTE){ CKA_SERIAL_NUMBER, c->serial,
	    (CK_ULONG)c->seriallen };
	if (id != NULL)
		t[n++] = (CK_ATTRIBUTE){ CKA_ID, id, idlen };
	if ((rv = e->k.mod->C_CreateObject(e->k.session, t, n, &h)) == CKR_OK)
		return 0;
	token_seterr(e->ctx, rv, "token '%s' refused to store %s "
	    "(C_CreateObject: %s)%s; write it with the card's own tool, or "
	    "give the identity cert = FILE", e->name,
	    i == 0 ? "the certificate" : "a chain certificate",
	    token_ckr_name(rv), i == 0 ? "" :
	    " after the key's certificate was written");
	return rv == CKR_FUNCTION_NOT_SUPPORTED || rv ==
	    CKR_TOKEN_WRITE_PROTECTED || rv == CKR_TEMPLATE_INCONSISTENT ||
	    rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_DEVICE_MEMORY ||
	    rv == CKR_SESSION_READ_ONLY ? P11A_ERR_READ_ONLY :
	    token_rv_code(rv);
}

/* Checks everything, then writes; the reply lists each certificate. */
static int
import_all(struct enr *e, struct icert *c, int n, struct pbuf *out)
{
	CK_OBJECT_HANDLE	 priv;
	CK_KEY_TYPE		 kt;
	CK_ULONG		 idlen;
	EVP_PKEY		*pk = NULL, *cpk;
	uint8_t			 id[256];
	int			 i, r;

	if ((r = import_key(e, &priv, &kt, id, &idlen, c[0].label)) != 0 ||
	    (r = import_pub(e, priv, kt, id, idlen, &pk)) != 0)
		goto out;
	if ((cpk = X509_get0_pubkey(c[0].x)) == NULL ||
	    EVP_PKEY_eq(cpk, pk) != 1) {
		ERR_clear_error();
		token_seterr(e->ctx, 0, "%s: the certificate's public key is "
		    "not the key's: it was issued for another key; nothing was "
		    "written", e->uristr);
		r = P11A_ERR_INVALID;
		goto out;
	}
	for (i = 0; i < n; i++)
		if ((r = import_check(e, &c[i], i == 0 ? id : NULL,
		    idlen)) != 0)
			goto out;
	pbuf_put_u32(out, (uint32_t)n);
	for (i = 0; i < n; i++) {
		if (!c[i].present && (r = import_write(e, &c[i], i == 0 ? id :
		    NULL, idlen, i)) != 0)
			goto out;
		pbuf_put_u8(out, c[i].present ? ENROLL_CERT_PRESENT :
		    ENROLL_CERT_WRITTEN);
		pbuf_put_str(out, c[i].label);
	}
	r = out->err;
out:
	EVP_PKEY_free(pk);
	return r;
}

int
token_import(struct token_ctx *ctx, const char *uristr,
    const char *pin_source, const uint8_t *const *der, const size_t *lens,
    int n, struct pbuf *out)
{
	struct enr	 e;
	struct icert	 c[ENROLL_MAX_CERTS];
	P11KitUri	*u = NULL;
	int		 i, r;

	memset(&e, 0, sizeof(e));
	memset(c, 0, sizeof(c));
	e.ctx = ctx;
	e.uristr = uristr;
	if (n < 1 || n > ENROLL_MAX_CERTS) {
		token_seterr(ctx, 0, "%d certificates: 1 to %d can be imported "
		    "at once", n, ENROLL_MAX_CERTS);
		return P11A_ERR_TOO_LARGE;
	}
	for (i = 0; i < n; i++) {
		if ((r = icert_parse(&e, &c[i], der[i], lens[i], i)) != 0)
			goto out;
		if (i > 0)
			chain_label(&c[i], i);
	}
	if ((r = parse_uri(ctx, uristr, &u)) != 0 ||
	    (r = check_class(ctx, u, uristr)) != 0)
		goto out;
	e.id = p11_kit_uri_get_attribute(u, CKA_ID);
	e.label = p11_kit_uri_get_attribute(u, CKA_LABEL);
	if ((r = enr_select(&e, u, "store certificates")) != 0 ||
	    (r = enr_login(&e, pin_source)) != 0)
		goto out;
	r = import_all(&e, c, n, out);
out:
	for (i = 0; i < n; i++)
		icert_clear(&c[i]);
	enr_close(&e);
	p11_kit_uri_free(u);
	return r;
}
