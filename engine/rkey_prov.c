/*
 * p11agent: an OpenSSL 3 provider for keys that live on a token.
 *
 * It offers RSA and EC key management and RSA and ECDSA signatures.  A key
 * holds the public key from its certificate (an ordinary key of the
 * default provider, which answers every question about the public half)
 * and where to send signatures (struct rkey).  Signing hashes the data
 * here and sends the digest to the token helper: RSA PKCS#1 v1.5 as a
 * DigestInfo, RSA-PSS natively when the token has CKM_RSA_PKCS_PSS or
 * padded here and sent as raw RSA, ECDSA as a digest (r||s comes back and
 * is DER-encoded here).  Nothing else is implemented: no private key
 * material exists in this process.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1	/* RSA_padding_add_PKCS1_PSS_mgf1 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"
#include "rkey_int.h"

#define PROV_NAME	"p11agent"
#define PARAM_RKEY	"p11agent-rkey"
#define PARAM_PUB	"p11agent-pub"
#define MAX_SIG		1024

struct pkey {
	int		 type;		/* PROTO_KEY_RSA or PROTO_KEY_EC */
	EVP_PKEY	*pub;		/* the public half, default provider */
	struct rkey	 rk;
	int		 has_rk;	/* else a public key only */
};

struct sigctx {
	int		 type;
	struct pkey	*key;
	EVP_MD		*md;
	EVP_MD_CTX	*mdctx;
	EVP_MD		*mgf1;
	int		 pad;		/* RSA_PKCS1_PADDING, _PSS_PADDING */
	int		 saltlen;	/* RSA_PSS_SALTLEN_* or bytes */
};

/* ---- key management */

static void *
pkey_new(int type)
{
	struct pkey	*k;

	if ((k = calloc(1, sizeof(*k))) != NULL)
		k->type = type;
	return k;
}

static void *
rsa_new(void *provctx)
{
	return pkey_new(PROTO_KEY_RSA);
}

static void *
ec_new(void *provctx)
{
	return pkey_new(PROTO_KEY_EC);
}

static void
pkey_free(void *kd)
{
	struct pkey	*k = kd;

	if (k == NULL)
		return;
	EVP_PKEY_free(k->pub);
	free(k);
}

static int
pkey_has(const void *kd, int selection)
{
	const struct pkey	*k = kd;

	if (k == NULL)
		return 0;
	if ((selection & (OSSL_KEYMGMT_SELECT_PUBLIC_KEY |
	    OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)) && k->pub == NULL)
		return 0;
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->has_rk)
		return 0;
	return 1;
}

static int
pkey_match(const void *a, const void *b, int selection)
{
	const struct pkey	*x = a, *y = b;

	return x->pub != NULL && y->pub != NULL &&
	    EVP_PKEY_eq(x->pub, y->pub) == 1;
}

/* Standard public parameters: build the public key in the default provider. */
static EVP_PKEY *
pub_from_params(int type, const OSSL_PARAM params[])
{
	EVP_PKEY_CTX	*pc;
	EVP_PKEY	*pub = NULL;

	pc = EVP_PKEY_CTX_new_from_name(NULL, type == PROTO_KEY_RSA ? "RSA" :
	    "EC", "provider=default");
	if (pc == NULL || EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pub, EVP_PKEY_PUBLIC_KEY,
	    (OSSL_PARAM *)params) != 1)
		pub = NULL;
	EVP_PKEY_CTX_free(pc);
	return pub;
}

static int
pkey_import(void *kd, int selection, const OSSL_PARAM params[])
{
	struct pkey		*k = kd;
	const OSSL_PARAM	*p;
	EVP_PKEY		*pub = NULL;

	if ((p = OSSL_PARAM_locate_const(params, PARAM_PUB)) != NULL) {
		if (p->data_type != OSSL_PARAM_OCTET_STRING ||
		    p->data_size != sizeof(pub))
			return 0;
		memcpy(&pub, p->data, sizeof(pub));
		if (pub == NULL || EVP_PKEY_up_ref(pub) != 1)
			return 0;
	} else if ((pub = pub_from_params(k->type, params)) == NULL)
		return 0;
	if ((p = OSSL_PARAM_locate_const(params, PARAM_RKEY)) != NULL) {
		if (p->data_type != OSSL_PARAM_OCTET_STRING ||
		    p->data_size != sizeof(k->rk)) {
			EVP_PKEY_free(pub);
			return 0;
		}
		memcpy(&k->rk, p->data, sizeof(k->rk));
		k->has_rk = 1;
	}
	EVP_PKEY_free(k->pub);
	k->pub = pub;
	return 1;
}

static int
pkey_export(void *kd, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	struct pkey	*k = kd;
	OSSL_PARAM	*params = NULL;
	int		 r;

	/*
	 * Only the public half exists here.  Refusing an export that asks
	 * for the private key also keeps OpenSSL from signing with a copy
	 * in another provider: it then uses ours.
	 */
	if (k->pub == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ||
	    (selection & (OSSL_KEYMGMT_SELECT_PUBLIC_KEY |
	    OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)) == 0)
		return 0;
	if (EVP_PKEY_todata(k->pub, (selection &
	    OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? EVP_PKEY_PUBLIC_KEY :
	    EVP_PKEY_KEY_PARAMETERS, &params) != 1)
		return 0;
	r = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return r;
}

static const OSSL_PARAM rsa_types[] = {
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM ec_types[] = {
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	    NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *
rsa_types_fn(int selection)
{
	return rsa_types;
}

static const OSSL_PARAM *
ec_types_fn(int selection)
{
	return ec_types;
}

/* Everything about the public half comes from the public key. */
static int
pkey_get_params(void *kd, OSSL_PARAM params[])
{
	struct pkey	*k = kd;

	return k->pub != NULL && EVP_PKEY_get_params(k->pub, params) == 1;
}

static const OSSL_PARAM pkey_gettable[] = {
	OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
	OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
	OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	    NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *
pkey_gettable_fn(void *provctx)
{
	return pkey_gettable;
}

static const char *
rsa_opname(int op)
{
	return op == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

static const char *
ec_opname(int op)
{
	return op == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

#define FN(id, f)	{ id, (void (*)(void))(f) }

#define KEYMGMT(new, types, opname) {					\
	FN(OSSL_FUNC_KEYMGMT_NEW, new),					\
	FN(OSSL_FUNC_KEYMGMT_FREE, pkey_free),				\
	FN(OSSL_FUNC_KEYMGMT_HAS, pkey_has),				\
	FN(OSSL_FUNC_KEYMGMT_MATCH, pkey_match),			\
	FN(OSSL_FUNC_KEYMGMT_IMPORT, pkey_import),			\
	FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, types),			\
	FN(OSSL_FUNC_KEYMGMT_EXPORT, pkey_export),			\
	FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, types),			\
	FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, pkey_get_params),		\
	FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, pkey_gettable_fn),	\
	FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, opname),		\
	{ 0, NULL }							\
}

static const OSSL_DISPATCH rsa_keymgmt[] =
    KEYMGMT(rsa_new, rsa_types_fn, rsa_opname);
static const OSSL_DISPATCH ec_keymgmt[] =
    KEYMGMT(ec_new, ec_types_fn, ec_opname);

/* ---- signatures */

static void *
sig_new(int type)
{
	struct sigctx	*c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->type = type;
	c->pad = RSA_PKCS1_PADDING;
	c->saltlen = RSA_PSS_SALTLEN_AUTO;
	return c;
}

static void *
rsa_sig_new(void *provctx, const char *propq)
{
	return sig_new(PROTO_KEY_RSA);
}

static void *
ec_sig_new(void *provctx, const char *propq)
{
	return sig_new(PROTO_KEY_EC);
}

static void
sig_free(void *ctx)
{
	struct sigctx	*c = ctx;

	if (c == NULL)
		return;
	EVP_MD_free(c->md);
	EVP_MD_free(c->mgf1);
	EVP_MD_CTX_free(c->mdctx);
	free(c);
}

static void *
sig_dup(void *ctx)
{
	struct sigctx	*c = ctx, *d;

	if ((d = malloc(sizeof(*d))) == NULL)
		return NULL;
	*d = *c;
	d->mdctx = NULL;
	if (d->md != NULL && !EVP_MD_up_ref(d->md)) {
		free(d);
		return NULL;
	}
	if (d->mgf1 != NULL && !EVP_MD_up_ref(d->mgf1)) {
		EVP_MD_free(d->md);
		free(d);
		return NULL;
	}
	if (c->mdctx != NULL && ((d->mdctx = EVP_MD_CTX_new()) == NULL ||
	    !EVP_MD_CTX_copy_ex(d->mdctx, c->mdctx))) {
		sig_free(d);
		return NULL;
	}
	return d;
}

static int
set_md(EVP_MD **dst, const OSSL_PARAM *p)
{
	const char	*name;
	EVP_MD		*md;

	if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
	    (md = EVP_MD_fetch(NULL, name, NULL)) == NULL)
		return 0;
	EVP_MD_free(*dst);
	*dst = md;
	return 1;
}

static int
set_pad(struct sigctx *c, const OSSL_PARAM *p)
{
	const char	*s;

	if (p->data_type == OSSL_PARAM_INTEGER)
		return OSSL_PARAM_get_int(p, &c->pad);
	if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
		return 0;
	if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
		c->pad = RSA_PKCS1_PADDING;
	else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
		c->pad = RSA_PKCS1_PSS_PADDING;
	else
		return 0;
	return 1;
}

static int
set_saltlen(struct sigctx *c, const OSSL_PARAM *p)
{
	const char	*s;
	char		*end;
	long		 n;

	if (p->data_type == OSSL_PARAM_INTEGER)
		return OSSL_PARAM_get_int(p, &c->saltlen);
	if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
		return 0;
	if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0)
		c->saltlen = RSA_PSS_SALTLEN_DIGEST;
	else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0)
		c->saltlen = RSA_PSS_SALTLEN_MAX;
	else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0)
		c->saltlen = RSA_PSS_SALTLEN_AUTO;
	else {
		errno = 0;
		n = strtol(s, &end, 10);
		if (errno != 0 || *end != '\0' || end == s || n < 0 ||
		    n > MAX_SIG)
			return 0;
		c->saltlen = (int)n;
	}
	return 1;
}

static int
sig_set_params(void *ctx, const OSSL_PARAM params[])
{
	struct sigctx		*c = ctx;
	const OSSL_PARAM	*p;

	if (params == NULL)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params,
	    OSSL_SIGNATURE_PARAM_DIGEST)) != NULL && !set_md(&c->md, p))
		return 0;
	if ((p = OSSL_PARAM_locate_const(params,
	    OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL && !set_md(&c->mgf1, p))
		return 0;
	if ((p = OSSL_PARAM_locate_const(params,
	    OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL && !set_pad(c, p))
		return 0;
	if ((p = OSSL_PARAM_locate_const(params,
	    OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL && !set_saltlen(c, p))
		return 0;
	return 1;
}

static const OSSL_PARAM sig_settable[] = {
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *
sig_settable_fn(void *ctx, void *provctx)
{
	return sig_settable;
}

static int
sig_init(void *ctx, void *kd, const OSSL_PARAM params[])
{
	struct sigctx	*c = ctx;
	struct pkey	*k = kd;

	if (k == NULL || !k->has_rk || k->type != c->type)
		return 0;
	c->key = k;
	return sig_set_params(c, params);
}

static int
digest_init(void *ctx, const char *mdname, void *kd,
    const OSSL_PARAM params[])
{
	struct sigctx	*c = ctx;
	EVP_MD		*md;

	if (!sig_init(c, kd, params))
		return 0;
	if (mdname != NULL && *mdname != '\0') {
		if ((md = EVP_MD_fetch(NULL, mdname, NULL)) == NULL)
			return 0;
		EVP_MD_free(c->md);
		c->md = md;
	}
	if (c->md == NULL)
		return 0;
	if (c->mdctx == NULL && (c->mdctx = EVP_MD_CTX_new()) == NULL)
		return 0;
	return EVP_DigestInit_ex(c->mdctx, c->md, NULL);
}

static int
digest_update(void *ctx, const unsigned char *data, size_t len)
{
	struct sigctx	*c = ctx;

	return c->mdctx != NULL && EVP_DigestUpdate(c->mdctx, data, len);
}

static int
proto_hash(const EVP_MD *md)
{
	switch (md ? EVP_MD_get_type(md) : NID_undef) {
	case NID_sha256:	return PROTO_HASH_SHA256;
	case NID_sha384:	return PROTO_HASH_SHA384;
	case NID_sha512:	return PROTO_HASH_SHA512;
	default:		return 0;
	}
}

/* DER DigestInfo for PKCS#1 v1.5. */
static int
digest_info(const EVP_MD *md, const unsigned char *dgst, size_t dlen,
    unsigned char *out, size_t *outlen)
{
	X509_SIG	*xs;
	X509_ALGOR	*alg;
	ASN1_OCTET_STRING *os;
	unsigned char	*p = out;
	int		 n = -1;

	if ((xs = X509_SIG_new()) == NULL)
		return 0;
	X509_SIG_getm(xs, &alg, &os);
	if (X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL,
	    NULL) && ASN1_OCTET_STRING_set(os, dgst, (int)dlen) &&
	    i2d_X509_SIG(xs, NULL) <= (int)*outlen)
		n = i2d_X509_SIG(xs, &p);
	X509_SIG_free(xs);
	if (n <= 0)
		return 0;
	*outlen = (size_t)n;
	return 1;
}

static int
rsa_pss(struct sigctx *c, const unsigned char *dgst, size_t dlen,
    unsigned char *sig, size_t *siglen)
{
	const RSA	*rsa = EVP_PKEY_get0_RSA(c->key->pub);
	unsigned char	 em[MAX_SIG];
	int		 hash = proto_hash(c->md), salt = c->saltlen, bits;
	int		 emlen;

	bits = EVP_PKEY_get_bits(c->key->pub);
	emlen = (bits - 1 + 7) / 8;
	if (salt == RSA_PSS_SALTLEN_DIGEST)
		salt = (int)dlen;
	else if (salt < 0)	/* max or auto: as long as fits */
		salt = emlen - (int)dlen - 2;
	if ((c->key->rk.caps & PROTO_CAP_RSA_PSS) && hash != 0 &&
	    (c->mgf1 == NULL || EVP_MD_get_type(c->mgf1) ==
	    EVP_MD_get_type(c->md)))
		return rkey_sign(&c->key->rk, PROTO_ALG_RSA_PSS, hash,
		    (uint32_t)salt, dgst, dlen, sig, siglen) == 0;
	/* padded here, raw RSA on the token */
	if (!(c->key->rk.caps & PROTO_CAP_RSA_RAW) || rsa == NULL ||
	    RSA_size(rsa) > (int)sizeof(em) ||
	    !RSA_padding_add_PKCS1_PSS_mgf1((RSA *)rsa, em, dgst, c->md,
	    c->mgf1 ? c->mgf1 : c->md, salt)) {
		ERR_raise_data(ERR_LIB_USER, -P11A_ERR_MECHANISM, "the token "
		    "did not sign: it can do neither RSA-PSS nor raw RSA");
		return 0;
	}
	return rkey_sign(&c->key->rk, PROTO_ALG_RSA_RAW, 0, 0, em,
	    (size_t)RSA_size(rsa), sig, siglen) == 0;
}

static int
rsa_sign(struct sigctx *c, const unsigned char *tbs, size_t tbslen,
    unsigned char *sig, size_t *siglen)
{
	unsigned char	 di[128];
	size_t		 dilen = sizeof(di);

	if (c->pad == RSA_PKCS1_PSS_PADDING)
		return c->md != NULL && rsa_pss(c, tbs, tbslen, sig, siglen);
	if (c->pad != RSA_PKCS1_PADDING)
		return 0;
	if (c->md != NULL) {
		if (!digest_info(c->md, tbs, tbslen, di, &dilen))
			return 0;
		tbs = di;
		tbslen = dilen;
	}
	return rkey_sign(&c->key->rk, PROTO_ALG_RSA_PKCS1, 0, 0, tbs, tbslen,
	    sig, siglen) == 0;
}

static int
ec_sign(struct sigctx *c, const unsigned char *dgst, size_t dlen,
    unsigned char *sig, size_t *siglen, size_t sigsize)
{
	unsigned char	 rs[MAX_SIG], *p = sig;
	size_t		 len = sizeof(rs);
	ECDSA_SIG	*s = NULL;
	BIGNUM		*r = NULL, *sv = NULL;
	int		 n = 0;

	if (rkey_sign(&c->key->rk, PROTO_ALG_ECDSA, 0, 0, dgst, dlen, rs,
	    &len) != 0 || len == 0 || len % 2 != 0)
		return 0;
	if ((r = BN_bin2bn(rs, (int)len / 2, NULL)) == NULL ||
	    (sv = BN_bin2bn(rs + len / 2, (int)len / 2, NULL)) == NULL ||
	    (s = ECDSA_SIG_new()) == NULL || !ECDSA_SIG_set0(s, r, sv)) {
		BN_free(r);
		BN_free(sv);
		ECDSA_SIG_free(s);
		return 0;
	}
	if (i2d_ECDSA_SIG(s, NULL) <= (int)sigsize)
		n = i2d_ECDSA_SIG(s, &p);
	ECDSA_SIG_free(s);
	if (n <= 0)
		return 0;
	*siglen = (size_t)n;
	return 1;
}

/* Signs a digest (or, for RSA PKCS#1 without a digest, a DigestInfo). */
static int
sig_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
    const unsigned char *tbs, size_t tbslen)
{
	struct sigctx	*c = ctx;
	size_t		 max = (size_t)EVP_PKEY_get_size(c->key->pub);

	if (sig == NULL) {
		*siglen = max;
		return 1;
	}
	if (sigsize < max)
		return 0;
	*siglen = sigsize;
	if (c->type == PROTO_KEY_EC)
		return ec_sign(c, tbs, tbslen, sig, siglen, sigsize);
	return rsa_sign(c, tbs, tbslen, sig, siglen);
}

static int
digest_final(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
	struct sigctx	*c = ctx;
	unsigned char	 dgst[EVP_MAX_MD_SIZE];
	unsigned int	 dlen;

	if (sig == NULL)
		return sig_sign(c, NULL, siglen, 0, NULL, 0);
	if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, dgst, &dlen))
		return 0;
	return sig_sign(c, sig, siglen, sigsize, dgst, dlen);
}

static int
digest_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
    const unsigned char *tbs, size_t tbslen)
{
	struct sigctx	*c = ctx;

	if (sig == NULL)
		return sig_sign(c, NULL, siglen, 0, NULL, 0);
	return digest_update(c, tbs, tbslen) &&
	    digest_final(c, sig, siglen, sigsize);
}

#define SIGNATURE(new) {						\
	FN(OSSL_FUNC_SIGNATURE_NEWCTX, new),				\
	FN(OSSL_FUNC_SIGNATURE_FREECTX, sig_free),			\
	FN(OSSL_FUNC_SIGNATURE_DUPCTX, sig_dup),			\
	FN(OSSL_FUNC_SIGNATURE_SIGN_INIT, sig_init),			\
	FN(OSSL_FUNC_SIGNATURE_SIGN, sig_sign),				\
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, digest_init),		\
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, digest_update),	\
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, digest_final),	\
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, digest_sign),		\
	FN(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, sig_set_params),		\
	FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, sig_settable_fn),	\
	{ 0, NULL }							\
}

static const OSSL_DISPATCH rsa_signature[] = SIGNATURE(rsa_sig_new);
static const OSSL_DISPATCH ec_signature[] = SIGNATURE(ec_sig_new);

/* ---- the provider */

static const OSSL_ALGORITHM keymgmt_algs[] = {
	{ "RSA:rsaEncryption", "provider=" PROV_NAME, rsa_keymgmt,
	    "p11agent token RSA key" },
	{ "EC:id-ecPublicKey", "provider=" PROV_NAME, ec_keymgmt,
	    "p11agent token EC key" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM signature_algs[] = {
	{ "RSA:rsaEncryption", "provider=" PROV_NAME, rsa_signature,
	    "p11agent token RSA signature" },
	{ "ECDSA", "provider=" PROV_NAME, ec_signature,
	    "p11agent token ECDSA signature" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM *
prov_query(void *provctx, int op, int *no_cache)
{
	*no_cache = 0;
	switch (op) {
	case OSSL_OP_KEYMGMT:	return keymgmt_algs;
	case OSSL_OP_SIGNATURE:	return signature_algs;
	default:		return NULL;
	}
}

static const OSSL_DISPATCH prov_funcs[] = {
	FN(OSSL_FUNC_PROVIDER_QUERY_OPERATION, prov_query),
	{ 0, NULL }
};

static int
prov_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
    const OSSL_DISPATCH **out, void **provctx)
{
	*out = prov_funcs;
	*provctx = (void *)handle;
	return 1;
}

static OSSL_PROVIDER	*prov_ours, *prov_default;

/*
 * Loads the provider (once) beside the default provider, and makes the
 * default provider preferred for everything not asked of ours by name:
 * our RSA and EC key management must never serve other keys.
 */
int
rkey_provider_load(void)
{
	if (prov_ours != NULL)
		return 0;
	if (!OSSL_PROVIDER_add_builtin(NULL, PROV_NAME, prov_init) ||
	    (prov_default = OSSL_PROVIDER_load(NULL, "default")) == NULL ||
	    (prov_ours = OSSL_PROVIDER_load(NULL, PROV_NAME)) == NULL ||
	    !EVP_set_default_properties(NULL, "?provider=default"))
		return P11A_ERR_NOMEM;
	return 0;
}

void
rkey_cleanup(void)
{
	if (prov_ours != NULL)
		OSSL_PROVIDER_unload(prov_ours);
	if (prov_default != NULL)
		OSSL_PROVIDER_unload(prov_default);
	prov_ours = prov_default = NULL;
}

EVP_PKEY *
rkey_provider_key(int keytype, EVP_PKEY *pub, const struct rkey *rk)
{
	OSSL_PARAM	 params[3];
	EVP_PKEY_CTX	*pc;
	EVP_PKEY	*pk = NULL;

	params[0] = OSSL_PARAM_construct_octet_string(PARAM_PUB, &pub,
	    sizeof(pub));
	params[1] = OSSL_PARAM_construct_octet_string(PARAM_RKEY, (void *)rk,
	    sizeof(*rk));
	params[2] = OSSL_PARAM_construct_end();
	pc = EVP_PKEY_CTX_new_from_name(NULL, keytype == PROTO_KEY_RSA ?
	    "RSA" : "EC", "provider=" PROV_NAME);
	if (pc == NULL || EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_KEYPAIR, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(pc);
	return pk;
}
