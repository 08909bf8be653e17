/*
 * p11agent: identities and their token helpers: one helper per PKCS#11
 * module, and the token key of each [identity] as an EVP_PKEY signed by
 * its helper.
 *
 * A helper that exits (a crash, a lost token) or hangs (a request past
 * its deadline) is restarted at a bounded rate, and its identities are
 * opened again, asynchronously and in their original order, so their
 * key handles stay the same.  Open tunnels do not need the helper and
 * keep flowing meanwhile.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "p11agent/agent.h"
#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/proto.h"

#define OPEN_TIMEOUT_MS		60000
#define RESTART_MIN_MS		1000
#define RESTART_MAX_MS		60000

static int
same_module(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static const char *
module_name(const struct module_rt *s)
{
	return s->module ? s->module : "p11-kit registry";
}

static struct module_rt *
module_for(struct agent *a, const char *module)
{
	struct module_rt	**mods, *s;
	struct helper_opts	  o;
	char			  err[1024];
	int			  i;

	for (i = 0; i < a->nmods; i++)
		if (same_module(a->mods[i]->module, module))
			return a->mods[i];
	/* each module_rt is its own allocation: identities point to it */
	mods = reallocarray(a->mods, a->nmods + 1, sizeof(*mods));
	if (mods == NULL)
		return NULL;
	a->mods = mods;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	memset(&o, 0, sizeof(o));
	o.module = module;
	o.allow = a->cfg->agent.module_allow;
	o.nallow = a->cfg->agent.nmodule_allow;
	if (helper_start(&o, &s->helper, err, sizeof(err)) != 0) {
		log_err("%s", err);
		free(s);
		return NULL;
	}
	s->module = module ? strdup(module) : NULL;
	s->backoff_ms = RESTART_MIN_MS;
	a->mods[a->nmods++] = s;
	return s;
}

static X509 *
cert_from_file(const char *path, char *err, size_t errlen)
{
	FILE	*fp;
	X509	*x;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if ((x = PEM_read_X509(fp, NULL, NULL, NULL)) == NULL)
		snprintf(err, errlen, "no PEM certificate in it");
	fclose(fp);
	return x;
}

static int
open_one(struct agent *a, struct identity *id)
{
	struct cfg_identity	*c = id->cfg;
	char			 err[256];
	int			 r;

	if ((id->mod = module_for(a, c->module)) == NULL)
		return P11A_ERR_HELPER;
	r = helper_open(id->mod->helper, c->key, c->cert, c->pin,
	    OPEN_TIMEOUT_MS, &id->hid);
	if (r != 0) {
		log_err("%s:%d: [identity %s] key: %s", a->cfg->path,
		    c->key_line, c->name, helper_error(id->mod->helper));
		return r;
	}
	if (c->cert != NULL && strncmp(c->cert, "pkcs11:", 7) != 0) {
		if ((id->hid.cert = cert_from_file(c->cert, err,
		    sizeof(err))) == NULL) {
			log_err("%s: [identity %s] cert %s: %s", a->cfg->path,
			    c->name, c->cert, err);
			return P11A_ERR_NO_CERT;
		}
	}
	if ((r = rkey_new(id->mod->helper, &id->hid, c->sign_timeout * 1000,
	    &id->pkey)) != 0) {
		log_err("%s: [identity %s]: %s", a->cfg->path, c->name,
		    r == P11A_ERR_NO_CERT ? "the certificate is not for a key "
		    "of this type" : p11a_strerror(r));
		return r;
	}
	return 0;
}

int
identity_open_all(struct agent *a)
{
	struct cfg_tunnel	*t;
	struct identity		*id, **tail = &a->identities;
	int			 r, failed = 0;

	for (t = a->cfg->tunnels; t != NULL; t = t->next) {
		if (identity_find(a, t->identity) != NULL)
			continue;
		if ((id = calloc(1, sizeof(*id))) == NULL)
			return P11A_ERR_NOMEM;
		id->cfg = t->identity;
		*tail = id;
		tail = &id->next;
		if ((r = open_one(a, id)) != 0)
			failed = r;
	}
	return failed;
}

struct identity *
identity_find(struct agent *a, struct cfg_identity *c)
{
	struct identity	*id;

	for (id = a->identities; id != NULL; id = id->next)
		if (id->cfg == c)
			return id;
	return NULL;
}

void
identity_close_all(struct agent *a)
{
	struct identity	*id;
	struct helper	**hs;
	int		 i;

	while ((id = a->identities) != NULL) {
		a->identities = id->next;
		EVP_PKEY_free(id->pkey);
		X509_free(id->hid.cert);
		free(id);
	}
	/* the helpers finalise their modules at once, not one by one */
	if ((hs = calloc(a->nmods > 0 ? a->nmods : 1, sizeof(*hs))) != NULL) {
		for (i = 0; i < a->nmods; i++)
			hs[i] = a->mods[i]->helper;
		helper_stop_all(hs, a->nmods);
		free(hs);
	}
	for (i = 0; i < a->nmods; i++) {
		helper_free(a->mods[i]->helper);
		free(a->mods[i]->module);
		free(a->mods[i]);
	}
	free(a->mods);
	a->mods = NULL;
	a->nmods = 0;
	rkey_cleanup();
}

/* ---- keeping helpers alive */

static void
module_died(struct module_rt *s, const char *why)
{
	if (s->dead)
		return;
	s->dead = 1;
	s->reopening = 0;
	loop_set(&s->w, 0);
	loop_set(&s->pw, 0);
	if (s->given_up) {
		log_err("token helper for %s (pid %d) %s; not restarting it: "
		    "fix its identities as said above and restart p11agent",
		    module_name(s), (int)helper_pid(s->helper), why);
		return;
	}
	s->restart_at = clock_now_ms() + s->backoff_ms;
	log_err("token helper for %s (pid %d) %s; restarting it in %d ms",
	    module_name(s), (int)helper_pid(s->helper), why, s->backoff_ms);
	if (s->backoff_ms < RESTART_MAX_MS)
		s->backoff_ms *= 2;
}

static void
on_helper(struct watch *w, uint32_t events)
{
	struct module_rt	*s = w->arg;

	if (helper_read(s->helper) < 0)
		module_died(s, "exited");
}

/* The process ended, even if something else still holds its channel. */
static void
on_helper_exit(struct watch *w, uint32_t events)
{
	struct module_rt	*s = w->arg;

	helper_fail_all(s->helper, P11A_ERR_HELPER);
	module_died(s, "exited");
}

static int
watch_module(struct module_rt *s)
{
	loop_watch_init(&s->w, helper_fd(s->helper), on_helper, s);
	loop_watch_init(&s->pw, helper_pidfd(s->helper), on_helper_exit, s);
	if (loop_set(&s->w, EPOLLIN) != 0 ||
	    (s->pw.fd != -1 && loop_set(&s->pw, EPOLLIN) != 0))
		return P11A_ERR_SYSTEM;
	return 0;
}

/* Errors that only the user can fix: retrying could lock the card. */
static int
needs_user(int err)
{
	switch (err) {
	case P11A_ERR_PIN_INCORRECT:
	case P11A_ERR_PIN_LOCKED:
	case P11A_ERR_PIN_FINAL_TRY:
	case P11A_ERR_PIN_SOURCE:
	case P11A_ERR_PERM:
		return 1;
	default:
		return 0;
	}
}

/* The reply to a re-OPEN: the handle must be the one the key uses. */
struct reopen {
	struct module_rt	*mod;
	struct identity		*id;
};

static void
reopened(void *arg, int err, struct pbuf *reply)
{
	struct reopen	*ro = arg;
	struct identity	*id = ro->id;
	uint32_t	 handle = 0;

	if (err == 0)
		handle = pbuf_get_u32(reply);
	if (err == P11A_ERR_HELPER)
		;		/* the helper died meanwhile: said elsewhere */
	else if (!ro->mod->dead) {
		if (err != 0 || handle != id->hid.handle) {
			log_err("identity %s: cannot open it again: %s",
			    id->cfg->name, err ? helper_error(ro->mod->helper) :
			    "key handle changed");
			/* a PIN is never tried again by itself */
			if (needs_user(err))
				ro->mod->given_up = 1;
			helper_kill(ro->mod->helper);
		} else if (--ro->mod->reopening == 0) {
			log_info("token helper for %s is back",
			    module_name(ro->mod));
			ro->mod->backoff_ms = RESTART_MIN_MS;
		}
	}
	free(ro);
}

static void
restart(struct agent *a, struct module_rt *s)
{
	struct identity	*id;
	struct reopen	*ro;
	struct pbuf	 req;
	int		 r;

	if ((r = helper_restart(s->helper)) != 0) {
		log_err("token helper for %s: %s", module_name(s),
		    helper_error(s->helper));
		s->dead = 0;
		module_died(s, "could not be started again");
		return;
	}
	s->dead = 0;
	s->killed = 0;
	if (watch_module(s) != 0)
		return;
	for (id = a->identities; id != NULL; id = id->next) {
		if (id->mod != s || (ro = calloc(1, sizeof(*ro))) == NULL)
			continue;
		ro->mod = s;
		ro->id = id;
		pbuf_init(&req);
		helper_put_open(&req, id->cfg->key, id->cfg->cert, id->cfg->pin);
		if (helper_request(s->helper, PROTO_OPEN, &req, OPEN_TIMEOUT_MS,
		    reopened, ro) == 0)
			s->reopening++;
		else
			free(ro);
		pbuf_clear(&req);
	}
}

int
helpers_watch(struct agent *a)
{
	int			 i;

	for (i = 0; i < a->nmods; i++)
		if (watch_module(a->mods[i]) != 0)
			return P11A_ERR_SYSTEM;
	return 0;
}

void
helpers_tick(struct agent *a, long now)
{
	struct module_rt	*s;
	int			 i;

	for (i = 0; i < a->nmods; i++) {
		s = a->mods[i];
		if (s->dead) {
			if (!s->given_up && now >= s->restart_at)
				restart(a, s);
		} else if (helper_expire(s->helper, now) && !s->killed) {
			log_warn("token helper for %s (pid %d) has not answered "
			    "for longer than the request's timeout; killing it",
			    module_name(s), (int)helper_pid(s->helper));
			s->killed = 1;
			helper_kill(s->helper);
		}
	}
}

/* At shutdown: every request in flight fails now. */
void
helpers_fail_all(struct agent *a)
{
	int	 i;

	for (i = 0; i < a->nmods; i++)
		helper_fail_all(a->mods[i]->helper, P11A_ERR_CLOSED);
}
