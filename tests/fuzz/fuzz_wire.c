/*
 * Fuzz target: what the agent decodes from a token helper: the packet
 * header, an ERROR payload's fields, an OPEN_OK payload (with its
 * certificate) and a SIGN_OK payload.  The first byte picks the decoder.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include <openssl/x509.h>

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
		X509_free(id.cert);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		packet(data + 1, size - 1);
		break;
	case 1:
		fields(data + 1, size - 1);
		break;
	default:
		open_ok(data + 1, size - 1);
		break;
	}
	return 0;
}
