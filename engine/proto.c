/*
 * p11agent: encoding of the agent <-> helper wire (see proto.h).
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "p11agent/error.h"
#include "p11agent/proto.h"

void
pbuf_init(struct pbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void
pbuf_view(struct pbuf *b, const uint8_t *data, size_t len)
{
	pbuf_init(b);
	b->data = (uint8_t *)data;
	b->len = len;
	b->cap = 0;		/* read-only: never grown or freed */
}

void
pbuf_clear(struct pbuf *b)
{
	if (b->cap != 0) {
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	pbuf_init(b);
}

static int
pbuf_reserve(struct pbuf *b, size_t n)
{
	size_t	 ncap;
	uint8_t	*p;

	if (b->err != 0)
		return b->err;
	if (b->len + n > PROTO_HDR_LEN + PROTO_MAX_PAYLOAD)
		return b->err = P11A_ERR_TOO_LARGE;
	if (b->len + n <= b->cap)
		return 0;
	if (b->cap == 0 && b->data != NULL)
		return b->err = P11A_ERR_INVALID;	/* a view */
	ncap = b->cap ? b->cap : 256;
	while (ncap < b->len + n)
		ncap *= 2;
	/* no realloc: the old copy may hold secrets and must be wiped */
	if ((p = malloc(ncap)) == NULL)
		return b->err = P11A_ERR_NOMEM;
	if (b->data != NULL) {
		memcpy(p, b->data, b->len);
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	b->data = p;
	b->cap = ncap;
	return 0;
}

void
pbuf_put_u8(struct pbuf *b, uint8_t v)
{
	if (pbuf_reserve(b, 1) == 0)
		b->data[b->len++] = v;
}

void
pbuf_put_u32(struct pbuf *b, uint32_t v)
{
	if (pbuf_reserve(b, 4) != 0)
		return;
	b->data[b->len++] = v >> 24;
	b->data[b->len++] = v >> 16;
	b->data[b->len++] = v >> 8;
	b->data[b->len++] = v;
}

void
pbuf_put_bytes(struct pbuf *b, const void *p, size_t n)
{
	if (n > PROTO_MAX_FIELD) {
		if (b->err == 0)
			b->err = P11A_ERR_TOO_LARGE;
		return;
	}
	pbuf_put_u32(b, (uint32_t)n);
	if (n == 0 || pbuf_reserve(b, n) != 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
pbuf_put_str(struct pbuf *b, const char *s)
{
	size_t	 n = s ? strlen(s) : 0;

	if (n > PROTO_MAX_STRING) {
		if (b->err == 0)
			b->err = P11A_ERR_TOO_LARGE;
		return;
	}
	pbuf_put_bytes(b, s, n);
}

static int
pbuf_need(struct pbuf *b, size_t n)
{
	if (b->err != 0)
		return b->err;
	if (b->len - b->off < n)
		return b->err = P11A_ERR_PROTOCOL;
	return 0;
}

uint8_t
pbuf_get_u8(struct pbuf *b)
{
	if (pbuf_need(b, 1) != 0)
		return 0;
	return b->data[b->off++];
}

uint32_t
pbuf_get_u32(struct pbuf *b)
{
	const uint8_t	*p;

	if (pbuf_need(b, 4) != 0)
		return 0;
	p = b->data + b->off;
	b->off += 4;
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

const uint8_t *
pbuf_get_bytes(struct pbuf *b, size_t *lenp, size_t max)
{
	const uint8_t	*p;
	uint32_t	 n;

	*lenp = 0;
	n = pbuf_get_u32(b);
	if (b->err == 0 && n > max)
		b->err = P11A_ERR_TOO_LARGE;
	if (pbuf_need(b, n) != 0)
		return NULL;
	p = b->data + b->off;
	b->off += n;
	*lenp = n;
	return p;
}

char *
pbuf_get_str(struct pbuf *b)
{
	const uint8_t	*p;
	size_t		 n;
	char		*s;

	p = pbuf_get_bytes(b, &n, PROTO_MAX_STRING);
	if (p == NULL || n == 0)
		return NULL;
	if (memchr(p, '\0', n) != NULL) {
		b->err = P11A_ERR_PROTOCOL;
		return NULL;
	}
	if ((s = strndup((const char *)p, n)) == NULL)
		b->err = P11A_ERR_NOMEM;
	return s;
}

int
pbuf_end(struct pbuf *b)
{
	if (b->err != 0)
		return b->err;
	return b->off == b->len ? 0 : P11A_ERR_PROTOCOL;
}

void
proto_hdr_put(uint8_t *h, uint32_t type, uint32_t id, uint32_t len)
{
	uint32_t	 v[3] = { type, id, len };
	int		 i;

	for (i = 0; i < 3; i++) {
		h[i * 4] = v[i] >> 24;
		h[i * 4 + 1] = v[i] >> 16;
		h[i * 4 + 2] = v[i] >> 8;
		h[i * 4 + 3] = v[i];
	}
}

int
proto_hdr_get(const uint8_t *h, uint32_t *type, uint32_t *id, uint32_t *len)
{
	struct pbuf	 b;

	pbuf_view(&b, h, PROTO_HDR_LEN);
	*type = pbuf_get_u32(&b);
	*id = pbuf_get_u32(&b);
	*len = pbuf_get_u32(&b);
	if (*len > PROTO_MAX_PAYLOAD)
		return P11A_ERR_TOO_LARGE;
	return 0;
}

/*
 * The channel is a SOCK_SEQPACKET socketpair: one message is one packet,
 * so a message arrives whole or not at all and never needs reassembly.
 */
int
proto_send(int fd, uint32_t type, uint32_t id, const struct pbuf *b)
{
	uint8_t		 h[PROTO_HDR_LEN];
	struct iovec	 iov[2];
	struct msghdr	 msg;
	ssize_t		 w;

	if (b->err != 0)
		return b->err;
	if (b->len > PROTO_MAX_PAYLOAD)
		return P11A_ERR_TOO_LARGE;
	proto_hdr_put(h, type, id, (uint32_t)b->len);
	iov[0].iov_base = h;
	iov[0].iov_len = sizeof(h);
	iov[1].iov_base = b->data;
	iov[1].iov_len = b->len;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = 2;
	do {
		w = sendmsg(fd, &msg, MSG_NOSIGNAL);
	} while (w < 0 && errno == EINTR);
	if (w < 0)
		return errno == EPIPE || errno == ECONNRESET ?
		    P11A_ERR_CLOSED : errno == EAGAIN ? P11A_ERR_BUSY :
		    P11A_ERR_SYSTEM;
	return 0;
}

/* Parses one received packet of n bytes held in b. */
int
proto_parse(struct pbuf *b, size_t n, uint32_t *type, uint32_t *id)
{
	uint32_t	 len;
	int		 r;

	if (n < PROTO_HDR_LEN)
		return P11A_ERR_PROTOCOL;
	if ((r = proto_hdr_get(b->data, type, id, &len)) != 0)
		return r;
	if (len != n - PROTO_HDR_LEN)
		return P11A_ERR_PROTOCOL;
	b->len = n;
	b->off = PROTO_HDR_LEN;
	return 0;
}

/*
 * Reads one message into b (the payload starts at b->off); waits at most
 * timeout_ms (-1: no limit) for it.
 */
int
proto_recv(int fd, uint32_t *type, uint32_t *id, struct pbuf *b,
    int timeout_ms)
{
	struct pollfd	 pfd = { .fd = fd, .events = POLLIN };
	ssize_t		 n;
	int		 r;

	/* a receive buffer is reused, not wiped and allocated per message */
	if (b->cap < PROTO_HDR_LEN + PROTO_MAX_PAYLOAD) {
		pbuf_clear(b);
		if ((r = pbuf_reserve(b, PROTO_HDR_LEN + PROTO_MAX_PAYLOAD)) != 0)
			return r;
	}
	b->len = b->off = 0;
	b->err = 0;
	for (;;) {
		r = poll(&pfd, 1, timeout_ms);
		if (r == 0)
			return P11A_ERR_TIMEOUT;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return P11A_ERR_SYSTEM;
		n = recv(fd, b->data, b->cap, MSG_TRUNC);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return errno == ECONNRESET ? P11A_ERR_CLOSED :
			    P11A_ERR_SYSTEM;
		if (n == 0)
			return P11A_ERR_CLOSED;
		if ((size_t)n > b->cap)
			return P11A_ERR_TOO_LARGE;
		return proto_parse(b, (size_t)n, type, id);
	}
}

void
proto_put_error(struct pbuf *b, int code, unsigned long ckr, const char *msg)
{
	pbuf_put_u32(b, (uint32_t)-code);
	pbuf_put_u32(b, (uint32_t)ckr);
	pbuf_put_str(b, msg);
}
