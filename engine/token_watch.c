/*
 * p11agent: the helper's watch on the tokens that hold its opened keys
 * (token.h).  A card can be pulled at any time; the helper notices it
 * without blocking its request loop and tells the agent (PROTO_EVENT).
 *
 * Each slot holding opened keys is looked at every poll interval:
 *
 *   PRESENT (the card the keys were opened on, sessions alive):
 *	C_GetSlotInfo (CKF_TOKEN_PRESENT) and C_GetSessionInfo on one of
 *	the keys' sessions; a card that is gone, or was pulled and put back
 *	between two looks (its sessions are then invalid), is "removed".
 *   GONE, or BACK (a card is there but the keys' sessions died with the
 *   old one):
 *	C_GetSlotInfo, and when a token is present C_GetTokenInfo; a card
 *	that appears, or another card, is "inserted" with its label, serial
 *	and flags.  A card that is there but cannot be read by this process
 *	(SoftHSM after its token directory changed) is "inserted" with an
 *	empty serial and the CKR that C_GetTokenInfo gave.
 *
 * Modules that support C_WaitForSlotEvent(CKF_DONT_BLOCK) are asked for
 * events at each look too; a PRESENT slot an event names (or any slot
 * after a failed call) gets a closer look: C_GetTokenInfo, whose serial
 * must still be the card's, so a card swapped between two looks on a
 * module whose sessions survive that is noticed too.  CKR_NO_EVENT
 * proves nothing (SoftHSM answers it and never has an event), so the
 * looks above go on whatever the module says.  A blocking
 * C_WaitForSlotEvent would need a thread inside the module that only
 * C_Finalize can stop, which modules implement unevenly: not used.
 *
 * A call that fails because the token or session is gone (token_watch_
 * lost) makes the next look happen at once, a close one.  After "removed" the keys of
 * that slot are never used again by this process: the agent starts a new
 * helper for the card that comes back.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "p11agent/clock.h"
#include "p11agent/error.h"
#include "p11agent/proto.h"
#include "p11agent/token.h"
#include "token_int.h"

#define WATCH_MAX_SLOTS	64
#define WATCH_MAX_KEYS	64	/* per slot */
#define WATCH_MAX_MODS	8	/* modules asked for slot events */
#define WATCH_EVENTS	8	/* events drained per look and module */

enum wstate { W_PRESENT, W_GONE, W_BACK };

struct wslot {
	CK_FUNCTION_LIST	*mod;
	CK_SLOT_ID		 slot;
	enum wstate		 state;
	int			 due;		/* look now */
	char			 label[33];	/* the card opened */
	char			 serial[17];
	char			 seen[17];	/* BACK: the card there now */
	uint32_t		 handles[WATCH_MAX_KEYS];
	struct token_key	*keys[WATCH_MAX_KEYS];
	int			 nkeys;
};

struct wmod {
	CK_FUNCTION_LIST	*mod;
	int			 no_events;	/* WaitForSlotEvent unusable */
};

struct token_watch {
	int			 poll_ms;
	long			 next;		/* the next look (ms) */
	struct wslot		 slots[WATCH_MAX_SLOTS];
	int			 nslots;
	struct wmod		 mods[WATCH_MAX_MODS];
	int			 nmods;
	token_watch_cb		 cb;
	void			*arg;
};

int
token_watch_new(int poll_ms, token_watch_cb cb, void *arg,
    struct token_watch **out)
{
	struct token_watch	*w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return P11A_ERR_NOMEM;
	w->poll_ms = poll_ms > 0 ? poll_ms : TOKEN_WATCH_DEFAULT_MS;
	w->next = clock_now_ms() + w->poll_ms;
	w->cb = cb;
	w->arg = arg;
	*out = w;
	return 0;
}

void
token_watch_free(struct token_watch *w)
{
	free(w);
}

static struct wslot *
slot_find(struct token_watch *w, CK_FUNCTION_LIST *mod, CK_SLOT_ID slot)
{
	int	 i;

	for (i = 0; i < w->nslots; i++)
		if (w->slots[i].mod == mod && w->slots[i].slot == slot)
			return &w->slots[i];
	return NULL;
}

static void
mod_add(struct token_watch *w, CK_FUNCTION_LIST *mod)
{
	int	 i;

	for (i = 0; i < w->nmods; i++)
		if (w->mods[i].mod == mod)
			return;
	if (w->nmods == WATCH_MAX_MODS)
		return;		/* polled all the same */
	w->mods[w->nmods].mod = mod;
	w->mods[w->nmods++].no_events = 0;
}

int
token_watch_add(struct token_watch *w, uint32_t handle, struct token_key *k)
{
	struct wslot	*s;

	if ((s = slot_find(w, k->mod, k->slot)) == NULL) {
		if (w->nslots == WATCH_MAX_SLOTS)
			return P11A_ERR_TOO_LARGE;
		s = &w->slots[w->nslots++];
		memset(s, 0, sizeof(*s));
		s->mod = k->mod;
		s->slot = k->slot;
		s->state = W_PRESENT;
		token_label(k->label, s->label);
		TOKEN_UNPAD(k->serial, s->serial);
		mod_add(w, k->mod);
	}
	if (s->state != W_PRESENT)
		return 0;	/* opened on a card that is gone since */
	if (s->nkeys == WATCH_MAX_KEYS)
		return P11A_ERR_TOO_LARGE;
	s->handles[s->nkeys] = handle;
	s->keys[s->nkeys++] = k;
	return 0;
}

int
token_watch_timeout(const struct token_watch *w, long now)
{
	long	 left;

	if (w->nslots == 0)
		return -1;
	if ((left = w->next - now) < 0)
		return 0;
	return (int)left;
}

void
token_watch_lost(struct token_watch *w)
{
	int	 i;

	for (i = 0; i < w->nslots; i++)
		w->slots[i].due = 1;
	w->next = 0;
}

/* Errors that say the card (or our session on it) is gone. */
static int
gone(CK_RV rv)
{
	switch (rv) {
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_ERROR:
	case CKR_SLOT_ID_INVALID:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return 1;
	default:
		return 0;
	}
}

/* Builds and hands over one PROTO_EVENT payload. */
static void
emit(struct token_watch *w, const struct wslot *s, int kind,
    const char *label, const char *serial, CK_FLAGS flags, CK_RV rv)
{
	struct pbuf	 b;
	int		 i;

	pbuf_init(&b);
	pbuf_put_u8(&b, (uint8_t)kind);
	pbuf_put_u32(&b, (uint32_t)s->nkeys);
	for (i = 0; i < s->nkeys; i++)
		pbuf_put_u32(&b, s->handles[i]);
	pbuf_put_str(&b, label);
	pbuf_put_str(&b, serial);
	pbuf_put_u32(&b, (uint32_t)flags);
	pbuf_put_u32(&b, (uint32_t)rv);
	if (b.err == 0 && w->cb != NULL)
		w->cb(w->arg, &b);
	pbuf_clear(&b);
}

/* PRESENT: is the card still there, are our sessions alive? */
static void
look_present(struct token_watch *w, struct wslot *s)
{
	CK_SLOT_INFO	 si;
	CK_SESSION_INFO	 ses;
	CK_TOKEN_INFO	 ti;
	CK_RV		 rv;

	char		 serial[17];
	int		 other = 0;

	rv = s->mod->C_GetSlotInfo(s->slot, &si);
	if (rv == CKR_OK && !(si.flags & CKF_TOKEN_PRESENT))
		rv = CKR_TOKEN_NOT_PRESENT;
	if (rv == CKR_OK && s->nkeys > 0)
		rv = s->mod->C_GetSessionInfo(s->keys[0]->session, &ses);
	if (rv == CKR_OK && s->due) {
		/* an event or a failed call: is it still our card? */
		if ((rv = s->mod->C_GetTokenInfo(s->slot, &ti)) == CKR_OK) {
			TOKEN_UNPAD(ti.serialNumber, serial);
			other = strcmp(serial, s->serial) != 0;
		}
	}
	if (!other && (rv == CKR_OK || !gone(rv)))
		return;
	s->state = W_GONE;
	s->seen[0] = '\0';
	emit(w, s, TOKEN_EVENT_REMOVED, s->label, s->serial, 0, rv);
}

/* GONE or BACK: has a card come, or another one? */
static void
look_absent(struct token_watch *w, struct wslot *s)
{
	CK_SLOT_INFO	 si;
	CK_TOKEN_INFO	 ti;
	char		 label[33], serial[17];
	CK_RV		 rv;

	rv = s->mod->C_GetSlotInfo(s->slot, &si);
	if (rv == CKR_OK && !(si.flags & CKF_TOKEN_PRESENT))
		rv = CKR_TOKEN_NOT_PRESENT;
	if (rv == CKR_OK)
		rv = s->mod->C_GetTokenInfo(s->slot, &ti);
	if (rv != CKR_OK && gone(rv)) {
		if (s->state == W_BACK)	/* the card seen went again */
			emit(w, s, TOKEN_EVENT_REMOVED, "", s->seen, 0, rv);
		s->state = W_GONE;
		return;
	}
	if (rv != CKR_OK) {
		/* there, unreadable here: a new process may read it */
		label[0] = serial[0] = '\0';
		memset(&ti, 0, sizeof(ti));
	} else {
		token_label(ti.label, label);
		TOKEN_UNPAD(ti.serialNumber, serial);
	}
	if (s->state == W_BACK && strcmp(serial, s->seen) == 0)
		return;
	s->state = W_BACK;
	memcpy(s->seen, serial, sizeof(s->seen));
	emit(w, s, TOKEN_EVENT_INSERTED, label, serial, ti.flags, rv);
}

/* Slot events of the modules that have them: their slots are due. */
static void
drain_events(struct token_watch *w)
{
	struct wslot	*s;
	CK_SLOT_ID	 slot;
	CK_RV		 rv;
	int		 i, n;

	for (i = 0; i < w->nmods; i++) {
		if (w->mods[i].no_events)
			continue;
		for (n = 0; n < WATCH_EVENTS; n++) {
			rv = w->mods[i].mod->C_WaitForSlotEvent(CKF_DONT_BLOCK,
			    &slot, NULL);
			if (rv == CKR_NO_EVENT)
				break;
			if (rv != CKR_OK) {
				w->mods[i].no_events = 1;
				break;
			}
			if ((s = slot_find(w, w->mods[i].mod, slot)) != NULL)
				s->due = 1;
		}
	}
}

int
token_watch_all_present(const struct token_watch *w)
{
	int	 i;

	for (i = 0; i < w->nslots; i++)
		if (w->slots[i].state != W_PRESENT)
			return 0;
	return 1;
}

int
token_watch_run(struct token_watch *w, long now)
{
	struct wslot	*s;
	int		 i;

	if (w->nslots == 0 || now < w->next)
		return 0;
	drain_events(w);
	for (i = 0; i < w->nslots; i++) {
		s = &w->slots[i];
		if (s->state == W_PRESENT)
			look_present(w, s);
		else
			look_absent(w, s);
		s->due = 0;
	}
	w->next = now + w->poll_ms;
	return 0;
}
