/*
 * p11agent: the agent's side of MODULES and PROBE (registry mode: one
 * helper per module; the agent probes them all and opens the key on the
 * one helper whose module has the token).  Replies are untrusted input:
 * every count and field is checked against its limit and the payload.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

/* The smallest encoding of one entry: two empty str fields. */
#define MIN_ENTRY	8

void
helper_put_probe(struct pbuf *req, const char *key_uri)
{
	pbuf_put_str(req, key_uri);
}

/* Reads a count of entries that must fit in the rest of the payload. */
static int
get_count(struct pbuf *b, uint32_t max, uint32_t *n)
{
	*n = pbuf_get_u32(b);
	if (b->err != 0)
		return b->err;
	if (*n > max)
		return P11A_ERR_TOO_LARGE;
	if (*n > (b->len - b->off) / MIN_ENTRY)
		return P11A_ERR_PROTOCOL;
	return 0;
}

void
helper_probe_clear(struct helper_probe *p)
{
	uint32_t i;

	for (i = 0; p->tokens != NULL && i < p->n; i++) {
		free(p->tokens[i].uri);
		free(p->tokens[i].desc);
	}
	free(p->tokens);
	memset(p, 0, sizeof(*p));
}

int
helper_parse_probe(struct pbuf *reply, struct helper_probe *out)
{
	struct helper_probe	 p;
	struct helper_token	*t;
	uint32_t		 i, n;
	int			 r;

	memset(&p, 0, sizeof(p));
	if ((r = get_count(reply, PROTO_MAX_CANDIDATES, &n)) != 0)
		return r;
	if (n > 0 && (p.tokens = calloc(n, sizeof(*p.tokens))) == NULL)
		return P11A_ERR_NOMEM;
	p.n = n;
	for (i = 0; i < n && reply->err == 0; i++) {
		t = &p.tokens[i];
		t->uri = pbuf_get_str(reply);
		t->desc = pbuf_get_str(reply);
		/* a candidate always has a token URI and a description */
		if (reply->err == 0 && (t->uri == NULL || t->desc == NULL ||
		    strncmp(t->uri, "pkcs11:", 7) != 0)) {
			r = P11A_ERR_PROTOCOL;
			goto out;
		}
	}
	if ((r = pbuf_end(reply)) != 0)
		goto out;
	*out = p;
	memset(&p, 0, sizeof(p));
out:
	helper_probe_clear(&p);
	return r;
}

void
helper_modules_clear(struct helper_modules *m)
{
	uint32_t i;

	for (i = 0; m->mods != NULL && i < m->n; i++) {
		free(m->mods[i].name);
		free(m->mods[i].filename);
	}
	free(m->mods);
	memset(m, 0, sizeof(*m));
}

int
helper_parse_modules(struct pbuf *reply, struct helper_modules *out)
{
	struct helper_modules	 m;
	uint32_t		 i, n;
	int			 r;

	memset(&m, 0, sizeof(m));
	if ((r = get_count(reply, PROTO_MAX_MODULES, &n)) != 0)
		return r;
	if (n > 0 && (m.mods = calloc(n, sizeof(*m.mods))) == NULL)
		return P11A_ERR_NOMEM;
	m.n = n;
	/* either field may be absent: a module p11-kit cannot name */
	for (i = 0; i < n && reply->err == 0; i++) {
		m.mods[i].name = pbuf_get_str(reply);
		m.mods[i].filename = pbuf_get_str(reply);
	}
	if ((r = pbuf_end(reply)) != 0)
		goto out;
	*out = m;
	memset(&m, 0, sizeof(m));
out:
	helper_modules_clear(&m);
	return r;
}

/* A str field of at most size - 1 bytes, without NUL, into buf. */
static void
get_name(struct pbuf *b, char *buf, size_t size)
{
	const uint8_t	*p;
	size_t		 len;

	buf[0] = '\0';
	p = pbuf_get_bytes(b, &len, PROTO_MAX_STRING);
	if (b->err != 0)
		return;
	if (len >= size || (len > 0 && memchr(p, '\0', len) != NULL)) {
		b->err = P11A_ERR_PROTOCOL;
		return;
	}
	memcpy(buf, p, len);
	buf[len] = '\0';
}

/* A u8 field that is one of the PROTO_STATE_* values. */
static int
get_state(struct pbuf *b)
{
	uint8_t	 v = pbuf_get_u8(b);

	if (b->err == 0 && v > PROTO_STATE_UNKNOWN)
		b->err = P11A_ERR_PROTOCOL;
	return v;
}

void
helper_states_clear(struct helper_states *s)
{
	free(s->tokens);
	memset(s, 0, sizeof(*s));
}

int
helper_parse_states(struct pbuf *reply, struct helper_states *out)
{
	struct helper_states	 s;
	struct helper_tstate	*t;
	uint32_t		 i, j, n;
	int			 r;

	memset(&s, 0, sizeof(s));
	if ((r = get_count(reply, PROTO_MAX_STATE_TOKENS, &n)) != 0)
		return r;
	if (n > 0 && (s.tokens = calloc(n, sizeof(*s.tokens))) == NULL)
		return P11A_ERR_NOMEM;
	s.n = n;
	for (i = 0; i < n && reply->err == 0; i++) {
		t = &s.tokens[i];
		get_name(reply, t->label, sizeof(t->label));
		get_name(reply, t->serial, sizeof(t->serial));
		t->present = get_state(reply);
		t->login = get_state(reply);
		t->flags_known = pbuf_get_u8(reply) != 0;
		t->flags = pbuf_get_u32(reply);
		t->ckr = pbuf_get_u32(reply);
		t->refused = pbuf_get_u8(reply) != 0;
		t->nhandles = pbuf_get_u32(reply);
		if (reply->err == 0 && t->nhandles > PROTO_MAX_STATE_KEYS)
			reply->err = P11A_ERR_TOO_LARGE;
		for (j = 0; j < t->nhandles && reply->err == 0; j++)
			t->handles[j] = pbuf_get_u32(reply);
	}
	if ((r = pbuf_end(reply)) != 0)
		goto out;
	*out = s;
	memset(&s, 0, sizeof(s));
out:
	helper_states_clear(&s);
	return r;
}
