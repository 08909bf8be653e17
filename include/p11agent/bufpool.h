/*
 * p11agent: buffers for bytes in flight (agent/bufpool.c).
 *
 * A tunnel's pump buffers and the records the upstream BIO gathers
 * (agent/wbio.c) are taken from here only while bytes wait and given
 * back at once, so an idle tunnel holds none; a few spares are kept.
 */
#ifndef P11AGENT_BUFPOOL_H
#define P11AGENT_BUFPOOL_H

/* Four full TLS records (16384 bytes of data, at most 256 more each). */
#define BUFPOOL_SIZE	(4 * (16384 + 256))

/* A buffer of BUFPOOL_SIZE bytes; NULL when out of memory. */
void	*bufpool_get(void);
/* Gives a buffer back; NULL is fine. */
void	 bufpool_put(void *);
/* Frees the spares (at exit). */
void	 bufpool_cleanup(void);

#endif
