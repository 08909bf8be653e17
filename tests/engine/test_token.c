/*
 * Engine tests: the token layer (engine/token.c) against a real SoftHSM
 * token made by tests/mktoken.sh (run through tests/t-engine.sh, which
 * exports SOFTHSM2_CONF and P11TEST_*).  Every signature is verified with
 * the certificate read from the token.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"

static struct token_ctx	*ctx;
static char		 pin_source[600];
static const char	*module;

static int
setup(void)
{
	struct token_opts	 o = { 0 };
	const char		*dir = getenv("P11TEST_DIR");

	module = getenv("P11TEST_MODULE");
	if (dir == NULL || module == NULL)
		return -1;
	snprintf(pin_source, sizeof(pin_source), "file:%s/pin", dir);
	o.module = module;
	return token_ctx_new(&o, &ctx) == 0 ? 0 : -1;
}

static int
teardown(void)
{
	token_ctx_free(ctx);
	return 0;
}

static struct token_key *
open_key(const char *label)
{
	struct token_key	*k = NULL;
	char			 uri[256];

	snprintf(uri, sizeof(uri), "pkcs11:token=p11agent-test;object=%s;"
	    "type=private", label);
	if (token_open(ctx, uri, NULL, pin_source, &k) != 0)
		fprintf(stderr, "\n  %s: %s\n", uri, token_error(ctx));
	return k;
}

static EVP_PKEY *
cert_key(struct token_key *k)
{
	const unsigned char	*der;
	size_t			 len;
	X509			*x;
	EVP_PKEY		*pk;

	der = token_key_cert(k, &len);
	if (der == NULL || (x = d2i_X509(NULL, &der, (long)len)) == NULL)
		return NULL;
	pk = X509_get_pubkey(x);
	X509_free(x);
	return pk;
}

static void
digest(const EVP_MD *md, unsigned char *out, unsigned int *len)
{
	unsigned char	 msg[64];

	RAND_bytes(msg, sizeof(msg));
	EVP_Digest(msg, sizeof(msg), out, len, md, NULL);
}

/* Verifies sig over dgst with pad (and PSS salt) using the cert's key. */
static int
verify(EVP_PKEY *pk, const EVP_MD *md, int pad, const unsigned char *dgst,
    size_t dlen, const unsigned char *sig, size_t siglen)
{
	EVP_PKEY_CTX	*pc = EVP_PKEY_CTX_new(pk, NULL);
	int		 ok;

	ok = pc != NULL && EVP_PKEY_verify_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(pc, md) == 1 &&
	    (pad == 0 || EVP_PKEY_CTX_set_rsa_padding(pc, pad) == 1) &&
	    (pad != RSA_PKCS1_PSS_PADDING ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, (int)dlen) == 1) &&
	    EVP_PKEY_verify(pc, sig, siglen, dgst, dlen) == 1;
	EVP_PKEY_CTX_free(pc);
	return ok;
}

static void
test_rsa_pkcs1(void)
{
	static const unsigned char prefix[] = {	/* DigestInfo, SHA-256 */
		0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
		0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
	struct token_key	*k = open_key("rsa-key");
	unsigned char		 di[sizeof(prefix) + 32], sig[512];
	unsigned int		 dl;
	size_t			 siglen = sizeof(sig);
	EVP_PKEY		*pk;

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	CU_ASSERT_EQUAL(token_key_type(k), PROTO_KEY_RSA);
	CU_ASSERT(token_key_caps(k) & PROTO_CAP_RSA_PKCS1);
	memcpy(di, prefix, sizeof(prefix));
	digest(EVP_sha256(), di + sizeof(prefix), &dl);
	CU_ASSERT_EQUAL_FATAL(token_sign(ctx, k, PROTO_ALG_RSA_PKCS1, 0, 0,
	    di, sizeof(di), sig, &siglen), 0);
	CU_ASSERT_EQUAL(siglen, 256);
	pk = cert_key(k);
	CU_ASSERT(verify(pk, EVP_sha256(), RSA_PKCS1_PADDING,
	    di + sizeof(prefix), 32, sig, siglen));
	EVP_PKEY_free(pk);
}

/* One native CKM_RSA_PKCS_PSS signature with hash md, verified. */
static void
pss_case(struct token_key *k, EVP_PKEY *pk, const EVP_MD *md, int hash)
{
	unsigned char	 d[64], sig[512];
	unsigned int	 dl;
	size_t		 siglen = sizeof(sig);

	digest(md, d, &dl);
	CU_ASSERT_EQUAL_FATAL(token_sign(ctx, k, PROTO_ALG_RSA_PSS, hash, dl,
	    d, dl, sig, &siglen), 0);
	CU_ASSERT(verify(pk, md, RSA_PKCS1_PSS_PADDING, d, dl, sig, siglen));
}

static void
test_rsa_pss(void)
{
	struct token_key	*k = open_key("rsa-key");
	unsigned char		 d[32], sig[512];
	size_t			 siglen = sizeof(sig);
	EVP_PKEY		*pk;

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	CU_ASSERT(token_key_caps(k) & PROTO_CAP_RSA_PSS);
	pk = cert_key(k);
	pss_case(k, pk, EVP_sha256(), PROTO_HASH_SHA256);
	pss_case(k, pk, EVP_sha384(), PROTO_HASH_SHA384);
	/* a bad hash id is refused before the token sees it */
	memset(d, 0, sizeof(d));
	CU_ASSERT_EQUAL(token_sign(ctx, k, PROTO_ALG_RSA_PSS, 99, 32, d,
	    sizeof(d), sig, &siglen), P11A_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "unknown hash 99"));
	token_clear_error(ctx);
	EVP_PKEY_free(pk);
}

static void
test_rsa_raw(void)
{
	struct token_key	*k = open_key("rsa-key");
	unsigned char		 block[256], sig[512], back[256];
	size_t			 siglen = sizeof(sig), backlen = sizeof(back);
	EVP_PKEY		*pk;
	EVP_PKEY_CTX		*pc;

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	CU_ASSERT(token_key_caps(k) & PROTO_CAP_RSA_RAW);
	RAND_bytes(block, sizeof(block));
	block[0] = 0;		/* below the modulus */
	CU_ASSERT_EQUAL_FATAL(token_sign(ctx, k, PROTO_ALG_RSA_RAW, 0, 0,
	    block, sizeof(block), sig, &siglen), 0);
	/* the public operation gives the block back */
	pk = cert_key(k);
	pc = EVP_PKEY_CTX_new(pk, NULL);
	CU_ASSERT(pc != NULL && EVP_PKEY_verify_recover_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_NO_PADDING) == 1 &&
	    EVP_PKEY_verify_recover(pc, back, &backlen, sig, siglen) == 1);
	CU_ASSERT(backlen == sizeof(block) &&
	    memcmp(back, block, sizeof(block)) == 0);
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_free(pk);
}

static void
ecdsa(const char *label, const EVP_MD *md, size_t rslen)
{
	struct token_key	*k = open_key(label);
	unsigned char		 d[64], rs[256], der[256], *p = der;
	unsigned int		 dl;
	size_t			 len = sizeof(rs);
	ECDSA_SIG		*s;
	EVP_PKEY		*pk;
	int			 derlen;

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	CU_ASSERT_EQUAL(token_key_type(k), PROTO_KEY_EC);
	CU_ASSERT(token_key_caps(k) & PROTO_CAP_ECDSA);
	digest(md, d, &dl);
	CU_ASSERT_EQUAL_FATAL(token_sign(ctx, k, PROTO_ALG_ECDSA, 0, 0, d, dl,
	    rs, &len), 0);
	CU_ASSERT_EQUAL_FATAL(len, rslen);
	s = ECDSA_SIG_new();
	ECDSA_SIG_set0(s, BN_bin2bn(rs, (int)len / 2, NULL),
	    BN_bin2bn(rs + len / 2, (int)len / 2, NULL));
	derlen = i2d_ECDSA_SIG(s, &p);
	pk = cert_key(k);
	CU_ASSERT(verify(pk, md, 0, d, dl, der, (size_t)derlen));
	ECDSA_SIG_free(s);
	EVP_PKEY_free(pk);
}

static void
test_ecdsa_p256(void)
{
	ecdsa("ec-key", EVP_sha256(), 64);
}

static void
test_ecdsa_p384(void)
{
	ecdsa("ec384-key", EVP_sha384(), 96);
}

static void
test_errors(void)
{
	struct token_key	*k = NULL;

	CU_ASSERT_EQUAL(token_open(ctx, "pkcs11:token=p11agent-test;"
	    "object=rsa-key;type=cert", NULL, pin_source, &k), P11A_ERR_URI);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "must name a private "
	    "key"));
	token_clear_error(ctx);
	CU_ASSERT_EQUAL(token_open(ctx, "pkcs11:token=nope", NULL, pin_source,
	    &k), P11A_ERR_NO_TOKEN);
	token_clear_error(ctx);
	CU_ASSERT_EQUAL(token_open(ctx, "pkcs11:token=p11agent-test;"
	    "object=rsa-key;type=private", "pkcs11:object=nothing;type=cert",
	    pin_source, &k), P11A_ERR_NO_CERT);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "no certificate"));
	token_clear_error(ctx);
	/* the first error sticks until cleared */
	token_open(ctx, "pkcs11:token=first", NULL, pin_source, &k);
	token_open(ctx, "pkcs11:token=second", NULL, pin_source, &k);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "first"));
	token_clear_error(ctx);
	CU_ASSERT_PTR_NULL(k);
}

static void
test_list(void)
{
	struct pbuf	 b, r;
	char		*uri, *desc;
	int		 kind, keys = 0, certs = 0;

	pbuf_init(&b);
	CU_ASSERT_EQUAL_FATAL(token_list(ctx, pin_source, NULL, &b), 0);
	pbuf_view(&r, b.data, b.len);
	while (r.off < r.len && r.err == 0) {
		kind = pbuf_get_u8(&r);
		uri = pbuf_get_str(&r);
		desc = pbuf_get_str(&r);
		if (kind == PROTO_LIST_KEY && desc != NULL &&
		    strncmp(desc, "private key", 11) == 0) {
			keys++;
			CU_ASSERT_PTR_NOT_NULL(strstr(desc, "not extractable"));
			CU_ASSERT(uri != NULL && strstr(uri, "type=private"));
		}
		if (kind == PROTO_LIST_CERT)
			certs++;
		free(uri);
		free(desc);
	}
	CU_ASSERT_EQUAL(r.err, 0);
	CU_ASSERT_EQUAL(keys, 3);
	CU_ASSERT_EQUAL(certs, 3);
	pbuf_clear(&b);
}

int
main(void)
{
	CU_pSuite	 s;
	unsigned int	 failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("token", setup, teardown);
	if (s == NULL ||
	    CU_add_test(s, "RSA PKCS#1 v1.5", test_rsa_pkcs1) == NULL ||
	    CU_add_test(s, "RSA-PSS (native)", test_rsa_pss) == NULL ||
	    CU_add_test(s, "raw RSA", test_rsa_raw) == NULL ||
	    CU_add_test(s, "ECDSA P-256", test_ecdsa_p256) == NULL ||
	    CU_add_test(s, "ECDSA P-384", test_ecdsa_p384) == NULL ||
	    CU_add_test(s, "errors", test_errors) == NULL ||
	    CU_add_test(s, "listing", test_list) == NULL)
		return 99;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
