/*
 * p11agent: decoding the requests a token helper receives.
 *
 * Pure functions: a payload in (its read position at the start), a struct
 * out, no token calls.  Each returns 0 or a negative P11A_ERR_* code
 * (P11A_ERR_PROTOCOL for a malformed payload, P11A_ERR_TOO_LARGE for a
 * field over its limit); the payload must be consumed exactly.  On error
 * the struct holds nothing to free.  docs/helper-protocol.md has the
 * formats.
 */
#ifndef P11AGENT_HELPER_REQ_H
#define P11AGENT_HELPER_REQ_H

#include <stddef.h>
#include <stdint.h>

struct pbuf;

/* OPEN: key URI (required), cert (URI, file or NULL), PIN source. */
struct hreq_open {
	char		*key_uri;
	char		*cert;
	char		*pin_source;
	/* optional, since issue 6: the identity's login settings */
	char		*pinentry;	/* pinentry-program, or NULL */
	uint32_t	 pin_cache;	/* seconds */
	uint8_t		 flags;		/* PROTO_OPEN_LOGOUT_EACH */
};

/* SIGN: data points into the payload's buffer, 1..PROTO_MAX_SIGN_DATA. */
struct hreq_sign {
	uint32_t	 handle;
	int		 alg;		/* PROTO_ALG_*, checked by the signer */
	int		 hash;		/* PROTO_HASH_* for RSA_PSS */
	uint32_t	 saltlen;
	const uint8_t	*data;
	size_t		 len;
	/* optional: who asks, for a PIN dialog (hreq_sign_clear frees) */
	char		*who;
	char		*host;
	long		 sent_ms;	/* CLOCK_MONOTONIC; 0: unknown */
};

/* UNLOCK: who asks (NULL when empty). */
struct hreq_unlock {
	char		*who;
};

/* LIST: PIN source and filter URI, each NULL when absent. */
struct hreq_list {
	char		*pin_source;
	char		*filter;
};

/* PROBE: the key URI (required). */
struct hreq_probe {
	char		*key_uri;
};

/* GENKEY: the new key's URI (required), key type and size, PIN source. */
struct hreq_genkey {
	char		*key_uri;
	int		 keytype;	/* PROTO_KEY_* */
	uint32_t	 bits;
	char		*pin_source;
};

/* IMPORT: certificates point into the payload's buffer. */
#define HREQ_MAX_CERTS	8	/* ENROLL_MAX_CERTS */
struct hreq_import {
	char		*key_uri;
	char		*pin_source;
	int		 n;		/* 1..HREQ_MAX_CERTS */
	const uint8_t	*cert[HREQ_MAX_CERTS];
	size_t		 len[HREQ_MAX_CERTS];
};

int	 hreq_open(struct pbuf *, struct hreq_open *);
int	 hreq_sign(struct pbuf *, struct hreq_sign *);
int	 hreq_list(struct pbuf *, struct hreq_list *);
int	 hreq_modules(struct pbuf *);		/* an empty payload */
int	 hreq_probe(struct pbuf *, struct hreq_probe *);
int	 hreq_logout(struct pbuf *);		/* an empty payload */
int	 hreq_state(struct pbuf *);		/* an empty payload */
int	 hreq_unlock(struct pbuf *, struct hreq_unlock *);
void	 hreq_unlock_clear(struct hreq_unlock *);
void	 hreq_sign_clear(struct hreq_sign *);
void	 hreq_open_clear(struct hreq_open *);
void	 hreq_list_clear(struct hreq_list *);
void	 hreq_probe_clear(struct hreq_probe *);
int	 hreq_genkey(struct pbuf *, struct hreq_genkey *);
int	 hreq_import(struct pbuf *, struct hreq_import *);
void	 hreq_genkey_clear(struct hreq_genkey *);
void	 hreq_import_clear(struct hreq_import *);

#endif
