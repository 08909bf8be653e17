/*
 * p11agent: logging in to tokens.  Runs only in the token helper.
 *
 * The state of each token (struct token_slot) lives here: logged in or
 * not, the PIN kept for pin-cache, and the refusals that stop any further
 * login: a PIN from a file, env or fd that the token rejected (never sent
 * again), a locked PIN or one the token wants changed (no login at all)
 * until token_unlock().  The PIN flags are read fresh before every login;
 * a non-interactive source is never used on a final try.  A PIN dialog
 * names who asks; the requests that were waiting for a dialog that ended
 * without a login fail with it instead of opening one dialog each.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include <openssl/crypto.h>

#include "p11agent/clock.h"
#include "p11agent/error.h"
#include "p11agent/token.h"
#include "token_int.h"

#define MAX_TOKEN_SLOTS	64
#define DIALOG_SLACK_MS	10000	/* beyond the dialog's own timeout */

int
token_source_interactive(const char *source)
{
	return source == NULL || strcmp(source, "pinentry") == 0 ||
	    strcmp(source, "systemd-ask-password") == 0;
}

struct token_slot *
token_slot_get(struct token_ctx *ctx, CK_FUNCTION_LIST *mod, CK_SLOT_ID slot)
{
	struct token_slot	*ts;

	for (ts = ctx->slots; ts != NULL; ts = ts->next)
		if (ts->mod == mod && ts->slot == slot)
			return ts;
	if (ctx->nslots == MAX_TOKEN_SLOTS ||
	    (ts = calloc(1, sizeof(*ts))) == NULL)
		return NULL;
	ts->mod = mod;
	ts->slot = slot;
	ts->next = ctx->slots;
	ctx->slots = ts;
	ctx->nslots++;
	return ts;
}

static void
forget_pin(struct token_slot *ts)
{
	pin_free(ts->pin);
	ts->pin = NULL;
	ts->pin_until = 0;
}

void
token_slots_free(struct token_ctx *ctx)
{
	struct token_slot	*ts;

	while ((ts = ctx->slots) != NULL) {
		ctx->slots = ts->next;
		forget_pin(ts);
		OPENSSL_cleanse(ts, sizeof(*ts));
		free(ts);
	}
	ctx->nslots = 0;
}

void
token_set_busy_cb(struct token_ctx *ctx, void (*cb)(void *, int), void *arg)
{
	ctx->busy_cb = cb;
	ctx->busy_arg = arg;
}

int
token_housekeeping(struct token_ctx *ctx, long now)
{
	struct token_slot	*ts;
	int			 n = 0;

	for (ts = ctx->slots; ts != NULL; ts = ts->next)
		if (ts->pin != NULL && now >= ts->pin_until) {
			forget_pin(ts);
			n++;
		}
	return n;
}

int
token_housekeeping_timeout(const struct token_ctx *ctx, long now)
{
	const struct token_slot	*ts;
	long			 t = 0;
	int			 any = 0;

	for (ts = ctx->slots; ts != NULL; ts = ts->next)
		if (ts->pin != NULL && (!any || ts->pin_until - now < t)) {
			t = ts->pin_until - now;
			any = 1;
		}
	if (!any)
		return -1;
	return t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
}

/* The token's flags now (a failed login changes them), else at open. */
static CK_FLAGS
fresh_flags(const struct token_key *k)
{
	CK_TOKEN_INFO	 ti;

	if (k->mod->C_GetTokenInfo(k->slot, &ti) == CKR_OK)
		return ti.flags;
	return k->flags;
}

/* Is the card gone?  Then no PIN is asked for it, nor sent. */
static int
card_gone(struct token_ctx *ctx, const struct token_key *k, const char *name)
{
	CK_TOKEN_INFO	 ti;
	CK_RV		 rv = k->mod->C_GetTokenInfo(k->slot, &ti);

	if (rv != CKR_TOKEN_NOT_PRESENT && rv != CKR_DEVICE_REMOVED &&
	    rv != CKR_SLOT_ID_INVALID)
		return 0;
	token_seterr(ctx, rv, "token '%s' is not in its reader (%s); no PIN "
	    "is asked for it: insert it again", name, token_ckr_name(rv));
	return 1;
}

static const char *
tries_left(CK_FLAGS flags)
{
	if (flags & CKF_USER_PIN_LOCKED)
		return "the PIN is now LOCKED; unblock it with the PUK or SO "
		    "PIN, then run 'p11agent unlock' or reinsert the card";
	if (flags & CKF_USER_PIN_FINAL_TRY)
		return "ONE try is left: the next wrong PIN locks it";
	if (flags & CKF_USER_PIN_COUNT_LOW)
		return "the token reports few tries left";
	return "the token does not say how many tries are left";
}

/*
 * What the dialog says: who wants the card for which server, and how
 * many tries are left when the token tells.
 */
static void
describe(char *out, size_t len, const struct token_key *k,
    const struct token_req *rq, CK_FLAGS flags, CK_USER_TYPE ut)
{
	char		 name[33], serial[17], host[300] = "";
	const char	*who, *tries = "";

	token_label(k->label, name);
	TOKEN_UNPAD(k->serial, serial);
	who = rq != NULL && rq->who != NULL && rq->who[0] != '\0' ? rq->who :
	    "p11agent";
	if (rq != NULL && rq->host != NULL && rq->host[0] != '\0')
		snprintf(host, sizeof(host), " for %s", rq->host);
	if (flags & CKF_USER_PIN_FINAL_TRY)
		tries = "\n\nThis is the LAST try before the card locks.";
	else if (flags & CKF_USER_PIN_COUNT_LOW)
		tries = "\n\nFew tries are left before the card locks.";
	snprintf(out, len, "%s wants to use your card '%s'%s%s%s%s.%s%s", who,
	    name, serial[0] ? " (serial " : "", serial, serial[0] ? ")" : "",
	    host, ut == CKU_CONTEXT_SPECIFIC ? "\n\nThis key asks for the PIN "
	    "for every signature." : "", tries);
}

/* Asks the user, telling the agent first that this request will wait. */
static int
ask_user(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, const char *source, CK_FLAGS flags,
    CK_USER_TYPE ut, struct pin **pin, char *err, size_t errlen)
{
	struct pin_ask	 ask;
	char		 name[33], serial[17], desc[1024];
	const char	*src = source ? source : "pinentry";

	token_label(k->label, name);
	TOKEN_UNPAD(k->serial, serial);
	describe(desc, sizeof(desc), k, rq, flags, ut);
	memset(&ask, 0, sizeof(ask));
	ask.label = name;
	ask.serial = serial;
	ask.timeout = PIN_ASK_TIMEOUT;
	ask.program = k->pinentry;
	ask.title = "p11agent: smartcard PIN";
	ask.description = desc;
	ask.prompt = "PIN:";
	if (flags & CKF_USER_PIN_FINAL_TRY)
		ask.error = "Last try before the card locks";
	else if (k->ts->wrong)
		ask.error = "The card rejected the last PIN";
	if (ctx->busy_cb != NULL)
		ctx->busy_cb(ctx->busy_arg, PIN_ASK_TIMEOUT * 1000 +
		    DIALOG_SLACK_MS);
	return pin_ask(src, &ask, pin, err, errlen);
}

/*
 * A PIN pad login: with pinentry, a dialog that says to enter the PIN on
 * the reader, closed when the login returns; the agent is told the login
 * may take a while.  NULL without one (any other source, or no display).
 */
static struct pin_notice *
pinpad_notice(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, const char *source, CK_FLAGS flags,
    CK_USER_TYPE ut)
{
	struct pin_notice	*n = NULL;
	struct pin_ask		 ask;
	char			 desc[1024], full[1200], err[512];

	if (ctx->busy_cb != NULL)
		ctx->busy_cb(ctx->busy_arg, PIN_ASK_TIMEOUT * 1000 +
		    DIALOG_SLACK_MS);
	if (source != NULL && strcmp(source, "pinentry") != 0)
		return NULL;
	describe(desc, sizeof(desc), k, rq, flags, ut);
	snprintf(full, sizeof(full), "%s\n\nEnter your PIN on the reader's "
	    "keypad.", desc);
	memset(&ask, 0, sizeof(ask));
	ask.timeout = PIN_ASK_TIMEOUT;
	ask.program = k->pinentry;
	ask.title = "p11agent: smartcard PIN";
	ask.description = full;
	(void)pin_notice_start(&ask, &n, err, sizeof(err));
	return n;
}

static void
pin_incorrect(struct token_ctx *ctx, struct token_key *k, const char *name,
    const char *source, int interactive)
{
	token_seterr(ctx, CKR_PIN_INCORRECT, "token '%s' rejected the PIN "
	    "from %s (%s); %s", name, source ? source : "pinentry",
	    tries_left(fresh_flags(k)), interactive ? "the next connection "
	    "asks again" : "p11agent does not retry: fix the PIN source, "
	    "then run 'p11agent unlock'");
}

/* The refusals that hold until unlock, decided before any PIN is read. */
static int
refuse_login(struct token_ctx *ctx, struct token_key *k, CK_FLAGS flags,
    int interactive, CK_USER_TYPE ut, const char *name)
{
	struct token_slot	*ts = k->ts;

	if (flags & CKF_USER_PIN_LOCKED)
		ts->blocked = P11A_ERR_PIN_LOCKED;
	else if ((flags & CKF_USER_PIN_TO_BE_CHANGED) && ut == CKU_USER)
		ts->blocked = P11A_ERR_PIN_CHANGE;
	if (ts->blocked == P11A_ERR_PIN_LOCKED) {
		token_seterr(ctx, CKR_PIN_LOCKED, "token '%s': the user PIN is "
		    "locked; p11agent will not try to log in: unblock it with "
		    "the PUK or SO PIN (e.g. pkcs11-tool --init-pin --login "
		    "--login-type so), then run 'p11agent unlock' or reinsert "
		    "the card", name);
		return P11A_ERR_PIN_LOCKED;
	}
	if (ts->blocked == P11A_ERR_PIN_CHANGE) {
		token_seterr(ctx, 0, "token '%s' wants its PIN changed before "
		    "it is used; change it with the card's own tool (e.g. "
		    "pkcs11-tool --change-pin), then run 'p11agent unlock'",
		    name);
		return P11A_ERR_PIN_CHANGE;
	}
	if (ts->rejected && !interactive) {
		token_seterr(ctx, 0, "token '%s' rejected a PIN already; "
		    "p11agent does not try another login on it: fix the PIN "
		    "source, then run 'p11agent unlock'", name);
		return P11A_ERR_PIN_INCORRECT;
	}
	if ((flags & CKF_USER_PIN_FINAL_TRY) && !interactive) {
		token_seterr(ctx, 0, "token '%s': only one PIN try is left; "
		    "p11agent will not risk it without you: log in once with "
		    "the token's own tool to reset the counter, or use pin = "
		    "pinentry", name);
		return P11A_ERR_PIN_FINAL_TRY;
	}
	return 0;
}

/*
 * One login of type ut.  The PIN comes from the cache, from *keep (the
 * request's own, for a context login right after the user login), or
 * from the source; with keep, the PIN read is handed back instead of
 * being wiped.
 */
static int
login(struct token_ctx *ctx, struct token_key *k, const struct token_req *rq,
    const char *source, CK_USER_TYPE ut, struct pin **keep)
{
	struct token_slot	*ts = k->ts;
	struct pin		*pin = NULL, *use;
	struct pin_notice	*notice = NULL;
	char			 name[33], err[512];
	CK_FLAGS		 flags;
	CK_RV			 rv;
	long			 now = clock_now_ms();
	int			 inter = token_source_interactive(source);
	int			 r, asked = 0;

	token_label(k->label, name);
	if (card_gone(ctx, k, name))
		return P11A_ERR_TOKEN_ABSENT;
	flags = fresh_flags(k);
	/* a PIN pad (pin = none) is the user typing, as a dialog is */
	if ((r = refuse_login(ctx, k, flags, inter || ((flags &
	    CKF_PROTECTED_AUTHENTICATION_PATH) && strcmp(source, "none") == 0),
	    ut, name)) != 0)
		return r;
	/* few tries left: a kept PIN is not sent without the user */
	if (flags & (CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_COUNT_LOW))
		forget_pin(ts);
	if (inter && rq != NULL && rq->sent_ms != 0 && ts->dialog_err != 0 &&
	    rq->sent_ms <= ts->dialog_end) {
		/* it waited for that dialog: the same answer, no new one */
		token_seterr(ctx, 0, "%s", ts->dialog_why);
		return ts->dialog_err;
	}
	if (ts->pin != NULL && now < ts->pin_until)
		use = ts->pin;
	else if (keep != NULL && *keep != NULL)
		use = *keep;
	else if ((flags & CKF_PROTECTED_AUTHENTICATION_PATH) && (inter ||
	    strcmp(source, "none") == 0))
		use = NULL;	/* the PIN pad asks */
	else {
		if (inter) {
			r = ask_user(ctx, k, rq, source, flags, ut, &pin, err,
			    sizeof(err));
			asked = 1;
		} else {
			memset(err, 0, sizeof(err));
			r = pin_read(source, &pin, err, sizeof(err));
		}
		if (r != 0) {
			token_seterr(ctx, 0, "token '%s': %s", name, err);
			goto failed;
		}
		if (pin == NULL) {
			token_seterr(ctx, 0, "token '%s' needs a PIN: set pin "
			    "= pinentry, file:PATH, env:NAME, fd:N or "
			    "systemd-ask-password", name);
			r = P11A_ERR_PIN_SOURCE;
			goto failed;
		}
		use = pin;
	}
	if (use == NULL)
		notice = pinpad_notice(ctx, k, rq, source, flags, ut);
	rv = k->mod->C_Login(k->session, ut, use ? (CK_UTF8CHAR_PTR)use->value
	    : NULL, use ? use->len : 0);
	pin_notice_end(notice);
	if (rv == CKR_OK || (rv == CKR_USER_ALREADY_LOGGED_IN &&
	    ut == CKU_USER)) {
		if (ut == CKU_USER)
			ts->logged_in = 1;
		ts->wrong = 0;
		ts->dialog_err = 0;
		if (pin != NULL && k->pin_cache > 0) {
			forget_pin(ts);
			ts->pin = pin;
			ts->pin_until = now + (long)k->pin_cache * 1000;
			pin = NULL;
		} else if (pin != NULL && keep != NULL) {
			*keep = pin;
			pin = NULL;
		}
		pin_free(pin);
		return 0;
	}
	if (use != NULL && use == ts->pin)
		forget_pin(ts);		/* the card does not take it now */
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE) {
		if (inter)
			ts->wrong = 1;
		else
			ts->rejected = 1;
		pin_incorrect(ctx, k, name, source, inter);
		r = P11A_ERR_PIN_INCORRECT;
	} else if (rv == CKR_PIN_LOCKED) {
		ts->blocked = P11A_ERR_PIN_LOCKED;
		refuse_login(ctx, k, 0, inter, ut, name);
		r = P11A_ERR_PIN_LOCKED;
	} else {
		token_seterr(ctx, rv, "token '%s': C_Login: %s", name,
		    token_ckr_name(rv));
		r = token_rv_code(rv);
	}
failed:
	pin_free(pin);
	if (asked) {	/* the requests that waited fail with this one */
		ts->dialog_end = clock_now_ms();
		ts->dialog_err = r;
		snprintf(ts->dialog_why, sizeof(ts->dialog_why), "%s (the PIN "
		    "dialog this connection waited for)", token_error(ctx));
	}
	return r;
}

/*
 * Is k's token logged in?  What we remember, checked on k's session: the
 * token logs out by itself when its last session closes (a short-lived
 * session of enroll or tokens, say), or when another program logs out.
 */
void
token_slot_logged_out(struct token_ctx *ctx, struct token_slot *ts)
{
	struct token_key	*k;

	ts->logged_in = 0;
	/* the handles of private objects may go with the login (SoftHSM
	 * drops them): each key is found again after the next login, as
	 * a deferred one is */
	for (k = ctx->keys; k != NULL; k = k->next)
		if (k->ts == ts)
			k->deferred = 1;
}

int
token_logged_in(struct token_ctx *ctx, struct token_key *k)
{
	CK_SESSION_INFO	 si;

	if (!k->ts->logged_in)
		return 0;
	if (k->mod->C_GetSessionInfo(k->session, &si) == CKR_OK &&
	    (si.state == CKS_RO_USER_FUNCTIONS ||
	    si.state == CKS_RW_USER_FUNCTIONS))
		return 1;
	token_slot_logged_out(ctx, k->ts);
	return 0;
}

int
token_login_for(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, struct pin **keep)
{
	if (k->ts == NULL &&
	    (k->ts = token_slot_get(ctx, k->mod, k->slot)) == NULL)
		return P11A_ERR_NOMEM;
	if (!(k->flags & CKF_LOGIN_REQUIRED) || token_logged_in(ctx, k))
		return 0;
	return login(ctx, k, rq, k->pin_source, CKU_USER, keep);
}

int
token_login(struct token_ctx *ctx, struct token_key *k, const char *source)
{
	if (k->ts == NULL &&
	    (k->ts = token_slot_get(ctx, k->mod, k->slot)) == NULL)
		return P11A_ERR_NOMEM;
	if (!(k->flags & CKF_LOGIN_REQUIRED) || token_logged_in(ctx, k))
		return 0;
	return login(ctx, k, NULL, source, CKU_USER, NULL);
}

int
token_login_context(struct token_ctx *ctx, struct token_key *k,
    const struct token_req *rq, struct pin *pin)
{
	struct pin	*keep = pin;

	return login(ctx, k, rq, k->pin_source, CKU_CONTEXT_SPECIFIC,
	    pin != NULL ? &keep : NULL);
}

void
token_logout_key(struct token_ctx *ctx, struct token_key *k)
{
	struct token_slot	*ts = k->ts;

	if (ts == NULL)
		return;
	forget_pin(ts);
	if (ts->logged_in && k->session != CK_INVALID_HANDLE)
		k->mod->C_Logout(k->session);
	if (ts->logged_in)
		token_slot_logged_out(ctx, ts);
}

int
token_logout_all(struct token_ctx *ctx, int *n)
{
	struct token_slot	*ts;
	struct token_key	*k;

	*n = 0;
	for (ts = ctx->slots; ts != NULL; ts = ts->next) {
		forget_pin(ts);
		ts->dialog_err = 0;
		if (!ts->logged_in)
			continue;
		for (k = ctx->keys; k != NULL; k = k->next)
			if (k->ts == ts && k->session != CK_INVALID_HANDLE)
				break;
		if (k != NULL)
			k->mod->C_Logout(k->session);
		token_slot_logged_out(ctx, ts);
		(*n)++;
	}
	return 0;
}

int
token_unlock(struct token_ctx *ctx, const struct token_req *rq, int *n)
{
	struct token_slot	*ts;
	struct token_key	*k;
	char			 first[1024] = "";
	int			 r, err = 0, tried = 0;

	*n = 0;
	for (ts = ctx->slots; ts != NULL; ts = ts->next) {
		ts->rejected = ts->wrong = ts->blocked = 0;
		ts->dialog_err = 0;
	}
	for (k = ctx->keys; k != NULL; k = k->next) {
		if (k->ts == NULL || !(k->flags & CKF_LOGIN_REQUIRED) ||
		    k->ts->logged_in)
			continue;
		tried++;
		if ((r = token_login_for(ctx, k, rq, NULL)) == 0) {
			(*n)++;
			continue;
		}
		if (err == 0) {
			err = r;
			snprintf(first, sizeof(first), "%s", token_error(ctx));
		}
		token_clear_error(ctx);
	}
	if (tried > 0 && *n == 0 && err != 0) {
		token_seterr(ctx, 0, "%s", first);
		return err;
	}
	return 0;
}

/* ---- status: what the agent's status shows of a token */

int
token_key_same_token(const struct token_key *a, const struct token_key *b)
{
	return a->mod == b->mod && a->slot == b->slot;
}

int
token_key_state(struct token_ctx *ctx, struct token_key *k,
    struct token_state *st)
{
	CK_SLOT_INFO	 si;
	CK_SESSION_INFO	 ses;
	CK_TOKEN_INFO	 ti;
	CK_RV		 rv, srv;
	CK_FLAGS	 flags = k->flags;

	(void)ctx;
	memset(st, 0, sizeof(*st));
	token_label(k->label, st->label);
	TOKEN_UNPAD(k->serial, st->serial);
	st->present = TOKEN_STATE_UNKNOWN;
	st->login = TOKEN_STATE_UNKNOWN;
	rv = k->mod->C_GetSlotInfo(k->slot, &si);
	if (rv == CKR_OK && !(si.flags & CKF_TOKEN_PRESENT))
		rv = CKR_TOKEN_NOT_PRESENT;
	if (rv == CKR_OK && (rv = k->mod->C_GetTokenInfo(k->slot, &ti)) ==
	    CKR_OK) {
		flags = ti.flags;
		st->flags_known = 1;
	}
	st->ckr = (uint32_t)rv;
	srv = k->mod->C_GetSessionInfo(k->session, &ses);
	if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED ||
	    rv == CKR_SLOT_ID_INVALID || srv == CKR_SESSION_HANDLE_INVALID ||
	    srv == CKR_SESSION_CLOSED || srv == CKR_DEVICE_REMOVED ||
	    srv == CKR_TOKEN_NOT_PRESENT) {
		/* gone, or pulled and put back: its sessions died with it */
		st->present = TOKEN_STATE_NO;
		st->login = TOKEN_STATE_NO;
	} else if (rv == CKR_OK && srv == CKR_OK)
		st->present = TOKEN_STATE_YES;
	if (st->present != TOKEN_STATE_NO && srv == CKR_OK)
		st->login = ses.state == CKS_RO_USER_FUNCTIONS ||
		    ses.state == CKS_RW_USER_FUNCTIONS ? TOKEN_STATE_YES :
		    !(flags & CKF_LOGIN_REQUIRED) ? TOKEN_STATE_NOT_NEEDED :
		    TOKEN_STATE_NO;
	st->flags = (uint32_t)flags;
	st->refused = k->ts != NULL && (k->ts->rejected || k->ts->blocked);
	return 0;
}
