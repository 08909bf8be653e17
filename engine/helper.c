/*
 * p11agent-helper: the token helper process.
 *
 * Started by the agent with one end of a SOCK_SEQPACKET socketpair as fd
 * 3.  It is the only process that loads a PKCS#11 module or holds a PIN.
 * It answers one request at a time (a token does one thing at a time);
 * between requests it watches the presence of the tokens that hold its
 * opened keys and tells the agent when one goes or comes (PROTO_EVENT);
 * docs/helper-protocol.md describes the messages.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <p11-kit/pkcs11.h>

#include "p11agent/clock.h"
#include "p11agent/enroll.h"
#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "helper_req.h"

#define HELPER_FD	3

_Static_assert(HREQ_MAX_CERTS == ENROLL_MAX_CERTS, "IMPORT certificate limit");
_Static_assert(TOKEN_STATE_NO == PROTO_STATE_NO &&
    TOKEN_STATE_YES == PROTO_STATE_YES &&
    TOKEN_STATE_NOT_NEEDED == PROTO_STATE_NOT_NEEDED &&
    TOKEN_STATE_UNKNOWN == PROTO_STATE_UNKNOWN, "STATE_OK values");
_Static_assert(PROTO_CKF_USER_PIN_COUNT_LOW == CKF_USER_PIN_COUNT_LOW &&
    PROTO_CKF_USER_PIN_FINAL_TRY == CKF_USER_PIN_FINAL_TRY &&
    PROTO_CKF_USER_PIN_LOCKED == CKF_USER_PIN_LOCKED, "token flags");
#define MAX_KEYS	64
_Static_assert(MAX_KEYS <= PROTO_MAX_STATE_TOKENS &&
    MAX_KEYS <= PROTO_MAX_STATE_KEYS, "STATE_OK limits");
#define MAX_ALLOW	64	/* -a patterns (the config allows 16) */

struct helper_state {
	struct token_ctx	*ctx;
	int			 load_err;
	struct token_key	*keys[MAX_KEYS];
	int			 nkeys;
	uint32_t		 busy_id;	/* the request in service */
	int			 signed_once;	/* a signature went through */
	/* the presence watch (token_watch.c) */
	struct token_watch	*watch;
	int			 nwatched;	/* keys[] handed to it */
	int			 event_err;	/* a PROTO_EVENT not sent */
};

#ifdef __SANITIZE_ADDRESS__
/*
 * --enable-sanitizers builds only.  The helper runs third-party modules,
 * and their leaks are not ours: tpm2-pkcs11 1.9.0 leaks in C_SignInit
 * (the EC parameters it decodes) and in a C_Initialize that finds no
 * TPM, which every registry lookup calls once libtpm2-pkcs11-1 is
 * installed.  Modules have no frame pointers, so LeakSanitizer needs the
 * slow unwinder to see the module (or, once it is unloaded, the
 * p11_kit_module_initialize that called it) in the allocation's stack;
 * only the helper pays for it, whose mallocs are few.
 */
const char	*__asan_default_options(void);
const char	*__lsan_default_suppressions(void);

const char *
__asan_default_options(void)
{
	return "fast_unwind_on_malloc=0";
}

const char *
__lsan_default_suppressions(void)
{
	return "leak:libtpm2_pkcs11.so\n"
	    "leak:p11_kit_module_initialize\n";
}
#endif

/* No core dumps, no ptrace by others of our uid; -1 if either fails. */
static int
harden(void)
{
	struct rlimit	 rl = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &rl) == -1) {
		fprintf(stderr, "p11agent-helper: cannot disable core dumps "
		    "(setrlimit RLIMIT_CORE): %s; not loading a module\n",
		    strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		fprintf(stderr, "p11agent-helper: cannot make the process "
		    "undumpable (prctl PR_SET_DUMPABLE): %s; not loading a "
		    "module\n", strerror(errno));
		return -1;
	}
	return 0;
}

static int
reply_error(uint32_t id, int code, struct token_ctx *ctx, const char *msg)
{
	struct pbuf	 out;
	int		 r;

	pbuf_init(&out);
	proto_put_error(&out, code, ctx ? token_error_ckr(ctx) : 0,
	    msg ? msg : ctx ? token_error(ctx) : p11a_strerror(code));
	r = proto_send(HELPER_FD, PROTO_ERROR, id, &out);
	pbuf_clear(&out);
	if (ctx != NULL)
		token_clear_error(ctx);
	return r;
}

/* The reply to a request that built out: it when r is 0, else the error. */
static int
reply(uint32_t id, uint32_t type, int r, struct token_ctx *ctx,
    const struct pbuf *out)
{
	return r == 0 ? proto_send(HELPER_FD, type, id, out) :
	    reply_error(id, r, ctx, NULL);
}

static int
do_open(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_open	 q;
	struct token_open_opts	 o;
	struct token_key	*k;
	struct pbuf		 out;
	const uint8_t		*cert;
	size_t			 certlen;
	char			 label[33], serial[17];
	int			 r, n, i;

	if (hreq_open(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	if (h->nkeys == MAX_KEYS) {
		r = reply_error(id, P11A_ERR_TOO_LARGE, NULL,
		    "too many identities on one module");
		goto out;
	}
	/* every OPEN takes the next handle, even a failed one, so the
	 * handles of an agent reopening its identities stay the same */
	memset(&o, 0, sizeof(o));
	o.key_uri = q.key_uri;
	o.cert_uri = q.cert;
	o.pin_source = q.pin_source;
	o.pinentry = q.pinentry;
	o.pin_cache = (int)q.pin_cache;
	o.logout_each = (q.flags & PROTO_OPEN_LOGOUT_EACH) != 0;
	h->busy_id = id;
	if ((r = token_open_opts(h->ctx, &o, &k)) != 0) {
		h->keys[h->nkeys++] = NULL;
		r = reply_error(id, r, h->ctx, NULL);
		goto out;
	}
	h->keys[h->nkeys] = k;
	cert = token_key_cert(k, &certlen);
	pbuf_init(&out);
	pbuf_put_u32(&out, (uint32_t)h->nkeys++);
	pbuf_put_u8(&out, (uint8_t)token_key_type(k));
	pbuf_put_u32(&out, token_key_caps(k));
	pbuf_put_bytes(&out, cert, certlen);
	token_key_token(k, label, serial);
	pbuf_put_str(&out, label);
	pbuf_put_str(&out, serial);
	for (n = 0; token_key_own_cert(k, n, &certlen) != NULL; n++)
		;
	pbuf_put_u32(&out, (uint32_t)n);
	for (i = 0; i < n; i++) {
		cert = token_key_own_cert(k, i, &certlen);
		pbuf_put_bytes(&out, cert, certlen);
	}
	r = proto_send(HELPER_FD, PROTO_OPEN_OK, id, &out);
	pbuf_clear(&out);
out:
	hreq_open_clear(&q);
	return r;
}

static int
do_sign(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_sign q;
	struct token_req rq;
	uint8_t		 sig[PROTO_MAX_SIG];
	size_t		 siglen = sizeof(sig);
	struct pbuf	 out;
	int		 r, broken;

	if (hreq_sign(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	if (q.handle >= (uint32_t)h->nkeys) {
		r = reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
		goto out;
	}
	if (h->keys[q.handle] == NULL) {
		r = reply_error(id, P11A_ERR_NO_KEY, NULL,
		    "that identity could not be opened");
		goto out;
	}
	rq.who = q.who;
	rq.host = q.host;
	rq.sent_ms = q.sent_ms;
	h->busy_id = id;
	r = token_sign_for(h->ctx, h->keys[q.handle], &rq, q.alg, q.hash,
	    q.saltlen, q.data, q.len, sig, &siglen);
	if (r != 0) {
		broken = token_error_unknown_state(h->ctx);
		reply_error(id, r, h->ctx, NULL);
		/*
		 * A lost token or session: exit so the agent starts afresh.
		 * So too after CKR_GENERAL_ERROR, which leaves the module in
		 * a state nobody knows (PKCS#11 2.40, 5.1.1), from a module
		 * that has signed in this process: OpenSC answers it for
		 * ever once pcscd has restarted under it, while saying the
		 * card and the session are fine.  A module that has not
		 * signed yet is not helped by another start (a key that
		 * always fails so must not cost a restart, and a PIN
		 * dialog, per connection).
		 */
		if (r == P11A_ERR_TOKEN_ABSENT || (broken && h->signed_once))
			r = P11A_ERR_TOKEN_ABSENT;
		else
			r = 0;
		goto out;
	}
	h->signed_once = 1;
	pbuf_init(&out);
	pbuf_put_bytes(&out, sig, siglen);
	r = proto_send(HELPER_FD, PROTO_SIGN_OK, id, &out);
	pbuf_clear(&out);
	OPENSSL_cleanse(sig, sizeof(sig));
out:
	hreq_sign_clear(&q);
	return r;
}

/* lock: every token logged out, every cached PIN wiped */
static int
do_logout(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct pbuf	 out;
	int		 n, r;

	if (hreq_logout(in) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	r = token_logout_all(h->ctx, &n);
	pbuf_init(&out);
	pbuf_put_u32(&out, (uint32_t)n);
	r = reply(id, PROTO_LOGOUT_OK, r, h->ctx, &out);
	pbuf_clear(&out);
	return r;
}

/* unlock: refusals forgotten, every opened token logged in now */
static int
do_unlock(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_unlock q;
	struct token_req rq;
	struct pbuf	 out;
	int		 n, r;

	if (hreq_unlock(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	memset(&rq, 0, sizeof(rq));
	rq.who = q.who;
	rq.sent_ms = clock_now_ms();	/* one dialog per token, as for SIGN */
	r = token_unlock(h->ctx, &rq, &n);
	pbuf_init(&out);
	pbuf_put_u32(&out, (uint32_t)n);
	r = reply(id, PROTO_UNLOCK_OK, r, h->ctx, &out);
	pbuf_clear(&out);
	hreq_unlock_clear(&q);
	return r;
}

/* One token of a STATE_OK reply: its state and the handles of its keys. */
static void
put_token_state(struct helper_state *h, int first, struct pbuf *out)
{
	struct token_state	 st;
	uint32_t		 n = 0;
	int			 i;

	token_key_state(h->ctx, h->keys[first], &st);
	pbuf_put_str(out, st.label);
	pbuf_put_str(out, st.serial);
	pbuf_put_u8(out, (uint8_t)st.present);
	pbuf_put_u8(out, (uint8_t)st.login);
	pbuf_put_u8(out, (uint8_t)st.flags_known);
	pbuf_put_u32(out, st.flags_known ? st.flags : 0);
	pbuf_put_u32(out, st.ckr);
	pbuf_put_u8(out, (uint8_t)st.refused);
	for (i = first; i < h->nkeys; i++)
		if (h->keys[i] != NULL &&
		    token_key_same_token(h->keys[i], h->keys[first]))
			n++;
	pbuf_put_u32(out, n);
	for (i = first; i < h->nkeys; i++)
		if (h->keys[i] != NULL &&
		    token_key_same_token(h->keys[i], h->keys[first]))
			pbuf_put_u32(out, (uint32_t)i);
}

/* Is keys[i] the first opened key of its token? */
static int
first_of_token(const struct helper_state *h, int i)
{
	int	 j;

	if (h->keys[i] == NULL)
		return 0;
	for (j = 0; j < i; j++)
		if (h->keys[j] != NULL &&
		    token_key_same_token(h->keys[j], h->keys[i]))
			return 0;
	return 1;
}

/* status: each token of the opened keys, no login, no dialog */
static int
do_state(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct pbuf	 out;
	uint32_t	 n = 0;
	int		 i, r;

	if (hreq_state(in) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	for (i = 0; i < h->nkeys; i++)
		n += (uint32_t)first_of_token(h, i);
	pbuf_init(&out);
	pbuf_put_u32(&out, n);
	for (i = 0; i < h->nkeys; i++)
		if (first_of_token(h, i))
			put_token_state(h, i, &out);
	r = reply(id, PROTO_STATE_OK, out.err, h->ctx, &out);
	pbuf_clear(&out);
	return r;
}

/* Before a dialog: the agent moves the deadlines of what waits on it. */
static void
send_busy(void *arg, int ms)
{
	struct helper_state	*h = arg;
	struct pbuf		 out;

	pbuf_init(&out);
	pbuf_put_u32(&out, (uint32_t)ms);
	proto_send(HELPER_FD, PROTO_BUSY, h->busy_id, &out);
	pbuf_clear(&out);
}

static int
do_list(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_list q;
	struct pbuf	 out;
	int		 r;

	if (hreq_list(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	pbuf_init(&out);
	r = token_list(h->ctx, q.pin_source, q.filter, &out);
	r = reply(id, PROTO_LIST_OK, r, h->ctx, &out);
	hreq_list_clear(&q);
	pbuf_clear(&out);
	return r;
}

/* The modules loaded, none initialised (the agent's registry mode). */
static int
do_modules(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct pbuf	 out;
	int		 r;

	if (hreq_modules(in) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	pbuf_init(&out);
	r = reply(id, PROTO_MODULES_OK, token_modules(h->ctx, &out), h->ctx,
	    &out);
	pbuf_clear(&out);
	return r;
}

/* The tokens a key URI could mean, without a login. */
static int
do_probe(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_probe q;
	struct pbuf	 out;
	int		 r;

	if (hreq_probe(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	pbuf_init(&out);
	r = token_probe(h->ctx, q.key_uri, &out);
	r = reply(id, PROTO_PROBE_OK, r, h->ctx, &out);
	hreq_probe_clear(&q);
	pbuf_clear(&out);
	return r;
}

/* A key pair generated on the token (enrollment). */
static int
do_genkey(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_genkey q;
	struct pbuf	 out;
	int		 r;

	if (hreq_genkey(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	pbuf_init(&out);
	r = token_genkey(h->ctx, q.key_uri, q.keytype, q.bits, q.pin_source,
	    &out);
	r = reply(id, PROTO_GENKEY_OK, r, h->ctx, &out);
	hreq_genkey_clear(&q);
	pbuf_clear(&out);
	return r;
}

/* Certificates written beside a key (enrollment). */
static int
do_import(struct helper_state *h, uint32_t id, struct pbuf *in)
{
	struct hreq_import q;
	struct pbuf	 out;
	int		 r;

	if (hreq_import(in, &q) != 0)
		return reply_error(id, P11A_ERR_PROTOCOL, NULL, NULL);
	pbuf_init(&out);
	r = token_import(h->ctx, q.key_uri, q.pin_source, q.cert, q.len, q.n,
	    &out);
	r = reply(id, PROTO_IMPORT_OK, r, h->ctx, &out);
	hreq_import_clear(&q);
	pbuf_clear(&out);
	return r;
}

static int
dispatch(struct helper_state *h, uint32_t type, uint32_t id, struct pbuf *in)
{
	h->busy_id = id;	/* a PROTO_BUSY concerns this request */
	if (h->load_err != 0)	/* the module did not load: say why */
		return reply_error(id, h->load_err, h->ctx, NULL);
	switch (type) {
	case PROTO_OPEN:
		return do_open(h, id, in);
	case PROTO_SIGN:
		return do_sign(h, id, in);
	case PROTO_LIST:
		return do_list(h, id, in);
	case PROTO_MODULES:
		return do_modules(h, id, in);
	case PROTO_PROBE:
		return do_probe(h, id, in);
	case PROTO_LOGOUT:
		return do_logout(h, id, in);
	case PROTO_UNLOCK:
		return do_unlock(h, id, in);
	case PROTO_STATE:
		return do_state(h, id, in);
	case PROTO_GENKEY:
		return do_genkey(h, id, in);
	case PROTO_IMPORT:
		return do_import(h, id, in);
	default:
		return reply_error(id, P11A_ERR_PROTOCOL, NULL,
		    "unknown request type");
	}
}

/* ---- card removal: the presence watch and its PROTO_EVENTs */

static void
send_event(void *arg, const struct pbuf *ev)
{
	struct helper_state	*h = arg;
	int			 r;

	if ((r = proto_send(HELPER_FD, PROTO_EVENT, 0, ev)) != 0 &&
	    h->event_err == 0)
		h->event_err = r;
}

/*
 * After each request and timeout: keys opened since are watched, a call
 * that found its token gone makes the watch look at once, and the watch
 * looks when it is due.  A lost token or session that the watch does not
 * explain (every token there, sessions alive: a module that lost its
 * state) still ends the helper, as before the watch, so that the agent
 * starts afresh.  Returns < 0 to end the helper: that, or an event that
 * could not be sent (the channel is gone).
 */
static int
watch_step(struct helper_state *h, int call_lost)
{
	for (; h->nwatched < h->nkeys; h->nwatched++)
		if (h->keys[h->nwatched] != NULL)
			(void)token_watch_add(h->watch, (uint32_t)h->nwatched,
			    h->keys[h->nwatched]);
	if (call_lost)
		token_watch_lost(h->watch);
	token_watch_run(h->watch, clock_now_ms());
	if (h->event_err == 0 && call_lost &&
	    token_watch_all_present(h->watch))
		return P11A_ERR_TOKEN_ABSENT;
	return h->event_err;
}

static int
parse_poll_ms(const char *s, int *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || n < 1 || n > INT_MAX)
		return -1;
	*out = (int)n;
	return 0;
}

/* The sooner of two timeouts in ms, -1 meaning none. */
static int
soonest(int a, int b)
{
	if (a < 0)
		return b;
	return b < 0 || a < b ? a : b;
}

static int
usage(void)
{
	fprintf(stderr, "usage: p11agent-helper [-a PATTERN]... [-p MS] "
	    "[-r NAME] [MODULE-PATH]\n"
	    "  -a PATTERN  also allow module paths matching PATTERN\n"
	    "  -p MS       look at the tokens' presence every MS ms "
	    "(default 500)\n"
	    "  -r NAME     registry mode: load only the p11-kit module NAME\n"
	    "(started by p11agent; it speaks on fd 3)\n");
	return 2;
}

int
main(int argc, char *argv[])
{
	struct helper_state	 h;
	struct token_opts	 o;
	struct pbuf		 in;
	char			*allow[MAX_ALLOW], msg[512];
	uint32_t		 type, id;
	long			 now;
	int			 ch, r, n, poll_ms = TOKEN_WATCH_DEFAULT_MS;

	if (harden() != 0)
		return 1;
	if (pin_memory_init(msg, sizeof(msg)) != 0)
		fprintf(stderr, "p11agent-helper: %s\n", msg);
	/* a child process of the module must not keep the channel open */
	fcntl(HELPER_FD, F_SETFD, FD_CLOEXEC);
	memset(&h, 0, sizeof(h));
	memset(&o, 0, sizeof(o));
	while ((ch = getopt(argc, argv, "+a:p:r:")) != -1) {
		switch (ch) {
		case 'a':
			if (optarg[0] != '/') {
				fprintf(stderr, "p11agent-helper: -a %s: not "
				    "an absolute path pattern\n", optarg);
				return usage();
			}
			if (o.nallow == MAX_ALLOW) {
				fprintf(stderr, "p11agent-helper: more than "
				    "%d -a patterns\n", MAX_ALLOW);
				return usage();
			}
			allow[o.nallow++] = optarg;
			break;
		case 'p':
			if (parse_poll_ms(optarg, &poll_ms) != 0) {
				fprintf(stderr, "p11agent-helper: -p %s: not a "
				    "number of milliseconds\n", optarg);
				return usage();
			}
			break;
		case 'r':
			if (optarg[0] == '\0')
				return usage();
			o.registry_name = optarg;
			break;
		default:
			return usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc > 1 || (argc == 1 && argv[0][0] != '/')) {
		fprintf(stderr, "p11agent-helper: %s\n", argc > 1 ?
		    "at most one MODULE-PATH" : "MODULE-PATH must be absolute");
		return usage();
	}
	if (argc == 1 && o.registry_name != NULL) {
		fprintf(stderr, "p11agent-helper: -r NAME is for the registry, "
		    "not with MODULE-PATH\n");
		return usage();
	}
	o.module = argc == 1 ? argv[0] : NULL;
	o.allow = allow;
	h.load_err = token_ctx_new(&o, &h.ctx);
	if (h.ctx == NULL)
		return 1;
	token_set_busy_cb(h.ctx, send_busy, &h);
	if (token_watch_new(poll_ms, send_event, &h, &h.watch) != 0) {
		token_ctx_free(h.ctx);
		return 1;
	}
	pbuf_init(&in);
	for (;;) {
		/* requests, and the tokens' presence between them */
		now = clock_now_ms();
		r = proto_recv(HELPER_FD, &type, &id, &in,
		    soonest(token_watch_timeout(h.watch, now),
		    token_housekeeping_timeout(h.ctx, now)));
		if (r == P11A_ERR_CLOSED)
			break;
		if (r == 0)
			r = dispatch(&h, type, id, &in);
		if ((n = token_housekeeping(h.ctx, clock_now_ms())) > 0)
			fprintf(stderr, "p11agent-helper: %d kept PIN%s wiped: "
			    "its pin-cache time is over\n", n, n == 1 ? "" : "s");
		/* a lost token: said by the watch, the helper stays */
		if (r == P11A_ERR_TIMEOUT || r == P11A_ERR_TOKEN_ABSENT ||
		    r == 0)
			r = watch_step(&h, r == P11A_ERR_TOKEN_ABSENT);
		if (r != 0)
			break;
	}
	pbuf_clear(&in);
	token_watch_free(h.watch);
	token_ctx_free(h.ctx);
	return r == P11A_ERR_CLOSED || r == 0 ? 0 : 1;
}
