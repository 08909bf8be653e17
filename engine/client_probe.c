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
