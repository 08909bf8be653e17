/*
 * signrate: signatures per second and their latency through the token
 * helper, as the agent's TLS handshakes get them (bench/signrate.sh runs
 * it for each token stack; not a test).
 *
 *   signrate --key URI [--module PATH] --pin file:PATH [-n N] [-w W]
 *	[--pkcs1] [--label TEXT]
 *
 * It starts the helper the agent would start (P11AGENT_HELPER or the
 * installed one), opens the identity, makes W signatures that are not
 * counted (the first one logs in), then N timed ones, each a blocking
 * request to the helper, and verifies every signature with the
 * certificate the token holds (not timed).  RSA keys sign RSA-PSS with SHA-256 (what
 * a TLS 1.3 handshake asks) unless --pkcs1; EC keys ECDSA with SHA-256.
 * Prints one line:
 *
 *   LABEL ALG n=N sig/s=R p50_ms=A p99_ms=B max_ms=C
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "p11agent/clock.h"
#include "p11agent/helper.h"
#include "p11agent/proto.h"

#define SIGN_TIMEOUT_MS	60000

static double
now_ms(void)
{
	return clock_now_ns() / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double	 x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * One signature of a fresh random message, verified; 0 if fine, and
 * *ms is how long the signature took (the verification not counted).
 */
static int
sign_one(EVP_PKEY *pk, EVP_PKEY *pub, int pss, double *ms)
{
	unsigned char	 msg[64], sig[1024];
	size_t		 siglen = sizeof(sig);
	EVP_MD_CTX	*md;
	EVP_PKEY_CTX	*pc;
	double		 t0;
	int		 ok = 0;

	if ((md = EVP_MD_CTX_new()) == NULL)
		return -1;
	RAND_bytes(msg, sizeof(msg));
	t0 = now_ms();
	if (EVP_DigestSignInit(md, &pc, EVP_sha256(), NULL, pk) == 1 &&
	    (!pss || (EVP_PKEY_CTX_set_rsa_padding(pc,
	    RSA_PKCS1_PSS_PADDING) == 1 && EVP_PKEY_CTX_set_rsa_pss_saltlen(pc,
	    RSA_PSS_SALTLEN_DIGEST) == 1)) &&
	    EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) == 1 &&
	    (*ms = now_ms() - t0) >= 0 && EVP_MD_CTX_reset(md) == 1 &&
	    EVP_DigestVerifyInit(md, &pc, EVP_sha256(), NULL, pub) == 1 &&
	    (!pss || (EVP_PKEY_CTX_set_rsa_padding(pc,
	    RSA_PKCS1_PSS_PADDING) == 1 && EVP_PKEY_CTX_set_rsa_pss_saltlen(pc,
	    RSA_PSS_SALTLEN_DIGEST) == 1)) &&
	    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) == 1)
		ok = 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

static void	usage(void);

/* A count in [lo, hi] or usage. */
static int
count(const char *s, int lo, int hi)
{
	char	*end;
	long	 v;

	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < lo || v > hi)
		usage();
	return (int)v;
}

static void
usage(void)
{
	fprintf(stderr, "usage: signrate --key URI [--module PATH] "
	    "--pin SOURCE [-n N] [-w W] [--pkcs1] [--label TEXT]\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "key",	required_argument,	NULL, 'k' },
		{ "module",	required_argument,	NULL, 'm' },
		{ "pin",	required_argument,	NULL, 'p' },
		{ "label",	required_argument,	NULL, 'l' },
		{ "pkcs1",	no_argument,		NULL, '1' },
		{ NULL,		0,			NULL, 0 }
	};
	struct helper_opts	 o;
	struct helper_identity	 hid;
	struct helper		*h = NULL;
	EVP_PKEY		*pk = NULL;
	const char		*key = NULL, *module = NULL, *pin = NULL;
	const char		*label = "token", *alg;
	char			 err[512];
	double			*lat, t = 0, total;
	int			 n = 200, warm = 3, pss, pkcs1 = 0, c, i;
	int			 rc = 1;

	while ((c = getopt_long(argc, argv, "n:w:", longopts, NULL)) != -1) {
		switch (c) {
		case 'k': key = optarg; break;
		case 'm': module = optarg; break;
		case 'p': pin = optarg; break;
		case 'l': label = optarg; break;
		case '1': pkcs1 = 1; break;
		case 'n': n = count(optarg, 1, 1000000); break;
		case 'w': warm = count(optarg, 1, 1000); break;
		default: usage();
		}
	}
	if (key == NULL || pin == NULL)
		usage();
	if ((lat = calloc((size_t)n, sizeof(*lat))) == NULL)
		return 1;
	memset(&o, 0, sizeof(o));
	memset(&hid, 0, sizeof(hid));
	o.module = module;
	if (helper_start(&o, &h, err, sizeof(err)) != 0) {
		fprintf(stderr, "signrate: %s\n", err);
		goto out;
	}
	if (helper_open(h, key, NULL, pin, SIGN_TIMEOUT_MS, &hid) != 0) {
		fprintf(stderr, "signrate: %s: %s\n", key, helper_error(h));
		goto out;
	}
	if (hid.cert == NULL) {
		fprintf(stderr, "signrate: %s: the token holds no certificate "
		    "for the key (needed to verify the signatures)\n", key);
		goto out;
	}
	if (rkey_new(h, &hid, SIGN_TIMEOUT_MS, &pk) != 0) {
		fprintf(stderr, "signrate: %s: no key: %s\n", key,
		    helper_error(h));
		goto out;
	}
	rkey_set_requester("signrate", "a benchmark");
	pss = hid.keytype == PROTO_KEY_RSA && !pkcs1;
	alg = hid.keytype != PROTO_KEY_RSA ? "ECDSA-SHA256" :
	    pss ? "RSA-PSS-SHA256" : "RSA-PKCS1-SHA256";
	for (i = 0; i < warm + n; i++) {
		if (sign_one(pk, X509_get0_pubkey(hid.cert), pss, &t) != 0) {
			fprintf(stderr, "signrate: signature %d failed or does "
			    "not verify: %s\n", i + 1, helper_error(h));
			goto out;
		}
		if (i >= warm)
			lat[i - warm] = t;
	}
	for (total = 0, i = 0; i < n; i++)
		total += lat[i];
	qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
	t = lat[(size_t)((n - 1) * 0.99 + 0.5)];
	printf("%s %s n=%d sig/s=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
	    label, alg, n, n / (total / 1e3), lat[n / 2], t, lat[n - 1]);
	rc = 0;
out:
	EVP_PKEY_free(pk);
	rkey_cleanup();
	helper_identity_clear(&hid);
	if (h != NULL) {
		helper_stop_all(&h, 1);
		helper_free(h);
	}
	free(lat);
	ERR_clear_error();
	return rc;
}
