/*
 * p11agent: identities: one token helper per PKCS#11 module, and the
 * token key of each [identity] as an EVP_PKEY signed by its helper.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/proto.h"
#include "agent.h"

#define OPEN_TIMEOUT_MS	60000

static int
same_module(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

struct helper *
agent_helper_for(struct agent *a, const char *module)
{
	struct helper	**hs, *h;
	char		**ms;
	int		  i, r;

	for (i = 0; i < a->nhelpers; i++)
		if (same_module(a->helper_modules[i], module))
			return a->helpers[i];
	hs = reallocarray(a->helpers, a->nhelpers + 1, sizeof(*hs));
	if (hs == NULL)
		return NULL;
	a->helpers = hs;
	ms = reallocarray(a->helper_modules, a->nhelpers + 1, sizeof(*ms));
	if (ms == NULL)
		return NULL;
	a->helper_modules = ms;
	if ((r = helper_start(module, &h)) != 0) {
		log_err("cannot start the token helper: %s", p11a_strerror(r));
		return NULL;
	}
	a->helpers[a->nhelpers] = h;
	a->helper_modules[a->nhelpers++] = module ? strdup(module) : NULL;
	return h;
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

	if ((id->helper = agent_helper_for(a, c->module)) == NULL)
		return P11A_ERR_HELPER;
	r = helper_open(id->helper, c->key, c->cert, c->pin, OPEN_TIMEOUT_MS,
	    &id->hid);
	if (r != 0) {
		log_err("%s:%d: [identity %s] key: %s", a->cfg->path,
		    c->key_line, c->name, helper_error(id->helper));
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
	if ((r = rkey_new(id->helper, &id->hid, c->sign_timeout * 1000,
	    &id->pkey)) != 0) {
		log_err("%s: [identity %s]: the certificate does not match "
		    "the key %s (%s)", a->cfg->path, c->name, c->key,
		    p11a_strerror(r));
		return r;
	}
	return 0;
}

/* Opens every identity a tunnel uses; logs each failure. */
int
identity_open_all(struct agent *a)
{
	struct cfg_tunnel	*t;
	struct identity		*id;
	int			 r, failed = 0;

	for (t = a->cfg->tunnels; t != NULL; t = t->next) {
		if (identity_find(a, t->identity) != NULL)
			continue;
		if ((id = calloc(1, sizeof(*id))) == NULL)
			return P11A_ERR_NOMEM;
		id->cfg = t->identity;
		id->next = a->identities;
		a->identities = id;
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
	int		 i;

	while ((id = a->identities) != NULL) {
		a->identities = id->next;
		EVP_PKEY_free(id->pkey);
		X509_free(id->hid.cert);
		free(id);
	}
	for (i = 0; i < a->nhelpers; i++) {
		helper_free(a->helpers[i]);
		free(a->helper_modules[i]);
	}
	free(a->helpers);
	free(a->helper_modules);
	a->helpers = NULL;
	a->helper_modules = NULL;
	a->nhelpers = 0;
}
