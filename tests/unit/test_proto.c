/*
 * Unit tests: the helper wire encoding (engine/proto.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "tests.h"

static void
test_roundtrip(void)
{
	struct pbuf	 b, r;
	const uint8_t	*p;
	size_t		 len;
	char		*s;

	pbuf_init(&b);
	pbuf_put_u8(&b, 7);
	pbuf_put_u32(&b, 0xdeadbeef);
	pbuf_put_str(&b, "pkcs11:token=x");
	pbuf_put_bytes(&b, "\0\1\2", 3);
	CU_ASSERT_EQUAL(b.err, 0);
	pbuf_view(&r, b.data, b.len);
	CU_ASSERT_EQUAL(pbuf_get_u8(&r), 7);
	CU_ASSERT_EQUAL(pbuf_get_u32(&r), 0xdeadbeef);
	s = pbuf_get_str(&r);
	CU_ASSERT_STRING_EQUAL(s, "pkcs11:token=x");
	free(s);
	p = pbuf_get_bytes(&r, &len, 16);
	CU_ASSERT_EQUAL(len, 3);
	CU_ASSERT(p != NULL && memcmp(p, "\0\1\2", 3) == 0);
	CU_ASSERT_EQUAL(pbuf_end(&r), 0);
	pbuf_clear(&b);
}

static void
test_truncated(void)
{
	struct pbuf	 b, r;
	size_t		 len;

	pbuf_init(&b);
	pbuf_put_u32(&b, 100);		/* claims 100 bytes, has 2 */
	pbuf_put_u8(&b, 1);
	pbuf_put_u8(&b, 2);
	pbuf_view(&r, b.data, b.len);
	CU_ASSERT_PTR_NULL(pbuf_get_bytes(&r, &len, 1000));
	CU_ASSERT_EQUAL(r.err, P11A_ERR_PROTOCOL);
	/* the error sticks */
	CU_ASSERT_EQUAL(pbuf_get_u32(&r), 0);
	CU_ASSERT_EQUAL(pbuf_end(&r), P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
}

static void
test_limits(void)
{
	struct pbuf	 b, r;
	uint8_t		*big;
	size_t		 len;
	char		*s;

	pbuf_init(&b);
	big = calloc(1, PROTO_MAX_FIELD + 1);
	pbuf_put_bytes(&b, big, PROTO_MAX_FIELD + 1);
	CU_ASSERT_EQUAL(b.err, P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	/* a field over the caller's limit is refused on read */
	pbuf_put_bytes(&b, big, 64);
	pbuf_view(&r, b.data, b.len);
	CU_ASSERT_PTR_NULL(pbuf_get_bytes(&r, &len, 32));
	CU_ASSERT_EQUAL(r.err, P11A_ERR_TOO_LARGE);
	pbuf_clear(&b);
	/* a string with a NUL inside is refused */
	pbuf_put_bytes(&b, "ab\0c", 4);
	pbuf_view(&r, b.data, b.len);
	s = pbuf_get_str(&r);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_EQUAL(r.err, P11A_ERR_PROTOCOL);
	pbuf_clear(&b);
	free(big);
}

static void
test_socket(void)
{
	struct pbuf	 b, in;
	uint32_t	 type, id;
	uint8_t		 bad[PROTO_HDR_LEN];
	int		 sv[2];

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	pbuf_init(&b);
	pbuf_init(&in);
	pbuf_put_str(&b, "hello");
	CU_ASSERT_EQUAL(proto_send(sv[0], PROTO_LIST, 42, &b), 0);
	CU_ASSERT_EQUAL(proto_recv(sv[1], &type, &id, &in, 1000), 0);
	CU_ASSERT_EQUAL(type, PROTO_LIST);
	CU_ASSERT_EQUAL(id, 42);
	CU_ASSERT_EQUAL(in.len - in.off, 9);
	/* nothing more: the deadline passes */
	CU_ASSERT_EQUAL(proto_recv(sv[1], &type, &id, &in, 50),
	    P11A_ERR_TIMEOUT);
	/* a header whose length disagrees with the packet */
	proto_hdr_put(bad, PROTO_SIGN, 1, 500);
	CU_ASSERT_EQUAL(write(sv[0], bad, sizeof(bad)), (ssize_t)sizeof(bad));
	CU_ASSERT_EQUAL(proto_recv(sv[1], &type, &id, &in, 1000),
	    P11A_ERR_PROTOCOL);
	/* a length over the hard limit */
	proto_hdr_put(bad, PROTO_SIGN, 1, PROTO_MAX_PAYLOAD + 1);
	CU_ASSERT_EQUAL(write(sv[0], bad, sizeof(bad)), (ssize_t)sizeof(bad));
	CU_ASSERT_EQUAL(proto_recv(sv[1], &type, &id, &in, 1000),
	    P11A_ERR_TOO_LARGE);
	close(sv[0]);
	CU_ASSERT_EQUAL(proto_recv(sv[1], &type, &id, &in, 1000),
	    P11A_ERR_CLOSED);
	close(sv[1]);
	pbuf_clear(&b);
	pbuf_clear(&in);
}

int
suite_proto(void)
{
	CU_pSuite	 s = CU_add_suite("proto", NULL, NULL);

	if (s == NULL ||
	    CU_add_test(s, "encode and decode", test_roundtrip) == NULL ||
	    CU_add_test(s, "truncated input", test_truncated) == NULL ||
	    CU_add_test(s, "hard limits", test_limits) == NULL ||
	    CU_add_test(s, "framing on a socket", test_socket) == NULL)
		return -1;
	return 0;
}
