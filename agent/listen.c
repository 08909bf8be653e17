/*
 * p11agent: listeners: loopback TCP ports and Unix sockets.
 *
 * TCP listeners must be loopback addresses unless the tunnel says
 * allow-remote-listen = yes.  A Unix socket is created mode 0600 in a
 * directory that is ours and mode 0700 (made if missing).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "agent.h"

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
listen_tcp(struct tunnel_rt *rt, struct cfg_listen *l, char *err,
    size_t errlen, char *addr, size_t addrlen)
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
	if (!is_loopback(ai->ai_addr) && !rt->cfg->allow_remote) {
		snprintf(err, errlen, "%s is not a loopback address; anyone on "
		    "the network could use your token. Set "
		    "allow-remote-listen = yes if you really mean it", l->host);
		goto fail;
	}
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    listen(fd, 128) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
		snprintf(err, errlen, "%s:%s: %s", l->host, l->port,
		    strerror(errno));
		goto fail;
	}
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(addr, addrlen, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" :
	    "tcp:%s:%s", host, serv);
	freeaddrinfo(ai);
	return fd;
fail:
	if (fd != -1)
		close(fd);
	freeaddrinfo(ai);
	return -1;
}

/* The socket's directory: ours and 0700, or made so. */
static int
check_dir(const char *path, char *err, size_t errlen)
{
	char		 dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char		*slash;
	struct stat	 st;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir) {
		snprintf(err, errlen, "%s: the socket needs a directory of its "
		    "own, such as /run/user/UID/p11agent/", path);
		return -1;
	}
	*slash = '\0';
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "%s: the directory must be yours with "
		    "mode 0700 so that no other user can reach the socket "
		    "(chmod 700 %s)", dir, dir);
		return -1;
	}
	return 0;
}

static int
listen_unix(struct cfg_listen *l, char *err, size_t errlen)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	mode_t			 old;
	int			 fd = -1, probe;

	if (check_dir(l->path, err, errlen) != 0)
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", l->path);
	if (lstat(l->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket",
			    l->path);
			return -1;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe != -1 && connect(probe, (struct sockaddr *)&sun,
		    sizeof(sun)) == 0) {
			close(probe);
			snprintf(err, errlen, "%s: another agent is listening "
			    "there", l->path);
			return -1;
		}
		if (probe != -1)
			close(probe);
		unlink(l->path);	/* stale, from an agent that died */
	}
	old = umask(0177);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(l->path, 0600) == -1 || listen(fd, 128) == -1) {
		snprintf(err, errlen, "%s: %s", l->path, strerror(errno));
		if (fd != -1)
			close(fd);
		fd = -1;
	}
	umask(old);
	return fd;
}

/* Opens listener i of the tunnel; returns the fd or -1 with err set. */
int
listen_open(struct tunnel_rt *rt, int i, char *err, size_t errlen)
{
	struct cfg_listen	*l = &rt->cfg->listen[i];
	struct listener		*ln = &rt->listen[i];

	if (l->kind == LISTEN_UNIX) {
		snprintf(ln->addr, sizeof(ln->addr), "unix:%s", l->path);
		return listen_unix(l, err, errlen);
	}
	return listen_tcp(rt, l, err, errlen, ln->addr, sizeof(ln->addr));
}
