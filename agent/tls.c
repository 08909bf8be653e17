/*
 * p11agent: the TLS client side of a tunnel (OpenSSL).
 *
 * TLS 1.2 at least; the server chain is verified against the tunnel's CA
 * file or the system store, and its name is checked (see tunnel.c).  No
 * option turns verification off.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "p11agent/log.h"
#include "p11agent/proto.h"
#include "p11agent/config.h"
#include "p11agent/identity.h"
#include "p11agent/session.h"
#include "p11agent/tls.h"

/* pin-sha256: the context's own copy (a reload may free the cfg_tunnel
 * before an SSL of this context is done) */
struct tls_pins {
	int		 n;
	unsigned char	 h[CONFIG_MAX_PINS][32];
};
static int	 pins_idx = -1;

static void
pins_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	free(ptr);
}

/* SHA-256 of the certificate's SubjectPublicKeyInfo, DER. */
static int
spki_sha256(X509 *x, unsigned char out[32])
{
	unsigned char	*der = NULL;
	unsigned int	 outlen = 0;
	int		 len, ok;

	if ((len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der)) <= 0)
		return 0;
	ok = EVP_Digest(der, (size_t)len, out, &outlen, EVP_sha256(), NULL) &&
	    outlen == 32;
	OPENSSL_free(der);
	return ok;
}

/*
 * Once the chain verifies (the CA, the name): one of the pins must be
 * the SPKI of a certificate in it, the server's or a CA's (as HPKP).
 */
static int
verify_pins(int ok, X509_STORE_CTX *xs)
{
	SSL			*ssl;
	const struct tls_pins	*p;
	STACK_OF(X509)		*chain;
	unsigned char		 h[32];
	int			 i, j;

	if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0 ||
	    (ssl = X509_STORE_CTX_get_ex_data(xs,
	    SSL_get_ex_data_X509_STORE_CTX_idx())) == NULL ||
	    (p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pins_idx)) == NULL)
		return ok;
	if ((chain = X509_STORE_CTX_get0_chain(xs)) != NULL)
		for (i = 0; i < sk_X509_num(chain); i++) {
			if (!spki_sha256(sk_X509_value(chain, i), h))
				continue;
			for (j = 0; j < p->n; j++)
				if (memcmp(h, p->h[j], 32) == 0)
					return 1;
		}
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static int
set_pins(SSL_CTX *ctx, const struct cfg_tunnel *t, char *err, size_t errlen)
{
	struct tls_pins	*p;

	if (t->npins == 0)
		return 1;
	if (pins_idx == -1 && (pins_idx = SSL_CTX_get_ex_new_index(0, NULL,
	    NULL, NULL, pins_free)) == -1) {
		snprintf(err, errlen, "pin-sha256: out of memory");
		return 0;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		snprintf(err, errlen, "pin-sha256: out of memory");
		return 0;
	}
	p->n = t->npins;
	memcpy(p->h, t->pins, sizeof(p->h));
	if (!SSL_CTX_set_ex_data(ctx, pins_idx, p)) {
		free(p);
		snprintf(err, errlen, "pin-sha256: out of memory");
		return 0;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_pins);
	return 1;
}

/* Sigalgs a token can do without RSA-PSS: PKCS#1 v1.5 only. */
#define SIGALGS_PKCS1	"RSA+SHA256:RSA+SHA384:RSA+SHA512"

static int
ssl_fail(char *err, size_t errlen, const char *what)
{
	unsigned long	 e = ERR_peek_last_error();
	char		 buf[256] = "";

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
	return 0;
}

/* An RSA token key without PSS (neither native nor raw RSA) is limited. */
static int
restrict_pkcs1(SSL_CTX *ctx, struct cfg_tunnel *t, struct identity *id,
    char *err, size_t errlen)
{
	uint32_t	 caps = id->hid.caps;

	if (id->hid.keytype != PROTO_KEY_RSA ||
	    (caps & (PROTO_CAP_RSA_RAW | PROTO_CAP_RSA_PSS)))
		return 1;
	if (t->tls_min > TLS1_2_VERSION) {
		snprintf(err, errlen, "identity %s: the token can sign only "
		    "RSA PKCS#1 v1.5, which TLS 1.3 forbids, but tls-min is "
		    "1.3", id->cfg->name);
		return 0;
	}
	if (!SSL_CTX_set1_client_sigalgs_list(ctx, SIGALGS_PKCS1) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION))
		return ssl_fail(err, errlen, "sigalgs");
	log_info("tunnel %s: the token of identity %s cannot sign RSA-PSS "
	    "(neither CKM_RSA_PKCS_PSS nor CKM_RSA_X_509); offering TLS 1.2 "
	    "with RSA PKCS#1 signatures only", t->name, id->cfg->name);
	return 1;
}

SSL_CTX *
tls_ctx_new(struct cfg_tunnel *t, struct identity *id, char *err,
    size_t errlen)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ssl_fail(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, t->tls_min) ||
	    !SSL_CTX_set_max_proto_version(ctx, t->tls_max)) {
		ssl_fail(err, errlen, "TLS versions");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION);
	/* read-ahead: one read(2) takes in several records, not a header
	 * and then a body each (the buffer goes when empty: the tunnel
	 * sets SSL_MODE_RELEASE_BUFFERS) */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
	if (t->session_cache == CFG_SESSION_NO)
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	else
		sess_ctx_setup(ctx);	/* resumption: agent/session.c */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (t->ca != NULL) {
		if (!SSL_CTX_load_verify_locations(ctx, t->ca, NULL)) {
			ssl_fail(err, errlen, "ca: cannot load the CA file");
			goto fail;
		}
	} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
		ssl_fail(err, errlen, "the system CA store");
		goto fail;
	}
	if (!SSL_CTX_use_certificate(ctx, id->hid.cert) ||
	    !SSL_CTX_use_PrivateKey(ctx, id->pkey)) {
		ssl_fail(err, errlen, "the identity's certificate and key");
		goto fail;
	}
	if (!restrict_pkcs1(ctx, t, id, err, errlen) ||
	    !set_pins(ctx, t, err, errlen))
		goto fail;
	SSL_CTX_set_mode(ctx, SSL_MODE_ASYNC);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* "pin mismatch: got sha256//A (server), sha256//B (...)": what the
 * chain the server sent has, to compare with pin-sha256. */
static void
pin_mismatch(SSL *ssl, char *out, size_t len)
{
	STACK_OF(X509)	*chain = SSL_get_peer_cert_chain(ssl);
	unsigned char	 h[32];
	char		 b64[64], cn[128];
	size_t		 n;
	int		 i;

	snprintf(out, len, "pin mismatch: no pin-sha256 of the tunnel matches "
	    "the server's chain; got");
	for (i = 0; chain != NULL && i < sk_X509_num(chain) && i < 4; i++) {
		if (!spki_sha256(sk_X509_value(chain, i), h))
			continue;
		EVP_EncodeBlock((unsigned char *)b64, h, 32);
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(
		    sk_X509_value(chain, i)), NID_commonName, cn,
		    sizeof(cn)) < 0)
			snprintf(cn, sizeof(cn), "?");
		n = strlen(out);
		snprintf(out + n, len - n, "%s sha256//%s (%s CN=%s)",
		    i ? "," : "", b64, i ? "issuer" : "server", cn);
	}
}

/*
 * Why a handshake failed, for the log: the server's certificate first,
 * then a token that did not sign (engine/rkey.c raises ERR_LIB_USER with
 * the reason), then OpenSSL's last word.
 */
int
tls_describe_failure(SSL *ssl, char *out, size_t len)
{
	long		 v = SSL_get_verify_result(ssl);
	unsigned long	 e, last = 0;
	const char	*data;
	char		 buf[256] = "", token[256] = "";
	int		 flags;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		last = e;
		if (ERR_GET_LIB(e) == ERR_LIB_USER && (flags & ERR_TXT_STRING))
			snprintf(token, sizeof(token), "%s", data);
	}
	if (last != 0)
		ERR_error_string_n(last, buf, sizeof(buf));
	if (token[0] != '\0') {
		snprintf(out, len, "%s", token);
		return 1;
	}
	if (v == X509_V_ERR_APPLICATION_VERIFICATION && pins_idx != -1 &&
	    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pins_idx) != NULL)
		pin_mismatch(ssl, out, len);
	else if (v != X509_V_OK)
		snprintf(out, len, "server certificate refused: %s",
		    X509_verify_cert_error_string(v));
	else if (buf[0] != '\0')
		snprintf(out, len, "%s", buf);
	else
		snprintf(out, len, "connection closed during the handshake");
	return 0;
}
