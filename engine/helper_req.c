/*
 * p11agent: decoding the requests a token helper receives (see
 * helper_req.h).  Every field is checked against the remaining payload
 * and its limit by the pbuf readers; what is left to check here is what
 * a request needs: a key URI, data to sign, nothing after the last field.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "helper_req.h"

void
hreq_open_clear(struct hreq_open *q)
{
	free(q->key_uri);
	free(q->cert);
	free(q->pin_source);
	free(q->pinentry);
	memset(q, 0, sizeof(*q));
}

int
hreq_open(struct pbuf *b, struct hreq_open *q)
{
	int	 r;

	q->key_uri = pbuf_get_str(b);
	q->cert = pbuf_get_str(b);
	q->pin_source = pbuf_get_str(b);
	q->pinentry = NULL;
	q->pin_cache = 0;
	q->flags = 0;
	if (b->err == 0 && b->off < b->len) {	/* the login settings */
		q->pinentry = pbuf_get_str(b);
		q->pin_cache = pbuf_get_u32(b);
		if (b->err == 0 && q->pin_cache > PROTO_MAX_PIN_CACHE)
			b->err = P11A_ERR_TOO_LARGE;
		q->flags = pbuf_get_u8(b);
		if (b->err == 0 && (q->flags & ~PROTO_OPEN_LOGOUT_EACH))
			b->err = P11A_ERR_PROTOCOL;
	}
	if ((r = pbuf_end(b)) == 0 && q->key_uri == NULL)
		r = P11A_ERR_PROTOCOL;
	if (r != 0)
		hreq_open_clear(q);
	return r;
}

int
hreq_sign(struct pbuf *b, struct hreq_sign *q)
{
	uint32_t hi;
	int	 r;

	q->handle = pbuf_get_u32(b);
	q->alg = pbuf_get_u8(b);
	q->hash = pbuf_get_u8(b);
	q->saltlen = pbuf_get_u32(b);
	q->data = pbuf_get_bytes(b, &q->len, PROTO_MAX_SIGN_DATA);
	q->who = q->host = NULL;
	q->sent_ms = 0;
	if (b->err == 0 && b->off < b->len) {	/* who asks */
		q->who = pbuf_get_str(b);
		q->host = pbuf_get_str(b);
		hi = pbuf_get_u32(b);
		q->sent_ms = (long)(((uint64_t)hi << 32) | pbuf_get_u32(b));
		if (q->sent_ms < 0)
			b->err = P11A_ERR_PROTOCOL;
	}
	if ((r = pbuf_end(b)) == 0 && q->len == 0)
		r = P11A_ERR_PROTOCOL;
	if (r != 0)
		hreq_sign_clear(q);
	return r;
}

void
hreq_sign_clear(struct hreq_sign *q)
{
	free(q->who);
	free(q->host);
	memset(q, 0, sizeof(*q));
}

int
hreq_logout(struct pbuf *b)
{
	return pbuf_end(b);
}

void
hreq_unlock_clear(struct hreq_unlock *q)
{
	free(q->who);
	q->who = NULL;
}

int
hreq_unlock(struct pbuf *b, struct hreq_unlock *q)
{
	int	 r;

	q->who = pbuf_get_str(b);
	if ((r = pbuf_end(b)) != 0)
		hreq_unlock_clear(q);
	return r;
}

void
hreq_list_clear(struct hreq_list *q)
{
	free(q->pin_source);
	free(q->filter);
	memset(q, 0, sizeof(*q));
}

int
hreq_list(struct pbuf *b, struct hreq_list *q)
{
	int	 r;

	q->pin_source = pbuf_get_str(b);
	q->filter = pbuf_get_str(b);
	if ((r = pbuf_end(b)) != 0)
		hreq_list_clear(q);
	return r;
}

int
hreq_modules(struct pbuf *b)
{
	return pbuf_end(b);
}

int
hreq_state(struct pbuf *b)
{
	return pbuf_end(b);
}

void
hreq_probe_clear(struct hreq_probe *q)
{
	free(q->key_uri);
	q->key_uri = NULL;
}

int
hreq_probe(struct pbuf *b, struct hreq_probe *q)
{
	int	 r;

	q->key_uri = pbuf_get_str(b);
	if ((r = pbuf_end(b)) == 0 && q->key_uri == NULL)
		r = P11A_ERR_PROTOCOL;
	if (r != 0)
		hreq_probe_clear(q);
	return r;
}

void
hreq_genkey_clear(struct hreq_genkey *q)
{
	free(q->key_uri);
	free(q->pin_source);
	memset(q, 0, sizeof(*q));
}

int
hreq_genkey(struct pbuf *b, struct hreq_genkey *q)
{
	int	 r;

	q->key_uri = pbuf_get_str(b);
	q->keytype = pbuf_get_u8(b);
	q->bits = pbuf_get_u32(b);
	q->pin_source = pbuf_get_str(b);
	if ((r = pbuf_end(b)) == 0 && (q->key_uri == NULL ||
	    (q->keytype != PROTO_KEY_RSA && q->keytype != PROTO_KEY_EC)))
		r = P11A_ERR_PROTOCOL;
	if (r != 0)
		hreq_genkey_clear(q);
	return r;
}

void
hreq_import_clear(struct hreq_import *q)
{
	free(q->key_uri);
	free(q->pin_source);
	memset(q, 0, sizeof(*q));
}

int
hreq_import(struct pbuf *b, struct hreq_import *q)
{
	uint32_t n, i;
	int	 r;

	memset(q, 0, sizeof(*q));
	q->key_uri = pbuf_get_str(b);
	q->pin_source = pbuf_get_str(b);
	n = pbuf_get_u32(b);
	if (b->err == 0 && (n == 0 || n > HREQ_MAX_CERTS))
		b->err = n == 0 ? P11A_ERR_PROTOCOL : P11A_ERR_TOO_LARGE;
	for (i = 0; i < n && b->err == 0; i++) {
		q->cert[i] = pbuf_get_bytes(b, &q->len[i], PROTO_MAX_FIELD);
		if (b->err == 0 && q->len[i] == 0)
			b->err = P11A_ERR_PROTOCOL;
	}
	if ((r = pbuf_end(b)) == 0 && q->key_uri == NULL)
		r = P11A_ERR_PROTOCOL;
	if (r != 0)
		hreq_import_clear(q);
	else
		q->n = (int)n;
	return r;
}
