/*
 * p11agent: the agent's side of GENKEY and IMPORT (enrollment; see
 * include/p11agent/enroll.h).  Replies are untrusted input: every count
 * and field is checked against its limit and the payload.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "p11agent/enroll.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

void
enroll_key_clear(struct enroll_key *k)
{
	free(k->uri);
	EVP_PKEY_free(k->pub);
	memset(k, 0, sizeof(*k));
}

void
enroll_import_clear(struct enroll_import *im)
{
	uint32_t i;

	for (i = 0; im->certs != NULL && i < im->n; i++)
		free(im->certs[i].label);
	free(im->certs);
	memset(im, 0, sizeof(*im));
}

void
helper_put_genkey(struct pbuf *req, const char *key_uri, int keytype,
    uint32_t bits, const char *pin_source)
{
	pbuf_put_str(req, key_uri);
	pbuf_put_u8(req, (uint8_t)keytype);
	pbuf_put_u32(req, bits);
	pbuf_put_str(req, pin_source);
}

int
helper_parse_genkey(struct pbuf *reply, struct enroll_key *out)
{
	struct enroll_key	 k;
	const unsigned char	*der, *p;
	size_t			 len;
	int			 r;

	memset(&k, 0, sizeof(k));
	k.uri = pbuf_get_str(reply);
	k.keytype = pbuf_get_u8(reply);
	der = pbuf_get_bytes(reply, &len, ENROLL_MAX_SPKI);
	k.flags = pbuf_get_u32(reply);
	if ((r = pbuf_end(reply)) != 0)
		goto out;
	r = P11A_ERR_PROTOCOL;
	if (k.uri == NULL || strncmp(k.uri, "pkcs11:", 7) != 0 ||
	    (k.keytype != PROTO_KEY_RSA && k.keytype != PROTO_KEY_EC) ||
	    len == 0)
		goto out;
	p = der;
	if ((k.pub = d2i_PUBKEY(NULL, &p, (long)len)) == NULL ||
	    p != der + len || !EVP_PKEY_is_a(k.pub, k.keytype ==
	    PROTO_KEY_RSA ? "RSA" : "EC")) {
		ERR_clear_error();
		goto out;
	}
	*out = k;
	memset(&k, 0, sizeof(k));
	r = 0;
out:
	enroll_key_clear(&k);
	return r;
}

void
helper_put_import(struct pbuf *req, const char *key_uri,
    const char *pin_source, X509 *const *certs, int n)
{
	unsigned char	*der;
	int		 i, len;

	pbuf_put_str(req, key_uri);
	pbuf_put_str(req, pin_source);
	pbuf_put_u32(req, (uint32_t)n);
	for (i = 0; i < n; i++) {
		der = NULL;
		if ((len = i2d_X509(certs[i], &der)) <= 0) {
			req->err = P11A_ERR_INVALID;
			return;
		}
		pbuf_put_bytes(req, der, (size_t)len);
		OPENSSL_free(der);
	}
}

int
helper_parse_import(struct pbuf *reply, uint32_t want,
    struct enroll_import *out)
{
	struct enroll_import	 im;
	uint32_t		 i;
	int			 st, r;

	memset(&im, 0, sizeof(im));
	im.n = pbuf_get_u32(reply);
	if ((r = reply->err) != 0)
		goto out;
	if (im.n != want || im.n > ENROLL_MAX_CERTS) {
		im.n = 0;
		r = P11A_ERR_PROTOCOL;
		goto out;
	}
	if ((im.certs = calloc(im.n, sizeof(*im.certs))) == NULL) {
		im.n = 0;
		r = P11A_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < im.n && reply->err == 0; i++) {
		st = pbuf_get_u8(reply);
		im.certs[i].status = st;
		im.certs[i].label = pbuf_get_str(reply);
		if (reply->err == 0 && st != ENROLL_CERT_WRITTEN &&
		    st != ENROLL_CERT_PRESENT)
			reply->err = P11A_ERR_PROTOCOL;
	}
	if ((r = pbuf_end(reply)) != 0)
		goto out;
	*out = im;
	memset(&im, 0, sizeof(im));
out:
	enroll_import_clear(&im);
	return r;
}

/* A blocking call and its reply's decoder; h's message says what failed. */
static int
call(struct helper *h, uint32_t type, struct pbuf *req, struct pbuf *reply,
    int timeout_ms)
{
	if (req->err != 0)
		return req->err;
	return helper_call(h, type, req, reply, timeout_ms);
}

int
helper_genkey(struct helper *h, const char *key_uri, int keytype,
    uint32_t bits, const char *pin_source, int timeout_ms,
    struct enroll_key *out)
{
	struct pbuf	 req, reply;
	int		 r;

	pbuf_init(&req);
	pbuf_init(&reply);
	helper_put_genkey(&req, key_uri, keytype, bits, pin_source);
	if ((r = call(h, PROTO_GENKEY, &req, &reply, timeout_ms)) == 0)
		r = helper_parse_genkey(&reply, out);
	pbuf_clear(&req);
	pbuf_clear(&reply);
	return r;
}

int
helper_import(struct helper *h, const char *key_uri, const char *pin_source,
    X509 *const *certs, int n, int timeout_ms, struct enroll_import *out)
{
	struct pbuf	 req, reply;
	int		 r;

	if (n < 1 || n > ENROLL_MAX_CERTS)
		return P11A_ERR_TOO_LARGE;
	pbuf_init(&req);
	pbuf_init(&reply);
	helper_put_import(&req, key_uri, pin_source, certs, n);
	if ((r = call(h, PROTO_IMPORT, &req, &reply, timeout_ms)) == 0)
		r = helper_parse_import(&reply, (uint32_t)n, out);
	pbuf_clear(&req);
	pbuf_clear(&reply);
	return r;
}
