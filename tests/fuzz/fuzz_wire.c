/*
 * Fuzz target: what the agent decodes from a token helper: the packet
 * header, an ERROR payload's fields, an OPEN_OK payload (with its
 * certificate), a SIGN_OK payload, and the enrollment replies GENKEY_OK
 * (with its public key) and IMPORT_OK.  The first byte picks the decoder.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include <openssl/x509.h>

#include "p11agent/enroll.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
packet(const uint8_t *data, size_t size)
{
	struct pbuf	 b;
	uint32_t	 type, id;

	pbuf_view(&b, data, size);
	if (proto_parse(&b, size, &type, &id) == 0)
		pbuf_get_u32(&b);
}

static void
fields(const uint8_t *data, size_t size)
{
	struct pbuf	 b;
	size_t		 len;
	char		*s;

	pbuf_view(&b, data, size);
	pbuf_get_u32(&b);
	pbuf_get_u32(&b);
	s = pbuf_get_str(&b);
	free(s);
	pbuf_get_bytes(&b, &len, PROTO_MAX_SIG);
	pbuf_end(&b);
}

static void
open_ok(const uint8_t *data, size_t size)
{
	struct helper_identity	 id;
	struct pbuf		 b;

	pbuf_view(&b, data, size);
	if (helper_parse_open(&b, &id) == 0)
		helper_identity_clear(&id);
}

static void
genkey_ok(const uint8_t *data, size_t size)
{
	struct enroll_key	 k;
	struct pbuf		 b;

	pbuf_view(&b, data, size);
	if (helper_parse_genkey(&b, &k) == 0)
		enroll_key_clear(&k);
}

static void
import_ok(const uint8_t *data, size_t size)
{
	struct enroll_import	 im;
	struct pbuf		 b;
	uint32_t		 want;

	if (size < 1)
		return;
	want = data[0] % (ENROLL_MAX_CERTS + 2);	/* also a bad one */
	pbuf_view(&b, data + 1, size - 1);
	if (helper_parse_import(&b, want, &im) == 0)
		enroll_import_clear(&im);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 5) {
	case 0:
		packet(data + 1, size - 1);
		break;
	case 1:
		fields(data + 1, size - 1);
		break;
	case 2:
		open_ok(data + 1, size - 1);
		break;
	case 3:
		genkey_ok(data + 1, size - 1);
		break;
	default:
		import_ok(data + 1, size - 1);
		break;
	}
	return 0;
}
