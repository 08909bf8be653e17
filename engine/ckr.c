/*
 * p11agent: names of PKCS#11 return values, for messages ("CKR_PIN_LOCKED:
 * The user PIN is locked").  Runs in the token helper.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "token_int.h"

#define CKR(x)	{ x, #x }

static const struct {
	CK_RV		 rv;
	const char	*name;
} names[] = {
	CKR(CKR_OK), CKR(CKR_CANCEL), CKR(CKR_HOST_MEMORY),
	CKR(CKR_SLOT_ID_INVALID), CKR(CKR_GENERAL_ERROR),
	CKR(CKR_FUNCTION_FAILED), CKR(CKR_ARGUMENTS_BAD),
	CKR(CKR_ATTRIBUTE_TYPE_INVALID), CKR(CKR_ATTRIBUTE_VALUE_INVALID),
	CKR(CKR_DATA_INVALID), CKR(CKR_DATA_LEN_RANGE), CKR(CKR_DEVICE_ERROR),
	CKR(CKR_DEVICE_MEMORY), CKR(CKR_DEVICE_REMOVED),
	CKR(CKR_FUNCTION_CANCELED), CKR(CKR_FUNCTION_NOT_SUPPORTED),
	CKR(CKR_KEY_HANDLE_INVALID), CKR(CKR_KEY_SIZE_RANGE),
	CKR(CKR_KEY_TYPE_INCONSISTENT), CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
	CKR(CKR_MECHANISM_INVALID), CKR(CKR_MECHANISM_PARAM_INVALID),
	CKR(CKR_OBJECT_HANDLE_INVALID), CKR(CKR_OPERATION_ACTIVE),
	CKR(CKR_OPERATION_NOT_INITIALIZED), CKR(CKR_PIN_INCORRECT),
	CKR(CKR_PIN_INVALID), CKR(CKR_PIN_LEN_RANGE), CKR(CKR_PIN_EXPIRED),
	CKR(CKR_PIN_LOCKED), CKR(CKR_SESSION_CLOSED), CKR(CKR_SESSION_COUNT),
	CKR(CKR_SESSION_HANDLE_INVALID), CKR(CKR_TOKEN_NOT_PRESENT),
	CKR(CKR_TOKEN_NOT_RECOGNIZED), CKR(CKR_USER_ALREADY_LOGGED_IN),
	CKR(CKR_USER_NOT_LOGGED_IN), CKR(CKR_USER_PIN_NOT_INITIALIZED),
	CKR(CKR_USER_TYPE_INVALID), CKR(CKR_BUFFER_TOO_SMALL),
	CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
	CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
};

/* "CKR_DEVICE_ERROR: <p11-kit's text>" (or CKR 0x... when unnamed). */
const char *
token_ckr_name(CK_RV rv)
{
	static char	 buf[256];
	size_t		 i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].rv == rv) {
			snprintf(buf, sizeof(buf), "%s: %s", names[i].name,
			    p11_kit_strerror(rv));
			return buf;
		}
	snprintf(buf, sizeof(buf), "CKR 0x%lx: %s", (unsigned long)rv,
	    p11_kit_strerror(rv));
	return buf;
}
