/*
 * p11agent: the TLS client side of a tunnel (agent/tls.c).
 *
 * The server is verified in full, and no option turns that off: its chain
 * up to a CA of ca = and/or ca-dir = (or the system store), the name or IP
 * address the tunnel connects to (or server-name =), the CRLs of crl =
 * for every certificate of the chain, a stapled OCSP response (asked for
 * unless ocsp = no, required with ocsp = require), the pins of pin-sha256
 * =, and security level 2 (RSA keys of 2048 bits, no SHA-1 signatures).
 * TLS 1.2 with ECDHE and AEAD suites only, or TLS 1.3; ALPN when alpn =
 * is set.  A refusal says exactly what was wrong (tls_describe_failure).
 */
#ifndef P11AGENT_TLS_H
#define P11AGENT_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* OpenSSL's read buffer (read-ahead): four full records */
#define TLS_READ_BUFFER	(4 * (16384 + 512))

/* The TLS 1.2 suites offered: ECDHE key exchange, AEAD ciphers */
#define TLS_CIPHERS_12	"ECDHE+AESGCM:ECDHE+CHACHA20:!PSK:!aNULL"
/* the lowest security level (2: RSA/DH 2048, ECC 224, no SHA-1) */
#define TLS_SECLEVEL	2

struct cfg_tunnel;
struct identity;

/* A client context for the tunnel with the identity's certificate and
 * token key (id NULL: none, for p11agent check), its CA file or directory
 * and CRL files loaded; NULL with a message in err naming the key and
 * the file that did not load. */
SSL_CTX	*tls_ctx_new(struct cfg_tunnel *, struct identity *, char *, size_t);
/* A new connection's SSL of such a context: the name checked (a host name,
 * also sent as SNI, or an IPv4/IPv6 address, brackets allowed) and the
 * connection's state for tls_describe_failure; 0 or -1. */
int	 tls_ssl_setup(SSL *, const char *name);
/* After a handshake succeeded: the ALPN protocol the server chose in buf
 * ("" if none); returns 1 when the tunnel offered protocols and the
 * server chose none, else 0. */
int	 tls_handshake_done(SSL *, char *buf, size_t);
/* What the tunnel's trust files are now (ca, crl, ca-dir and its
 * files: names and stat), hashed: a reload rebuilds a tunnel's context
 * only when it changed.  0, or -1 (then take it as changed). */
int	 tls_trust_stamp(const struct cfg_tunnel *, unsigned char out[32]);
/* Why a handshake failed, for the connection's log line (what failed in
 * the server's certificate, chain, CRL, OCSP staple, pins or version);
 * returns 1 when the token did not sign, else 0. */
int	 tls_describe_failure(SSL *, char *, size_t);

#endif
