/*
 * p11agent: an EVP_PKEY whose private operations run in a token helper.
 *
 * The key belongs to our OpenSSL 3 provider (engine/rkey_prov.c), which
 * hashes and pads and then calls rkey_sign() here.  Inside an OpenSSL
 * async job (SSL_MODE_ASYNC) a signature sends its request, registers an
 * eventfd as the job's wait fd and pauses the job; the reply wakes it
 * through that fd.  Outside a job it waits in place.  No ENGINE is used.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "p11agent/clock.h"
#include "p11agent/enroll.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"
#include "rkey_int.h"

/* One signature in flight; shared by the paused job and the request. */
struct sign_wait {
	int		 refs;
	int		 efd;
	int		 done;
	int		 err;
	char		 why[512];	/* the reason of a failure */
	uint8_t		 sig[PROTO_MAX_SIG];
	size_t		 siglen;
};

static const char	 wait_key[] = "p11agent-sign";
static long		 last_sign_ms;	/* of the last good signature */

/* who is told of each signature done (rkey_set_audit) */
static rkey_audit_fn	*audit_fn;
static void		*audit_arg;

/* who the next signatures are for (rkey_set_requester) */
static char		 req_who[256];
static char		 req_host[256];

void
rkey_set_requester(const char *who, const char *host)
{
	snprintf(req_who, sizeof(req_who), "%s", who ? who : "");
	snprintf(req_host, sizeof(req_host), "%s", host ? host : "");
}

void
rkey_set_audit(rkey_audit_fn *fn, void *arg)
{
	audit_fn = fn;
	audit_arg = arg;
}

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
sign_done(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct sign_wait	*w = arg;
	const uint8_t		*sig;
	size_t			 len;
	uint64_t		 one = 1;

	w->err = err;
	if (err != 0 && why != NULL)
		snprintf(w->why, sizeof(w->why), "%s", why);
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
sign_async(const struct rkey *rk, ASYNC_JOB *job, const struct pbuf *req,
    uint8_t *sig, size_t *siglen, char *why, size_t whylen)
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
	else
		snprintf(why, whylen, "%s", w->why);
	wait_unref(w);
	return r;
}

static int
sign_blocking(const struct rkey *rk, const struct pbuf *req, uint8_t *sig,
    size_t *siglen, char *why, size_t whylen)
{
	struct pbuf	 reply;
	const uint8_t	*p;
	size_t		 len;
	int		 r;

	pbuf_init(&reply);
	r = helper_call(rk->helper, PROTO_SIGN, req, &reply, rk->timeout_ms);
	if (r != 0)
		snprintf(why, whylen, "%s", helper_error(rk->helper));
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

int
rkey_sign(const struct rkey *rk, int alg, int hash, uint32_t saltlen,
    const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen)
{
	struct pbuf	 req;
	ASYNC_JOB	*job;
	char		 why[512] = "";
	long		 now;
	int		 r;

	pbuf_init(&req);
	pbuf_put_u32(&req, rk->handle);
	pbuf_put_u8(&req, (uint8_t)alg);
	pbuf_put_u8(&req, (uint8_t)hash);
	pbuf_put_u32(&req, saltlen);
	pbuf_put_bytes(&req, data, len);
	/* for a PIN dialog: who asks, and when (a dialog's answer also
	 * serves the requests sent before it ended) */
	now = clock_now_ms();
	pbuf_put_str(&req, req_who);
	pbuf_put_str(&req, req_host);
	pbuf_put_u32(&req, (uint32_t)((uint64_t)now >> 32));
	pbuf_put_u32(&req, (uint32_t)now);
	if (req.err != 0)
		r = req.err;
	else if ((job = ASYNC_get_current_job()) != NULL)
		r = sign_async(rk, job, &req, sig, siglen, why, sizeof(why));
	else
		r = sign_blocking(rk, &req, sig, siglen, why, sizeof(why));
	pbuf_clear(&req);
	if (r == 0)
		last_sign_ms = clock_now_ms();
	/* for the connection's log line: this request's own reason */
	else if (r == P11A_ERR_TIMEOUT && (why[0] == '\0' ||
	    strcmp(why, HELPER_EXPIRED) == 0))
		snprintf(why, sizeof(why), "no answer within sign-timeout");
	else if (r == P11A_ERR_HELPER || r == P11A_ERR_CLOSED)
		snprintf(why, sizeof(why), "the token helper is gone");
	else if (why[0] == '\0')
		snprintf(why, sizeof(why), "%s", p11a_strerror(r));
	if (audit_fn != NULL)
		audit_fn(audit_arg, &(struct rkey_signed){ .start_ms = now,
		    .ms = clock_now_ms() - now, .err = r, .why = r ? why : NULL,
		    .alg = alg, .hash = hash });
	if (r == 0)
		return 0;
	ERR_raise_data(ERR_LIB_USER, -r, "the token did not sign: %s", why);
	return r;
}

long
rkey_last_sign_ms(void)
{
	return last_sign_ms;
}

int
rkey_new(struct helper *h, const struct helper_identity *id,
    int sign_timeout_ms, EVP_PKEY **out)
{
	EVP_PKEY	*pub;
	int		 r;

	if (id->cert == NULL || (pub = X509_get0_pubkey(id->cert)) == NULL)
		return P11A_ERR_NO_CERT;
	/* a certificate whose key is not of the token key's type */
	r = rkey_new_pub(h, id, pub, sign_timeout_ms, out);
	return r == P11A_ERR_INVALID ? P11A_ERR_NO_CERT : r;
}

/* As rkey_new, the public half given (enrollment: no certificate yet). */
int
rkey_new_pub(struct helper *h, const struct helper_identity *id,
    EVP_PKEY *pub, int sign_timeout_ms, EVP_PKEY **out)
{
	struct rkey	 rk;
	EVP_PKEY	*pk;
	int		 r;

	if ((r = rkey_provider_load()) != 0)
		return r;
	if (pub == NULL ||
	    (!(EVP_PKEY_is_a(pub, "RSA") && id->keytype == PROTO_KEY_RSA) &&
	    !(EVP_PKEY_is_a(pub, "EC") && id->keytype == PROTO_KEY_EC)))
		return P11A_ERR_INVALID;
	memset(&rk, 0, sizeof(rk));
	rk.helper = h;
	rk.handle = id->handle;
	rk.caps = id->caps;
	rk.timeout_ms = sign_timeout_ms;
	if ((pk = rkey_provider_key(id->keytype, pub, &rk)) == NULL)
		return P11A_ERR_NOMEM;
	*out = pk;
	return 0;
}
