/*
 * p11agent: the command line of enrollment:
 *	p11agent enroll --key URI --type TYPE --subject DN [--san NAME]...
 *	    [--pin SOURCE] [-m MODULE] [-o FILE]
 *	p11agent import-cert --key URI [--pin SOURCE] [-m MODULE] FILE
 * The token helper generates the key and writes the certificates; this
 * process builds the CSR and signs it through the helper (rkey), and
 * never loads a module.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "p11agent/audit.h"
#include "p11agent/enroll.h"
#include "p11agent/error.h"
#include "p11agent/helper.h"
#include "p11agent/identity.h"
#include "p11agent/log.h"
#include "p11agent/proto.h"

#define GENKEY_TIMEOUT_MS	180000	/* RSA keys on a slow card */
#define OPEN_TIMEOUT_MS		60000
#define SIGN_TIMEOUT_MS		30000
#define IMPORT_TIMEOUT_MS	60000
#define MAX_SANS		32
#define MAX_DN			1024
#define MAX_CERT_FILE		(256 * 1024)

static const struct {
	const char	*name;
	int		 keytype;
	uint32_t	 bits;
} types[] = {
	{ "rsa:2048", PROTO_KEY_RSA, 2048 },
	{ "rsa:3072", PROTO_KEY_RSA, 3072 },
	{ "ec:p256", PROTO_KEY_EC, 256 },
	{ "ec:p384", PROTO_KEY_EC, 384 },
};

static void
enroll_usage(FILE *fp)
{
	fprintf(fp, "usage: p11agent enroll --key URI --type "
	    "rsa:2048|rsa:3072|ec:p256|ec:p384\n"
	    "           --subject /CN=NAME[/O=ORG...] [--san DNS:NAME|IP:ADDR|"
	    "email:ADDR|URI:URI]...\n"
	    "           [--pin SOURCE] [-m MODULE] [-o FILE] [-v]\n"
	    "  generates a key pair on the token (the URI's id= and object= "
	    "name it)\n"
	    "  and writes a PKCS#10 request signed by it (PEM) to FILE or "
	    "stdout\n");
}

static void
import_usage(FILE *fp)
{
	fprintf(fp, "usage: p11agent import-cert --key URI [--pin SOURCE] "
	    "[-m MODULE] [-v] FILE\n"
	    "  writes the certificate in FILE (PEM; more certificates after "
	    "it are its\n"
	    "  chain) to the key's token, after checking it holds the key's "
	    "public key\n");
}

/* A helper for the module (or the registry), with an fd: PIN given. */
struct session {
	struct helper	*h;
	char		*src;		/* fd:N as an env: source */
	const char	*pin;		/* what to send */
};

static int
session_start(struct session *s, const char *module, const char *pin)
{
	struct helper_opts	 o;
	char			 err[1024], *env[2] = { NULL, NULL };
	int			 r;

	memset(s, 0, sizeof(*s));
	memset(&o, 0, sizeof(o));
	o.module = module;
	o.allow = (char *const *)&module;	/* named right here: allowed */
	o.nallow = module != NULL;
	s->pin = pin;
	if (pin != NULL && strncmp(pin, "fd:", 3) == 0) {
		if (identity_pin_fd(pin, "--pin", &env[0], &s->src) != 0)
			return -1;
		o.env = env;
		s->pin = s->src;
	}
	r = helper_start(&o, &s->h, err, sizeof(err));
	identity_pin_kv_free(env[0]);	/* the helper has its copy */
	if (r != 0) {
		log_err("%s", err);
		return -1;
	}
	return 0;
}

static void
session_end(struct session *s)
{
	helper_free(s->h);
	free(s->src);
	memset(s, 0, sizeof(*s));
}

/* ---- enroll: the arguments */

static int
parse_type(const char *s, int *keytype, uint32_t *bits)
{
	size_t	 i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(types[i].name, s) == 0) {
			*keytype = types[i].keytype;
			*bits = types[i].bits;
			return 0;
		}
	log_err("--type %s: not a key type; use rsa:2048, rsa:3072, ec:p256 "
	    "or ec:p384", s);
	return -1;
}

/*
 * "/CN=name/O=org": types OpenSSL knows, values UTF-8; '\' escapes the
 * next character (a '/' in a value).  At least one component.
 */
static int
parse_subject(const char *dn, X509_NAME **out)
{
	X509_NAME	*n = NULL;
	char		 buf[MAX_DN], *p, *type, *val, *w;
	int		 r = -1;

	if (strlen(dn) >= sizeof(buf) || dn[0] != '/' || dn[1] == '\0') {
		log_err("--subject '%s': write the name as /CN=NAME[/O=ORG...] "
		    "(at most %d bytes)", dn, MAX_DN - 1);
		return -1;
	}
	if ((n = X509_NAME_new()) == NULL)
		return -1;
	snprintf(buf, sizeof(buf), "%s", dn + 1);
	for (p = buf; *p != '\0';) {
		type = p;
		if ((val = strchr(p, '=')) == NULL || val == type) {
			log_err("--subject '%s': '%s' is not TYPE=VALUE (e.g. "
			    "/CN=NAME/O=ORG)", dn, type);
			goto out;
		}
		*val++ = '\0';
		/* unescape the value in place, up to an unescaped '/' */
		for (p = w = val; *p != '\0' && *p != '/'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			*w++ = *p;
		}
		if (*p == '/')
			p++;
		*w = '\0';
		if (*val == '\0') {
			log_err("--subject '%s': %s has an empty value", dn,
			    type);
			goto out;
		}
		if (OBJ_txt2nid(type) == NID_undef) {
			log_err("--subject '%s': unknown attribute type '%s' "
			    "(use CN, O, OU, C, L, ST, emailAddress, ...)", dn,
			    type);
			goto out;
		}
		if (!X509_NAME_add_entry_by_txt(n, type, MBSTRING_UTF8,
		    (const unsigned char *)val, -1, -1, 0)) {
			ERR_clear_error();
			log_err("--subject '%s': %s=%s is not a valid value "
			    "(C= is two letters)", dn, type, val);
			goto out;
		}
	}
	*out = n;
	n = NULL;
	r = 0;
out:
	X509_NAME_free(n);
	return r;
}

/* A DNS name: labels of letters, digits and '-', a leading "*." allowed. */
static int
dns_ok(const char *s)
{
	const char	*p;
	size_t		 label = 0;

	if (strncmp(s, "*.", 2) == 0)
		s += 2;
	if (*s == '\0' || strlen(s) > 253)
		return 0;
	for (p = s; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return 0;
			label = 0;
		} else if (isalnum((unsigned char)*p) || (*p == '-' &&
		    label > 0)) {
			if (++label > 63)
				return 0;
		} else
			return 0;
	}
	return label > 0 && p[-1] != '-';
}

static int
ia5_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* One --san TYPE:VALUE as a GeneralName. */
static int
parse_san(const char *arg, GENERAL_NAMES *names)
{
	GENERAL_NAME	*g = NULL;
	ASN1_IA5STRING	*s = NULL;
	ASN1_OCTET_STRING *ip = NULL;
	const char	*v;
	int		 type = -1;

	if ((v = strchr(arg, ':')) != NULL) {
		v++;
		if (strncmp(arg, "DNS:", 4) == 0 && dns_ok(v))
			type = GEN_DNS;
		else if (strncmp(arg, "email:", 6) == 0 && ia5_ok(v) &&
		    strchr(v, '@') != NULL && v[0] != '@')
			type = GEN_EMAIL;
		else if (strncmp(arg, "URI:", 4) == 0 && ia5_ok(v) &&
		    strchr(v, ':') != NULL)
			type = GEN_URI;
		else if (strncmp(arg, "IP:", 3) == 0 &&
		    (ip = a2i_IPADDRESS(v)) != NULL)
			type = GEN_IPADD;
	}
	ERR_clear_error();
	if (type == -1) {
		log_err("--san '%s': not DNS:NAME, IP:ADDRESS, email:ADDRESS "
		    "or URI:URI (a DNS name is letters, digits, '-' and dots)",
		    arg);
		return -1;
	}
	if ((g = GENERAL_NAME_new()) == NULL)
		goto fail;
	if (type == GEN_IPADD)
		GENERAL_NAME_set0_value(g, type, ip);
	else {
		if ((s = ASN1_IA5STRING_new()) == NULL ||
		    !ASN1_STRING_set(s, v, -1))
			goto fail;
		GENERAL_NAME_set0_value(g, type, s);
	}
	ip = NULL;
	s = NULL;
	if (!sk_GENERAL_NAME_push(names, g))
		goto fail;
	return 0;
fail:
	GENERAL_NAME_free(g);
	ASN1_IA5STRING_free(s);
	ASN1_OCTET_STRING_free(ip);
	log_err("out of memory");
	return -1;
}

/* ---- enroll: the request */

static X509_REQ *
make_req(X509_NAME *subj, GENERAL_NAMES *sans, EVP_PKEY *pub)
{
	X509_REQ			*req;
	STACK_OF(X509_EXTENSION)	*exts = NULL;
	X509_EXTENSION			*ext = NULL;
	int				 ok = 0;

	if ((req = X509_REQ_new()) == NULL ||
	    !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_subject_name(req, subj) ||
	    !X509_REQ_set_pubkey(req, pub))
		goto out;
	if (sk_GENERAL_NAME_num(sans) > 0) {
		if ((exts = sk_X509_EXTENSION_new_null()) == NULL ||
		    (ext = X509V3_EXT_i2d(NID_subject_alt_name, 0,
		    sans)) == NULL || !sk_X509_EXTENSION_push(exts, ext))
			goto out;
		ext = NULL;
		if (!X509_REQ_add_extensions(req, exts))
			goto out;
	}
	ok = 1;
out:
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	if (!ok) {
		X509_REQ_free(req);
		req = NULL;
	}
	return req;
}

/*
 * Signs the request's CertificationRequestInfo with the token key.  Not
 * X509_REQ_sign: OpenSSL 3.0 asks a provider key's signature context for
 * its AlgorithmIdentifier, which our provider does not give; the
 * identifier of PKCS#1 v1.5 or ECDSA with md is well known.
 */
static int
sign_req(X509_REQ *req, EVP_PKEY *pk, int keytype, const EVP_MD *md)
{
	EVP_MD_CTX	*mc = NULL;
	X509_ALGOR	*alg = NULL;
	ASN1_BIT_STRING	*bits = NULL;
	unsigned char	*tbs = NULL, *sig = NULL;
	size_t		 siglen = 0;
	int		 nid, tbslen, r = -1;

	if (!OBJ_find_sigid_by_algs(&nid, EVP_MD_get_type(md), keytype ==
	    PROTO_KEY_RSA ? NID_rsaEncryption : NID_X9_62_id_ecPublicKey) ||
	    (alg = X509_ALGOR_new()) == NULL ||
	    !X509_ALGOR_set0(alg, OBJ_nid2obj(nid), keytype == PROTO_KEY_RSA ?
	    V_ASN1_NULL : V_ASN1_UNDEF, NULL) ||
	    !X509_REQ_set1_signature_algo(req, alg) ||
	    (tbslen = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0 ||
	    (mc = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(mc, NULL, md, NULL, pk) != 1 ||
	    EVP_DigestSign(mc, NULL, &siglen, tbs, (size_t)tbslen) != 1 ||
	    (sig = OPENSSL_malloc(siglen)) == NULL ||
	    EVP_DigestSign(mc, sig, &siglen, tbs, (size_t)tbslen) != 1 ||
	    (bits = ASN1_BIT_STRING_new()) == NULL)
		goto out;
	ASN1_STRING_set0(bits, sig, (int)siglen);
	sig = NULL;
	/* no unused bits */
	bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bits);
	r = 0;
out:
	X509_ALGOR_free(alg);
	EVP_MD_CTX_free(mc);
	OPENSSL_free(tbs);
	OPENSSL_free(sig);
	return r;
}

struct enroll_args {
	const char	*key, *type, *subject, *pin, *module, *outfile;
	const char	*sans[MAX_SANS];
	int		 nsans;
	int		 keytype;
	uint32_t	 bits;
	X509_NAME	*subj;
	GENERAL_NAMES	*names;
};

/* The key is on the token: the CSR, signed there, to out. */
static int
write_csr(struct session *s, struct enroll_args *a, struct enroll_key *ek,
    BIO *out)
{
	struct helper_identity	 hid;
	EVP_PKEY		*pk = NULL;
	X509_REQ		*req = NULL;
	const EVP_MD		*md = a->bits == 384 ? EVP_sha384() :
	    EVP_sha256();
	struct audit_sig	 g;
	int			 r = -1, signed_ok;

	memset(&hid, 0, sizeof(hid));
	if (helper_open(s->h, ek->uri, "none", s->pin, OPEN_TIMEOUT_MS,
	    &hid) != 0) {
		log_err("%s", helper_error(s->h));
		goto out;
	}
	if (hid.keytype != ek->keytype ||
	    rkey_new_pub(s->h, &hid, ek->pub, SIGN_TIMEOUT_MS, &pk) != 0) {
		log_err("%s: the opened key is not the generated one", ek->uri);
		goto out;
	}
	if ((req = make_req(a->subj, a->names, ek->pub)) == NULL) {
		log_ssl(LOG_LVL_ERR, __func__, "cannot build the request");
		goto out;
	}
	/* the request's signature is in the audit trail too */
	g = (struct audit_sig){ .identity = ek->uri,
	    .purpose = "p11agent enroll's certificate request" };
	rkey_set_audit(audit_local, &g);
	signed_ok = sign_req(req, pk, a->keytype, md) == 0;
	rkey_set_audit(NULL, NULL);
	if (!signed_ok) {
		log_ssl(LOG_LVL_ERR, __func__, "the token did not sign the "
		    "request");
		goto out;
	}
	if (X509_REQ_verify(req, ek->pub) != 1) {
		log_ssl(LOG_LVL_ERR, __func__, "the request's signature does "
		    "not verify with the new public key");
		goto out;
	}
	if (PEM_write_bio_X509_REQ(out, req) != 1 || BIO_flush(out) != 1) {
		log_ssl(LOG_LVL_ERR, __func__, "%s: cannot write the request",
		    a->outfile ? a->outfile : "stdout");
		goto out;
	}
	r = 0;
out:
	X509_REQ_free(req);
	EVP_PKEY_free(pk);
	helper_identity_clear(&hid);
	return r;
}

static const char *
key_desc(const struct enroll_key *ek, char *buf, size_t size)
{
	snprintf(buf, size, "%s%s%s%s%s%s",
	    ek->flags & ENROLL_KEY_SENSITIVE ? "sensitive" : "NOT sensitive",
	    ek->flags & ENROLL_KEY_EXTRACTABLE ? ", EXTRACTABLE" :
	    ", never extractable",
	    ek->flags & ENROLL_KEY_SIGN ? ", sign" : "",
	    ek->flags & ENROLL_KEY_DECRYPT ? ", decrypt" : "",
	    ek->flags & ENROLL_KEY_UNWRAP ? ", unwrap" : "",
	    ek->flags & ENROLL_KEY_DERIVE ? ", derive" : "");
	return buf;
}

/*
 * -o FILE, before the key exists: can the request be written?  An
 * existing file is kept as it is until the request is ready.
 */
static int
open_output(const char *path, int *created)
{
	int	 fd;

	*created = 0;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0644)) != -1)
		*created = 1;
	else if (errno == EEXIST)
		fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		log_err_sys("-o %s", path);
	return fd;
}

static int
enroll_run(struct enroll_args *a)
{
	struct session		 s;
	struct enroll_key	 ek;
	BIO			*out = NULL;
	char			 desc[128];
	int			 r = 1, fd = -1, made = 0, created = 0;

	memset(&ek, 0, sizeof(ek));
	memset(&s, 0, sizeof(s));
	if (a->outfile != NULL && (fd = open_output(a->outfile,
	    &created)) == -1)
		return 1;
	if (session_start(&s, a->module, a->pin) != 0)
		goto out;
	if (helper_genkey(s.h, a->key, a->keytype, a->bits, s.pin,
	    GENKEY_TIMEOUT_MS, &ek) != 0) {
		log_err("%s", helper_error(s.h));
		goto out;
	}
	made = 1;
	log_info("generated %s key %s on the token: %s", a->type, ek.uri,
	    key_desc(&ek, desc, sizeof(desc)));
	if (fd != -1 && ftruncate(fd, 0) == -1) {
		log_err_sys("-o %s", a->outfile);
		goto out;
	}
	if ((out = fd == -1 ? BIO_new_fp(stdout, BIO_NOCLOSE) :
	    BIO_new_fd(fd, BIO_CLOSE)) == NULL)
		goto out;
	fd = -1;
	if (write_csr(&s, a, &ek, out) != 0)
		goto out;
	log_info("certificate request for %s written to %s", a->subject,
	    a->outfile ? a->outfile : "stdout");
	r = 0;
out:
	if (r != 0 && made)
		log_err("the key %s stays on the token; enroll again with "
		    "another id= and object=, or delete it with the token's "
		    "tool", ek.uri);
	if (r != 0 && created)
		(void)unlink(a->outfile);
	if (fd != -1)
		close(fd);
	BIO_free(out);
	enroll_key_clear(&ek);
	session_end(&s);
	return r;
}

static int
enroll_check(struct enroll_args *a)
{
	int	 i;

	if (a->key == NULL || a->type == NULL || a->subject == NULL) {
		log_err("enroll: %s is required", a->key == NULL ? "--key URI" :
		    a->type == NULL ? "--type TYPE" : "--subject DN");
		return -1;
	}
	if (strncmp(a->key, "pkcs11:", 7) != 0) {
		log_err("--key %s: not a pkcs11: URI", a->key);
		return -1;
	}
	if (parse_type(a->type, &a->keytype, &a->bits) != 0 ||
	    parse_subject(a->subject, &a->subj) != 0)
		return -1;
	if ((a->names = GENERAL_NAMES_new()) == NULL)
		return -1;
	for (i = 0; i < a->nsans; i++)
		if (parse_san(a->sans[i], a->names) != 0)
			return -1;
	return 0;
}

int
enroll_main(int argc, char *argv[])
{
	static const struct option	 opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "key", required_argument, NULL, 'k' },
		{ "module", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "pin", required_argument, NULL, 'p' },
		{ "san", required_argument, NULL, 'S' },
		{ "subject", required_argument, NULL, 's' },
		{ "type", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct enroll_args	 a;
	int			 ch, verbose = 0, r = 2;

	memset(&a, 0, sizeof(a));
	while ((ch = getopt_long(argc, argv, "hk:m:o:p:s:t:v", opts,
	    NULL)) != -1) {
		switch (ch) {
		case 'h':	enroll_usage(stdout); return 0;
		case 'k':	a.key = optarg; break;
		case 'm':	a.module = optarg; break;
		case 'o':	a.outfile = optarg; break;
		case 'p':	a.pin = optarg; break;
		case 's':	a.subject = optarg; break;
		case 't':	a.type = optarg; break;
		case 'v':	verbose++; break;
		case 'S':
			if (a.nsans == MAX_SANS) {
				fprintf(stderr, "p11agent: --san: at most %d\n",
				    MAX_SANS);
				return 2;
			}
			a.sans[a.nsans++] = optarg;
			break;
		default:
			enroll_usage(stderr);
			return 2;
		}
	}
	log_init("p11agent", verbose);
	if (optind != argc) {
		log_err("enroll: unexpected argument '%s'", argv[optind]);
		enroll_usage(stderr);
		return 2;
	}
	if (enroll_check(&a) == 0)
		r = enroll_run(&a);
	else
		enroll_usage(stderr);
	X509_NAME_free(a.subj);
	GENERAL_NAMES_free(a.names);
	return r;
}

/* ---- import-cert */

/* The PEM certificates of path, at least one, at most ENROLL_MAX_CERTS. */
static int
read_certs(const char *path, X509 **certs, int *np)
{
	BIO		*b;
	X509		*x;
	unsigned long	 e;
	int		 n = 0, r = -1;

	if ((b = BIO_new_file(path, "r")) == NULL) {
		log_err("%s: %s", path, strerror(errno));
		ERR_clear_error();
		return -1;
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (n == ENROLL_MAX_CERTS) {
			X509_free(x);
			log_err("%s: more than %d certificates", path,
			    ENROLL_MAX_CERTS);
			goto out;
		}
		certs[n++] = x;
		if (BIO_tell(b) > MAX_CERT_FILE) {
			log_err("%s: larger than %d bytes", path,
			    MAX_CERT_FILE);
			goto out;
		}
	}
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM ||
	    ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
		log_ssl(LOG_LVL_ERR, __func__, "%s: certificate %d does not "
		    "parse", path, n + 1);
		goto out;
	}
	ERR_clear_error();
	if (n == 0) {
		log_err("%s: no certificate (-----BEGIN CERTIFICATE-----) in "
		    "it", path);
		goto out;
	}
	*np = n;
	r = 0;
out:
	if (r != 0)
		while (n > 0)
			X509_free(certs[--n]);
	BIO_free(b);
	return r;
}

static int
import_run(const char *key, const char *pin, const char *module,
    const char *file)
{
	struct session		 s;
	struct enroll_import	 im;
	X509			*certs[ENROLL_MAX_CERTS];
	uint32_t		 i;
	int			 n = 0, r = 1;

	memset(&s, 0, sizeof(s));
	memset(&im, 0, sizeof(im));
	if (read_certs(file, certs, &n) != 0)
		return 1;
	if (session_start(&s, module, pin) != 0)
		goto out;
	if (helper_import(s.h, key, s.pin, certs, n, IMPORT_TIMEOUT_MS,
	    &im) != 0) {
		log_err("%s", helper_error(s.h));
		goto out;
	}
	for (i = 0; i < im.n; i++)
		log_info("%s '%s' %s", i == 0 ? "certificate" :
		    "chain certificate", im.certs[i].label ? im.certs[i].label :
		    "", im.certs[i].status == ENROLL_CERT_PRESENT ?
		    "was already on the token" : "written to the token");
	r = 0;
out:
	enroll_import_clear(&im);
	while (n > 0)
		X509_free(certs[--n]);
	session_end(&s);
	return r;
}

int
import_cert_main(int argc, char *argv[])
{
	static const struct option	 opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "key", required_argument, NULL, 'k' },
		{ "module", required_argument, NULL, 'm' },
		{ "pin", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char	*key = NULL, *pin = NULL, *module = NULL;
	int		 ch, verbose = 0;

	while ((ch = getopt_long(argc, argv, "hk:m:p:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'h':	import_usage(stdout); return 0;
		case 'k':	key = optarg; break;
		case 'm':	module = optarg; break;
		case 'p':	pin = optarg; break;
		case 'v':	verbose++; break;
		default:
			import_usage(stderr);
			return 2;
		}
	}
	log_init("p11agent", verbose);
	if (key == NULL || optind != argc - 1) {
		log_err("import-cert: %s", key == NULL ? "--key URI is "
		    "required" : "give exactly one certificate FILE");
		import_usage(stderr);
		return 2;
	}
	if (strncmp(key, "pkcs11:", 7) != 0) {
		log_err("--key %s: not a pkcs11: URI", key);
		return 2;
	}
	return import_run(key, pin, module, argv[optind]);
}
