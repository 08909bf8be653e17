/*
 * p11agent: internals shared by the token layer's files (engine/token*.c).
 */
#ifndef P11AGENT_TOKEN_INT_H
#define P11AGENT_TOKEN_INT_H

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "p11agent/proto.h"
#include "p11agent/token.h"

/*
 * What the helper knows of one token (a slot of a module), shared by the
 * keys on it: whether it is logged in, the cached PIN, why no login may be
 * tried (until unlock), and how the last PIN dialog ended.
 */
struct token_slot {
	CK_FUNCTION_LIST	*mod;
	CK_SLOT_ID		 slot;
	int			 logged_in;
	int			 rejected;	/* a PIN from a file, env or fd
						 * was refused: not again */
	int			 wrong;		/* a typed PIN was refused */
	int			 blocked;	/* P11A_ERR_PIN_LOCKED or
						 * _PIN_CHANGE: no login */
	struct pin		*pin;		/* pin-cache */
	long			 pin_until;	/* ms */
	long			 dialog_end;	/* a dialog ended without a
						 * login at this time (ms) */
	int			 dialog_err;	/* and why */
	char			 dialog_why[512];
	struct token_slot	*next;
};

struct token_key {
	CK_FUNCTION_LIST	*mod;
	CK_SLOT_ID		 slot;
	CK_FLAGS		 flags;		/* token flags at open */
	CK_UTF8CHAR		 label[32];
	CK_CHAR			 serial[16];
	CK_SESSION_HANDLE	 session;
	CK_OBJECT_HANDLE	 obj;
	CK_KEY_TYPE		 keytype;
	uint8_t			 id[256];
	size_t			 idlen;
	uint32_t		 caps;
	uint8_t			*cert;
	size_t			 certlen;
	/* the token's certificates with the key's CKA_ID (a policy's
	 * certificate selectors match any of them), at most
	 * PROTO_MAX_KEY_CERTS */
	uint8_t			*key_cert[PROTO_MAX_KEY_CERTS];
	size_t			 key_certlen[PROTO_MAX_KEY_CERTS];
	int			 nkey_certs;
	/* logging in (engine/token_login.c) */
	struct token_slot	*ts;		/* its token's state */
	char			*key_uri;	/* to find it after login */
	char			*pin_source;	/* NULL: pinentry */
	char			*pinentry;	/* pinentry-program */
	int			 pin_cache;	/* seconds */
	int			 logout_each;	/* pin-per-handshake */
	int			 always_auth;	/* CKA_ALWAYS_AUTHENTICATE */
	int			 deferred;	/* obj found after login */
	struct token_key	*next;
};

struct token_ctx {
	CK_FUNCTION_LIST	**mods;		/* NULL-terminated */
	size_t			  nmods;
	char			 *inited;
	int			  registry;
	char			 *path;		/* module loaded by path: its
						 * real path (p11-kit knows
						 * it as /proc/self/fd/N) */
	struct token_key	 *keys;
	struct token_slot	 *slots;	/* tokens logged in to */
	int			  nslots;
	void			(*busy_cb)(void *, int);
	void			 *busy_arg;
	unsigned long		  ckr;
	char			  err[1024];
};

void	 token_seterr(struct token_ctx *, unsigned long, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
const char *token_ckr_name(CK_RV);
int	 token_rv_code(CK_RV);
char	*token_module_name(struct token_ctx *, size_t);
/* The module's real path (never /proc/self/fd/N), or NULL. */
char	*token_module_file(struct token_ctx *, size_t);
int	 token_module_init(struct token_ctx *, size_t);
int	 token_slots(struct token_ctx *, size_t, CK_SLOT_ID *);
int	 token_module_matches(struct token_ctx *, size_t, P11KitUri *);
/* Logs in to k's token with source (NULL: k->pin_source) unless it is
 * logged in; req says who asks (for a dialog), or NULL. */
int	 token_login(struct token_ctx *, struct token_key *, const char *source);
int	 token_login_for(struct token_ctx *, struct token_key *,
	    const struct token_req *, struct pin **keep);
/* What k's token state says, checked on k's session (C_GetSessionInfo). */
int	 token_logged_in(struct token_ctx *, struct token_key *);
/* Logs k's token out and forgets its PIN (pin-per-handshake). */
void	 token_logout_key(struct token_ctx *, struct token_key *);
/* The token is not logged in (any more): its keys are found again. */
void	 token_slot_logged_out(struct token_ctx *, struct token_slot *);
/* CKU_CONTEXT_SPECIFIC after C_SignInit; pin: the request's PIN or NULL */
int	 token_login_context(struct token_ctx *, struct token_key *,
	    const struct token_req *, struct pin *pin);
/* The state of (mod, slot), created on first use; NULL when out of memory */
struct token_slot *token_slot_get(struct token_ctx *, CK_FUNCTION_LIST *,
	    CK_SLOT_ID);
void	 token_slots_free(struct token_ctx *);
void	 token_label(const CK_UTF8CHAR *, char *);
void	 token_unpad(const CK_UTF8CHAR *, size_t, char *);
#define TOKEN_UNPAD(field, out)	token_unpad((field), sizeof(field), (out))
int	 token_find_one(struct token_ctx *, CK_FUNCTION_LIST *,
	    CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *,
	    CK_ULONG *);
int	 token_read_cert(struct token_ctx *, CK_FUNCTION_LIST *,
	    CK_SESSION_HANDLE, CK_OBJECT_HANDLE, uint8_t **, size_t *);

/*
 * Which token a URI means (engine/token_select.c), judged before any
 * login so that a PIN never goes to the wrong card.  A candidate is an
 * initialised token (CKF_TOKEN_INITIALIZED) in a module the URI's module
 * part allows, whose token info matches the URI, and which, when the URI
 * has id= or object=, shows without a login a certificate or public key
 * with them, or shows no certificate or public key at all.
 */
struct token_cand {
	size_t		 mod;		/* index into ctx->mods */
	CK_SLOT_ID	 slot;
	CK_TOKEN_INFO	 ti;
};

struct token_scan {
	struct token_cand cand[PROTO_MAX_CANDIDATES];
	int		 ncand;		/* all found; the first ones kept */
	/* for the message when none is found */
	char		 searched[512];	/* "softhsm2 with 2 tokens (...)" */
	char		 excluded[256];	/* modules the URI rules out */
	int		 nsearched;
	int		 nexcluded;
	int		 unrecognized;	/* the URI has an unknown attribute */
};

/* Finds the candidates; 0 or an error (not "none found"). */
int	 token_scan(struct token_ctx *, P11KitUri *, struct token_scan *);
/* Exactly one candidate, or an error whose message names them (what is
 * the URI as the user wrote it); P11A_ERR_NO_TOKEN when there is none. */
int	 token_select(struct token_ctx *, P11KitUri *, const char *what,
	    struct token_cand *);
/* Sets the "no token matches" message from what a scan saw. */
void	 token_no_match(struct token_ctx *, const struct token_scan *,
	    const char *what);
/* "token 'LABEL' (MANUFACTURER MODEL, serial S)" and PIN flags. */
void	 token_describe(const CK_TOKEN_INFO *, char *, size_t);
/* The token's pkcs11: URI (P11_KIT_URI_FOR_TOKEN), to free. */
int	 token_info_uri(const CK_TOKEN_INFO *, char **);

#endif
