/*
 * p11agent: status for people, --json and --prometheus (status.h,
 * docs/control-protocol.md).
 *
 * A status_req asks each token helper that runs for its tokens' state
 * (PROTO_STATE) and is built when all have answered or failed, or its
 * wait is over; the answers that come later only free it.  Statuses that
 * start while a helper's STATE is in flight share it (st_flight): however
 * many clients scrape at once, a helper has one STATE at a time.  The tokens
 * are what the helpers say, merged with what the agent knows: a card
 * its helper reported pulled is not present, whatever the new helper
 * (which has not opened it) can tell.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "p11agent/agent.h"
#include "p11agent/audit.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/proto.h"
#include "p11agent/status.h"
#include "p11agent/tunnel.h"

/* what a reload retired (it finishes its connections) is kept at the end
 * of its list, and status shows only what runs */
#define LIVE(x)			((x) != NULL && !(x)->retired)
#define ST_LINE		1024	/* one line of an answer */
#define ST_MAX_IDS	16	/* identities named per token */

/* What a helper said of its tokens. */
enum st_answer_state {
	ANS_WAIT,		/* asked, no answer yet */
	ANS_OK,
	ANS_FAILED,		/* an error reply, or the helper went */
	ANS_TIMEOUT,		/* no answer in time */
	ANS_NOT_RUNNING,	/* being restarted, or given up */
};

struct st_answer {
	struct status_req	*req;
	struct st_answer	*next_sub;	/* sharing its STATE */
	const struct module_rt	*mod;	/* compared, never followed */
	enum st_answer_state	 state;
	char			 why[256];
	struct helper_states	 st;
};

enum st_pin { PIN_OK, PIN_COUNT_LOW, PIN_FINAL_TRY, PIN_LOCKED, PIN_UNKNOWN };
static const char *const pin_names[] = {
	"ok", "count-low", "final-try", "locked", "unknown"
};

/* One token as the status shows it. */
struct st_token {
	const struct module_rt	*mod;
	char			 label[33];
	char			 serial[17];
	int			 present;	/* PROTO_STATE_* */
	int			 login;		/* PROTO_STATE_* */
	enum st_pin		 pin;
	int			 tries;		/* -1: unknown */
	int			 refused;	/* -1: unknown */
	const struct identity	*ids[ST_MAX_IDS];
	int			 nids;
	int			 agent_only;	/* no helper said anything */
	int			 absent;	/* the agent's: card pulled */
};

struct status_req {
	struct agent		*agent;
	enum status_format	 fmt;
	const char		*prefix;
	status_cb		 cb;		/* NULL: cancelled */
	void			*arg;
	long			 deadline;
	int			 done;		/* answered (or cancelled) */
	int			 pending;	/* helper replies to come */
	int			 nans;
	struct st_answer	*ans;
	struct st_token		*toks;
	int			 ntoks;
	char			*out;
	size_t			 len, cap, max;
	int			 cut;
	struct status_req	*next;		/* waiting ones */
};

/* One STATE in flight per helper, shared by the statuses that want it. */
struct st_flight {
	const struct module_rt	*mod;		/* compared, never followed */
	struct st_answer	*subs;
	struct st_flight	*next;
};

static struct status_req	*waiting;
static struct st_flight		*flights;
static long long		 started;

void
status_init(void)
{
	if (started == 0)
		started = (long long)time(NULL);
}

const char *
status_module_label(const struct module_rt *s)
{
	if (s->module != NULL)
		return s->module;
	return s->registry_name ? s->registry_name : "the p11-kit registry";
}

/* ---- the answer's text */

/* Appends one line; a leading "* " becomes the prefix; control
 * characters become '?'. */
static void
say(struct status_req *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say(struct status_req *c, const char *fmt, ...)
{
	char	 line[ST_LINE], *p, *text = line, *n;
	size_t	 len, plen = strlen(c->prefix), need;
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (strncmp(text, "* ", 2) == 0)
		text += 2;
	for (p = text; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	len = strlen(text);
	need = c->len + plen + len + 1;
	if (c->cut || need + 1 > c->max) {
		c->cut = 1;	/* this line, and all after it */
		return;
	}
	if (need + 1 > c->cap) {
		size_t	 cap = c->cap ? c->cap : 16384;

		while (cap < need + 1)
			cap *= 2;
		if (cap > c->max + 1)
			cap = c->max + 1;
		if ((n = realloc(c->out, cap)) == NULL) {
			c->cut = 1;
			return;
		}
		c->out = n;
		c->cap = cap;
	}
	memcpy(c->out + c->len, c->prefix, plen);
	memcpy(c->out + c->len + plen, text, len);
	c->len += plen + len;
	c->out[c->len++] = '\n';
	c->out[c->len] = '\0';
}

/* ---- tokens: the helpers' answers and what the agent knows */

static enum st_pin
pin_state(uint32_t flags)
{
	if (flags & PROTO_CKF_USER_PIN_LOCKED)
		return PIN_LOCKED;
	if (flags & PROTO_CKF_USER_PIN_FINAL_TRY)
		return PIN_FINAL_TRY;
	if (flags & PROTO_CKF_USER_PIN_COUNT_LOW)
		return PIN_COUNT_LOW;
	return PIN_OK;
}

static struct st_answer *
answer_of(struct status_req *c, const struct module_rt *s)
{
	int	 i;

	for (i = 0; i < c->nans; i++)
		if (c->ans[i].mod == s)
			return &c->ans[i];
	return NULL;
}

static struct st_token *
token_new(struct status_req *c, const struct module_rt *s,
    const char *label, const char *serial)
{
	struct st_token	*t = &c->toks[c->ntoks++];

	memset(t, 0, sizeof(*t));
	t->mod = s;
	snprintf(t->label, sizeof(t->label), "%s", label);
	snprintf(t->serial, sizeof(t->serial), "%s", serial);
	t->present = t->login = PROTO_STATE_UNKNOWN;
	t->pin = PIN_UNKNOWN;
	t->tries = t->refused = -1;
	return t;
}

static void
token_add_id(struct st_token *t, const struct identity *id)
{
	if (t->nids < ST_MAX_IDS)
		t->ids[t->nids++] = id;
	if (id->absent) {
		/* its helper said the card was pulled */
		t->absent = 1;
		t->present = PROTO_STATE_NO;
		t->login = PROTO_STATE_NO;
	}
}

/* The answer's token that holds the identity's key, or -1. */
static int
token_of_id(const struct st_answer *a, const struct identity *id)
{
	uint32_t	 i, j;

	if (a == NULL || a->state != ANS_OK || id->pkey == NULL)
		return -1;
	for (i = 0; i < a->st.n; i++)
		for (j = 0; j < a->st.tokens[i].nhandles; j++)
			if (a->st.tokens[i].handles[j] == id->hid.handle)
				return (int)i;
	return -1;
}

/* A token of the helper's answer. */
static void
token_from_answer(struct status_req *c, const struct module_rt *s,
    const struct helper_tstate *ts, int idx, const struct st_answer *a)
{
	struct st_token		*t;
	const struct identity	*id;

	t = token_new(c, s, ts->label, ts->serial);
	t->present = ts->present;
	t->login = ts->login;
	if (ts->flags_known) {
		t->pin = pin_state(ts->flags);
		/* PKCS#11 has no count: only these two say it */
		t->tries = t->pin == PIN_LOCKED ? 0 :
		    t->pin == PIN_FINAL_TRY ? 1 : -1;
	}
	t->refused = ts->refused;
	for (id = c->agent->identities; LIVE(id); id = id->next)
		if (id->mod == s && token_of_id(a, id) == idx)
			token_add_id(t, id);
}

/* The identities no answer covers: a token each (by card), unknown
 * but for what the agent knows (a card pulled). */
static void
tokens_from_agent(struct status_req *c, const struct module_rt *s,
    const struct st_answer *a)
{
	const struct identity	*id;
	struct st_token		*t;
	int			 i;

	for (id = c->agent->identities; LIVE(id); id = id->next) {
		if (id->mod != s || token_of_id(a, id) != -1)
			continue;
		for (i = 0, t = NULL; i < c->ntoks && t == NULL; i++)
			if (c->toks[i].mod == s && c->toks[i].agent_only &&
			    c->toks[i].absent == id->absent &&
			    strcmp(c->toks[i].label, id->tok_label) == 0 &&
			    strcmp(c->toks[i].serial, id->tok_serial) == 0)
				t = &c->toks[i];
		if (t == NULL) {
			t = token_new(c, s, id->tok_label, id->tok_serial);
			t->agent_only = 1;
			t->absent = id->absent;
		}
		token_add_id(t, id);
	}
}

static int
tokens_build(struct status_req *c)
{
	struct agent		*ag = c->agent;
	const struct identity	*id;
	struct st_answer	*a;
	int			 i, max = 0;
	uint32_t		 k;

	for (i = 0; i < c->nans; i++)
		if (c->ans[i].state == ANS_OK)
			max += (int)c->ans[i].st.n;
	for (id = ag->identities; id != NULL; id = id->next)
		max++;
	if (max == 0)
		return 0;
	if ((c->toks = calloc((size_t)max, sizeof(*c->toks))) == NULL)
		return P11A_ERR_NOMEM;
	for (i = 0; i < ag->nmods; i++) {
		if (ag->mods[i]->retiring)
			continue;
		a = answer_of(c, ag->mods[i]);
		for (k = 0; a != NULL && a->state == ANS_OK && k < a->st.n;
		    k++)
			token_from_answer(c, ag->mods[i], &a->st.tokens[k],
			    (int)k, a);
		tokens_from_agent(c, ag->mods[i], a);
	}
	return 0;
}

/* The identities' names: "ec, rsa" or a JSON array's insides. */
static const char *
token_ids(const struct st_token *t, char *buf, size_t size, int json)
{
	size_t	 n = 0, len;
	int	 i;

	buf[0] = '\0';
	/* whole names only: what does not fit is left out (JSON stays
	 * valid), the text says how many */
	for (i = 0; i < t->nids; i++) {
		len = strlen(t->ids[i]->cfg->name) + (json ? 4 : 2);
		if (n + len + 16 >= size)
			break;
		n += (size_t)snprintf(buf + n, size - n, json ? "%s\"%s\"" :
		    "%s%s", i ? ", " : "", t->ids[i]->cfg->name);
	}
	if (i < t->nids && !json)
		snprintf(buf + n, size - n, " and %d more", t->nids - i);
	return buf;
}

static const char *
answer_text(const struct st_answer *a, char *buf, size_t size)
{
	if (a == NULL)
		return "not asked";
	switch (a->state) {
	case ANS_OK:
		return "answered";
	case ANS_WAIT:
	case ANS_TIMEOUT:
		snprintf(buf, size, "not answering within %d s (busy: a PIN "
		    "dialog or a slow token; or hung)", STATUS_WAIT_MS / 1000);
		return buf;
	case ANS_NOT_RUNNING:
		return "not running";
	default:
		snprintf(buf, size, "failed: %s", a->why);
		return buf;
	}
}

static const char *
answer_word(const struct st_answer *a)
{
	if (a == NULL)
		return "not running";
	switch (a->state) {
	case ANS_OK:
		return "answered";
	case ANS_WAIT:
	case ANS_TIMEOUT:
		return "not answering";
	case ANS_NOT_RUNNING:
		return "not running";
	default:
		return "failed";
	}
}

static const char *
yes_no(int v, const char *yes, const char *no, const char *na,
    const char *unknown)
{
	switch (v) {
	case PROTO_STATE_YES:
		return yes;
	case PROTO_STATE_NO:
		return no;
	case PROTO_STATE_NOT_NEEDED:
		return na;
	default:
		return unknown;
	}
}

/* ---- the three forms */


/* s as a JSON string (quoted, escaped) into buf. */
static const char *
jstr(char *buf, size_t size, const char *s)
{
	size_t	 n = 0;

	if (s == NULL)
		return "null";
	buf[n++] = '"';
	for (; *s != '\0' && n + 8 < size; s++) {
		unsigned char	 ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f)
			n += (size_t)snprintf(buf + n, size - n, "\\u%04x", ch);
		else
			buf[n++] = (char)ch;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}

/* "2026-12-01 10:42:07 UTC" */
static const char *
utc(char *buf, size_t size, long long t)
{
	time_t		 tt = (time_t)t;
	struct tm	 tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, size, "?");
	return buf;
}

static const char *
identity_state(const struct identity *id)
{
	if (id->pkey == NULL)
		return "not open";
	if (id->absent)
		return "card removed";
	return "open";
}

static const char *
helper_state(const struct module_rt *s)
{
	if (s->given_up)
		return "given up";
	if (s->dead || s->killed)
		return "restarting";
	return "running";
}

/* One token's line under its helper's, and its helper's silence. */
static void
text_tokens(struct status_req *c, const struct module_rt *s)
{
	const struct st_answer	*a = answer_of(c, s);
	const struct st_token	*t;
	char			 why[320], ids[300], tries[16];
	int			 i;

	if (a != NULL && a->state != ANS_OK)
		say(c, "*   tokens: unknown, the token helper is %s",
		    answer_text(a, why, sizeof(why)));
	for (i = 0; i < c->ntoks; i++) {
		t = &c->toks[i];
		if (t->mod != s)
			continue;
		if (t->tries >= 0)
			snprintf(tries, sizeof(tries), "%d", t->tries);
		else
			snprintf(tries, sizeof(tries), "unknown");
		say(c, "*   token '%s'%s%s%s: %s, %s, PIN %s (tries left: %s)"
		    "%s; identities %s", t->label[0] ? t->label : "?",
		    t->serial[0] ? " (serial " : "", t->serial,
		    t->serial[0] ? ")" : "", yes_no(t->present, "present",
		    t->absent ? "not present (card removed)" : "not present",
		    "present", "presence unknown"), yes_no(t->login,
		    "logged in", "not logged in", "no login needed",
		    "login unknown"), pin_names[t->pin], tries,
		    t->refused == 1 ? "; its PIN was refused: none is tried "
		    "until p11agent unlock" : "",
		    t->nids ? token_ids(t, ids, sizeof(ids), 0) : "none");
	}
}

static const char *
jbool(int v)
{
	return v == PROTO_STATE_YES ? "true" : v == PROTO_STATE_NO ?
	    "false" : "null";
}

/* Known when it is logged in, or says it needs none, or is there and
 * not logged in. */
static const char *
login_required(const struct st_token *t)
{
	if (t->login == PROTO_STATE_NOT_NEEDED)
		return "false";
	if (t->login == PROTO_STATE_YES || (t->login == PROTO_STATE_NO &&
	    t->present == PROTO_STATE_YES))
		return "true";
	return "null";
}

static void
json_tokens(struct status_req *c)
{
	const struct st_token	*t;
	char			 b1[600], b2[100], b3[60], ids[400], n[16];
	int			 i;

	say(c, "*  \"tokens\": [");
	for (i = 0; i < c->ntoks; i++) {
		t = &c->toks[i];
		say(c, "*   {\"module\": %s, \"label\": %s, \"serial\": %s, "
		    "\"identities\": [%s],", jstr(b1, sizeof(b1),
		    status_module_label(t->mod)), jstr(b2, sizeof(b2),
		    t->label[0] ? t->label : NULL), jstr(b3, sizeof(b3),
		    t->serial[0] ? t->serial : NULL),
		    token_ids(t, ids, sizeof(ids), 1));
		if (t->tries >= 0)
			snprintf(n, sizeof(n), "%d", t->tries);
		else
			snprintf(n, sizeof(n), "null");
		say(c, "*    \"present\": %s, \"logged_in\": %s, "
		    "\"login_required\": %s, \"pin_state\": \"%s\", "
		    "\"pin_tries_left\": %s, \"login_refused\": %s}%s",
		    jbool(t->present), t->login == PROTO_STATE_NOT_NEEDED ?
		    "null" : jbool(t->login), login_required(t),
		    pin_names[t->pin], n,
		    t->refused < 0 ? "null" : t->refused ? "true" : "false",
		    i + 1 < c->ntoks ? "," : "");
	}
	say(c, "*  ],");
}

/* The audit trail's latest signatures, newest first (agent/audit.c). */
static void
text_signatures(struct status_req *c)
{
	const struct audit_sig	*g;
	char			 when[40], uid[24], pid[24];
	int			 i;

	if (audit_count() == 0)
		return;
	say(c, "* signatures: %lu since start; the last %lu, newest first:",
	    audit_count(), audit_count() < AUDIT_KEEP ? audit_count() :
	    (unsigned long)AUDIT_KEEP);
	for (i = 0; (g = audit_recent(i)) != NULL; i++) {
		log_num(uid, sizeof(uid), g->uid);
		log_num(pid, sizeof(pid), g->pid);
		say(c, "*   %lu at %s: identity %s, conn %lu (%s) to %s; uid %s "
		    "pid %s %s; %s, %ld ms, %s%s", g->seq,
		    utc(when, sizeof(when), (long long)g->when), g->identity ?
		    g->identity : "?", g->conn, g->tunnel ? g->tunnel : "?",
		    g->upstream ? g->upstream : "?", uid, pid, g->exe ? g->exe :
		    "?", g->mechanism, g->ms, g->ok ? "signed" : "failed: ",
		    g->ok ? "" : g->why ? g->why : "?");
	}
}

/* The JSON array "signatures" (see docs/control-protocol.md). */
static void
json_signatures(struct status_req *c)
{
	const struct audit_sig	*g;
	char			 b1[300], b2[300], b3[300], b4[600], b5[600];
	int			 i;

	say(c, "*  \"signatures_total\": %lu,", audit_count());
	say(c, "*  \"signatures_recent\": [");
	for (i = 0; (g = audit_recent(i)) != NULL; i++) {
		say(c, "*   {\"seq\": %lu, \"at\": %lld, \"ms\": %ld, "
		    "\"ok\": %s, \"error\": %s, \"mechanism\": \"%s\",", g->seq,
		    (long long)g->when, g->ms, jbool(g->ok),
		    jstr(b4, sizeof(b4), g->ok ? NULL : g->why), g->mechanism);
		say(c, "*    \"identity\": %s, \"tunnel\": %s, \"upstream\": %s, "
		    "\"conn\": %lu,", jstr(b1, sizeof(b1), g->identity),
		    jstr(b2, sizeof(b2), g->tunnel), jstr(b3, sizeof(b3),
		    g->upstream), g->conn);
		say(c, "*    \"uid\": %ld, \"pid\": %ld, \"exe\": %s}%s", g->uid,
		    g->pid, jstr(b5, sizeof(b5), g->exe),
		    audit_recent(i + 1) != NULL ? "," : "");
	}
	say(c, "*  ],");
}

static void
status_text(struct status_req *c, struct agent *a)
{
	const struct tunnel_rt	*rt;
	const struct tunnel_stats *st;
	const struct identity	*id;
	const struct module_rt	*s;
	const struct helper_sign_stats *ss;
	char			 fails[256], addrs[512], when[40];
	size_t			 n;
	int			 i;

	say(c, "* agent: pid %ld, up %lld s, %d connections open",
	    (long)getpid(), (long long)time(NULL) - started, a->nconns);
	for (rt = a->tunnels; LIVE(rt); rt = rt->next) {
		st = rt->stats;
		addrs[0] = '\0';
		for (i = 0; i < rt->nlisten; i++) {
			n = strlen(addrs);
			snprintf(addrs + n, sizeof(addrs) - n, "%s%s",
			    i ? " " : "", rt->listen[i].addr);
		}
		say(c, "* tunnel %s: listen %s; to %s:%s; identity %s",
		    rt->cfg->name, addrs[0] ? addrs : "(none)",
		    rt->cfg->connect_host, rt->cfg->connect_port,
		    rt->cfg->identity_name);
		say(c, "*   %d open, %llu connections, %llu handshakes "
		    "(%llu resumed), %llu bytes up, %llu down, failed: %s",
		    st->open, st->accepted, st->handshakes, st->resumed,
		    st->bytes_up, st->bytes_down,
		    tunnel_fails(st, fails, sizeof(fails)));
		if (st->last_err_at != 0)
			say(c, "*   last error at %s: %s",
			    utc(when, sizeof(when), st->last_err_at),
			    st->last_err);
	}
	for (id = a->identities; LIVE(id); id = id->next)
		say(c, "* identity %s: %s; %s%s%s%s%s", id->cfg->name,
		    identity_state(id), id->cfg->key,
		    id->tok_label[0] ? "; token '" : "", id->tok_label,
		    id->tok_label[0] ? "' serial " : "", id->tok_serial);
	for (i = 0; i < a->nmods; i++) {
		s = a->mods[i];
		say(c, "* token helper for %s: %s, pid %ld, %d restarts",
		    status_module_label(s), helper_state(s), s->helper != NULL ?
		    (long)helper_pid(s->helper) : -1L, s->restarts);
		if (s->helper != NULL) {
			ss = helper_sign_stats(s->helper);
			say(c, "*   %llu signatures (%llu failed), %.1f ms each "
			    "on average, at most %llu ms", ss->ok, ss->failed,
			    ss->ok ? (double)ss->total_ms / (double)ss->ok :
			    0.0, ss->max_ms);
		}
		text_tokens(c, s);
	}
	text_signatures(c);
}

static void
status_json(struct status_req *c, struct agent *a)
{
	const struct tunnel_rt	*rt;
	const struct tunnel_stats *st;
	const struct identity	*id;
	const struct module_rt	*s;
	static const struct helper_sign_stats none;
	const struct helper_sign_stats *ss;
	char			 b1[600], b2[900], b3[300], b4[120];
	size_t			 n;
	int			 i, f;

	say(c, "* {\"version\": 1,");
	say(c, "*  \"agent\": {\"pid\": %ld, \"uptime_seconds\": %lld, "
	    "\"connections_open\": %d},", (long)getpid(),
	    (long long)time(NULL) - started, a->nconns);
	say(c, "*  \"tunnels\": [");
	for (rt = a->tunnels; LIVE(rt); rt = rt->next) {
		st = rt->stats;
		say(c, "*   {\"name\": %s, \"upstream\": %s, \"identity\": %s,",
		    jstr(b1, sizeof(b1), rt->cfg->name),
		    jstr(b2, sizeof(b2), rt->cfg->connect_host),
		    jstr(b3, sizeof(b3), rt->cfg->identity_name));
		say(c, "*    \"upstream_port\": %s, \"listen\": [",
		    jstr(b1, sizeof(b1), rt->cfg->connect_port));
		for (i = 0; i < rt->nlisten; i++)
			say(c, "*     %s%s", jstr(b1, sizeof(b1),
			    rt->listen[i].addr), i + 1 < rt->nlisten ? "," : "");
		say(c, "*    ], \"connections_open\": %d, \"connections\": %llu, "
		    "\"handshakes\": %llu, \"handshakes_resumed\": %llu,",
		    st->open, st->accepted, st->handshakes, st->resumed);
		say(c, "*    \"bytes_up\": %llu, \"bytes_down\": %llu, "
		    "\"failed\": {", st->bytes_up, st->bytes_down);
		for (f = 0; f < TFAIL_MAX; f++)
			say(c, "*     \"%s\": %llu%s", tunnel_fail_name(f),
			    st->failed[f], f + 1 < TFAIL_MAX ? "," : "");
		if (st->last_err_at != 0)
			say(c, "*    }, \"last_error\": {\"at\": %lld, \"text\": "
			    "%s}}%s", st->last_err_at,
			    jstr(b1, sizeof(b1), st->last_err),
			    LIVE(rt->next) ? "," : "");
		else
			say(c, "*    }, \"last_error\": null}%s",
			    LIVE(rt->next) ? "," : "");
	}
	say(c, "*  ],");
	say(c, "*  \"identities\": [");
	for (id = a->identities; LIVE(id); id = id->next) {
		say(c, "*   {\"name\": %s, \"state\": \"%s\",",
		    jstr(b1, sizeof(b1), id->cfg->name), identity_state(id));
		say(c, "*    \"key\": %s,", jstr(b2, sizeof(b2), id->cfg->key));
		say(c, "*    \"token\": %s, \"serial\": %s, \"removals\": %llu, "
		    "\"queue_depth\": %d}%s",
		    jstr(b3, sizeof(b3), id->tok_label[0] ? id->tok_label :
		    NULL), jstr(b4, sizeof(b4), id->tok_serial[0] ?
		    id->tok_serial : NULL), id->removals, id->hsq_len,
		    LIVE(id->next) ? "," : "");
	}
	say(c, "*  ],");
	json_signatures(c);
	json_tokens(c);
	say(c, "*  \"helpers\": [");
	for (i = 0; i < a->nmods; i++) {
		s = a->mods[i];
		say(c, "*   {\"module\": %s, \"state\": \"%s\", \"pid\": %ld, "
		    "\"restarts\": %d, \"token_state\": \"%s\",",
		    jstr(b1, sizeof(b1), status_module_label(s)),
		    helper_state(s), s->helper != NULL ?
		    (long)helper_pid(s->helper) : -1L, s->restarts,
		    answer_word(answer_of(c, s)));
		ss = s->helper != NULL ? helper_sign_stats(s->helper) : &none;
		say(c, "*    \"signatures\": %llu, \"signatures_failed\": %llu, "
		    "\"sign_ms_total\": %llu, \"sign_ms_max\": %llu, "
		    "\"pin_prompts\": %llu,", ss->ok, ss->failed, ss->total_ms,
		    ss->max_ms, ss->prompts);
		b1[0] = '\0';
		for (f = 0; f < HELPER_SIGN_BUCKETS; f++) {
			n = strlen(b1);
			if (helper_sign_buckets_ms[f] == INT_MAX)
				snprintf(b1 + n, sizeof(b1) - n, "\"+Inf\": %llu",
				    ss->le[f]);
			else
				snprintf(b1 + n, sizeof(b1) - n, "\"%d\": %llu, ",
				    helper_sign_buckets_ms[f], ss->le[f]);
		}
		say(c, "*    \"sign_ms_buckets\": {%s}}%s", b1,
		    i + 1 < a->nmods ? "," : "");
	}
	say(c, "*  ]}");
}

/* s as a Prometheus label value (escaped, not quoted) into buf. */
static const char *
plabel(char *buf, size_t size, const char *s)
{
	size_t	 n = 0;

	for (; s != NULL && *s != '\0' && n + 3 < size; s++) {
		if (*s == '\\' || *s == '"') {
			buf[n++] = '\\';
			buf[n++] = *s;
		} else if (*s == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
		} else
			buf[n++] = *s;
	}
	buf[n] = '\0';
	return buf;
}

/* "# HELP" and "# TYPE" of one metric family. */
static void
family(struct status_req *c, const char *name, const char *type,
    const char *help)
{
	say(c, "* # HELP %s %s", name, help);
	say(c, "* # TYPE %s %s", name, type);
}

/* The labels of a token's samples: module, token, serial. */
static const char *
tlabels(char *buf, size_t size, const struct st_token *t)
{
	char	 m[300], l[80], s[40];

	snprintf(buf, size, "module=\"%s\",token=\"%s\",serial=\"%s\"",
	    plabel(m, sizeof(m), status_module_label(t->mod)),
	    plabel(l, sizeof(l), t->label), plabel(s, sizeof(s), t->serial));
	return buf;
}

/* An earlier token has the same labels: its samples are said (a series
 * twice would make the whole scrape invalid). */
static int
same_series(const struct status_req *c, int i)
{
	const struct st_token	*t = &c->toks[i];
	int			 j;

	for (j = 0; j < i; j++)
		if (c->toks[j].mod == t->mod &&
		    strcmp(c->toks[j].label, t->label) == 0 &&
		    strcmp(c->toks[j].serial, t->serial) == 0)
			return 1;
	return 0;
}

static void
prometheus_tokens(struct status_req *c, struct agent *a)
{
	const struct st_token	*t;
	char			 l[480];
	int			 i, p;

/* each token whose labels no earlier one had */
#define EACH_TOKEN	for (i = 0; i < c->ntoks; i++) \
			    if ((t = &c->toks[i]), !same_series(c, i))
	family(c, "p11agent_helper_answering", "gauge",
	    "Whether the module's token helper answered this status in time "
	    "(0: busy with a PIN dialog or a slow token, hung, or not "
	    "running): its tokens' samples are missing then.");
	for (i = 0; i < a->nmods; i++) {
		if (a->mods[i]->retiring)
			continue;
		say(c, "* p11agent_helper_answering{module=\"%s\"} %d",
		    plabel(l, sizeof(l), status_module_label(a->mods[i])),
		    answer_word(answer_of(c, a->mods[i]))[0] == 'a');
	}
	family(c, "p11agent_token_present", "gauge",
	    "Whether the token (the card) is in its reader; missing when "
	    "unknown.");
	EACH_TOKEN
		if (t->present == PROTO_STATE_YES || t->present == PROTO_STATE_NO)
			say(c, "* p11agent_token_present{%s} %d",
			    tlabels(l, sizeof(l), t),
			    t->present == PROTO_STATE_YES);
	family(c, "p11agent_token_logged_in", "gauge",
	    "Whether the token is logged in (its keys sign without a PIN); "
	    "missing when unknown or when the token needs no login.");
	EACH_TOKEN
		if (t->login == PROTO_STATE_YES || t->login == PROTO_STATE_NO)
			say(c, "* p11agent_token_logged_in{%s} %d",
			    tlabels(l, sizeof(l), t),
			    t->login == PROTO_STATE_YES);
	family(c, "p11agent_token_pin_state", "gauge",
	    "The token's PIN state from its flags: 1 for the current one; "
	    "missing when unknown.");
	EACH_TOKEN
		for (p = PIN_OK; t->pin != PIN_UNKNOWN && p < PIN_UNKNOWN; p++)
			say(c, "* p11agent_token_pin_state{%s,state=\"%s\"} %d",
			    tlabels(l, sizeof(l), t), pin_names[p],
			    (int)t->pin == p);
	family(c, "p11agent_token_pin_tries_left", "gauge",
	    "PIN tries left, where the token's flags tell (final try: 1, "
	    "locked: 0); PKCS#11 gives no count otherwise.");
	EACH_TOKEN
		if (t->tries >= 0)
			say(c, "* p11agent_token_pin_tries_left{%s} %d",
			    tlabels(l, sizeof(l), t), t->tries);
	family(c, "p11agent_token_login_refused", "gauge",
	    "1 when the token refused the PIN from a file, env or fd source "
	    "(or the PIN is locked) and p11agent tries no login on it until "
	    "p11agent unlock.");
	EACH_TOKEN
		if (t->refused >= 0)
			say(c, "* p11agent_token_login_refused{%s} %d",
			    tlabels(l, sizeof(l), t), t->refused);
#undef EACH_TOKEN
}

static void
status_prometheus(struct status_req *c, struct agent *a)
{
	static const struct helper_sign_stats none;
	const struct helper_sign_stats *ss;
	const struct tunnel_rt	*rt;
	const struct identity	*id;
	const struct module_rt	*s;
	char			 l[300];
	int			 i, f;

#define EACH_TUNNEL	for (rt = a->tunnels; LIVE(rt); rt = rt->next)
#define TL		plabel(l, sizeof(l), rt->cfg->name)
#define EACH_MODULE	for (i = 0; i < a->nmods && ((s = a->mods[i]), \
			    (ss = s->helper != NULL ? \
			    helper_sign_stats(s->helper) : &none), 1); i++)
#define ML		plabel(l, sizeof(l), status_module_label(s))
	family(c, "p11agent_start_time_seconds", "gauge",
	    "When the agent started, in seconds since the epoch.");
	say(c, "* p11agent_start_time_seconds %lld", started);
	family(c, "p11agent_connections_total", "counter",
	    "Client connections accepted, refused ones included.");
	EACH_TUNNEL
		say(c, "* p11agent_connections_total{tunnel=\"%s\"} %llu", TL,
		    rt->stats->accepted);
	family(c, "p11agent_connections_open", "gauge",
	    "Client connections open now.");
	EACH_TUNNEL
		say(c, "* p11agent_connections_open{tunnel=\"%s\"} %d", TL,
		    rt->stats->open);
	family(c, "p11agent_handshakes_total", "counter",
	    "TLS handshakes with the upstream completed, full (signed on the "
	    "token) or resumed.");
	EACH_TUNNEL {
		say(c, "* p11agent_handshakes_total{tunnel=\"%s\",kind=\"full\"} "
		    "%llu", TL, rt->stats->handshakes - rt->stats->resumed);
		say(c, "* p11agent_handshakes_total{tunnel=\"%s\",kind="
		    "\"resumed\"} %llu", TL, rt->stats->resumed);
	}
	family(c, "p11agent_connection_failures_total", "counter",
	    "Connections that ended in failure, by reason.");
	EACH_TUNNEL
		for (f = 0; f < TFAIL_MAX; f++)
			say(c, "* p11agent_connection_failures_total{tunnel="
			    "\"%s\",reason=\"%s\"} %llu", TL,
			    tunnel_fail_name(f), rt->stats->failed[f]);
	family(c, "p11agent_access_denials_total", "counter",
	    "Connections refused because the local peer may not use the "
	    "tunnel.");
	EACH_TUNNEL
		say(c, "* p11agent_access_denials_total{tunnel=\"%s\"} %llu",
		    TL, rt->stats->failed[TFAIL_DENIED]);
	family(c, "p11agent_bytes_total", "counter",
	    "Bytes carried: up is client to upstream, down the other way.");
	EACH_TUNNEL {
		say(c, "* p11agent_bytes_total{tunnel=\"%s\",direction=\"up\"} "
		    "%llu", TL, rt->stats->bytes_up);
		say(c, "* p11agent_bytes_total{tunnel=\"%s\",direction="
		    "\"down\"} %llu", TL, rt->stats->bytes_down);
	}
	family(c, "p11agent_token_signatures_total", "counter",
	    "Signatures the tunnels' handshakes asked of a module's token "
	    "helper, by result.");
	EACH_MODULE {
		say(c, "* p11agent_token_signatures_total{module=\"%s\",result="
		    "\"ok\"} %llu", ML, ss->ok);
		say(c, "* p11agent_token_signatures_total{module=\"%s\",result="
		    "\"failed\"} %llu", ML, ss->failed);
	}
	family(c, "p11agent_token_signature_duration_seconds", "histogram",
	    "Time from a signature request to its answer, of the answered "
	    "ones, PIN dialogs included (whole milliseconds).");
	EACH_MODULE {
		for (f = 0; f < HELPER_SIGN_BUCKETS; f++) {
			if (helper_sign_buckets_ms[f] == INT_MAX)
				say(c, "* p11agent_token_signature_duration_"
				    "seconds_bucket{module=\"%s\",le=\"+Inf\"} "
				    "%llu", ML, ss->le[f]);
			else
				say(c, "* p11agent_token_signature_duration_"
				    "seconds_bucket{module=\"%s\",le=\"%g\"} "
				    "%llu", ML, helper_sign_buckets_ms[f] / 1e3,
				    ss->le[f]);
		}
		say(c, "* p11agent_token_signature_duration_seconds_sum{module="
		    "\"%s\"} %.3f", ML, (double)ss->total_ms / 1e3);
		say(c, "* p11agent_token_signature_duration_seconds_count{"
		    "module=\"%s\"} %llu", ML, ss->ok);
	}
	family(c, "p11agent_pin_prompts_total", "counter",
	    "PIN dialogs a module's token helper opened.");
	EACH_MODULE
		say(c, "* p11agent_pin_prompts_total{module=\"%s\"} %llu", ML,
		    ss->prompts);
	family(c, "p11agent_helper_restarts_total", "counter",
	    "Token helpers started again after the first.");
	EACH_MODULE
		say(c, "* p11agent_helper_restarts_total{module=\"%s\"} %d", ML,
		    s->restarts);
	family(c, "p11agent_handshake_queue_depth", "gauge",
	    "Full handshakes waiting for a free slot on the identity's "
	    "token.");
	for (id = a->identities; LIVE(id); id = id->next)
		say(c, "* p11agent_handshake_queue_depth{identity=\"%s\"} %d",
		    plabel(l, sizeof(l), id->cfg->name), id->hsq_len);
	family(c, "p11agent_token_removals_total", "counter",
	    "Times the identity's card was pulled.");
	for (id = a->identities; LIVE(id); id = id->next)
		say(c, "* p11agent_token_removals_total{identity=\"%s\"} %llu",
		    plabel(l, sizeof(l), id->cfg->name), id->removals);
	prometheus_tokens(c, a);
#undef EACH_TUNNEL
#undef TL
#undef EACH_MODULE
#undef ML
}


/* ---- the requests */

static void
req_free(struct status_req *c)
{
	int	 i;

	for (i = 0; i < c->nans; i++)
		helper_states_clear(&c->ans[i].st);
	free(c->ans);
	free(c->toks);
	free(c->out);
	free(c);
}

static void
build(struct status_req *c)
{
	if (tokens_build(c) != 0) {
		c->cut = 1;
		return;
	}
	switch (c->fmt) {
	case STATUS_TEXT:
		status_text(c, c->agent);
		break;
	case STATUS_JSON:
		status_json(c, c->agent);
		break;
	default:
		status_prometheus(c, c->agent);
		break;
	}
}

/* Answers (once) and frees the request once no reply is to come. */
static void
finish(struct status_req *c)
{
	struct status_req	**pp;
	char			 *text;

	if (!c->done) {
		c->done = 1;
		for (pp = &waiting; *pp != NULL; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		if (c->cb != NULL) {
			build(c);
			if ((text = c->out) == NULL && !c->cut)
				text = strdup("");
			c->out = NULL;
			c->cb(c->arg, text, text != NULL ? c->len : 0, c->cut);
		}
	}
	if (c->pending == 0)
		req_free(c);
}

static void
finish_deferred(void *arg)
{
	finish(arg);
}

/* A STATE in service for longer than a signature may take is hung. */
static int
state_timeout(const struct agent *ag, const struct module_rt *s)
{
	const struct identity	*id;
	int			 ms = STATUS_STATE_MS;

	for (id = ag->identities; id != NULL; id = id->next)
		if (id->mod == s && id->cfg->sign_timeout > 0 &&
		    id->cfg->sign_timeout < ms / 1000)
			ms = id->cfg->sign_timeout * 1000;
	return ms < STATUS_WAIT_MS ? STATUS_WAIT_MS : ms;
}

/* An answer of one status: the helper's tokens (copied), or why none. */
static void
answer_set(struct st_answer *a, int err, const char *why,
    const struct helper_states *st)
{
	struct status_req	*c = a->req;

	if (!c->done) {
		if (err == 0 && st->n > 0 && (a->st.tokens = calloc(st->n,
		    sizeof(*a->st.tokens))) == NULL) {
			err = P11A_ERR_NOMEM;
			why = "out of memory";
		}
		if (err == 0) {
			a->st.n = st->n;
			if (st->n > 0)
				memcpy(a->st.tokens, st->tokens, st->n *
				    sizeof(*st->tokens));
			a->state = ANS_OK;
		} else if (err == P11A_ERR_TIMEOUT)
			a->state = ANS_TIMEOUT;
		else {
			a->state = ANS_FAILED;
			snprintf(a->why, sizeof(a->why), "%s", why != NULL ?
			    why : p11a_strerror(err));
		}
	}
	if (--c->pending == 0)
		finish(c);
}

/* The STATE reply (or its failure) goes to every status that shares it. */
static void
state_answered(void *arg, int err, const char *why, struct pbuf *reply)
{
	struct st_flight	*f = arg, **pp;
	struct st_answer	*a, *next;
	struct helper_states	 st;

	for (pp = &flights; *pp != NULL; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	memset(&st, 0, sizeof(st));
	if (err == 0 && (err = helper_parse_states(reply, &st)) != 0)
		why = "a malformed STATE reply";
	for (a = f->subs; a != NULL; a = next) {
		next = a->next_sub;
		answer_set(a, err, why, &st);
	}
	helper_states_clear(&st);
	free(f);
}

/* Asks s for its tokens, or joins the request in flight: one at a time
 * per helper, however many statuses (scrapes) come at once. */
static int
state_ask(struct agent *ag, struct module_rt *s, struct st_answer *a)
{
	struct st_flight	*f;
	struct pbuf		 req;
	int			 r;

	for (f = flights; f != NULL && f->mod != s; f = f->next)
		;
	if (f == NULL) {
		if ((f = calloc(1, sizeof(*f))) == NULL)
			return P11A_ERR_NOMEM;
		pbuf_init(&req);
		r = helper_request(s->helper, PROTO_STATE, &req,
		    state_timeout(ag, s), state_answered, f);
		pbuf_clear(&req);
		if (r != 0) {
			free(f);
			return r;
		}
		f->mod = s;
		f->next = flights;
		flights = f;
	}
	a->next_sub = f->subs;
	f->subs = a;
	return 0;
}

int
status_start(struct agent *ag, enum status_format fmt, const char *prefix,
    size_t max, status_cb cb, void *arg, struct status_req **out)
{
	struct status_req	*c;
	struct module_rt	*s;
	struct st_answer	*a;
	int			 i, r;

	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->ans = calloc(ag->nmods > 0 ? (size_t)ag->nmods : 1,
	    sizeof(*c->ans))) == NULL) {
		free(c);
		return P11A_ERR_NOMEM;
	}
	c->agent = ag;
	c->fmt = fmt;
	c->prefix = prefix != NULL ? prefix : "";
	c->max = max;
	c->cb = cb;
	c->arg = arg;
	c->deadline = clock_now_ms() + STATUS_WAIT_MS;
	for (i = 0; i < ag->nmods; i++) {
		s = ag->mods[i];
		if (s->retiring)
			continue;
		a = &c->ans[c->nans++];
		a->req = c;
		a->mod = s;
		if (s->helper == NULL || s->dead || s->killed || ag->stopping) {
			a->state = ANS_NOT_RUNNING;
			continue;
		}
		if ((r = state_ask(ag, s, a)) == 0) {
			c->pending++;
			continue;
		}
		a->state = ANS_FAILED;
		snprintf(a->why, sizeof(a->why), "cannot ask it: %s",
		    p11a_strerror(r));
	}
	if (c->pending == 0)
		loop_defer(finish_deferred, c);	/* never from inside */
	else {
		c->next = waiting;
		waiting = c;
	}
	*out = c;
	return 0;
}

void
status_cancel(struct status_req *c)
{
	if (c != NULL)
		c->cb = NULL;
}

void
status_tick(long now)
{
	struct status_req	*c, *next;

	for (c = waiting; c != NULL; c = next) {
		next = c->next;
		if (now >= c->deadline)
			finish(c);
	}
}
