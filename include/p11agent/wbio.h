/*
 * p11agent: the upstream socket as an OpenSSL BIO that can gather the
 * records of several SSL_writes into one send(2) (agent/wbio.c).
 *
 * OpenSSL writes each TLS record to its BIO on its own: 64 KB from the
 * client are four records and, through a socket BIO, four send(2) calls
 * and four loopback packets.  While gathering is on, records are copied
 * into a buffer (taken only then, given back once sent) and go out with
 * one send(2) at wbio_flush.  Otherwise it behaves as a socket BIO:
 * reads, and writes straight to the socket unless bytes already wait,
 * which keeps the order of everything written.
 */
#ifndef P11AGENT_WBIO_H
#define P11AGENT_WBIO_H

#include <openssl/bio.h>

/* A BIO on fd (not closed by it), for both directions; NULL: no memory. */
BIO	*wbio_new(int fd);
/* Gathering on (1) or off (0). */
void	 wbio_gather(BIO *, int on);
/* Sends what waits: 1 when all is out, 0 when the socket is full (wait
 * for EPOLLOUT), -1 on an error (errno says). */
int	 wbio_flush(BIO *);
/* Bytes waiting to be sent. */
size_t	 wbio_pending(BIO *);
/* Frees the BIO method (at exit, after the last SSL). */
void	 wbio_cleanup(void);

#endif
