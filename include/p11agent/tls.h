/*
 * p11agent: the TLS client side of a tunnel (agent/tls.c).
 */
#ifndef P11AGENT_TLS_H
#define P11AGENT_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* OpenSSL's read buffer (read-ahead): four full records */
#define TLS_READ_BUFFER	(4 * (16384 + 512))

struct cfg_tunnel;
struct identity;

/* A client context for the tunnel with the identity's certificate and
 * token key; NULL with a message in err. */
SSL_CTX	*tls_ctx_new(struct cfg_tunnel *, struct identity *, char *, size_t);
/* Why a handshake failed, for the connection's log line; returns 1 when
 * the token did not sign, else 0. */
int	 tls_describe_failure(SSL *, char *, size_t);

#endif
