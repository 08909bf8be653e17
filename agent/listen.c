/*
 * p11agent: listeners: loopback TCP ports and Unix sockets (listen.h).
 *
 * A Unix socket's directory is checked on a descriptor held open, and the
 * socket is bound, probed and unlinked through that descriptor
 * (/proc/self/fd/N/NAME, *at() calls), so no rename of a path component
 * can put the socket somewhere that was not checked.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/listen.h"
#include "p11agent/log.h"
#include "p11agent/sd.h"

#define BACKLOG		4096	/* the kernel caps it at net.core.somaxconn */
#define ACCEPT_BUDGET	32	/* accepts per wake-up: others get a turn */
#define EMFILE_PAUSE_MS	1000

static int
is_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in	*s4 = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6	*s6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family == AF_INET)
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	return sa->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
}

static int
listen_tcp(struct listener *ln, const struct cfg_listen *l, int allow_remote,
    char *err, size_t errlen)
{
	struct addrinfo		 hints, *ai = NULL;
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	char			 host[NI_MAXHOST], serv[NI_MAXSERV];
	int			 fd = -1, one = 1, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	if ((e = getaddrinfo(l->host, l->port, &hints, &ai)) != 0) {
		snprintf(err, errlen, "'%s' is not an IP address (%s)",
		    l->host, gai_strerror(e));
		return -1;
	}
	if (!is_loopback(ai->ai_addr) && !allow_remote) {
		snprintf(err, errlen, "%s is not a loopback address; anyone on "
		    "the network could use your token. Set "
		    "allow-remote-listen = yes if you really mean it", l->host);
		goto fail;
	}
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    listen(fd, BACKLOG) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
		snprintf(err, errlen, "%s:%s: %s", l->host, l->port,
		    strerror(errno));
		goto fail;
	}
	if ((e = getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host),
	    serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV)) != 0) {
		snprintf(err, errlen, "%s:%s: %s", l->host, l->port,
		    gai_strerror(e));
		goto fail;
	}
	snprintf(ln->addr, sizeof(ln->addr), ss.ss_family == AF_INET6 ?
	    "tcp:[%s]:%s" : "tcp:%s:%s", host, serv);
	freeaddrinfo(ai);
	return fd;
fail:
	if (fd != -1)
		close(fd);
	freeaddrinfo(ai);
	return -1;
}

/*
 * The socket's directory, opened and checked on the descriptor: ours,
 * a directory, mode 0700 (made so if missing).  Returns the fd or -1.
 */
static int
open_dir(const char *dir, char *err, size_t errlen)
{
	struct stat	 st;
	int		 dfd;

	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if ((dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s%s", dir, strerror(errno),
		    errno == ELOOP || errno == ENOTDIR ? " (it must be a "
		    "directory, not a symbolic link)" : "");
		return -1;
	}
	if (fstat(dfd, &st) == -1 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "%s: the directory must be yours with "
		    "mode 0700 so that no other user can reach the socket "
		    "(chmod 700 %s)", dir, dir);
		close(dfd);
		return -1;
	}
	return dfd;
}

/* sun_path naming NAME inside the held directory dfd. */
static int
sun_at(struct sockaddr_un *sun, int dfd, const char *name)
{
	int	 n;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	n = snprintf(sun->sun_path, sizeof(sun->sun_path), "/proc/self/fd/%d/%s",
	    dfd, name);
	return n > 0 && (size_t)n < sizeof(sun->sun_path) ? 0 : -1;
}

/* A socket left by an agent that died is removed; a live one is not. */
static int
clear_stale(int dfd, const char *name, const char *path, char *err,
    size_t errlen)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	int			 probe, live;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -1;
	}
	if (sun_at(&sun, dfd, name) != 0)
		return -1;
	if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	live = connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(probe);
	if (live) {
		snprintf(err, errlen, "%s: another agent is listening there",
		    path);
		return -1;
	}
	unlinkat(dfd, name, 0);
	return 0;
}

static int
listen_unix(struct listener *ln, const struct cfg_listen *l, char *err,
    size_t errlen)
{
	struct sockaddr_un	 sun;
	char			 dir[sizeof(sun.sun_path)], *name;
	mode_t			 old;
	int			 fd = -1, dfd;

	snprintf(dir, sizeof(dir), "%s", l->path);
	if ((name = strrchr(dir, '/')) == NULL || name == dir ||
	    name[1] == '\0') {
		snprintf(err, errlen, "%s: the socket needs a directory of its "
		    "own, such as /run/user/UID/p11agent/", l->path);
		return -1;
	}
	*name++ = '\0';
	if ((dfd = open_dir(dir, err, errlen)) == -1)
		return -1;
	if (sun_at(&sun, dfd, name) != 0) {
		snprintf(err, errlen, "%s: the socket name is too long",
		    l->path);
		goto out;
	}
	if (clear_stale(dfd, name, l->path, err, errlen) != 0)
		goto out;
	old = umask(0177);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    fchmodat(dfd, name, 0600, 0) == -1 || listen(fd, BACKLOG) == -1) {
		snprintf(err, errlen, "%s: %s", l->path, strerror(errno));
		if (fd != -1)
			close(fd);
		fd = -1;
	}
	umask(old);
	snprintf(ln->addr, sizeof(ln->addr), "unix:%s", l->path);
	if (fd != -1 && (ln->name = strdup(name)) == NULL) {
		snprintf(err, errlen, "out of memory");
		unlinkat(dfd, name, 0);
		close(fd);
		fd = -1;
	}
out:
	if (fd == -1)
		close(dfd);
	else
		ln->dfd = dfd;	/* to unlink the socket at the end */
	return fd;
}

/* "unix:/path", "unix:@abstract" or "tcp:ADDR:PORT" of a bound socket. */
static int
sock_addr(int fd, char *addr, size_t size, int *loopback)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_un	*sun = (struct sockaddr_un *)&ss;
	socklen_t		 sl = sizeof(ss);
	char			 host[NI_MAXHOST], serv[NI_MAXSERV];

	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return -1;
	*loopback = is_loopback((struct sockaddr *)&ss);
	if (ss.ss_family == AF_UNIX) {
		*loopback = 1;
		if (sl <= offsetof(struct sockaddr_un, sun_path))
			snprintf(addr, size, "unix:(unnamed)");
		else if (sun->sun_path[0] == '\0')
			snprintf(addr, size, "unix:@%.*s", (int)(sl -
			    offsetof(struct sockaddr_un, sun_path) - 1),
			    sun->sun_path + 1);
		else
			snprintf(addr, size, "unix:%.*s", (int)sizeof(
			    sun->sun_path), sun->sun_path);
		return 0;
	}
	if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return -1;
	snprintf(addr, size, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" :
	    "tcp:%s:%s", host, serv);
	return 0;
}

/* The checks of an inherited socket (listen.h); 0 or -1 with err. */
static int
check_inherited(struct listener *ln, int fd, const char *name,
    int allow_remote, char *err, size_t errlen)
{
	socklen_t	 sl = sizeof(int);
	int		 type = 0, acc = 0, lo = 0, fl;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) == -1 ||
	    (sl = sizeof(int), getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc,
	    &sl)) == -1 || type != SOCK_STREAM || !acc ||
	    sock_addr(fd, ln->addr, sizeof(ln->addr), &lo) != 0) {
		snprintf(err, errlen, "the socket systemd passed as %s is not "
		    "a listening stream socket of a Unix or TCP address: use "
		    "ListenStream= in its .socket unit", name);
		return -1;
	}
	if (!lo && !allow_remote) {
		snprintf(err, errlen, "the socket systemd passed as %s is %s, "
		    "not a loopback address; anyone on the network could use "
		    "your token. Set allow-remote-listen = yes if you really "
		    "mean it", name, ln->addr);
		return -1;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
		snprintf(err, errlen, "the socket systemd passed as %s: %s",
		    name, strerror(errno));
		return -1;
	}
	return 0;
}

static void
on_listen(struct watch *w, uint32_t events)
{
	struct listener	*ln = w->arg;
	int		 fd, n;

	/* closed, moved or paused earlier in this batch of events */
	if (w->fd == -1 || w->events == 0)
		return;
	for (n = 0; n < ACCEPT_BUDGET; n++) {
		fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			break;
		ln->on_accept(ln, fd);
		if (ln->paused || w->events == 0)
			return;		/* a limit was reached */
	}
	if (n == ACCEPT_BUDGET || errno == EAGAIN || errno == EINTR ||
	    errno == ECONNABORTED)
		return;
	if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
	    errno == ENOMEM) {
		/* level-triggered: pause the listener or spin */
		log_warn_sys("accept on %s (pausing it for a second)",
		    ln->addr);
		loop_set(w, 0);
		ln->resume_at = clock_now_ms() + EMFILE_PAUSE_MS;
	} else
		log_warn_sys("accept on %s", ln->addr);
}

static int
watch(struct listener *ln, int fd, char *err, size_t errlen)
{
	loop_watch_init(&ln->w, fd, on_listen, ln);
	if (loop_set(&ln->w, EPOLLIN) != 0) {
		snprintf(err, errlen, "%s: cannot watch it", ln->addr);
		listen_close(ln);
		return P11A_ERR_SYSTEM;
	}
	return 0;
}

int
listen_open(struct listener *ln, const struct cfg_listen *l, int allow_remote,
    listener_cb cb, void *arg, char *err, size_t errlen)
{
	char	 names[256];
	int	 fd, r;

	if (l->kind == LISTEN_SYSTEMD) {
		if ((r = sd_listen_fd(l->fdname, &fd)) == 0)
			return listen_adopt(ln, fd, l->fdname, allow_remote, cb,
			    arg, err, errlen);
		if (r == P11A_ERR_NOT_FOUND)
			snprintf(err, errlen, "systemd:%s: systemd passed no "
			    "single socket of that name (it passed: %s)",
			    l->fdname, sd_names(names, sizeof(names)));
		else
			snprintf(err, errlen, "systemd:%s: %s", l->fdname,
			    strerror(errno));
		return r == P11A_ERR_NOT_FOUND ? P11A_ERR_CONFIG : r;
	}
	memset(ln, 0, sizeof(*ln));
	ln->w.fd = ln->dfd = -1;
	ln->on_accept = cb;
	ln->arg = arg;
	fd = l->kind == LISTEN_UNIX ? listen_unix(ln, l, err, errlen) :
	    listen_tcp(ln, l, allow_remote, err, errlen);
	if (fd == -1)
		return P11A_ERR_CONFIG;
	return watch(ln, fd, err, errlen);
}

int
listen_adopt(struct listener *ln, int fd, const char *name, int allow_remote,
    listener_cb cb, void *arg, char *err, size_t errlen)
{
	memset(ln, 0, sizeof(*ln));
	ln->w.fd = ln->dfd = -1;
	ln->on_accept = cb;
	ln->arg = arg;
	ln->inherited = 1;
	if (check_inherited(ln, fd, name, allow_remote, err, errlen) != 0) {
		close(fd);
		return P11A_ERR_CONFIG;
	}
	return watch(ln, fd, err, errlen);
}

void
listen_pause(struct listener *ln, int paused)
{
	if (ln->w.fd == -1 || ln->paused == paused)
		return;
	ln->paused = paused;
	if (ln->resume_at == 0)
		loop_set(&ln->w, paused ? 0 : EPOLLIN);
}

void
listen_tick(struct listener *ln, long now)
{
	if (ln->resume_at == 0 || now < ln->resume_at)
		return;
	ln->resume_at = 0;
	if (!ln->paused)
		loop_set(&ln->w, EPOLLIN);
}

void
listen_close(struct listener *ln)
{
	if (ln->w.fd == -1)
		return;
	loop_set(&ln->w, 0);
	close(ln->w.fd);
	ln->w.fd = -1;
	if (ln->dfd != -1) {
		unlinkat(ln->dfd, ln->name, 0);
		close(ln->dfd);
		ln->dfd = -1;
	}
	free(ln->name);
	ln->name = NULL;
}

void
listen_move(struct listener *to, struct listener *from, listener_cb cb,
    void *arg)
{
	int	 was = from->w.events;

	loop_set(&from->w, 0);
	*to = *from;
	to->on_accept = cb;
	to->arg = arg;
	loop_watch_init(&to->w, from->w.fd, on_listen, to);
	if (was != 0 && loop_set(&to->w, EPOLLIN) != 0)
		log_warn_sys("listener %s: cannot watch it again", to->addr);
	from->w.fd = from->dfd = -1;
	from->name = NULL;
}

int
listen_is_remote(const struct listener *ln)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);

	if (ln->w.fd == -1 || getsockname(ln->w.fd, (struct sockaddr *)&ss,
	    &sl) == -1)
		return 0;
	return (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
	    !is_loopback((struct sockaddr *)&ss);
}

int
listen_send_rest(int fd, const char *buf, size_t len, size_t *off)
{
	ssize_t	 n;

	while (*off < len) {
		n = send(fd, buf + *off, len - *off, MSG_NOSIGNAL |
		    MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0) {
			if (n == 0)
				errno = EPIPE;
			return -1;
		}
		*off += (size_t)n;
	}
	return 1;
}
