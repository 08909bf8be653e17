/*
 * p11agent: listeners (agent/listen.c): loopback TCP ports and Unix
 * sockets, for tunnels or anything else that accepts local clients.
 *
 * A TCP listener must be a loopback address unless allow_remote is set.
 * A Unix socket is created mode 0600 in a directory that is ours and
 * mode 0700 (made if missing).  Accepted sockets are non-blocking and
 * close-on-exec.
 *
 * A socket systemd passed (listen = systemd:NAME, agent/sd.c) is adopted
 * instead: it must be a listening stream socket of a Unix address, or of
 * a loopback TCP one unless allow_remote is set.  The listener owns a
 * duplicate of it and, when closed, never unlinks its path: the socket
 * unit made it and keeps it.
 */
#ifndef P11AGENT_LISTEN_H
#define P11AGENT_LISTEN_H

#include <stddef.h>

#include "p11agent/loop.h"

struct cfg_listen;
struct listener;
/* One accepted connection; the callee owns fd. */
typedef void (*listener_cb)(struct listener *, int fd);

struct listener {
	struct watch	 w;
	listener_cb	 on_accept;
	void		*arg;
	long		 resume_at;	/* paused until then (EMFILE), or 0 */
	int		 paused;	/* by listen_pause() */
	int		 inherited;	/* passed by systemd */
	int		 dfd;		/* Unix: the socket's directory */
	char		*name;		/* Unix: the socket's name in it */
	char		 addr[128];	/* "tcp:127.0.0.1:8443", "unix:/..." */
};

/* Opens and watches the listener; 0, or < 0 with a message in err. */
int	 listen_open(struct listener *, const struct cfg_listen *,
	    int allow_remote, listener_cb, void *arg, char *err, size_t);
/*
 * Adopts fd, an inherited socket (its name for messages), after the
 * checks above, and watches it; the listener owns fd from here on, also
 * on failure.  0, or < 0 with a message in err.
 */
int	 listen_adopt(struct listener *, int fd, const char *name,
	    int allow_remote, listener_cb, void *arg, char *err, size_t);
/* Stops accepting (at a connection limit) or starts again. */
void	 listen_pause(struct listener *, int paused);
/* Resumes a listener paused for lack of descriptors once its time came. */
void	 listen_tick(struct listener *, long now);
void	 listen_close(struct listener *);
/* A reload hands a listener on: to takes over from's socket (the same
 * address, port and inode), now calling cb(arg); from is left closed. */
void	 listen_move(struct listener *to, struct listener *from, listener_cb,
	    void *arg);
/* An accepted client's answer: sends buf[*off, len) without blocking;
 * 1 when all of it is sent, 0 when the socket is full (wait for
 * EPOLLOUT), -1 when the client is gone (errno says how). */
int	 listen_send_rest(int fd, const char *buf, size_t len, size_t *off);
/* A TCP listener on an address beyond loopback (allow-remote-listen). */
int	 listen_is_remote(const struct listener *);

#endif
