/*
 * p11agent: names of the error codes.
 */
#include "config.h"

#include "p11agent/error.h"

const char *
p11a_strerror(int err)
{
	switch (err) {
	case P11A_OK:			return "success";
	case P11A_ERR_NOMEM:		return "out of memory";
	case P11A_ERR_SYSTEM:		return "system error";
	case P11A_ERR_INVALID:		return "invalid argument";
	case P11A_ERR_TOO_LARGE:	return "input too large";
	case P11A_ERR_PROTOCOL:		return "malformed helper message";
	case P11A_ERR_TIMEOUT:		return "timed out";
	case P11A_ERR_CLOSED:		return "channel closed";
	case P11A_ERR_CONFIG:		return "configuration error";
	case P11A_ERR_URI:		return "invalid pkcs11: URI";
	case P11A_ERR_MODULE:		return "PKCS#11 module not loadable";
	case P11A_ERR_NO_TOKEN:		return "no matching token";
	case P11A_ERR_NO_KEY:		return "no matching private key";
	case P11A_ERR_NO_CERT:		return "no certificate for the key";
	case P11A_ERR_PIN_SOURCE:	return "PIN source unusable";
	case P11A_ERR_PIN_INCORRECT:	return "PIN incorrect";
	case P11A_ERR_PIN_LOCKED:	return "PIN locked";
	case P11A_ERR_PIN_FINAL_TRY:	return "PIN on its final try";
	case P11A_ERR_MECHANISM:	return "mechanism not supported by the token";
	case P11A_ERR_TOKEN:		return "token error";
	case P11A_ERR_TLS:		return "TLS error";
	case P11A_ERR_HELPER:		return "token helper failed";
	case P11A_ERR_NOT_FOUND:	return "not found";
	case P11A_ERR_PERM:		return "unsafe file permissions";
	case P11A_ERR_TOKEN_ABSENT:	return "token not present";
	case P11A_ERR_BUSY:		return "too many requests in flight";
	case P11A_ERR_PIN_CANCELLED:	return "the PIN dialog was cancelled";
	case P11A_ERR_PIN_CHANGE:	return "the token wants its PIN changed";
	case P11A_ERR_LOCKED:		return "the agent is locked";
	case P11A_ERR_READ_ONLY:	return "the token refuses new objects";
	}
	return "unknown error";
}
