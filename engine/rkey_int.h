/*
 * p11agent: internals of the agent-side token key (engine/rkey*.c).
 */
#ifndef P11AGENT_RKEY_INT_H
#define P11AGENT_RKEY_INT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct helper;

/* Where a key's signatures go; copied into each key, owns nothing. */
struct rkey {
	struct helper	*helper;
	uint32_t	 handle;
	uint32_t	 caps;		/* PROTO_CAP_* */
	int		 timeout_ms;
};

/*
 * One signature by the helper (PROTO_ALG_*, PROTO_HASH_* and salt length
 * for PSS).  Inside an OpenSSL async job it pauses the job until the
 * reply; otherwise it waits.  On failure an ERR_LIB_USER error says why.
 */
int	 rkey_sign(const struct rkey *, int alg, int hash, uint32_t saltlen,
	    const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen);

/* The provider ("p11agent"): keys of type RSA or EC signed by a helper. */
int	 rkey_provider_load(void);
EVP_PKEY *rkey_provider_key(int keytype, EVP_PKEY *pub, const struct rkey *);

#endif
