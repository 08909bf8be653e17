/*
 * Engine tests: the token layer (engine/token.c) against a real SoftHSM
 * token made by tests/mktoken.sh (run through tests/t-engine.sh, which
 * exports SOFTHSM2_CONF and P11TEST_*).  Every signature is verified with
 * the certificate read from the token.  PROBE and MODULES are tested on
 * the token layer and through a real helper process.
 *
 * With arguments it is a small client for the shell tests instead:
 *	engine-tests probe MODULE|registry URI
 *	engine-tests modules MODULE|registry
 * sends one PROBE or MODULES request to a helper and prints the reply.
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
#include "p11agent/helper.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"

#define CALL_TIMEOUT_MS	60000

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

/* Runs token_probe for uri and decodes the reply as the agent would. */
static int
probe(const char *uri, struct helper_probe *p)
{
	struct pbuf	 b, r;
	int		 e;

	pbuf_init(&b);
	if ((e = token_probe(ctx, uri, &b)) == 0) {
		pbuf_view(&r, b.data, b.len);
		e = helper_parse_probe(&r, p);
	}
	pbuf_clear(&b);
	return e;
}

static void
test_probe(void)
{
	struct helper_probe	 p;

	/* the key's labels and ids show on its public objects */
	CU_ASSERT_EQUAL_FATAL(probe("pkcs11:object=ec-key;type=private", &p),
	    0);
	CU_ASSERT_EQUAL_FATAL(p.n, 1);
	CU_ASSERT(strncmp(p.tokens[0].uri, "pkcs11:", 7) == 0 &&
	    strstr(p.tokens[0].uri, ";token=p11agent-test") != NULL);
	CU_ASSERT(strncmp(p.tokens[0].desc, "token 'p11agent-test' (SoftHSM "
	    "project SoftHSM v2, serial ", 52) == 0);
	helper_probe_clear(&p);
	CU_ASSERT_EQUAL(probe("pkcs11:id=%03", &p), 0);
	CU_ASSERT_EQUAL(p.n, 1);
	helper_probe_clear(&p);
	/* the uninitialised token in SoftHSM's free slot is no candidate */
	CU_ASSERT_EQUAL(probe("pkcs11:", &p), 0);
	CU_ASSERT_EQUAL(p.n, 1);
	helper_probe_clear(&p);
	/* the token shows public objects, none of them with this label or
	 * with this label and id together */
	CU_ASSERT_EQUAL(probe("pkcs11:object=no-such-key", &p), P11A_ERR_NO_TOKEN);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "no token matches"));
	token_clear_error(ctx);
	CU_ASSERT_EQUAL(probe("pkcs11:object=ec-key;id=%01", &p), P11A_ERR_NO_TOKEN);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "no token matches"));
	token_clear_error(ctx);
	/* token attributes and the module part */
	CU_ASSERT_EQUAL(probe("pkcs11:token=other;object=ec-key", &p), P11A_ERR_NO_TOKEN);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "no token matches"));
	token_clear_error(ctx);
	/* a module by path has no name */
	CU_ASSERT_EQUAL(probe("pkcs11:object=ec-key?module-name=softhsm2", &p),
	    P11A_ERR_NO_TOKEN);
	token_clear_error(ctx);
	/* a URI that does not parse is an error, as for OPEN */
	CU_ASSERT_EQUAL(probe("pkcs11:token=%zz", &p), P11A_ERR_URI);
	CU_ASSERT_PTR_NOT_NULL(strstr(token_error(ctx), "pkcs11:token=%zz: "));
	token_clear_error(ctx);
	/* finding none is an error that says why (no token matches) */
}

static void
test_modules(void)
{
	struct helper_modules	 m;
	struct pbuf		 b, r;

	pbuf_init(&b);
	CU_ASSERT_EQUAL_FATAL(token_modules(ctx, &b), 0);
	pbuf_view(&r, b.data, b.len);
	CU_ASSERT_EQUAL_FATAL(helper_parse_modules(&r, &m), 0);
	CU_ASSERT_EQUAL_FATAL(m.n, 1);
	CU_ASSERT_PTR_NULL(m.mods[0].name);
	CU_ASSERT_PTR_NOT_NULL(m.mods[0].filename);
	helper_modules_clear(&m);
	pbuf_clear(&b);
}

/* Starts a helper for mod ("registry": p11-kit's registry). */
static int
start(const char *mod, struct helper **hp)
{
	struct helper_opts	 o;
	char			 err[1024];

	memset(&o, 0, sizeof(o));
	o.module = strcmp(mod, "registry") == 0 ? NULL : mod;
	/* named here, as on the command line of 'p11agent tokens -m' */
	o.allow = (char *const *)&o.module;
	o.nallow = o.module != NULL;
	return helper_start(&o, hp, err, sizeof(err));
}

/* One PROBE (uri) or MODULES (uri NULL) request, waited for. */
static int
request(struct helper *h, const char *uri, struct pbuf *reply)
{
	struct pbuf	 req;
	int		 e;

	pbuf_init(&req);
	if (uri != NULL)
		helper_put_probe(&req, uri);
	e = helper_call(h, uri ? PROTO_PROBE : PROTO_MODULES, &req, reply,
	    CALL_TIMEOUT_MS);
	pbuf_clear(&req);
	return e;
}

static void
test_helper_wire(void)
{
	struct helper_modules	 m;
	struct helper_probe	 p;
	struct helper		*h = NULL;
	struct pbuf		 reply;

	pbuf_init(&reply);
	CU_ASSERT_EQUAL_FATAL(start(module, &h), 0);
	CU_ASSERT_EQUAL_FATAL(request(h, NULL, &reply), 0);
	CU_ASSERT_EQUAL_FATAL(helper_parse_modules(&reply, &m), 0);
	CU_ASSERT(m.n == 1 && m.mods[0].filename != NULL &&
	    strstr(m.mods[0].filename, "softhsm2") != NULL);
	helper_modules_clear(&m);
	CU_ASSERT_EQUAL_FATAL(request(h, "pkcs11:object=rsa-key;type=private",
	    &reply), 0);
	CU_ASSERT_EQUAL_FATAL(helper_parse_probe(&reply, &p), 0);
	CU_ASSERT(p.n == 1 && strstr(p.tokens[0].uri, "token=p11agent-test"));
	helper_probe_clear(&p);
	/* a URI that does not parse: an ERROR reply naming it */
	CU_ASSERT_EQUAL(request(h, "pkcs11:id=%zz", &reply), P11A_ERR_URI);
	CU_ASSERT_PTR_NOT_NULL(strstr(helper_error(h), "pkcs11:id=%zz"));
	/* and the helper goes on; none found is an ERROR saying why */
	CU_ASSERT_EQUAL(request(h, "pkcs11:object=nothing", &reply),
	    P11A_ERR_NO_TOKEN);
	CU_ASSERT_PTR_NOT_NULL(strstr(helper_error(h), "pkcs11:object="
	    "nothing: no token matches"));
	helper_free(h);
	pbuf_clear(&reply);
}

/* The shell tests' client: prints a PROBE or MODULES reply. */
static int
client(int argc, char *argv[])
{
	struct helper_modules	 m;
	struct helper_probe	 p;
	struct helper		*h = NULL;
	struct pbuf		 reply;
	uint32_t		 i;
	int			 e, probe_req = strcmp(argv[1], "probe") == 0;

	if ((probe_req && argc != 4) || (!probe_req && (argc != 3 ||
	    strcmp(argv[1], "modules") != 0))) {
		fprintf(stderr, "usage: engine-tests probe MODULE|registry "
		    "URI\n       engine-tests modules MODULE|registry\n");
		return 2;
	}
	pbuf_init(&reply);
	if ((e = start(argv[2], &h)) == 0)
		e = request(h, probe_req ? argv[3] : NULL, &reply);
	if (e == 0 && probe_req && (e = helper_parse_probe(&reply, &p)) == 0) {
		printf("candidates: %u\n", p.n);
		for (i = 0; i < p.n; i++)
			printf("%s\t%s\n", p.tokens[i].uri, p.tokens[i].desc);
		helper_probe_clear(&p);
	} else if (e == 0 && !probe_req &&
	    (e = helper_parse_modules(&reply, &m)) == 0) {
		printf("modules: %u\n", m.n);
		for (i = 0; i < m.n; i++)
			printf("%s\t%s\n", m.mods[i].name ? m.mods[i].name :
			    "-", m.mods[i].filename ? m.mods[i].filename : "-");
		helper_modules_clear(&m);
	}
	if (e != 0)
		fprintf(stderr, "error: %s\n", h != NULL &&
		    helper_error(h)[0] != '\0' ? helper_error(h) :
		    p11a_strerror(e));
	pbuf_clear(&reply);
	helper_free(h);
	return e != 0;
}

int
main(int argc, char *argv[])
{
	CU_pSuite	 s;
	unsigned int	 failed;

	if (argc > 1)
		return client(argc, argv);
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
	    CU_add_test(s, "listing", test_list) == NULL ||
	    CU_add_test(s, "probe", test_probe) == NULL ||
	    CU_add_test(s, "modules", test_modules) == NULL ||
	    CU_add_test(s, "PROBE and MODULES through a helper",
	    test_helper_wire) == NULL)
		return 99;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
