/*
 * Unit tests: the requests a token helper decodes (engine/helper_req.c)
 * against the agent's encoders, and the agent's decoders of the MODULES
 * and PROBE replies (engine/client_probe.c) on good and hostile payloads.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"
#include "helper_req.h"
#include "tests.h"

/* Re-reads what b holds from the start. */
static struct pbuf *
reread(struct pbuf *b, struct pbuf *r)
{
	pbuf_view(r, b->data, b->len);
	return r;
}

static void
test_open(void)
{
	struct hreq_open	 q;
	struct pbuf		 b, r;

	pbuf_init(&b);
	helper_put_open(&b, "pkcs11:object=k;type=private", NULL, "file:pin");
	CU_ASSERT_EQUAL_FATAL(hreq_open(reread(&b, &r), &q), 0);
	CU_ASSERT_STRING_EQUAL(q.key_uri, "pkcs11:object=k;type=private");
	CU_ASSERT_PTR_NULL(q.cert);
	CU_ASSERT_STRING_EQUAL(q.pin_source, "file:pin");
	hreq_open_clear(&q);
	CU_ASSERT_PTR_NULL(q.key_uri);
	/* a byte after the last field */
	pbuf_put_u8(&b, 0);
	CU_ASSERT_EQUAL(hreq_open(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	CU_ASSERT_PTR_NULL(q.key_uri);
	pbuf_clear(&b);
	/* no key URI */
	helper_put_open(&b, NULL, "cert.pem", NULL);
	CU_ASSERT_EQUAL(hreq_open(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	CU_ASSERT(q.key_uri == NULL && q.cert == NULL && q.pin_source == NULL);
	pbuf_clear(&b);
	/* a NUL inside a string */
	pbuf_put_bytes(&b, "pkcs11:\0x", 9);
	pbuf_put_str(&b, NULL);
	pbuf_put_str(&b, NULL);
	CU_ASSERT_EQUAL(hreq_open(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* cut short */
	helper_put_open(&b, "pkcs11:token=t", "pkcs11:type=cert", "none");
	b.len -= 2;
	CU_ASSERT_EQUAL(hreq_open(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
}

static void
put_sign(struct pbuf *b, uint32_t handle, const uint8_t *data, size_t len)
{
	pbuf_put_u32(b, handle);
	pbuf_put_u8(b, PROTO_ALG_RSA_PSS);
	pbuf_put_u8(b, PROTO_HASH_SHA384);
	pbuf_put_u32(b, 48);
	pbuf_put_bytes(b, data, len);
}

static void
test_sign(void)
{
	static uint8_t		 data[PROTO_MAX_SIGN_DATA + 1];
	struct hreq_sign	 q;
	struct pbuf		 b, r;

	memset(data, 0xa5, sizeof(data));
	pbuf_init(&b);
	put_sign(&b, 7, data, 48);
	CU_ASSERT_EQUAL_FATAL(hreq_sign(reread(&b, &r), &q), 0);
	CU_ASSERT_EQUAL(q.handle, 7);
	CU_ASSERT_EQUAL(q.alg, PROTO_ALG_RSA_PSS);
	CU_ASSERT_EQUAL(q.hash, PROTO_HASH_SHA384);
	CU_ASSERT_EQUAL(q.saltlen, 48);
	CU_ASSERT_EQUAL(q.len, 48);
	/* the data is not copied: it points into the payload */
	CU_ASSERT(q.data == b.data + b.len - 48);
	CU_ASSERT_PTR_NULL(q.who);
	CU_ASSERT_EQUAL(q.sent_ms, 0);
	pbuf_clear(&b);
	/* with who asks, for a PIN dialog */
	put_sign(&b, 7, data, 32);
	pbuf_put_str(&b, "curl (pid 42, alice)");
	pbuf_put_str(&b, "api.bank.example");
	pbuf_put_u32(&b, 1);
	pbuf_put_u32(&b, 5);
	CU_ASSERT_EQUAL_FATAL(hreq_sign(reread(&b, &r), &q), 0);
	CU_ASSERT_STRING_EQUAL(q.who, "curl (pid 42, alice)");
	CU_ASSERT_STRING_EQUAL(q.host, "api.bank.example");
	CU_ASSERT_EQUAL(q.sent_ms, (1L << 32) + 5);
	hreq_sign_clear(&q);
	pbuf_clear(&b);
	/* a time that does not fit a long's positive range */
	put_sign(&b, 7, data, 32);
	pbuf_put_str(&b, "x");
	pbuf_put_str(&b, NULL);
	pbuf_put_u32(&b, 0x80000000u);
	pbuf_put_u32(&b, 0);
	CU_ASSERT_EQUAL(hreq_sign(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	CU_ASSERT_PTR_NULL(q.who);
	pbuf_clear(&b);
	/* nothing to sign */
	put_sign(&b, 0, data, 0);
	CU_ASSERT_EQUAL(hreq_sign(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	CU_ASSERT_PTR_NULL(q.data);
	pbuf_clear(&b);
	/* the most a SIGN may carry, and one byte more */
	put_sign(&b, 0, data, PROTO_MAX_SIGN_DATA);
	CU_ASSERT_EQUAL(hreq_sign(reread(&b, &r), &q), 0);
	pbuf_clear(&b);
	put_sign(&b, 0, data, PROTO_MAX_SIGN_DATA + 1);
	CU_ASSERT_EQUAL(hreq_sign(reread(&b, &r), &q), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	/* a length that claims more than there is */
	put_sign(&b, 0, data, 32);
	b.len -= 1;
	CU_ASSERT_EQUAL(hreq_sign(reread(&b, &r), &q), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
}

static void
test_list_modules_probe(void)
{
	struct hreq_list	 l;
	struct hreq_probe	 p;
	struct pbuf		 b, r;

	pbuf_init(&b);
	pbuf_put_str(&b, NULL);
	pbuf_put_str(&b, "pkcs11:token=t");
	CU_ASSERT_EQUAL_FATAL(hreq_list(reread(&b, &r), &l), 0);
	CU_ASSERT_PTR_NULL(l.pin_source);
	CU_ASSERT_STRING_EQUAL(l.filter, "pkcs11:token=t");
	hreq_list_clear(&l);
	pbuf_clear(&b);
	pbuf_put_str(&b, "file:pin");
	CU_ASSERT_EQUAL(hreq_list(reread(&b, &r), &l), P11A_ERR_PROTOCOL);
	CU_ASSERT(l.pin_source == NULL && l.filter == NULL);
	pbuf_clear(&b);
	/* MODULES has no payload */
	CU_ASSERT_EQUAL(hreq_modules(reread(&b, &r)), 0);
	pbuf_put_u8(&b, 0);
	CU_ASSERT_EQUAL(hreq_modules(reread(&b, &r)), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* PROBE: the agent's encoder, then an empty URI */
	helper_put_probe(&b, "pkcs11:object=auth-key;type=private");
	CU_ASSERT_EQUAL_FATAL(hreq_probe(reread(&b, &r), &p), 0);
	CU_ASSERT_STRING_EQUAL(p.key_uri,
	    "pkcs11:object=auth-key;type=private");
	hreq_probe_clear(&p);
	pbuf_clear(&b);
	helper_put_probe(&b, NULL);
	CU_ASSERT_EQUAL(hreq_probe(reread(&b, &r), &p), P11A_ERR_PROTOCOL);
	CU_ASSERT_PTR_NULL(p.key_uri);
	pbuf_clear(&b);
}

static void
put_tokens(struct pbuf *b, uint32_t count, int n)
{
	int	 i;

	pbuf_put_u32(b, count);
	for (i = 0; i < n; i++) {
		pbuf_put_str(b, i ? "pkcs11:token=b" : "pkcs11:token=a");
		pbuf_put_str(b, i ? "token 'b'" : "token 'a'");
	}
}

/* Parses b as PROBE_OK; *out must stay as it was on failure. */
static int
probe(struct pbuf *b, struct helper_probe *out)
{
	struct pbuf	 r;
	int		 e;

	out->n = 99;
	out->tokens = NULL;
	if ((e = helper_parse_probe(reread(b, &r), out)) != 0)
		CU_ASSERT(out->n == 99 && out->tokens == NULL);
	return e;
}

static void
test_parse_probe(void)
{
	struct helper_probe	 p;
	struct pbuf		 b;
	uint32_t		 i;

	pbuf_init(&b);
	put_tokens(&b, 2, 2);
	CU_ASSERT_EQUAL_FATAL(probe(&b, &p), 0);
	CU_ASSERT_EQUAL_FATAL(p.n, 2);
	CU_ASSERT_STRING_EQUAL(p.tokens[0].uri, "pkcs11:token=a");
	CU_ASSERT_STRING_EQUAL(p.tokens[1].desc, "token 'b'");
	helper_probe_clear(&p);
	CU_ASSERT(p.n == 0 && p.tokens == NULL);
	pbuf_clear(&b);
	/* no candidate is an answer, not an error */
	put_tokens(&b, 0, 0);
	CU_ASSERT_EQUAL(probe(&b, &p), 0);
	CU_ASSERT(p.n == 0 && p.tokens == NULL);
	pbuf_clear(&b);
	/* counts over the limit, or more entries than the payload holds */
	put_tokens(&b, PROTO_MAX_CANDIDATES + 1, 2);
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	put_tokens(&b, 0xffffffff, 0);
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	put_tokens(&b, 3, 2);
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* fewer entries than the payload holds: trailing bytes */
	put_tokens(&b, 1, 2);
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* cut inside the second entry (what was read is freed) */
	put_tokens(&b, 2, 2);
	b.len -= 3;
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* a candidate without a URI, with a URI that is none, without text */
	pbuf_put_u32(&b, 1);
	pbuf_put_str(&b, NULL);
	pbuf_put_str(&b, "token 'a'");
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 1);
	pbuf_put_str(&b, "file:/etc/passwd");
	pbuf_put_str(&b, "token 'a'");
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 1);
	pbuf_put_str(&b, "pkcs11:token=a");
	pbuf_put_str(&b, NULL);
	CU_ASSERT_EQUAL(probe(&b, &p), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* the most candidates a reply may carry */
	pbuf_put_u32(&b, PROTO_MAX_CANDIDATES);
	for (i = 0; i < PROTO_MAX_CANDIDATES; i++) {
		pbuf_put_str(&b, "pkcs11:token=x");
		pbuf_put_str(&b, "token 'x'");
	}
	CU_ASSERT_EQUAL(probe(&b, &p), 0);
	CU_ASSERT_EQUAL(p.n, PROTO_MAX_CANDIDATES);
	helper_probe_clear(&p);
	pbuf_clear(&b);
}

/* Parses b as MODULES_OK; *out must stay as it was on failure. */
static int
modules(struct pbuf *b, struct helper_modules *out)
{
	struct pbuf	 r;
	int		 e;

	out->n = 99;
	out->mods = NULL;
	if ((e = helper_parse_modules(reread(b, &r), out)) != 0)
		CU_ASSERT(out->n == 99 && out->mods == NULL);
	return e;
}

static void
test_parse_modules(void)
{
	struct helper_modules	 m;
	struct pbuf		 b;

	pbuf_init(&b);
	pbuf_put_u32(&b, 2);
	pbuf_put_str(&b, "softhsm2");
	pbuf_put_str(&b, "/usr/lib/softhsm/libsofthsm2.so");
	pbuf_put_str(&b, NULL);		/* a module without a name */
	pbuf_put_str(&b, "/opt/x.so");
	CU_ASSERT_EQUAL_FATAL(modules(&b, &m), 0);
	CU_ASSERT_EQUAL_FATAL(m.n, 2);
	CU_ASSERT_STRING_EQUAL(m.mods[0].name, "softhsm2");
	CU_ASSERT_STRING_EQUAL(m.mods[0].filename,
	    "/usr/lib/softhsm/libsofthsm2.so");
	CU_ASSERT_PTR_NULL(m.mods[1].name);
	CU_ASSERT_STRING_EQUAL(m.mods[1].filename, "/opt/x.so");
	helper_modules_clear(&m);
	pbuf_clear(&b);
	/* limits and truncation */
	pbuf_put_u32(&b, PROTO_MAX_MODULES + 1);
	CU_ASSERT_EQUAL(modules(&b, &m), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 2);
	pbuf_put_str(&b, "a");
	pbuf_put_str(&b, "/a.so");
	CU_ASSERT_EQUAL(modules(&b, &m), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 1);
	pbuf_put_str(&b, "a");
	pbuf_put_str(&b, "/a.so");
	pbuf_put_u8(&b, 0);
	CU_ASSERT_EQUAL(modules(&b, &m), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	/* a string over its limit */
	pbuf_put_u32(&b, 1);
	pbuf_put_u32(&b, PROTO_MAX_STRING + 1);
	pbuf_put_u32(&b, 0);
	CU_ASSERT_EQUAL(modules(&b, &m), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	/* nothing at all */
	CU_ASSERT_EQUAL(modules(&b, &m), P11A_ERR_PROTOCOL);
}

/* One token of a STATE_OK reply with n handles (from 7). */
static void
put_state(struct pbuf *b, const char *label, uint32_t n, int present)
{
	uint32_t	 i;

	pbuf_put_str(b, label);
	pbuf_put_str(b, "0123456789abcdef");
	pbuf_put_u8(b, (uint8_t)present);
	pbuf_put_u8(b, PROTO_STATE_YES);
	pbuf_put_u8(b, 1);
	pbuf_put_u32(b, PROTO_CKF_USER_PIN_COUNT_LOW | 0x400);
	pbuf_put_u32(b, 0);
	pbuf_put_u8(b, 0);
	pbuf_put_u32(b, n);
	for (i = 0; i < n; i++)
		pbuf_put_u32(b, 7 + i);
}

/* Parses b as STATE_OK; *out must stay as it was on failure. */
static int
states(struct pbuf *b, struct helper_states *out)
{
	struct pbuf	 r;
	int		 e;

	out->n = 99;
	out->tokens = NULL;
	if ((e = helper_parse_states(reread(b, &r), out)) != 0)
		CU_ASSERT(out->n == 99 && out->tokens == NULL);
	return e;
}

static void
test_parse_states(void)
{
	struct helper_states	 st;
	struct pbuf		 b;
	char			 label[40];

	pbuf_init(&b);
	pbuf_put_u32(&b, 2);
	put_state(&b, "card a", 2, PROTO_STATE_YES);
	put_state(&b, "card b", 0, PROTO_STATE_NO);
	CU_ASSERT_EQUAL_FATAL(states(&b, &st), 0);
	CU_ASSERT_EQUAL_FATAL(st.n, 2);
	CU_ASSERT_STRING_EQUAL(st.tokens[0].label, "card a");
	CU_ASSERT_STRING_EQUAL(st.tokens[0].serial, "0123456789abcdef");
	CU_ASSERT(st.tokens[0].present == PROTO_STATE_YES &&
	    st.tokens[0].login == PROTO_STATE_YES &&
	    st.tokens[0].flags_known && st.tokens[0].flags ==
	    (PROTO_CKF_USER_PIN_COUNT_LOW | 0x400) && !st.tokens[0].refused);
	CU_ASSERT(st.tokens[0].nhandles == 2 && st.tokens[0].handles[1] == 8);
	CU_ASSERT(st.tokens[1].present == PROTO_STATE_NO &&
	    st.tokens[1].nhandles == 0);
	helper_states_clear(&st);
	CU_ASSERT(st.n == 0 && st.tokens == NULL);
	pbuf_clear(&b);
	/* none: an answer */
	pbuf_put_u32(&b, 0);
	CU_ASSERT_EQUAL(states(&b, &st), 0);
	CU_ASSERT(st.n == 0 && st.tokens == NULL);
	pbuf_clear(&b);
	/* over the limits: tokens, handles, a label or serial too long */
	pbuf_put_u32(&b, PROTO_MAX_STATE_TOKENS + 1);
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 1);
	put_state(&b, "a", PROTO_MAX_STATE_KEYS + 1, PROTO_STATE_YES);
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	memset(label, 'x', 33);
	label[33] = '\0';
	pbuf_put_u32(&b, 1);
	put_state(&b, label, 1, PROTO_STATE_YES);
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	label[32] = '\0';	/* 32 bytes: the most a label has */
	pbuf_put_u32(&b, 1);
	put_state(&b, label, 1, PROTO_STATE_YES);
	CU_ASSERT_EQUAL(states(&b, &st), 0);
	helper_states_clear(&st);
	pbuf_clear(&b);
	/* a state that is none of PROTO_STATE_*, trailing bytes, cut */
	pbuf_put_u32(&b, 1);
	put_state(&b, "a", 1, PROTO_STATE_UNKNOWN + 1);
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 1);
	put_state(&b, "a", 1, PROTO_STATE_YES);
	pbuf_put_u8(&b, 0);
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	pbuf_put_u32(&b, 2);
	put_state(&b, "a", 1, PROTO_STATE_YES);
	put_state(&b, "b", 3, PROTO_STATE_YES);
	b.len -= 2;
	CU_ASSERT_EQUAL(states(&b, &st), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
}

int
suite_req(void)
{
	CU_pSuite	 s = CU_add_suite("helper requests", NULL, NULL);

	if (s == NULL ||
	    CU_add_test(s, "OPEN", test_open) == NULL ||
	    CU_add_test(s, "SIGN", test_sign) == NULL ||
	    CU_add_test(s, "LIST, MODULES, PROBE", test_list_modules_probe) ==
	    NULL ||
	    CU_add_test(s, "PROBE_OK replies", test_parse_probe) == NULL ||
	    CU_add_test(s, "MODULES_OK replies", test_parse_modules) == NULL ||
	    CU_add_test(s, "STATE_OK replies", test_parse_states) == NULL)
		return -1;
	return 0;
}
