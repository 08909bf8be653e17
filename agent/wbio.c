/*
 * p11agent: the upstream socket BIO that gathers records (wbio.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>

#include "p11agent/bufpool.h"
#include "p11agent/wbio.h"


struct wbio {
	int		 fd;
	int		 gather;
	int		 eof;		/* a read returned 0 */
	char		*buf;		/* only while bytes wait */
	size_t		 off, len;	/* sent, written into buf */
};

static BIO_METHOD	*method;

static void
buf_give(struct wbio *w)
{
	bufpool_put(w->buf);
	w->buf = NULL;
	w->off = w->len = 0;
}

/* Sends from buf: 1 all out, 0 the socket is full, -1 an error. */
static int
send_buffered(struct wbio *w)
{
	ssize_t	 n;

	while (w->off < w->len) {
		n = send(w->fd, w->buf + w->off, w->len - w->off,
		    MSG_NOSIGNAL);
		if (n > 0) {
			w->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ?
		    0 : -1;
	}
	buf_give(w);
	return 1;
}

static int
m_write(BIO *b, const char *data, size_t dlen, size_t *written)
{
	struct wbio	*w = BIO_get_data(b);
	ssize_t		 n;
	int		 r;

	BIO_clear_retry_flags(b);
	*written = 0;
	if (!w->gather && w->buf == NULL) {
		/* as a socket BIO would */
		do
			n = send(w->fd, data, dlen, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n >= 0) {
			*written = (size_t)n;
			return 1;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_write(b);
		return 0;
	}
	/* behind the bytes already waiting, or gathered with them */
	if (w->buf != NULL && BUFPOOL_SIZE - w->len < dlen) {
		if ((r = send_buffered(w)) <= 0) {
			if (r == 0)
				BIO_set_retry_write(b);
			return 0;
		}
	}
	if (w->buf == NULL && (w->buf = bufpool_get()) == NULL)
		return 0;
	if (dlen > BUFPOOL_SIZE - w->len)
		dlen = BUFPOOL_SIZE - w->len;	/* a short write: the rest next */
	memcpy(w->buf + w->len, data, dlen);
	w->len += dlen;
	*written = dlen;
	if (!w->gather && send_buffered(w) < 0)
		return 0;
	return 1;
}

static int
m_read(BIO *b, char *data, size_t dlen, size_t *got)
{
	struct wbio	*w = BIO_get_data(b);
	ssize_t		 n;

	BIO_clear_retry_flags(b);
	*got = 0;
	do
		n = recv(w->fd, data, dlen, 0);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		*got = (size_t)n;
		return 1;
	}
	if (n == 0)
		w->eof = 1;
	else if (errno == EAGAIN || errno == EWOULDBLOCK)
		BIO_set_retry_read(b);
	return 0;
}

static long
m_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct wbio	*w = BIO_get_data(b);
	int		 r;

	(void)num;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		BIO_clear_retry_flags(b);
		if (w->buf == NULL)
			return 1;
		if ((r = send_buffered(w)) == 0)
			BIO_set_retry_write(b);
		return r > 0;
	case BIO_CTRL_WPENDING:
		return (long)(w->len - w->off);
	case BIO_CTRL_PENDING:
		return 0;
	case BIO_CTRL_EOF:
		return w->eof;
	case BIO_C_GET_FD:
		if (ptr != NULL)
			*(int *)ptr = w->fd;
		return w->fd;
	default:
		return 0;
	}
}

static int
m_create(BIO *b)
{
	struct wbio	*w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return 0;
	w->fd = -1;
	BIO_set_data(b, w);
	return 1;
}

static int
m_destroy(BIO *b)
{
	struct wbio	*w = BIO_get_data(b);

	if (w != NULL) {
		buf_give(w);
		free(w);
		BIO_set_data(b, NULL);
	}
	return 1;
}

BIO *
wbio_new(int fd)
{
	BIO		*b;
	struct wbio	*w;

	if (method == NULL) {
		if ((method = BIO_meth_new(BIO_get_new_index() |
		    BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
		    "p11agent upstream")) == NULL ||
		    !BIO_meth_set_write_ex(method, m_write) ||
		    !BIO_meth_set_read_ex(method, m_read) ||
		    !BIO_meth_set_ctrl(method, m_ctrl) ||
		    !BIO_meth_set_create(method, m_create) ||
		    !BIO_meth_set_destroy(method, m_destroy)) {
			BIO_meth_free(method);
			method = NULL;
			return NULL;
		}
	}
	if ((b = BIO_new(method)) == NULL)
		return NULL;
	w = BIO_get_data(b);
	w->fd = fd;
	BIO_set_init(b, 1);
	return b;
}

void
wbio_gather(BIO *b, int on)
{
	struct wbio	*w = BIO_get_data(b);

	w->gather = on;
}

int
wbio_flush(BIO *b)
{
	struct wbio	*w = BIO_get_data(b);

	return w->buf == NULL ? 1 : send_buffered(w);
}

size_t
wbio_pending(BIO *b)
{
	struct wbio	*w = BIO_get_data(b);

	return w->len - w->off;
}

void
wbio_cleanup(void)
{
	BIO_meth_free(method);
	method = NULL;
}
