/*
 * Fuzz target: what a token helper decodes from the agent: the packet
 * header, then the payload through every request decoder (OPEN, SIGN,
 * LIST, MODULES, PROBE, GENKEY, IMPORT) whatever the type says, so that
 * a mutation of one request exercises them all.  An input whose header
 * does not parse is tried as a bare payload.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "p11agent/proto.h"
#include "helper_req.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
decode_all(const uint8_t *p, size_t n)
{
	struct hreq_open	 o;
	struct hreq_sign	 s;
	struct hreq_list	 l;
	struct hreq_probe	 q;
	struct hreq_unlock	 u;
	struct hreq_genkey	 g;
	struct hreq_import	 im;
	struct pbuf		 b;
	volatile uint8_t	 sink = 0;
	size_t			 i;

	pbuf_view(&b, p, n);
	if (hreq_open(&b, &o) == 0)
		hreq_open_clear(&o);
	pbuf_view(&b, p, n);
	if (hreq_sign(&b, &s) == 0) {	/* data must point into the input */
		for (i = 0; i < s.len; i++)
			sink ^= s.data[i];
		hreq_sign_clear(&s);
	}
	pbuf_view(&b, p, n);
	hreq_logout(&b);
	pbuf_view(&b, p, n);
	if (hreq_unlock(&b, &u) == 0)
		hreq_unlock_clear(&u);
	pbuf_view(&b, p, n);
	if (hreq_list(&b, &l) == 0)
		hreq_list_clear(&l);
	pbuf_view(&b, p, n);
	hreq_modules(&b);
	pbuf_view(&b, p, n);
	if (hreq_probe(&b, &q) == 0)
		hreq_probe_clear(&q);
	pbuf_view(&b, p, n);
	if (hreq_genkey(&b, &g) == 0)
		hreq_genkey_clear(&g);
	pbuf_view(&b, p, n);
	if (hreq_import(&b, &im) == 0) {	/* certificates point into it */
		for (i = 0; i < (size_t)im.n; i++)
			sink ^= im.cert[i][0] ^ im.cert[i][im.len[i] - 1];
		hreq_import_clear(&im);
	}
	(void)sink;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pbuf	 b;
	uint32_t	 type, id;

	pbuf_view(&b, data, size);
	if (proto_parse(&b, size, &type, &id) == 0)
		decode_all(data + b.off, size - b.off);
	else
		decode_all(data, size);
	return 0;
}
