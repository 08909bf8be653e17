/*
 * p11agent: the token layer, used only inside the token helper process.
 *
 * It loads PKCS#11 modules through p11-kit (the registry, or one module
 * path checked after realpath), matches RFC 7512 URIs with p11-kit's URI
 * API, logs in, finds keys and certificates, and signs.  It never prints:
 * each call returns a code and the first error's message stays on the
 * context (token_error()).
 */
#ifndef P11AGENT_TOKEN_H
#define P11AGENT_TOKEN_H

#include <stddef.h>
#include <stdint.h>

struct pbuf;
struct token_ctx;
struct token_key;

/*
 * What to load (p11agent-helper's command line).  A module path is loaded
 * only if its real path lies under a directory /usr/lib* or
 * /usr/local/lib*, or matches an allow pattern (fnmatch(3) without flags,
 * so '*' also matches '/'; a pattern that names an existing file also
 * allows the file it resolves to), and if root or the user owns it and
 * every directory above it and no one else can write them (a root-owned
 * sticky directory such as /tmp may be above its own directory).  It is
 * loaded through the descriptor that was checked.
 */
struct token_opts {
	const char	*module;	/* absolute path; NULL: the registry */
	const char	*registry_name;	/* registry: only the module so
					 * named (p11_kit_module_get_name) */
	char *const	*allow;		/* module-allow patterns */
	int		 nallow;
};

/* Loads the modules; *ctx is set even on error: it holds the message. */
int	 token_ctx_new(const struct token_opts *, struct token_ctx **);
void	 token_ctx_free(struct token_ctx *);
/* The message of the first error since the last token_clear_error(). */
const char *token_error(const struct token_ctx *);
unsigned long token_error_ckr(const struct token_ctx *);
/* The error leaves the module in a state nobody knows (CKR_GENERAL_ERROR). */
int	 token_error_unknown_state(const struct token_ctx *);
void	 token_clear_error(struct token_ctx *);

/*
 * Opens the key named by key_uri: finds its token (exactly one token must
 * be a candidate, see token_probe; otherwise no PIN is sent anywhere and
 * the message names the candidates), logs in with the PIN from
 * pin_source ("file:PATH", "env:NAME", "pinentry", "systemd-ask-password",
 * "none"),
 * finds the private key, and, unless cert_uri is "none", the certificate (cert_uri, or the one
 * with the key's CKA_ID when cert_uri is NULL).  The key stays owned by
 * the context.
 */
int	 token_open(struct token_ctx *, const char *key_uri,
	    const char *cert_uri, const char *pin_source, struct token_key **);

/*
 * token_open with the login settings of the identity.  An interactive
 * source ("pinentry", the default when pin_source is NULL, and
 * "systemd-ask-password") does not log in at open: the key is found by
 * its public objects (the private key itself, its public key or its
 * certificate) and the first signature logs in, so that the dialog can
 * say who asks.  Only when nothing of the key shows without a login does
 * the open log in (and ask) at once.
 */
struct token_open_opts {
	const char	*key_uri;
	const char	*cert_uri;
	const char	*pin_source;
	const char	*pinentry;	/* pinentry-program; NULL: "pinentry" */
	int		 pin_cache;	/* seconds the PIN is kept; 0: none */
	int		 logout_each;	/* log out after each signature */
};
int	 token_open_opts(struct token_ctx *, const struct token_open_opts *,
	    struct token_key **);

/* Who a signature is for: what a PIN dialog tells the user. */
struct token_req {
	const char	*who;		/* "curl (pid 4242, alice)"; NULL */
	const char	*host;		/* the upstream; NULL */
	long		 sent_ms;	/* when the agent sent it
					 * (CLOCK_MONOTONIC); 0: unknown */
};

/*
 * Called before a request waits for the user (a PIN dialog), with the
 * longest wait in ms: the helper tells the agent (PROTO_BUSY).
 */
void	 token_set_busy_cb(struct token_ctx *, void (*)(void *, int),
	    void *);

/* token_sign for a request: logs in first when the token needs it. */
int	 token_sign_for(struct token_ctx *, struct token_key *,
	    const struct token_req *, int alg, int hash, uint32_t saltlen,
	    const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen);

/* Logs every token out and wipes every cached PIN; *n: tokens logged out. */
int	 token_logout_all(struct token_ctx *, int *n);
/*
 * Forgets that a token rejected a PIN or is locked, and logs in to every
 * opened token now (asking, for an interactive source); *n: tokens logged
 * in.  Fails only when none could be.
 */
int	 token_unlock(struct token_ctx *, const struct token_req *, int *n);
/* Wipes cached PINs whose time has come (now in ms, CLOCK_MONOTONIC);
 * returns how many. */
int	 token_housekeeping(struct token_ctx *, long now);
/* Milliseconds until token_housekeeping has a PIN to wipe; -1: none. */
int	 token_housekeeping_timeout(const struct token_ctx *, long now);
/* 1 for the sources that ask the user (pinentry, systemd-ask-password). */
int	 token_source_interactive(const char *);
int	 token_key_type(const struct token_key *);	/* PROTO_KEY_* */
uint32_t token_key_caps(const struct token_key *);	/* PROTO_CAP_* */
/* The label and serial of the key's token, unpadded (33 and 17 bytes). */
void	 token_key_token(const struct token_key *, char *label, char *serial);
/* The certificate's DER, or NULL with *len 0 when none was asked for. */
const uint8_t *token_key_cert(const struct token_key *, size_t *);
/* The i-th of the token's certificates with the key's CKA_ID, or NULL
 * with *len 0 past the last. */
const uint8_t *token_key_own_cert(const struct token_key *, int i, size_t *);

/*
 * What a status shows of an opened key's token, asked without a login
 * and without a dialog (PROTO_STATE): C_GetSlotInfo and C_GetTokenInfo
 * (present, the PIN flags), C_GetSessionInfo on the key's session
 * (logged in; a card pulled and put back killed it: not present).
 */
#define TOKEN_STATE_NO		0
#define TOKEN_STATE_YES		1
#define TOKEN_STATE_NOT_NEEDED	2	/* login: the token needs none */
#define TOKEN_STATE_UNKNOWN	3
struct token_state {
	int		 present;	/* TOKEN_STATE_* */
	int		 login;		/* TOKEN_STATE_* */
	uint32_t	 ckr;		/* of C_GetSlotInfo/C_GetTokenInfo */
	uint32_t	 flags;		/* token flags now, or at open when
					 * ckr is not CKR_OK */
	int		 flags_known;	/* read now */
	int		 refused;	/* no login is tried until unlock */
	char		 label[33];
	char		 serial[17];
};
int	 token_key_state(struct token_ctx *, struct token_key *,
	    struct token_state *);
/* Are the two keys on the same token (module and slot)? */
int	 token_key_same_token(const struct token_key *,
	    const struct token_key *);

/* Signs data with alg (PROTO_ALG_*); hash is a PROTO_HASH_* for PSS. */
int	 token_sign(struct token_ctx *, struct token_key *, int alg,
	    int hash, uint32_t saltlen, const uint8_t *data, size_t len,
	    uint8_t *sig, size_t *siglen);

/*
 * Appends PROTO_LIST records describing every module, slot, token and
 * key/certificate object, or only the tokens matching the URI filter.
 * With pin_source, logs in first to the one token the filter selects
 * (as token_open selects), so that its private keys show; refused, with
 * no login, when the filter does not select exactly one token.  With a
 * filter that matches no token: P11A_ERR_NO_TOKEN.
 */
int	 token_list(struct token_ctx *, const char *pin_source,
	    const char *filter, struct pbuf *);

/*
 * The tokens key_uri could mean, judged without a login as token_open
 * does before it sends a PIN (initialised tokens whose info matches the
 * URI and that show a certificate or public key matching its id= and
 * object=, or show none at all): appends a PROBE_OK payload (u32 count,
 * then per token str URI, str description).  None found is not an error.
 */
int	 token_probe(struct token_ctx *, const char *key_uri, struct pbuf *);
/* Appends a MODULES_OK payload (u32 count, then per module str name, str
 * filename); initialises no module. */
int	 token_modules(struct token_ctx *, struct pbuf *);

/*
 * The presence watch (engine/token_watch.c): the slots holding opened
 * keys are looked at every poll_ms (C_GetSlotInfo, C_GetSessionInfo,
 * C_GetTokenInfo, and C_WaitForSlotEvent with CKF_DONT_BLOCK where the
 * module has it); each change is handed to cb as a PROTO_EVENT payload:
 *	u8 kind (TOKEN_EVENT_*), u32 n, n x u32 handle (the keys on that
 *	token), str label, str serial, u32 token flags, u32 ckr
 * (docs/helper-protocol.md).  Nothing here blocks or sends.
 */
#define TOKEN_EVENT_REMOVED	1
#define TOKEN_EVENT_INSERTED	2
#define TOKEN_WATCH_DEFAULT_MS	500
struct token_watch;
typedef void (*token_watch_cb)(void *arg, const struct pbuf *event);
int	 token_watch_new(int poll_ms, token_watch_cb, void *arg,
	    struct token_watch **);
void	 token_watch_free(struct token_watch *);
/* A key opened under the helper's handle: its slot is watched. */
int	 token_watch_add(struct token_watch *, uint32_t handle,
	    struct token_key *);
/* Milliseconds until the next look (0: now), -1 when nothing is watched. */
int	 token_watch_timeout(const struct token_watch *, long now);
/* A call failed as if a token were gone: look closely, at once. */
void	 token_watch_lost(struct token_watch *);
/* Looks at the slots when it is time (now: clock_now_ms()). */
int	 token_watch_run(struct token_watch *, long now);
/* Are all the watched tokens there, with their sessions? (A call that
 * failed as if one were gone, with all of them there, is not explained
 * by a removal.) */
int	 token_watch_all_present(const struct token_watch *);

/* The PIN: one owning type, wiped when freed. */
struct pin {
	char	*value;
	size_t	 len;
};
int	 pin_read(const char *source, struct pin **, char *err, size_t errlen);
/*
 * Sets up the memory PINs live in (OpenSSL's secure heap: locked against
 * swap, out of core dumps, wiped on free).  The helper calls it once at
 * start and logs the message if it fails; then every PIN source but
 * "none" fails with that message, rather than hold a PIN in swappable
 * memory.  The first PIN would set it up otherwise.
 */
int	 pin_memory_init(char *err, size_t errlen);
/* What an interactive source (pinentry, systemd-ask-password) shows. */
struct pin_ask {
	const char	*label;		/* the token's label */
	const char	*serial;	/* and serial number */
	int		 timeout;	/* seconds; 0: PIN_ASK_TIMEOUT */
	/* pinentry only; plain UTF-8 text, unescaped; NULL: a default */
	const char	*program;	/* pinentry-program; NULL: "pinentry"
					 * from PATH */
	const char	*title;		/* SETTITLE; default "p11agent" */
	const char	*description;	/* SETDESC; default names the token;
					 * cut to fit the 1000-byte line */
	const char	*prompt;	/* SETPROMPT; default "PIN:" */
	const char	*error;		/* SETERROR; NULL: none */
};
/* Under the agent's 60 s OPEN deadline: the helper answers first. */
#define PIN_ASK_TIMEOUT	50
/*
 * pin_read, and two programs that ask the user, each started with no
 * descriptors but its stdin, stdout and stderr, an empty signal mask,
 * default signal dispositions and a few named environment variables, and
 * killed and reaped after the timeout:
 * "systemd-ask-password": from PATH, stdin /dev/null, stdout a pipe, a
 * prompt naming the token; reads one line.
 * "pinentry": ask->program or pinentry from PATH, speaking Assuan on a
 * socket (its stdin and stdout): OPTION ttyname/ttytype/display/lc-ctype/
 * lc-messages from GPG_TTY, TERM, DISPLAY and the locale variables, the
 * texts, GETPIN; the PIN comes back byte for byte.  Fails with
 * P11A_ERR_PIN_CANCELLED (the user cancelled), P11A_ERR_TIMEOUT
 * (pinentry's timeout, or it did not answer within the timeout plus a
 * second), P11A_ERR_PIN_SOURCE (no DISPLAY, WAYLAND_DISPLAY or GPG_TTY;
 * the program is missing; no PIN entered; a protocol error; the message
 * says which).
 * No message holds the PIN.
 */
int	 pin_ask(const char *source, const struct pin_ask *, struct pin **,
	    char *err, size_t errlen);
void	 pin_free(struct pin *);
/* The programs pin_ask runs never get the variable name (an env: PIN). */
int	 pin_env_hide(const char *name);
/*
 * While a PIN pad takes the PIN: pinentry shows ask's description with an
 * OK button only (MESSAGE), and pin_notice_end() closes it (killed and
 * reaped).  A failure is not fatal to the login: err says why.
 */
struct pin_notice;
int	 pin_notice_start(const struct pin_ask *, struct pin_notice **,
	    char *err, size_t errlen);
void	 pin_notice_end(struct pin_notice *);

#endif
