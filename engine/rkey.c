/*
 * p11agent: an EVP_PKEY whose private operations run in a token helper.
 *
 * OpenSSL 3.0 signs with a "foreign" RSA or EC key (one with its own
 * RSA_METHOD / EC_KEY_METHOD) through its legacy path, which calls our
 * methods: RSA private encryption with PKCS#1 or no padding (OpenSSL pads
 * PSS itself), and ECDSA signing.  Those methods are deprecated in 3.0
 * but available; an OpenSSL provider is the later replacement (see
 * docs/design-notes.md).  No ENGINE is used.
 *
 * Inside an OpenSSL async job (SSL_MODE_ASYNC), a signature sends its
 * request, registers an eventfd as the job's wait fd and pauses the job;
 * the reply wakes it through that fd.  Outside a job it waits in place.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

struct rkey {
	struct helper	*helper;
	uint32_t	 handle;
	uint32_t	 caps;
	int		 timeout_ms;
};

/* One signature in flight; shared by the paused job and the request. */
struct sign_wait {
	int		 refs;
	int		 efd;
	int		 done;
	int		 err;
	uint8_t		 sig[PROTO_MAX_SIG];
	size_t		 siglen;
};

static RSA_METHOD	*rsa_meth;
static EC_KEY_METHOD	*ec_meth;
static int		 rsa_idx = -1, ec_idx = -1;
static const char	 wait_key[] = "p11agent-sign";

static void
wait_unref(struct sign_wait *w)
{
	if (--w->refs > 0)
		return;
	if (w->efd != -1)
		close(w->efd);
	OPENSSL_cleanse(w, sizeof(*w));
	free(w);
}

/* The reply, from the event loop. */
static void
sign_done(void *arg, int err, struct pbuf *reply)
{
	struct sign_wait	*w = arg;
	const uint8_t		*sig;
	size_t			 len;
	uint64_t		 one = 1;

	w->err = err;
	if (err == 0) {
		sig = pbuf_get_bytes(reply, &len, sizeof(w->sig));
		if (pbuf_end(reply) != 0 || len == 0)
			w->err = P11A_ERR_PROTOCOL;
		else {
			memcpy(w->sig, sig, len);
			w->siglen = len;
		}
	}
	w->done = 1;
	if (w->efd != -1 && write(w->efd, &one, sizeof(one)) < 0)
		w->err = P11A_ERR_SYSTEM;
	wait_unref(w);
}

/* Called when the SSL goes away with the job still paused. */
static void
wait_cleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd,
    void *custom)
{
	struct sign_wait	*w = custom;

	close(fd);
	w->efd = -1;
	wait_unref(w);
}

static int
sign_async(struct rkey *rk, ASYNC_JOB *job, const struct pbuf *req,
    uint8_t *sig, size_t *siglen)
{
	ASYNC_WAIT_CTX		*wctx = ASYNC_get_wait_ctx(job);
	struct sign_wait	*w;
	int			 r;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return P11A_ERR_NOMEM;
	w->refs = 1;
	if ((w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
		free(w);
		return P11A_ERR_SYSTEM;
	}
	if (!ASYNC_WAIT_CTX_set_wait_fd(wctx, wait_key, w->efd, w,
	    wait_cleanup)) {
		wait_unref(w);
		return P11A_ERR_NOMEM;
	}
	w->refs++;		/* the request's */
	if ((r = helper_request(rk->helper, PROTO_SIGN, req, rk->timeout_ms,
	    sign_done, w)) != 0) {
		w->refs--;
		w->done = 1;
		w->err = r;
	}
	while (!w->done)
		ASYNC_pause_job();
	ASYNC_WAIT_CTX_clear_fd(wctx, wait_key);
	if ((r = w->err) == 0 && w->siglen <= *siglen) {
		memcpy(sig, w->sig, w->siglen);
		*siglen = w->siglen;
	} else if (r == 0)
		r = P11A_ERR_TOO_LARGE;
	wait_unref(w);
	return r;
}

static int
sign_blocking(struct rkey *rk, const struct pbuf *req, uint8_t *sig,
    size_t *siglen)
{
	struct pbuf	 reply;
	const uint8_t	*p;
	size_t		 len;
	int		 r;

	pbuf_init(&reply);
	r = helper_call(rk->helper, PROTO_SIGN, req, &reply, rk->timeout_ms);
	if (r == 0) {
		p = pbuf_get_bytes(&reply, &len, PROTO_MAX_SIG);
		if (pbuf_end(&reply) != 0 || len == 0)
			r = P11A_ERR_PROTOCOL;
		else if (len > *siglen)
			r = P11A_ERR_TOO_LARGE;
		else {
			memcpy(sig, p, len);
			*siglen = len;
		}
	}
	pbuf_clear(&reply);
	return r;
}

static int
rkey_sign(struct rkey *rk, int alg, const uint8_t *data, size_t len,
    uint8_t *sig, size_t *siglen)
{
	struct pbuf	 req;
	ASYNC_JOB	*job;
	int		 r;

	pbuf_init(&req);
	pbuf_put_u32(&req, rk->handle);
	pbuf_put_u8(&req, (uint8_t)alg);
	pbuf_put_u8(&req, 0);
	pbuf_put_u32(&req, 0);
	pbuf_put_bytes(&req, data, len);
	if (req.err != 0)
		r = req.err;
	else if ((job = ASYNC_get_current_job()) != NULL)
		r = sign_async(rk, job, &req, sig, siglen);
	else
		r = sign_blocking(rk, &req, sig, siglen);
	pbuf_clear(&req);
	if (r != 0)	/* for the TLS layer's error report */
		ERR_raise_data(ERR_LIB_USER, -r, "the token did not sign: %s",
		    r == P11A_ERR_TIMEOUT ? "no answer within sign-timeout" :
		    r == P11A_ERR_HELPER || r == P11A_ERR_CLOSED ?
		    "the token helper is gone" : p11a_strerror(r));
	return r;
}

static int
rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to,
    RSA *rsa, int padding)
{
	struct rkey	*rk = RSA_get_ex_data(rsa, rsa_idx);
	size_t		 siglen = (size_t)RSA_size(rsa);
	int		 alg;

	if (rk == NULL || flen <= 0)
		return -1;
	if (padding == RSA_PKCS1_PADDING)
		alg = PROTO_ALG_RSA_PKCS1;
	else if (padding == RSA_NO_PADDING && (rk->caps & PROTO_CAP_RSA_RAW))
		alg = PROTO_ALG_RSA_RAW;
	else
		return -1;
	if (rkey_sign(rk, alg, from, (size_t)flen, to, &siglen) != 0)
		return -1;
	return (int)siglen;
}

static int
rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to,
    RSA *rsa, int padding)
{
	return -1;	/* the token key only signs */
}

/* r||s from the token to an ECDSA_SIG. */
static ECDSA_SIG *
ecdsa_sig(const uint8_t *rs, size_t len)
{
	ECDSA_SIG	*s;
	BIGNUM		*r, *sv;

	if (len == 0 || len % 2 != 0)
		return NULL;
	r = BN_bin2bn(rs, (int)(len / 2), NULL);
	sv = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	if (r == NULL || sv == NULL || (s = ECDSA_SIG_new()) == NULL) {
		BN_free(r);
		BN_free(sv);
		return NULL;
	}
	ECDSA_SIG_set0(s, r, sv);
	return s;
}

static ECDSA_SIG *
ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
    const BIGNUM *rp, EC_KEY *ec)
{
	struct rkey	*rk = EC_KEY_get_ex_data(ec, ec_idx);
	uint8_t		 rs[PROTO_MAX_SIG];
	size_t		 len = sizeof(rs);

	if (rk == NULL || dlen <= 0 ||
	    rkey_sign(rk, PROTO_ALG_ECDSA, dgst, (size_t)dlen, rs, &len) != 0)
		return NULL;
	return ecdsa_sig(rs, len);
}

static int
ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig,
    unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec)
{
	ECDSA_SIG	*s;
	unsigned char	*p = sig;
	int		 n;

	if ((s = ec_sign_sig(dgst, dlen, kinv, r, ec)) == NULL)
		return 0;
	n = i2d_ECDSA_SIG(s, &p);
	ECDSA_SIG_free(s);
	if (n <= 0)
		return 0;
	*siglen = (unsigned int)n;
	return 1;
}

static void
rkey_free_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	free(ptr);
}

static int
methods_init(void)
{
	if (rsa_meth != NULL)
		return 0;
	rsa_idx = RSA_get_ex_new_index(0, NULL, NULL, NULL, rkey_free_ex);
	ec_idx = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, rkey_free_ex);
	if (rsa_idx < 0 || ec_idx < 0)
		return P11A_ERR_NOMEM;
	if ((rsa_meth = RSA_meth_dup(RSA_PKCS1_OpenSSL())) == NULL ||
	    (ec_meth = EC_KEY_METHOD_new(EC_KEY_OpenSSL())) == NULL)
		return P11A_ERR_NOMEM;
	RSA_meth_set1_name(rsa_meth, "p11agent token key");
	RSA_meth_set_priv_enc(rsa_meth, rsa_priv_enc);
	RSA_meth_set_priv_dec(rsa_meth, rsa_priv_dec);
	EC_KEY_METHOD_set_sign(ec_meth, ec_sign, NULL, ec_sign_sig);
	return 0;
}

static int
rsa_key(EVP_PKEY *pub, struct rkey *rk, EVP_PKEY *pk)
{
	const RSA	*src = EVP_PKEY_get0_RSA(pub);
	RSA		*rsa;

	if (src == NULL || (rsa = RSAPublicKey_dup(src)) == NULL)
		return P11A_ERR_INVALID;
	RSA_set_method(rsa, rsa_meth);
	RSA_set_ex_data(rsa, rsa_idx, rk);
	if (!EVP_PKEY_assign_RSA(pk, rsa)) {
		RSA_set_ex_data(rsa, rsa_idx, NULL);
		RSA_free(rsa);
		return P11A_ERR_NOMEM;
	}
	return 0;
}

static int
ec_key(EVP_PKEY *pub, struct rkey *rk, EVP_PKEY *pk)
{
	const EC_KEY	*src = EVP_PKEY_get0_EC_KEY(pub);
	EC_KEY		*ec;

	if (src == NULL || (ec = EC_KEY_dup(src)) == NULL)
		return P11A_ERR_INVALID;
	EC_KEY_set_method(ec, ec_meth);
	EC_KEY_set_ex_data(ec, ec_idx, rk);
	if (!EVP_PKEY_assign_EC_KEY(pk, ec)) {
		EC_KEY_set_ex_data(ec, ec_idx, NULL);
		EC_KEY_free(ec);
		return P11A_ERR_NOMEM;
	}
	return 0;
}

int
rkey_new(struct helper *h, const struct helper_identity *id,
    int sign_timeout_ms, EVP_PKEY **out)
{
	struct rkey	*rk = NULL;
	EVP_PKEY	*pub, *pk = NULL;
	int		 r;

	if ((r = methods_init()) != 0)
		return r;
	if (id->cert == NULL || (pub = X509_get0_pubkey(id->cert)) == NULL)
		return P11A_ERR_NO_CERT;
	if ((rk = calloc(1, sizeof(*rk))) == NULL ||
	    (pk = EVP_PKEY_new()) == NULL) {
		free(rk);
		return P11A_ERR_NOMEM;
	}
	rk->helper = h;
	rk->handle = id->handle;
	rk->caps = id->caps;
	rk->timeout_ms = sign_timeout_ms;
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA &&
	    id->keytype == PROTO_KEY_RSA)
		r = rsa_key(pub, rk, pk);
	else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC &&
	    id->keytype == PROTO_KEY_EC)
		r = ec_key(pub, rk, pk);
	else
		r = P11A_ERR_NO_CERT;	/* the certificate is not for the key */
	if (r != 0) {
		free(rk);
		EVP_PKEY_free(pk);
		return r;
	}
	*out = pk;
	return 0;
}
