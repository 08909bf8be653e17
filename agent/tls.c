/*
 * p11agent: the TLS client side of a tunnel (OpenSSL); see tls.h.
 *
 * The context keeps its own copy of what it checks (struct tls_trust: a
 * reload may free the cfg_tunnel while SSLs of this context are alive);
 * each SSL has a struct tls_conn where the verify callback, the OCSP
 * status callback and the message callback note what failed, so that
 * tls_describe_failure can say it in the connection's log line.
 */
#include "config.h"

#include <sys/stat.h>

#include <arpa/inet.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "p11agent/log.h"
#include "p11agent/proto.h"
#include "p11agent/config.h"
#include "p11agent/identity.h"
#include "p11agent/session.h"
#include "p11agent/tls.h"

#define TLS_MAX_CRLS	64		/* CRLs in all crl = files */
#define TLS_MAX_FILE	(16 << 20)	/* bytes of a CA or CRL file */
#define TLS_MAX_DIRENTS	4096		/* files looked at in ca-dir */
#define OCSP_SKEW	300		/* seconds of clock skew allowed */
#define OCSP_MAXAGE	(7 * 86400)	/* a staple without nextUpdate */

/* What a context checks: its own copy. */
struct tls_trust {
	int		 npins;
	unsigned char	 pins[CONFIG_MAX_PINS][32];
	char		*by;		/* "ca = F and ca-dir = D", ... */
	int		 ocsp;		/* CFG_OCSP_* */
	int		 tls_min, tls_max;
	int		 alpn;		/* protocols offered */
	struct tls_crls	*crls;		/* NULL: none (an idle tunnel's
					 * context stays small) */
};

/* The CRLs a context loaded, with their files for the messages. */
struct tls_crls {
	int		 ncrl;
	X509_CRL	*crl[TLS_MAX_CRLS];	/* the CRLs loaded, */
	int		 crlfile[TLS_MAX_CRLS];	/* from files[this] */
	char		*files[TLS_MAX_CRLS];	/* crl = files, ca-dir's */
	int		 nfiles;
};

/* What one connection saw. */
struct tls_conn {
	char		 name[256];	/* the name or address checked */
	char		 why[2048];	/* the first verify or OCSP failure */
	int		 pin_failed;
	int		 server_version;	/* its ServerHello's; 0 */
	int		 alert;		/* the fatal alert it sent; -1 */
};

static int	 trust_idx = -1, conn_idx = -1;

static void
trust_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	struct tls_trust	*tr = ptr;
	int			 i;

	if (tr == NULL)
		return;
	for (i = 0; tr->crls != NULL && i < tr->crls->ncrl; i++)
		X509_CRL_free(tr->crls->crl[i]);
	for (i = 0; tr->crls != NULL && i < tr->crls->nfiles; i++)
		free(tr->crls->files[i]);
	free(tr->crls);
	free(tr->by);
	free(tr);
}

static void
conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	free(ptr);
}

static struct tls_trust *
trust_of(SSL *ssl)
{
	return trust_idx == -1 ? NULL :
	    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), trust_idx);
}

static struct tls_conn *
conn_of(SSL *ssl)
{
	return conn_idx == -1 ? NULL : SSL_get_ex_data(ssl, conn_idx);
}

static int
ssl_fail(char *err, size_t errlen, const char *what)
{
	unsigned long	 e = ERR_peek_last_error();
	char		 buf[256] = "";

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
	return 0;
}

/* ---- words for the log: names, dates, keys */

/* Printable ASCII of a server's string; the rest as '?'. */
static void
clean(char *s)
{
	for (; *s != '\0'; s++)
		if (*s < ' ' || *s > '~')
			*s = '?';
}

/* "CN=..." of a name, else its one-line form. */
static void
name_text(X509_NAME *n, char *out, size_t len)
{
	char	 cn[200];

	if (n != NULL && X509_NAME_get_text_by_NID(n, NID_commonName, cn,
	    sizeof(cn)) >= 0)
		snprintf(out, len, "CN=%s", cn);
	else if (n == NULL || X509_NAME_oneline(n, out, (int)len) == NULL)
		snprintf(out, len, "(no name)");
	clean(out);
}

/* "2026-10-01 12:00 UTC" */
static void
time_text(const ASN1_TIME *t, char *out, size_t len)
{
	struct tm	 tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm) ||
	    strftime(out, len, "%Y-%m-%d %H:%M UTC", &tm) == 0)
		snprintf(out, len, "(unknown time)");
}

static int
self_signed(X509 *x)
{
	return (X509_get_extension_flags(x) & EXFLAG_SS) != 0;
}

/* "certificate for NAME" (the server's), "intermediate CN=..." or "root
 * CA CN=..." */
static void
cert_role(X509 *x, int depth, const struct tls_conn *tc, char *out,
    size_t len)
{
	char	 n[256];

	name_text(X509_get_subject_name(x), n, sizeof(n));
	if (depth == 0)
		snprintf(out, len, "certificate for %s", tc->name);
	else
		snprintf(out, len, "%s %s", self_signed(x) ? "root CA" :
		    "intermediate", n);
}

/* "a.example, b.example, 127.0.0.1": the subjectAltNames (DNS, IP), else
 * the CN */
static void
cert_names(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES	*gens;
	GENERAL_NAME	*g;
	const unsigned char *d;
	char		 one[INET6_ADDRSTRLEN + 260];
	size_t		 n;
	int		 i, l;

	out[0] = '\0';
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		one[0] = '\0';
		if (g->type == GEN_DNS) {
			d = ASN1_STRING_get0_data(g->d.dNSName);
			l = ASN1_STRING_length(g->d.dNSName);
			snprintf(one, sizeof(one), "%.*s", l > 255 ? 255 : l,
			    (const char *)d);
		} else if (g->type == GEN_IPADD) {
			d = ASN1_STRING_get0_data(g->d.iPAddress);
			l = ASN1_STRING_length(g->d.iPAddress);
			if ((l != 4 && l != 16) || inet_ntop(l == 4 ? AF_INET :
			    AF_INET6, d, one, sizeof(one)) == NULL)
				snprintf(one, sizeof(one), "(bad IP)");
		}
		if (one[0] == '\0')
			continue;
		clean(one);
		n = strlen(out);
		snprintf(out + n, len - n, "%s%s", n ? ", " : "", one);
	}
	GENERAL_NAMES_free(gens);
	if (out[0] == '\0') {
		name_text(X509_get_subject_name(x), one, sizeof(one));
		snprintf(out, len, "none but the subject %s", one);
	}
}

/* The CRL file an X509_CRL of the store came from. */
static const char *
crl_file(const struct tls_trust *tr, X509_CRL *crl)
{
	int	 i;

	const struct tls_crls	*c = tr != NULL ? tr->crls : NULL;

	for (i = 0; c != NULL && crl != NULL && i < c->ncrl; i++)
		if (c->crl[i] == crl || X509_CRL_match(c->crl[i], crl) == 0)
			return c->files[c->crlfile[i]];
	return "?";
}

/* ---- what the verify callback notes */

static void
why_revoked(struct tls_conn *tc, const struct tls_trust *tr,
    X509_STORE_CTX *xs, X509 *x, int depth)
{
	X509_CRL	*crl = X509_STORE_CTX_get0_current_crl(xs);
	X509_REVOKED	*rev = NULL;
	char		 n[256], when[64] = "(date unknown)";

	name_text(X509_get_subject_name(x), n, sizeof(n));
	if (crl != NULL && X509_CRL_get0_by_cert(crl, &rev, x) == 1 &&
	    rev != NULL)
		time_text(X509_REVOKED_get0_revocationDate(rev), when,
		    sizeof(when));
	snprintf(tc->why, sizeof(tc->why), "%s %s revoked %s (CRL %s)",
	    depth == 0 ? "server certificate" : "intermediate", n, when,
	    crl_file(tr, crl));
}

static void
why_weak(struct tls_conn *tc, X509 *x, const char *role, int err)
{
	EVP_PKEY	*k = X509_get0_pubkey(x);
	const char	*type, *md;
	int		 mdnid = NID_undef, min;

	if (err == X509_V_ERR_CA_MD_TOO_WEAK) {
		if (!X509_get_signature_info(x, &mdnid, NULL, NULL, NULL))
			mdnid = NID_undef;
		md = mdnid == NID_sha1 ? "SHA-1" : mdnid == NID_md5 ? "MD5" :
		    mdnid != NID_undef ? OBJ_nid2sn(mdnid) : "a weak digest";
		snprintf(tc->why, sizeof(tc->why), "%s signed with %s, "
		    "refused at security level %d", role, md, TLS_SECLEVEL);
		return;
	}
	switch (k != NULL ? EVP_PKEY_get_base_id(k) : 0) {
	case EVP_PKEY_RSA: type = "RSA"; min = 2048; break;
	case EVP_PKEY_RSA_PSS: type = "RSA-PSS"; min = 2048; break;
	case EVP_PKEY_EC: type = "EC"; min = 224; break;
	case EVP_PKEY_DSA: type = "DSA"; min = 2048; break;
	default: type = "public"; min = 0; break;
	}
	snprintf(tc->why, sizeof(tc->why), "%s key of %d bits in the %s, "
	    "below %d (security level %d)", type, k ? EVP_PKEY_get_bits(k) :
	    0, role, min, TLS_SECLEVEL);
}

static void
describe_verify(struct tls_conn *tc, const struct tls_trust *tr,
    X509_STORE_CTX *xs)
{
	X509		*x = X509_STORE_CTX_get_current_cert(xs);
	int		 err = X509_STORE_CTX_get_error(xs);
	int		 depth = X509_STORE_CTX_get_error_depth(xs);
	const char	*by = tr != NULL && tr->by != NULL ? tr->by :
			    "the trusted CAs";
	char		 role[300], n[256], t[64], names[400];

	if (x == NULL) {
		snprintf(tc->why, sizeof(tc->why), "%s",
		    X509_verify_cert_error_string(err));
		return;
	}
	cert_role(x, depth, tc, role, sizeof(role));
	name_text(X509_get_subject_name(x), n, sizeof(n));
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		time_text(X509_get0_notAfter(x), t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "%s expired %s", role, t);
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		time_text(X509_get0_notBefore(x), t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "%s not yet valid: from %s",
		    role, t);
		break;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		cert_names(x, names, sizeof(names));
		snprintf(tc->why, sizeof(tc->why), "the certificate %s is not "
		    "for %s: names in the certificate: %s", n, tc->name,
		    names);
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		name_text(X509_get_issuer_name(x), t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "issuer %s not trusted by "
		    "%s (of the %s)", t, by, role);
		break;
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		snprintf(tc->why, sizeof(tc->why), "self-signed certificate "
		    "%s not trusted by %s", n, by);
		break;
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		snprintf(tc->why, sizeof(tc->why), "self-signed CA %s (sent "
		    "by the server) not trusted by %s", n, by);
		break;
	case X509_V_ERR_CERT_REVOKED:
		why_revoked(tc, tr, xs, x, depth);
		break;
	case X509_V_ERR_UNABLE_TO_GET_CRL:
		name_text(X509_get_issuer_name(x), t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "no CRL from %s, the issuer "
		    "of the %s, among the CRLs of crl = and ca-dir (every "
		    "certificate of the chain needs its issuer's CRL)", t,
		    role);
		break;
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
		snprintf(tc->why, sizeof(tc->why), "the CRL for the %s (%s): "
		    "%s", role, crl_file(tr, X509_STORE_CTX_get0_current_crl(
		    xs)), X509_verify_cert_error_string(err));
		break;
	case X509_V_ERR_EE_KEY_TOO_SMALL:
	case X509_V_ERR_CA_KEY_TOO_SMALL:
	case X509_V_ERR_CA_MD_TOO_WEAK:
		why_weak(tc, x, role, err);
		break;
	default:
		snprintf(tc->why, sizeof(tc->why), "%s (%s): %s", role, n,
		    X509_verify_cert_error_string(err));
		break;
	}
}

/* SHA-256 of the certificate's SubjectPublicKeyInfo, DER. */
static int
spki_sha256(X509 *x, unsigned char out[32])
{
	unsigned char	*der = NULL;
	unsigned int	 outlen = 0;
	int		 len, ok;

	if ((len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der)) <= 0)
		return 0;
	ok = EVP_Digest(der, (size_t)len, out, &outlen, EVP_sha256(), NULL) &&
	    outlen == 32;
	OPENSSL_free(der);
	return ok;
}

/* One of the pins is the SPKI of a certificate in the verified chain, the
 * server's or a CA's (as HPKP). */
static int
pins_match(const struct tls_trust *tr, X509_STORE_CTX *xs)
{
	STACK_OF(X509)	*chain = X509_STORE_CTX_get0_chain(xs);
	unsigned char	 h[32];
	int		 i, j;

	for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
		if (!spki_sha256(sk_X509_value(chain, i), h))
			continue;
		for (j = 0; j < tr->npins; j++)
			if (memcmp(h, tr->pins[j], 32) == 0)
				return 1;
	}
	return 0;
}

/*
 * OpenSSL's verdict on each certificate: the first failure is noted for
 * the log; once the chain verifies (CA, name, CRLs, times, levels), the
 * pins.
 */
static int
verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL			*ssl;
	struct tls_trust	*tr;
	struct tls_conn		*tc;

	if ((ssl = X509_STORE_CTX_get_ex_data(xs,
	    SSL_get_ex_data_X509_STORE_CTX_idx())) == NULL)
		return ok;
	tr = trust_of(ssl);
	tc = conn_of(ssl);
	if (!ok) {
		if (tc != NULL && tc->why[0] == '\0')
			describe_verify(tc, tr, xs);
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(xs) != 0 || tr == NULL ||
	    tr->npins == 0 || pins_match(tr, xs))
		return 1;
	if (tc != NULL)
		tc->pin_failed = 1;
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* ---- OCSP stapling */

/* The response's entry for the leaf (in the hash the responder used). */
static OCSP_SINGLERESP *
ocsp_find(OCSP_BASICRESP *bs, X509 *leaf, X509 *issuer)
{
	OCSP_SINGLERESP		*one;
	const OCSP_CERTID	*cid;
	OCSP_CERTID		*mine;
	ASN1_OBJECT		*mdoid = NULL;
	const EVP_MD		*md;
	int			 i, same;

	for (i = 0; i < OCSP_resp_count(bs); i++) {
		one = OCSP_resp_get0(bs, i);
		if ((cid = OCSP_SINGLERESP_get0_id(one)) == NULL ||
		    !OCSP_id_get0_info(NULL, &mdoid, NULL, NULL,
		    (OCSP_CERTID *)cid) ||
		    (md = EVP_get_digestbyobj(mdoid)) == NULL ||
		    (mine = OCSP_cert_to_id(md, leaf, issuer)) == NULL)
			continue;
		same = OCSP_id_cmp(mine, cid) == 0;
		OCSP_CERTID_free(mine);
		if (same)
			return one;
	}
	return NULL;
}

/* The staple's times: 1 if current (with OCSP_SKEW), else why not. */
static int
ocsp_times(struct tls_conn *tc, ASN1_GENERALIZEDTIME *thisupd,
    ASN1_GENERALIZEDTIME *nextupd)
{
	time_t	 now = time(NULL), ahead = now + OCSP_SKEW;
	time_t	 behind = now - OCSP_SKEW;
	char	 t[64];

	if (OCSP_check_validity(thisupd, nextupd, OCSP_SKEW, nextupd ? -1 :
	    OCSP_MAXAGE)) {
		ERR_clear_error();
		return 1;
	}
	ERR_clear_error();
	if (nextupd != NULL && X509_cmp_time(nextupd, &behind) < 0) {
		time_text(nextupd, t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: expired "
		    "%s (its nextUpdate)", t);
	} else if (thisupd != NULL && X509_cmp_time(thisupd, &ahead) > 0) {
		time_text(thisupd, t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: not yet "
		    "valid: thisUpdate %s", t);
	} else {
		time_text(thisupd, t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: too old "
		    "(thisUpdate %s, no nextUpdate)", t);
	}
	return 0;
}

/* A staple: signed by the issuer or its delegated responder, about the
 * leaf, current and good.  1 if so, else 0 with tc->why. */
/* Why a staple's signature is not taken: who signed it, and what is
 * wrong with that signer (e: OpenSSL's word). */
static void
ocsp_signer_problem(OCSP_BASICRESP *bs, STACK_OF(X509) *chain,
    X509 *issuer, const char *n, const char *e, char *out, size_t len)
{
	X509	*signer = NULL;
	char	 sn[256], in[256];

	name_text(X509_get_subject_name(issuer), in, sizeof(in));
	if (OCSP_resp_get0_signer(bs, &signer, chain) != 1 || signer == NULL) {
		snprintf(out, len, "OCSP staple: signed by a certificate that "
		    "is neither in the staple nor in the server's chain "
		    "(the responder of the issuer %s of %s is expected)", in,
		    n);
		return;
	}
	name_text(X509_get_subject_name(signer), sn, sizeof(sn));
	if (X509_cmp(signer, issuer) == 0)
		snprintf(out, len, "OCSP staple: bad signature: the issuer %s "
		    "of %s did not make it (%s)", in, n, e[0] ? e : "?");
	else if (X509_check_issued(issuer, signer) != X509_V_OK)
		snprintf(out, len, "OCSP staple: signed by %s, which is "
		    "neither the issuer %s of %s nor a responder it delegated "
		    "to", sn, in, n);
	else if (!(X509_get_extension_flags(signer) & EXFLAG_XKUSAGE) ||
	    !(X509_get_extended_key_usage(signer) & XKU_OCSP_SIGN))
		snprintf(out, len, "OCSP staple: signed by %s, issued by %s "
		    "but not for OCSP (no extendedKeyUsage OCSPSigning)", sn,
		    in);
	else
		snprintf(out, len, "OCSP staple: the responder %s delegated "
		    "by %s is not valid: %s", sn, in, e[0] ? e : "?");
}

static int
ocsp_check(SSL *ssl, struct tls_conn *tc, const unsigned char *p, long len)
{
	STACK_OF(X509)		*chain = SSL_get0_verified_chain(ssl);
	OCSP_RESPONSE		*rsp = NULL;
	OCSP_BASICRESP		*bs = NULL;
	OCSP_SINGLERESP		*one;
	ASN1_GENERALIZEDTIME	*rev, *thisupd, *nextupd;
	X509			*leaf, *issuer;
	char			 n[256], t[64], e[256] = "";
	int			 st, reason, ok = 0;

	if (chain == NULL || sk_X509_num(chain) < 1) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: no verified "
		    "chain to check it with");
		goto out;
	}
	leaf = sk_X509_value(chain, 0);
	issuer = sk_X509_value(chain, sk_X509_num(chain) > 1 ? 1 : 0);
	name_text(X509_get_subject_name(leaf), n, sizeof(n));
	if ((rsp = d2i_OCSP_RESPONSE(NULL, &p, len)) == NULL) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: not an OCSP "
		    "response (DER)");
		goto out;
	}
	if ((st = OCSP_response_status(rsp)) !=
	    OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: the "
		    "responder answered %s", OCSP_response_status_str(st));
		goto out;
	}
	if ((bs = OCSP_response_get1_basic(rsp)) == NULL) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: not a basic "
		    "OCSP response");
		goto out;
	}
	/* no explicit OCSP trust in a root: the issuer or its delegate */
	if (OCSP_basic_verify(bs, chain, SSL_CTX_get_cert_store(
	    SSL_get_SSL_CTX(ssl)), OCSP_NOEXPLICIT) <= 0) {
		if (ERR_peek_last_error() != 0)
			ERR_error_string_n(ERR_peek_last_error(), e,
			    sizeof(e));
		ocsp_signer_problem(bs, chain, issuer, n, e, tc->why,
		    sizeof(tc->why));
		goto out;
	}
	if ((one = ocsp_find(bs, leaf, issuer)) == NULL) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: no status "
		    "for the server certificate %s in it", n);
		goto out;
	}
	st = OCSP_single_get0_status(one, &reason, &rev, &thisupd, &nextupd);
	if (!ocsp_times(tc, thisupd, nextupd))
		goto out;
	if (st == V_OCSP_CERTSTATUS_REVOKED) {
		time_text(rev, t, sizeof(t));
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: revoked %s "
		    "(server certificate %s%s%s)", t, n, reason >= 0 ?
		    ", " : "", reason >= 0 ? OCSP_crl_reason_str(reason) : "");
		goto out;
	}
	if (st != V_OCSP_CERTSTATUS_GOOD) {
		snprintf(tc->why, sizeof(tc->why), "OCSP staple: the responder "
		    "does not know the server certificate %s (status %s)", n,
		    OCSP_cert_status_str(st));
		goto out;
	}
	ok = 1;
out:
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(rsp);
	ERR_clear_error();
	return ok;
}

/* OpenSSL's status callback (after the chain verified): 1 to go on. */
static int
ocsp_cb(SSL *ssl, void *arg)
{
	struct tls_trust	*tr = trust_of(ssl);
	struct tls_conn		*tc = conn_of(ssl);
	const unsigned char	*p = NULL;
	long			 len;

	if (tr == NULL || tc == NULL || SSL_session_reused(ssl))
		return 1;	/* resumed: checked in its full handshake */
	len = SSL_get_tlsext_status_ocsp_resp(ssl, &p);
	if (p == NULL || len <= 0) {
		if (tr->ocsp != CFG_OCSP_REQUIRE)
			return 1;
		snprintf(tc->why, sizeof(tc->why), "no OCSP staple, and "
		    "ocsp = require");
		return 0;
	}
	return ocsp_check(ssl, tc, p, len);
}

/* The server's version and alerts, to explain a version failure. */
static void
msg_cb(int write_p, int version, int type, const void *buf, size_t len,
    SSL *ssl, void *arg)
{
	const unsigned char	*b = buf;
	struct tls_conn		*tc;

	if (write_p || (tc = conn_of(ssl)) == NULL)
		return;
	if (type == SSL3_RT_HANDSHAKE && len >= 6 &&
	    b[0] == SSL3_MT_SERVER_HELLO)
		tc->server_version = b[4] << 8 | b[5];
	else if (type == SSL3_RT_ALERT && len == 2 && b[0] == SSL3_AL_FATAL)
		tc->alert = b[1];
}

/* ---- loading CAs and CRLs */

static int
no_password(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* The PEM objects of a file; NULL with err (naming key and file). */
static STACK_OF(X509_INFO) *
pem_read(const char *key, const char *path, char *err, size_t errlen)
{
	STACK_OF(X509_INFO)	*inf;
	struct stat		 st;
	BIO			*b;

	if (stat(path, &st) == -1) {
		snprintf(err, errlen, "%s = %s: %s", key, path,
		    strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > TLS_MAX_FILE) {
		snprintf(err, errlen, "%s = %s: %s", key, path,
		    S_ISREG(st.st_mode) ? "larger than 16 MB" :
		    "not a regular file");
		return NULL;
	}
	errno = 0;
	if ((b = BIO_new_file(path, "r")) == NULL) {
		snprintf(err, errlen, "%s = %s: cannot read it: %s", key,
		    path, errno ? strerror(errno) : "?");
		ERR_clear_error();
		return NULL;
	}
	inf = PEM_X509_INFO_read_bio(b, NULL, no_password, NULL);
	BIO_free(b);
	if (inf == NULL)
		snprintf(err, errlen, "%s = %s: a damaged PEM block (%s)",
		    key, path, ERR_reason_error_string(ERR_peek_last_error()) ?
		    ERR_reason_error_string(ERR_peek_last_error()) : "?");
	ERR_clear_error();
	return inf;
}

/* The certificates of a PEM file into the store; how many, or -1. */
static int
add_certs(X509_STORE *store, const char *key, const char *path,
    int *ncrl, char *err, size_t errlen)
{
	STACK_OF(X509_INFO)	*inf;
	X509_INFO		*i;
	int			 n = 0, k;

	if ((inf = pem_read(key, path, err, errlen)) == NULL)
		return -1;
	*ncrl = 0;
	for (k = 0; k < sk_X509_INFO_num(inf); k++) {
		i = sk_X509_INFO_value(inf, k);
		if (i->crl != NULL)
			(*ncrl)++;
		if (i->x509 == NULL)
			continue;
		if (!X509_STORE_add_cert(store, i->x509)) {
			ssl_fail(err, errlen, "out of memory");
			n = -1;
			break;
		}
		n++;
	}
	sk_X509_INFO_pop_free(inf, X509_INFO_free);
	return n;
}

static int
load_ca_file(X509_STORE *store, const char *path, char *err, size_t errlen)
{
	int	 n, ncrl;

	if ((n = add_certs(store, "ca", path, &ncrl, err, errlen)) < 0)
		return 0;
	if (n == 0) {
		snprintf(err, errlen, "ca = %s: no certificate in it (PEM, "
		    "-----BEGIN CERTIFICATE----- expected)", path);
		return 0;
	}
	return 1;
}

/* The CRLs of a file (crl = FILE, or one in ca-dir) into the store, each
 * noted with the file's name for the messages. */
static int
load_crl(X509_STORE *store, struct tls_trust *tr, const char *key,
    const char *path, char *err, size_t errlen)
{
	STACK_OF(X509_INFO)	*inf;
	X509_INFO		*i;
	struct tls_crls		*c;
	char			 who[256], when[64];
	int			 f, k, n = 0, ok = 0;

	if (tr->crls == NULL && (tr->crls = calloc(1, sizeof(*tr->crls))) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	c = tr->crls;
	if (c->nfiles == TLS_MAX_CRLS) {
		snprintf(err, errlen, "%s = %s: more than %d files of CRLs",
		    key, path, TLS_MAX_CRLS);
		return 0;
	}
	if ((c->files[c->nfiles] = strdup(path)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	f = c->nfiles++;
	if ((inf = pem_read(key, path, err, errlen)) == NULL)
		return 0;
	for (k = 0; k < sk_X509_INFO_num(inf); k++) {
		if ((i = sk_X509_INFO_value(inf, k))->crl == NULL)
			continue;
		if (c->ncrl == TLS_MAX_CRLS) {
			snprintf(err, errlen, "%s = %s: more than %d CRLs in "
			    "all", key, path, TLS_MAX_CRLS);
			goto out;
		}
		/* an expired CRL would refuse every full handshake: said
		 * now, by check and at the start or reload */
		if (X509_CRL_get0_nextUpdate(i->crl) != NULL &&
		    X509_cmp_current_time(X509_CRL_get0_nextUpdate(i->crl)) <
		    0) {
			name_text(X509_CRL_get_issuer(i->crl), who, sizeof(who));
			time_text(X509_CRL_get0_nextUpdate(i->crl), when,
			    sizeof(when));
			snprintf(err, errlen, "%s = %s: the CRL of %s expired "
			    "%s (its nextUpdate): put a current one in its "
			    "place (openssl ca -gencrl) and reload", key, path,
			    who, when);
			goto out;
		}
		if (!X509_STORE_add_crl(store, i->crl) ||
		    !X509_CRL_up_ref(i->crl)) {
			ssl_fail(err, errlen, "out of memory");
			goto out;
		}
		c->crl[c->ncrl] = i->crl;
		c->crlfile[c->ncrl++] = f;
		n++;
	}
	if (n == 0) {
		snprintf(err, errlen, "%s = %s: no CRL in it (PEM, -----BEGIN "
		    "X509 CRL----- expected; from DER: openssl crl -inform DER)",
		    key, path);
		goto out;
	}
	ok = 1;
out:
	sk_X509_INFO_pop_free(inf, X509_INFO_free);
	return ok;
}

/* Every file of the directory: hashed names (openssl rehash) or not;
 * the CRLs in it (.r0 files of a hashed directory, or any file) are
 * loaded as crl = files are. */
static int
load_ca_dir(X509_STORE *store, struct tls_trust *tr, const char *dir,
    char *err, size_t errlen)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	char		 path[PATH_MAX];
	int		 n, ncrl, total = 0, seen = 0, ok = 0;

	if ((d = opendir(dir)) == NULL) {
		snprintf(err, errlen, "ca-dir = %s: %s", dir, strerror(errno));
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (++seen > TLS_MAX_DIRENTS) {
			snprintf(err, errlen, "ca-dir = %s: more than %d files",
			    dir, TLS_MAX_DIRENTS);
			goto out;
		}
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    (int)sizeof(path)) {
			snprintf(err, errlen, "ca-dir = %s: %s: name too long",
			    dir, de->d_name);
			goto out;
		}
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			continue;
		if ((n = add_certs(store, "ca-dir", path, &ncrl, err,
		    errlen)) < 0)
			goto out;
		if (n == 0 && ncrl == 0) {
			snprintf(err, errlen, "ca-dir = %s: %s: neither a "
			    "certificate nor a CRL in it (PEM expected)", dir,
			    de->d_name);
			goto out;
		}
		if (ncrl > 0 && !load_crl(store, tr, "ca-dir", path, err,
		    errlen))
			goto out;
		total += n;
	}
	if (total == 0) {
		snprintf(err, errlen, "ca-dir = %s: no certificate in it",
		    dir);
		goto out;
	}
	ok = 1;
out:
	closedir(d);
	return ok;
}

/* One file or directory entry into the stamp: its name and what stat
 * says (or that it is missing). */
static void
stamp_file(EVP_MD_CTX *md, const char *path)
{
	struct stat	 st;
	long long	 v[5] = { -1, -1, -1, -1, -1 };

	if (stat(path, &st) == 0) {
		v[0] = (long long)st.st_dev;
		v[1] = (long long)st.st_ino;
		v[2] = (long long)st.st_size;
		v[3] = (long long)st.st_mtim.tv_sec;
		v[4] = (long long)st.st_mtim.tv_nsec;
	}
	EVP_DigestUpdate(md, path, strlen(path) + 1);
	EVP_DigestUpdate(md, v, sizeof(v));
}

int
tls_trust_stamp(const struct cfg_tunnel *t, unsigned char out[32])
{
	EVP_MD_CTX	*md;
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	char		 path[PATH_MAX];
	unsigned int	 n = 0;
	int		 i, k = 0, ok;

	if ((md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return -1;
	}
	if (t->ca != NULL)
		stamp_file(md, t->ca);
	for (i = 0; i < t->ncrl; i++)
		stamp_file(md, t->crl[i]);
	/* the system store: its bundle (the hashed directory's files are
	 * links into what update-ca-certificates rewrites) */
	if (t->ca == NULL && t->ca_dir == NULL)
		stamp_file(md, getenv("SSL_CERT_FILE") != NULL ?
		    getenv("SSL_CERT_FILE") : X509_get_default_cert_file());
	/* the files load_ca_dir reads: no dot names, no directories */
	if (t->ca_dir != NULL && (d = opendir(t->ca_dir)) != NULL) {
		while ((de = readdir(d)) != NULL && k++ < TLS_MAX_DIRENTS) {
			if (de->d_name[0] == '.' || snprintf(path,
			    sizeof(path), "%s/%s", t->ca_dir, de->d_name) >=
			    (int)sizeof(path))
				continue;
			if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
				continue;
			stamp_file(md, path);
		}
		closedir(d);
	}
	ok = EVP_DigestFinal_ex(md, out, &n) && n == 32;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* "ca = F and ca-dir = D", or "the system store" */
static void
trusted_by(struct tls_trust *tr, const struct cfg_tunnel *t)
{
	char	 by[1024];

	if (t->ca != NULL && t->ca_dir != NULL)
		snprintf(by, sizeof(by), "ca = %s and ca-dir = %s", t->ca,
		    t->ca_dir);
	else if (t->ca != NULL)
		snprintf(by, sizeof(by), "ca = %s", t->ca);
	else if (t->ca_dir != NULL)
		snprintf(by, sizeof(by), "ca-dir = %s", t->ca_dir);
	else
		snprintf(by, sizeof(by), "the system store");
	tr->by = strdup(by);	/* NULL: "the trusted CAs" is said */
}

/* The trust of the tunnel into the context, and its copy as ex_data. */
static int
set_trust(SSL_CTX *ctx, const struct cfg_tunnel *t, char *err, size_t errlen)
{
	X509_STORE		*store = SSL_CTX_get_cert_store(ctx);
	struct tls_trust	*tr;
	int			 i;

	if (trust_idx == -1 && (trust_idx = SSL_CTX_get_ex_new_index(0, NULL,
	    NULL, NULL, trust_free)) == -1) {
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	if ((tr = calloc(1, sizeof(*tr))) == NULL ||
	    !SSL_CTX_set_ex_data(ctx, trust_idx, tr)) {
		free(tr);
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	/* the context owns tr now (trust_free) */
	tr->npins = t->npins;
	memcpy(tr->pins, t->pins, sizeof(tr->pins));
	tr->ocsp = t->ocsp;
	tr->tls_min = t->tls_min;
	tr->tls_max = t->tls_max;
	tr->alpn = t->alpn_len > 0;
	trusted_by(tr, t);
	if (t->ca != NULL && !load_ca_file(store, t->ca, err, errlen))
		return 0;
	if (t->ca_dir != NULL && !load_ca_dir(store, tr, t->ca_dir, err,
	    errlen))
		return 0;
	if (t->ca == NULL && t->ca_dir == NULL &&
	    !SSL_CTX_set_default_verify_paths(ctx))
		return ssl_fail(err, errlen, "the system CA store");
	for (i = 0; i < t->ncrl; i++)
		if (!load_crl(store, tr, "crl", t->crl[i], err, errlen))
			return 0;
	/* CRLs, from crl = or in ca-dir: then for the whole chain */
	if (tr->crls != NULL && tr->crls->ncrl > 0)
		X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx),
		    X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	if (t->ocsp != CFG_OCSP_NO &&
	    (!SSL_CTX_set_tlsext_status_type(ctx, TLSEXT_STATUSTYPE_ocsp) ||
	    !SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb)))
		return ssl_fail(err, errlen, "ocsp");
	SSL_CTX_set_msg_callback(ctx, msg_cb);
	return 1;
}

/* Sigalgs a token can do without RSA-PSS: PKCS#1 v1.5 only. */
#define SIGALGS_PKCS1	"RSA+SHA256:RSA+SHA384:RSA+SHA512"

/* An RSA token key without PSS (neither native nor raw RSA) is limited. */
static int
restrict_pkcs1(SSL_CTX *ctx, struct cfg_tunnel *t, struct identity *id,
    char *err, size_t errlen)
{
	uint32_t	 caps = id->hid.caps;

	if (id->hid.keytype != PROTO_KEY_RSA ||
	    (caps & (PROTO_CAP_RSA_RAW | PROTO_CAP_RSA_PSS)))
		return 1;
	if (t->tls_min > TLS1_2_VERSION) {
		snprintf(err, errlen, "identity %s: the token can sign only "
		    "RSA PKCS#1 v1.5, which TLS 1.3 forbids, but tls-min is "
		    "1.3", id->cfg->name);
		return 0;
	}
	if (!SSL_CTX_set1_client_sigalgs_list(ctx, SIGALGS_PKCS1) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION))
		return ssl_fail(err, errlen, "sigalgs");
	log_info("tunnel %s: the token of identity %s cannot sign RSA-PSS "
	    "(neither CKM_RSA_PKCS_PSS nor CKM_RSA_X_509); offering TLS 1.2 "
	    "with RSA PKCS#1 signatures only", t->name, id->cfg->name);
	return 1;
}

/* Versions, suites, level, ALPN. */
static int
set_protocol(SSL_CTX *ctx, const struct cfg_tunnel *t, char *err,
    size_t errlen)
{
	if (!SSL_CTX_set_min_proto_version(ctx, t->tls_min) ||
	    !SSL_CTX_set_max_proto_version(ctx, t->tls_max))
		return ssl_fail(err, errlen, "TLS versions");
	if (!SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12))
		return ssl_fail(err, errlen, "the TLS 1.2 cipher suites");
	if (SSL_CTX_get_security_level(ctx) < TLS_SECLEVEL)
		SSL_CTX_set_security_level(ctx, TLS_SECLEVEL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION);
	if (t->alpn_len > 0 && SSL_CTX_set_alpn_protos(ctx, t->alpn,
	    (unsigned int)t->alpn_len) != 0)
		return ssl_fail(err, errlen, "alpn");
	return 1;
}

SSL_CTX *
tls_ctx_new(struct cfg_tunnel *t, struct identity *id, char *err,
    size_t errlen)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ssl_fail(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	if (!set_protocol(ctx, t, err, errlen))
		goto fail;
	/* read-ahead: one read(2) takes in several records, not a header
	 * and then a body each (the buffer goes when empty: the tunnel
	 * sets SSL_MODE_RELEASE_BUFFERS) */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
	if (t->session_cache == CFG_SESSION_NO)
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	else
		sess_ctx_setup(ctx);	/* resumption: agent/session.c */
	if (!set_trust(ctx, t, err, errlen))
		goto fail;
	if (id != NULL && (!SSL_CTX_use_certificate(ctx, id->hid.cert) ||
	    !SSL_CTX_use_PrivateKey(ctx, id->pkey))) {
		ssl_fail(err, errlen, "the identity's certificate and key");
		goto fail;
	}
	if (id != NULL && !restrict_pkcs1(ctx, t, id, err, errlen))
		goto fail;
	SSL_CTX_set_mode(ctx, SSL_MODE_ASYNC);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_ssl_setup(SSL *ssl, const char *name)
{
	struct tls_conn	*tc;
	unsigned char	 ip[16];
	size_t		 n = strlen(name);

	if (conn_idx == -1 && (conn_idx = SSL_get_ex_new_index(0, NULL, NULL,
	    NULL, conn_free)) == -1)
		return -1;
	if ((tc = calloc(1, sizeof(*tc))) == NULL)
		return -1;
	if (!SSL_set_ex_data(ssl, conn_idx, tc)) {
		free(tc);
		return -1;
	}
	tc->alert = -1;
	/* server-name = [::1] as connect = [::1]:port */
	if (n > 2 && name[0] == '[' && name[n - 1] == ']')
		snprintf(tc->name, sizeof(tc->name), "%.*s", (int)n - 2,
		    name + 1);
	else
		snprintf(tc->name, sizeof(tc->name), "%s", name);
	/* an address: no SNI (RFC 6066), its IP SAN checked */
	if (inet_pton(AF_INET, tc->name, ip) == 1 ||
	    inet_pton(AF_INET6, tc->name, ip) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    tc->name) ? 0 : -1;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set_tlsext_host_name(ssl, tc->name) &&
	    SSL_set1_host(ssl, tc->name) ? 0 : -1;
}

int
tls_handshake_done(SSL *ssl, char *buf, size_t len)
{
	const struct tls_trust	*tr = trust_of(ssl);
	const unsigned char	*p = NULL;
	unsigned int		 n = 0;

	SSL_set_msg_callback(ssl, NULL);	/* not for every record */
	SSL_get0_alpn_selected(ssl, &p, &n);
	snprintf(buf, len, "%.*s", p != NULL ? (int)n : 0,
	    p != NULL ? (const char *)p : "");
	clean(buf);
	return n == 0 && tr != NULL && tr->alpn;
}

/* "pin mismatch: got sha256//A (server), sha256//B (...)": what the
 * chain the server sent has, to compare with pin-sha256. */
static void
pin_mismatch(SSL *ssl, char *out, size_t len)
{
	STACK_OF(X509)	*chain = SSL_get_peer_cert_chain(ssl);
	unsigned char	 h[32];
	char		 b64[64], cn[128];
	size_t		 n;
	int		 i;

	snprintf(out, len, "pin mismatch: no pin-sha256 of the tunnel matches "
	    "the server's chain; got");
	for (i = 0; chain != NULL && i < sk_X509_num(chain) && i < 4; i++) {
		if (!spki_sha256(sk_X509_value(chain, i), h))
			continue;
		EVP_EncodeBlock((unsigned char *)b64, h, 32);
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(
		    sk_X509_value(chain, i)), NID_commonName, cn,
		    sizeof(cn)) < 0)
			snprintf(cn, sizeof(cn), "?");
		clean(cn);
		n = strlen(out);
		snprintf(out + n, len - n, "%s sha256//%s (%s CN=%s)",
		    i ? "," : "", b64, i ? "issuer" : "server", cn);
	}
}

static const char *
version_name(int v)
{
	switch (v) {
	case SSL3_VERSION:	return "SSL 3.0";
	case TLS1_VERSION:	return "TLS 1.0";
	case TLS1_1_VERSION:	return "TLS 1.1";
	case TLS1_2_VERSION:	return "TLS 1.2";
	case TLS1_3_VERSION:	return "TLS 1.3";
	default:		return "an unknown version";
	}
}

/* A handshake that failed on versions or suites: 1 if said. */
static int
describe_protocol(SSL *ssl, const struct tls_conn *tc, unsigned long last,
    char *out, size_t len)
{
	const struct tls_trust	*tr = trust_of(ssl);
	const char		*min, *max;

	if (tr == NULL)
		return 0;
	min = tr->tls_min == TLS1_3_VERSION ? "1.3" : "1.2";
	max = SSL_get_max_proto_version(ssl) == TLS1_2_VERSION ? "1.2" :
	    "1.3";
	if (tc->server_version != 0 && tc->server_version < tr->tls_min &&
	    ERR_GET_REASON(last) == SSL_R_UNSUPPORTED_PROTOCOL)
		snprintf(out, len, "the server speaks only %s, tls-min is %s",
		    version_name(tc->server_version), min);
	else if (tc->alert == SSL_AD_PROTOCOL_VERSION &&
	    SSL_get_max_proto_version(ssl) == TLS1_2_VERSION)
		/* capped at 1.2: the server may want 1.3 only */
		snprintf(out, len, "the server refused TLS %s%s%s "
		    "(protocol_version alert): it speaks only TLS 1.3, which "
		    "this tunnel does not offer (%s), or only versions older "
		    "than 1.2", min, strcmp(min, max) ? " to " : "",
		    strcmp(min, max) ? max : "", tr->tls_max == TLS1_2_VERSION ?
		    "tls-max = 1.2" : "the token cannot sign RSA-PSS, which "
		    "TLS 1.3 needs");
	else if (tc->alert == SSL_AD_PROTOCOL_VERSION)
		snprintf(out, len, "the server refused TLS %s%s%s "
		    "(protocol_version alert): it speaks only older versions, "
		    "tls-min is %s", min, strcmp(min, max) ? " to " : "",
		    strcmp(min, max) ? max : "", min);
	else if (tc->alert == SSL_AD_HANDSHAKE_FAILURE ||
	    tc->alert == SSL_AD_INSUFFICIENT_SECURITY)
		snprintf(out, len, "the server refused the handshake (%s "
		    "alert): no TLS version, cipher suite, group or signature "
		    "algorithm in common? offered: TLS %s%s%s, and in TLS 1.2 "
		    "ECDHE with AES-GCM or ChaCha20-Poly1305 only",
		    SSL_alert_desc_string_long(tc->alert), min,
		    strcmp(min, max) ? " to " : "", strcmp(min, max) ? max : "");
	else
		return 0;
	return 1;
}

/*
 * Why a handshake failed, for the log: a token that did not sign
 * (engine/rkey.c raises ERR_LIB_USER with the reason), the pins, what the
 * verify or OCSP callback noted, the versions, then OpenSSL's last word.
 */
int
tls_describe_failure(SSL *ssl, char *out, size_t len)
{
	const struct tls_conn	*tc = conn_of(ssl);
	long			 v = SSL_get_verify_result(ssl);
	unsigned long		 e, last = 0;
	const char		*data;
	char			 buf[256] = "", token[256] = "";
	int			 flags;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		last = e;
		if (ERR_GET_LIB(e) == ERR_LIB_USER && (flags & ERR_TXT_STRING))
			snprintf(token, sizeof(token), "%s", data);
	}
	if (last != 0)
		ERR_error_string_n(last, buf, sizeof(buf));
	if (token[0] != '\0') {
		snprintf(out, len, "%s", token);
		return 1;
	}
	if (tc != NULL && tc->pin_failed)
		pin_mismatch(ssl, out, len);
	else if (tc != NULL && tc->why[0] != '\0')
		snprintf(out, len, "server certificate refused: %s", tc->why);
	else if (v != X509_V_OK)
		snprintf(out, len, "server certificate refused: %s",
		    X509_verify_cert_error_string(v));
	else if (tc != NULL && describe_protocol(ssl, tc, last, out, len))
		;
	else if (buf[0] != '\0')
		snprintf(out, len, "%s", buf);
	else
		snprintf(out, len, "connection closed during the handshake");
	return 0;
}
