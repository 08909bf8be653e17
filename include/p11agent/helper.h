/*
 * p11agent: the agent's side of the wire to a token helper, and the
 * EVP_PKEY whose signatures the helper computes.
 *
 * The agent never loads a PKCS#11 module: helper_start() runs
 * p11agent-helper for one module (posix_spawn: no code of ours between
 * fork and exec).  Nothing here waits for a process on the event loop:
 * replaced helpers are killed and reaped later, without blocking.
 * Calls are either blocking (start-up, command line) or asynchronous
 * (the event loop), where the reply runs a callback from helper_read().
 */
#ifndef P11AGENT_HELPER_H
#define P11AGENT_HELPER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11agent/proto.h"

struct pbuf;
struct helper;

/*
 * err is 0 or < 0; on 0, reply's read position is at the payload.  On an
 * error, why says what happened to this request (the helper's message,
 * with the CKR name where the token gave one); it is valid during the
 * call only.
 */
typedef void (*helper_cb)(void *arg, int err, const char *why,
	    struct pbuf *reply);

/*
 * How to start a helper.  It runs as
 *	p11agent-helper [-a PATTERN]... [-p MS] [-r NAME] [MODULE-PATH]
 * (docs/helper-protocol.md); everything is copied, also for restarts.
 */
struct helper_opts {
	const char	*module;	/* absolute path; NULL: the registry */
	const char	*registry_name;	/* registry: only this module */
	char *const	*allow;		/* module-allow patterns */
	int		 nallow;
	char *const	*env;		/* "NAME=VALUE" for the helper only
					 * (PINs from env:); NULL-terminated */
	int		 token_poll_ms;	/* -p: presence looks; 0: default */
};

/*
 * Starts a helper: the program named by $P11AGENT_HELPER, else the one
 * beside the running p11agent when that is not the installed one (a
 * build tree), else the installed one.  On failure err says which
 * programs were tried, why they did not run and what to do.
 */
int	 helper_start(const struct helper_opts *, struct helper **,
	    char *err, size_t errlen);
/*
 * At the end: closes the helpers' channels (each finalises its module
 * and exits), waits for them together for at most 2 s, kills the rest
 * and waits 0.5 s more; a process that still does not go is left.
 */
void	 helper_stop_all(struct helper *const *, int n);
/* Stops the helper as helper_stop_all does (unless it did) and frees. */
void	 helper_free(struct helper *);
/* While the loop runs: kills the helper (one that is not needed) and
 * frees it at once; its process is reaped now (returns 1) or later by
 * helper_reap_orphans(), which a timer calls, never waiting (0). */
int	 helper_discard(struct helper *);
/* Fills pids with up to max processes it reaped; returns how many. */
int	 helper_reap_orphans(pid_t *pids, int max);
int	 helper_fd(const struct helper *);
pid_t	 helper_pid(const struct helper *);
/* A pidfd of the helper process (readable once it exits), or -1. */
int	 helper_pidfd(const struct helper *);
/* The message of the last error reply or failure. */
const char *helper_error(const struct helper *);

/* Blocking call: sends req, waits up to timeout_ms for the reply. */
int	 helper_call(struct helper *, uint32_t type, const struct pbuf *req,
	    struct pbuf *reply, int timeout_ms);

/* Asynchronous call: cb runs from helper_read() or helper_expire(). */
int	 helper_request(struct helper *, uint32_t type, const struct pbuf *req,
	    int timeout_ms, helper_cb cb, void *arg);
/*
 * Messages the helper sends by itself: PROTO_EVENT (and any later kind)
 * go to cb from helper_read(); PROTO_BUSY (a request waits for a dialog)
 * is handled here: the deadlines of the requests in flight move on.
 */
typedef void (*helper_event_cb)(void *arg, uint32_t type, uint32_t id,
	    struct pbuf *msg);
void	 helper_set_event_cb(struct helper *, helper_event_cb, void *arg);
/*
 * The signatures asked asynchronously (helper_request) of this helper,
 * across its restarts: answered, failed, and the time from request to
 * answer (a PIN dialog's included), in buckets of at most
 * helper_sign_buckets_ms[i] ms (cumulative, as Prometheus counts them).
 */
#define HELPER_SIGN_BUCKETS	12
extern const int helper_sign_buckets_ms[HELPER_SIGN_BUCKETS];
struct helper_sign_stats {
	unsigned long long	 ok, failed;
	unsigned long long	 total_ms, max_ms;
	unsigned long long	 le[HELPER_SIGN_BUCKETS];
	unsigned long long	 prompts;	/* PIN dialogs (PROTO_BUSY) */
};
const struct helper_sign_stats *helper_sign_stats(const struct helper *);
/* Reads replies when the fd is readable; < 0 when the helper is gone. */
int	 helper_read(struct helper *);
/* The reason helper_expire() gives a request whose deadline passed. */
#define HELPER_EXPIRED	"the token did not answer in time"
/* Fails requests whose deadline passed (now in ms, CLOCK_MONOTONIC);
 * returns 1 when the helper looks hung (no progress on its oldest
 * request for that request's timeout), else 0.  Also reaps replaced
 * helper processes that have exited since (call it from a timer). */
int	 helper_expire(struct helper *, long now);
/* Replaces a dead or hung helper process with a new one (same module);
 * pending requests fail.  The old process is killed, not waited for:
 * helper_expire() reaps it once it is gone.  On failure helper_error()
 * says why.  The caller opens its identities again. */
int	 helper_restart(struct helper *);
/* Kills the helper process (a hung token); helper_read then sees EOF. */
void	 helper_kill(struct helper *);
/* Fails every pending request with err. */
void	 helper_fail_all(struct helper *, int err);

/* Identity opened on a helper (PROTO_OPEN). */
struct helper_identity {
	uint32_t	 handle;
	int		 keytype;	/* PROTO_KEY_* */
	uint32_t	 caps;		/* PROTO_CAP_* */
	X509		*cert;
	char		 label[33];	/* the token's, as C_GetTokenInfo */
	char		 serial[17];
	/* the token's certificates with the key's CKA_ID (a policy's
	 * certificate selectors match any of them) */
	X509		*key_certs[PROTO_MAX_KEY_CERTS];
	int		 nkey_certs;
};
/* Frees the certificates of a helper_identity. */
void	 helper_identity_clear(struct helper_identity *);
int	 helper_open(struct helper *, const char *key_uri, const char *cert,
	    const char *pin_source, int timeout_ms, struct helper_identity *);
/* Encodes an OPEN request (for helper_open or an asynchronous reopen). */
void	 helper_put_open(struct pbuf *, const char *key_uri, const char *cert,
	    const char *pin_source);
/* Appends the identity's login settings to an OPEN request. */
void	 helper_put_open_login(struct pbuf *, const char *pinentry,
	    int pin_cache, int pin_per_handshake);
/* Decodes an OPEN_OK payload (untrusted input: checked and bounded). */
int	 helper_parse_open(struct pbuf *, struct helper_identity *);

/*
 * Registry mode (engine/client_probe.c): a helper that loaded the
 * registry lists its modules (PROTO_MODULES, empty request; no module is
 * initialised); a helper per module tells which of its tokens a key URI
 * could mean without a login (PROTO_PROBE).  The agent opens the key
 * only when exactly one token in all is a candidate.  The parsers
 * decode untrusted replies: counts bounded by PROTO_MAX_MODULES and
 * PROTO_MAX_CANDIDATES and by the payload, strings by PROTO_MAX_STRING;
 * on error *out is untouched.
 */
struct helper_module {
	char		*name;		/* registry name; NULL if none */
	char		*filename;	/* NULL if p11-kit does not know it */
};
struct helper_modules {
	uint32_t		 n;
	struct helper_module	*mods;
};
struct helper_token {
	char		*uri;		/* the token's pkcs11: URI */
	char		*desc;		/* "token 'LABEL' (MANUF MODEL, ...)" */
};
struct helper_probe {
	uint32_t		 n;	/* 0 to PROTO_MAX_CANDIDATES */
	struct helper_token	*tokens;
};
/* Encodes a PROBE request for key_uri. */
void	 helper_put_probe(struct pbuf *, const char *key_uri);
int	 helper_parse_probe(struct pbuf *, struct helper_probe *);
void	 helper_probe_clear(struct helper_probe *);
int	 helper_parse_modules(struct pbuf *, struct helper_modules *);
void	 helper_modules_clear(struct helper_modules *);

/*
 * The state of the tokens of a helper's opened keys (PROTO_STATE, empty
 * request; no login, no dialog), for status.  The parser decodes an
 * untrusted reply: at most PROTO_MAX_STATE_TOKENS tokens of at most
 * PROTO_MAX_STATE_KEYS handles each; on error *out is untouched.
 */
struct helper_tstate {
	char		 label[33];
	char		 serial[17];
	int		 present;	/* PROTO_STATE_* */
	int		 login;		/* PROTO_STATE_* */
	int		 flags_known;	/* C_GetTokenInfo answered */
	uint32_t	 flags;		/* its token flags (CKF_*) */
	uint32_t	 ckr;		/* or why it did not */
	int		 refused;	/* no login tried until unlock */
	uint32_t	 nhandles;	/* the keys opened on it */
	uint32_t	 handles[PROTO_MAX_STATE_KEYS];
};
struct helper_states {
	uint32_t		 n;
	struct helper_tstate	*tokens;
};
int	 helper_parse_states(struct pbuf *, struct helper_states *);
void	 helper_states_clear(struct helper_states *);

/*
 * An EVP_PKEY for the identity: public half from its certificate, each
 * signature by the helper.  Inside an OpenSSL async job (SSL_MODE_ASYNC)
 * the signature pauses the job and exposes a wait fd; otherwise it waits.
 */
int	 rkey_new(struct helper *, const struct helper_identity *,
	    int sign_timeout_ms, EVP_PKEY **);
/* CLOCK_MONOTONIC ms (clock_now_ms) of the last successful signature
 * by any such key, or 0 if none yet (lock-after, agent/control.c). */
long	 rkey_last_sign_ms(void);
/*
 * Who the signatures requested from now on are for (what a PIN dialog
 * tells the user): set by the tunnel around its handshake steps; NULL
 * for none.  The strings are copied.
 */
void	 rkey_set_requester(const char *who, const char *host);
/*
 * Told of each signature by those keys once it is done or failed (the
 * audit trail, agent/audit.c): set, like the requester, by the tunnel
 * around its handshake steps, so that arg is the connection that caused
 * it; NULL for none.  Called from inside the handshake step.
 */
struct rkey_signed {
	long		 start_ms;	/* clock_now_ms() at the request */
	long		 ms;		/* request to answer */
	int		 err;		/* 0: signed, else P11A_ERR_* */
	const char	*why;		/* a failure's reason, else NULL */
	int		 alg, hash;	/* enum proto_alg, enum proto_hash */
};
typedef void	 rkey_audit_fn(void *arg, const struct rkey_signed *);
void	 rkey_set_audit(rkey_audit_fn *, void *arg);
/* Unloads the provider behind those keys, once they are all freed. */
void	 rkey_cleanup(void);

#endif
