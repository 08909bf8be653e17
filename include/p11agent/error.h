/*
 * p11agent: error codes shared by every layer.
 *
 * A function that can fail returns 0 or one of these negative codes;
 * p11a_strerror() names it.  Messages with context (file, line, URI)
 * are kept by the caller's handle, not here.
 */
#ifndef P11AGENT_ERROR_H
#define P11AGENT_ERROR_H

enum p11a_err {
	P11A_OK = 0,
	P11A_ERR_NOMEM = -1,		/* out of memory */
	P11A_ERR_SYSTEM = -2,		/* a system call failed, see errno */
	P11A_ERR_INVALID = -3,		/* invalid argument or input */
	P11A_ERR_TOO_LARGE = -4,	/* input over a hard limit */
	P11A_ERR_PROTOCOL = -5,		/* malformed helper message */
	P11A_ERR_TIMEOUT = -6,		/* a deadline passed */
	P11A_ERR_CLOSED = -7,		/* the peer closed the channel */
	P11A_ERR_CONFIG = -8,		/* configuration error */
	P11A_ERR_URI = -9,		/* bad pkcs11: URI */
	P11A_ERR_MODULE = -10,		/* PKCS#11 module could not load */
	P11A_ERR_NO_TOKEN = -11,	/* no token matches */
	P11A_ERR_NO_KEY = -12,		/* no private key matches */
	P11A_ERR_NO_CERT = -13,		/* no certificate for the key */
	P11A_ERR_PIN_SOURCE = -14,	/* PIN source unusable */
	P11A_ERR_PIN_INCORRECT = -15,	/* the token rejected the PIN */
	P11A_ERR_PIN_LOCKED = -16,	/* the PIN is locked */
	P11A_ERR_PIN_FINAL_TRY = -17,	/* refused: one try left */
	P11A_ERR_MECHANISM = -18,	/* the token cannot do it */
	P11A_ERR_TOKEN = -19,		/* other PKCS#11 failure */
	P11A_ERR_TLS = -20,		/* TLS failure */
	P11A_ERR_HELPER = -21,		/* the token helper failed */
	P11A_ERR_NOT_FOUND = -22,	/* lookup failed */
	P11A_ERR_PERM = -23,		/* file permissions unsafe */
	P11A_ERR_TOKEN_ABSENT = -24,	/* the token is not present */
	P11A_ERR_BUSY = -25,		/* too many requests in flight */
	P11A_ERR_PIN_CANCELLED = -26,	/* the PIN dialog was cancelled */
	P11A_ERR_PIN_CHANGE = -27,	/* the token wants a new PIN first */
	P11A_ERR_LOCKED = -28,		/* the agent is locked */
	P11A_ERR_READ_ONLY = -29,	/* the token refuses new objects */
};

const char *p11a_strerror(int err);

#endif
