/*
 * ocsp-stale: an OCSP response whose nextUpdate has passed, for
 * tests/t-server-trust.sh (the openssl CLI dates its responses now).
 *
 * usage: ocsp-stale ISSUER KEY CERT OUT
 *
 * Writes to OUT (DER) a successful basic response signed by ISSUER with
 * KEY: CERT is good, thisUpdate 3 days ago, nextUpdate 1 day ago.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define PROG	"ocsp-stale"
#define DAY	86400L

static X509 *
read_cert(const char *path)
{
	FILE	*fp;
	X509	*x;

	if ((fp = fopen(path, "r")) == NULL) {
		perror(path);
		exit(1);
	}
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	if (x == NULL) {
		fprintf(stderr, PROG ": %s: no certificate\n", path);
		exit(1);
	}
	return x;
}

int
main(int argc, char *argv[])
{
	OCSP_BASICRESP	*bs;
	OCSP_RESPONSE	*rsp;
	OCSP_CERTID	*id;
	ASN1_TIME	*thisupd, *nextupd;
	X509		*issuer, *cert;
	EVP_PKEY	*key;
	FILE		*fp;
	time_t		 now = time(NULL);
	unsigned char	*der = NULL;
	int		 n;

	if (argc != 5) {
		fprintf(stderr, "usage: " PROG " ISSUER KEY CERT OUT\n");
		return 2;
	}
	issuer = read_cert(argv[1]);
	cert = read_cert(argv[3]);
	if ((fp = fopen(argv[2], "r")) == NULL) {
		perror(argv[2]);
		return 1;
	}
	key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	thisupd = ASN1_TIME_adj(NULL, now, -3, 0);
	nextupd = ASN1_TIME_adj(NULL, now, -1, 0);
	if (key == NULL || thisupd == NULL || nextupd == NULL ||
	    (bs = OCSP_BASICRESP_new()) == NULL ||
	    (id = OCSP_cert_to_id(EVP_sha1(), cert, issuer)) == NULL ||
	    OCSP_basic_add1_status(bs, id, V_OCSP_CERTSTATUS_GOOD, 0, NULL,
	    thisupd, nextupd) == NULL ||
	    !OCSP_basic_sign(bs, issuer, key, EVP_sha256(), NULL, 0) ||
	    (rsp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL,
	    bs)) == NULL) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	if ((n = i2d_OCSP_RESPONSE(rsp, &der)) <= 0 ||
	    (fp = fopen(argv[4], "wb")) == NULL ||
	    fwrite(der, 1, (size_t)n, fp) != (size_t)n || fclose(fp) != 0) {
		perror(argv[4]);
		return 1;
	}
	OPENSSL_free(der);
	OCSP_CERTID_free(id);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(rsp);
	ASN1_TIME_free(thisupd);
	ASN1_TIME_free(nextupd);
	EVP_PKEY_free(key);
	X509_free(issuer);
	X509_free(cert);
	return 0;
}
