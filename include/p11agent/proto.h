/*
 * p11agent: the wire between the agent and a token helper.
 *
 * Every message is one SOCK_SEQPACKET packet: a 12-byte header (type, request id, payload length;
 * all 32-bit big-endian) followed by the payload.  Payload fields are
 * encoded as u8, u32 (big-endian) or bytes (u32 length + data), each
 * bounded by the limits below.  docs/helper-protocol.md is the
 * reference.
 */
#ifndef P11AGENT_PROTO_H
#define P11AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_HDR_LEN		12
#define PROTO_MAX_PAYLOAD	(128 * 1024)
#define PROTO_MAX_FIELD		(64 * 1024)
#define PROTO_MAX_STRING	4096
#define PROTO_MAX_SIGN_DATA	1024	/* digest, DigestInfo or RSA block */
#define PROTO_MAX_SIG		1024
#define PROTO_MAX_MODULES	256	/* modules in a MODULES_OK reply */
#define PROTO_MAX_CANDIDATES	32	/* tokens in a PROBE_OK reply */
#define PROTO_MAX_PIN_CACHE	86400	/* seconds a PIN may be kept */

enum proto_type {
	/* requests: agent -> helper */
	PROTO_OPEN = 1,		/* open an identity: log in, find key+cert */
	PROTO_SIGN = 2,		/* sign with an opened key */
	PROTO_LIST = 3,		/* list modules, tokens, keys, certs */
	PROTO_MODULES = 4,	/* the modules loaded, none initialised */
	PROTO_PROBE = 5,	/* the tokens a key URI could mean, no login */
	PROTO_GENKEY = 6,	/* generate a key pair on the token */
	PROTO_IMPORT = 7,	/* write certificates beside a key */
	PROTO_LOGOUT = 8,	/* log every token out, wipe cached PINs */
	PROTO_UNLOCK = 9,	/* clear refusals, log in again now */
	PROTO_STATE = 10,	/* the opened tokens' state, no login */
	/* unsolicited: helper -> agent, id 0 or the request it concerns */
	PROTO_EVENT = 0x40,	/* a token went away or came back */
	PROTO_BUSY = 0x41,	/* a request waits for the user (a dialog) */
	/* replies: helper -> agent, same request id */
	PROTO_OPEN_OK = 0x81,
	PROTO_SIGN_OK = 0x82,
	PROTO_LIST_OK = 0x83,
	PROTO_MODULES_OK = 0x84,
	PROTO_PROBE_OK = 0x85,
	PROTO_GENKEY_OK = 0x86,
	PROTO_IMPORT_OK = 0x87,
	PROTO_LOGOUT_OK = 0x88,
	PROTO_UNLOCK_OK = 0x89,
	PROTO_STATE_OK = 0x8a,
	PROTO_ERROR = 0xff,
};

/* Messages the helper sends by itself (0x40-0x7f), not replies. */
#define proto_unsolicited(type)	(((type) & 0xc0) == 0x40)

/* PROTO_SIGN algorithms */
enum proto_alg {
	PROTO_ALG_RSA_PKCS1 = 1,	/* data is a DigestInfo; CKM_RSA_PKCS */
	PROTO_ALG_RSA_RAW = 2,		/* data is a padded block; CKM_RSA_X_509 */
	PROTO_ALG_RSA_PSS = 3,		/* data is a digest; CKM_RSA_PKCS_PSS */
	PROTO_ALG_ECDSA = 4,		/* data is a digest; CKM_ECDSA, r||s */
};

/* PROTO_SIGN hash of a PROTO_ALG_RSA_PSS digest (also its MGF1 hash) */
enum proto_hash {
	PROTO_HASH_SHA256 = 1,
	PROTO_HASH_SHA384 = 2,
	PROTO_HASH_SHA512 = 3,
};

/* OPEN_OK: the token's certificates with the key's CKA_ID, at most */
#define PROTO_MAX_KEY_CERTS	4

/* PROTO_OPEN login flags (after pin-cache) */
#define PROTO_OPEN_LOGOUT_EACH	0x01	/* log out after each SIGN */

/* PROTO_OPEN_OK capability bits */
#define PROTO_CAP_RSA_PKCS1	0x01
#define PROTO_CAP_RSA_RAW	0x02
#define PROTO_CAP_RSA_PSS	0x04
#define PROTO_CAP_ECDSA		0x08

enum proto_keytype {
	PROTO_KEY_RSA = 1,
	PROTO_KEY_EC = 2,
};

/* PROTO_STATE_OK: a token's present and login fields */
enum proto_state {
	PROTO_STATE_NO = 0,
	PROTO_STATE_YES = 1,
	PROTO_STATE_NOT_NEEDED = 2,	/* login: the token needs none */
	PROTO_STATE_UNKNOWN = 3,
};
/* The token flags (PKCS#11 CKF_*, as C_GetTokenInfo gives them) the
 * agent reads, for it has no PKCS#11 headers. */
#define PROTO_CKF_USER_PIN_COUNT_LOW	0x00010000
#define PROTO_CKF_USER_PIN_FINAL_TRY	0x00020000
#define PROTO_CKF_USER_PIN_LOCKED	0x00040000
#define PROTO_MAX_STATE_TOKENS	64	/* tokens in a STATE_OK reply */
#define PROTO_MAX_STATE_KEYS	64	/* key handles per token */

/* PROTO_LIST_OK record kinds */
enum proto_list_kind {
	PROTO_LIST_MODULE = 1,
	PROTO_LIST_SLOT = 2,
	PROTO_LIST_TOKEN = 3,
	PROTO_LIST_KEY = 4,
	PROTO_LIST_CERT = 5,
};

/* A growable or read-only message buffer with a sticky error. */
struct pbuf {
	uint8_t	*data;
	size_t	 len;		/* bytes written */
	size_t	 cap;
	size_t	 off;		/* read position */
	int	 err;		/* first error, sticky */
};

void	 pbuf_init(struct pbuf *);
void	 pbuf_view(struct pbuf *, const uint8_t *, size_t);
void	 pbuf_clear(struct pbuf *);	/* wipes and frees */
void	 pbuf_put_u8(struct pbuf *, uint8_t);
void	 pbuf_put_u32(struct pbuf *, uint32_t);
void	 pbuf_put_bytes(struct pbuf *, const void *, size_t);
void	 pbuf_put_str(struct pbuf *, const char *);
uint8_t	 pbuf_get_u8(struct pbuf *);
uint32_t pbuf_get_u32(struct pbuf *);
/* Points into the buffer; *len set; max is the field's limit. */
const uint8_t *pbuf_get_bytes(struct pbuf *, size_t *, size_t);
/* Copies into a new NUL-terminated string (NULL for an empty field). */
char	*pbuf_get_str(struct pbuf *);
int	 pbuf_end(struct pbuf *);	/* 0 if fully read, no error */

/* Header helpers. */
void	 proto_hdr_put(uint8_t *, uint32_t, uint32_t, uint32_t);
int	 proto_hdr_get(const uint8_t *, uint32_t *, uint32_t *, uint32_t *);

/*
 * The channel is a SOCK_SEQPACKET socketpair: one message, one packet.
 * proto_send on a non-blocking socket never waits (a full channel gives
 * P11A_ERR_BUSY);
 * proto_recv waits at most timeout_ms (-1: no limit) and leaves the read
 * position of b at the payload.  proto_parse checks a packet of n bytes
 * already received into b.
 */
int	 proto_send(int, uint32_t, uint32_t, const struct pbuf *);
int	 proto_recv(int, uint32_t *, uint32_t *, struct pbuf *, int);
int	 proto_parse(struct pbuf *, size_t, uint32_t *, uint32_t *);

/* Errors: a reply of type PROTO_ERROR carries code, CKR, message. */
void	 proto_put_error(struct pbuf *, int, unsigned long, const char *);

#endif
