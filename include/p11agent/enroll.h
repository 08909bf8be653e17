/*
 * p11agent: enrollment, `p11agent enroll` and `p11agent import-cert`.
 *
 * A key pair is generated on the token (PROTO_GENKEY) and a PKCS#10 CSR
 * signed by it through the helper; an issued certificate and its chain
 * are written beside the key (PROTO_IMPORT).  Both run in the token
 * helper: the agent process never loads a module and no private key
 * material ever leaves the token.  docs/helper-protocol.md has the
 * payloads.
 *
 * Three layers: the helper's side (engine/token_enroll.c), the agent's
 * side of the wire (engine/client_enroll.c, plus rkey_new_pub in
 * engine/rkey.c) and the command line (agent/enroll.c).
 */
#ifndef P11AGENT_ENROLL_H
#define P11AGENT_ENROLL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

struct helper;
struct helper_identity;
struct pbuf;
struct token_ctx;

#define ENROLL_MAX_CERTS	8	/* certificates in one IMPORT */
#define ENROLL_MAX_SPKI		2048	/* GENKEY_OK public key */

/* GENKEY_OK flags: what the token reports of the new private key. */
#define ENROLL_KEY_SENSITIVE	0x01	/* CKA_SENSITIVE */
#define ENROLL_KEY_EXTRACTABLE	0x02	/* CKA_EXTRACTABLE */
#define ENROLL_KEY_SIGN		0x04	/* CKA_SIGN */
#define ENROLL_KEY_DECRYPT	0x08	/* CKA_DECRYPT */
#define ENROLL_KEY_UNWRAP	0x10	/* CKA_UNWRAP */
#define ENROLL_KEY_DERIVE	0x20	/* CKA_DERIVE */

/* IMPORT_OK status of one certificate. */
#define ENROLL_CERT_WRITTEN	1
#define ENROLL_CERT_PRESENT	2	/* the same one was already there */

/* ---- the helper's side (engine/token_enroll.c) */

/*
 * Generates a key pair on the one token that key_uri's token part
 * selects (its id= and object= name the new key and do not take part in
 * the selection), after checking the token's flags (not write-protected)
 * and mechanisms (the key-pair generation mechanism, the size within
 * CKM_INFO's range), logging in with pin_source, and checking that no
 * object has that id and no key that label.  The private key is a
 * sensitive, never extractable token object for signing only.  Appends
 * the GENKEY_OK payload (the new key's URI, key type, SPKI, flags).
 */
int	 token_genkey(struct token_ctx *, const char *key_uri, int keytype,
	    uint32_t bits, const char *pin_source, struct pbuf *out);
/*
 * Writes certs[0] (the key's certificate: its CKA_ID and label) and the
 * chain certificates (their own labels, no CKA_ID) to the key's token,
 * after checking that certs[0] holds the key's public key, read from the
 * public key object with the key's id or the private key's public
 * attributes.  A certificate already on the token (same issuer and
 * serial) is skipped; another certificate with the key's id is a
 * refusal.  Nothing is written unless every check passes.  Appends the
 * IMPORT_OK payload.
 */
int	 token_import(struct token_ctx *, const char *key_uri,
	    const char *pin_source, const uint8_t *const *certs,
	    const size_t *lens, int n, struct pbuf *out);

/* ---- the agent's side (engine/client_enroll.c) */

struct enroll_key {
	char		*uri;		/* the new private key's URI */
	int		 keytype;	/* PROTO_KEY_* */
	EVP_PKEY	*pub;		/* from the SPKI of GENKEY_OK */
	uint32_t	 flags;		/* ENROLL_KEY_* */
};
void	 enroll_key_clear(struct enroll_key *);

struct enroll_cert {
	int		 status;	/* ENROLL_CERT_* */
	char		*label;
};
struct enroll_import {
	uint32_t		 n;
	struct enroll_cert	*certs;
};
void	 enroll_import_clear(struct enroll_import *);

/* Encoders and (untrusted input, bounded) decoders; on error *out is
 * untouched. */
void	 helper_put_genkey(struct pbuf *, const char *key_uri, int keytype,
	    uint32_t bits, const char *pin_source);
int	 helper_parse_genkey(struct pbuf *, struct enroll_key *);
void	 helper_put_import(struct pbuf *, const char *key_uri,
	    const char *pin_source, X509 *const *certs, int n);
int	 helper_parse_import(struct pbuf *, uint32_t want,
	    struct enroll_import *);

/* Blocking calls; on failure helper_error() says why. */
int	 helper_genkey(struct helper *, const char *key_uri, int keytype,
	    uint32_t bits, const char *pin_source, int timeout_ms,
	    struct enroll_key *);
int	 helper_import(struct helper *, const char *key_uri,
	    const char *pin_source, X509 *const *certs, int n, int timeout_ms,
	    struct enroll_import *);

/*
 * rkey_new with the public half given (engine/rkey.c): for a key opened
 * with cert "none", whose public key came from GENKEY_OK.  pub is not
 * taken over.
 */
int	 rkey_new_pub(struct helper *, const struct helper_identity *,
	    EVP_PKEY *pub, int sign_timeout_ms, EVP_PKEY **);

/* ---- the command line (agent/enroll.c); argv[0] is the command name */
int	 enroll_main(int argc, char *argv[]);
int	 import_cert_main(int argc, char *argv[]);

#endif
