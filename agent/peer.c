/*
 * p11agent: the local peer of an accepted connection (peer.h).
 */
#include "config.h"

#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "p11agent/peer.h"

static void
peer_exe(struct peer *p)
{
	char	 link[64];

	snprintf(link, sizeof(link), "/proc/%ld/exe", p->pid);
	if (realpath(link, p->exe) == NULL)
		p->exe[0] = '\0';
}

void
peer_from_fd(int fd, struct peer *p)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	struct ucred		 uc;
	socklen_t		 ul = sizeof(uc);
	char			 host[INET6_ADDRSTRLEN + 16], serv[8];

	memset(p, 0, sizeof(*p));
	p->uid = p->gid = p->pid = -1;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    ss.ss_family == AF_UNIX) {
		p->unix_sock = 1;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0) {
			p->uid = uc.uid;
			p->gid = uc.gid;
			p->pid = uc.pid;
			peer_exe(p);
		}
		return;
	}
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(p->local, sizeof(p->local), "%s:%s", host, serv);
	sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
		snprintf(p->addr, sizeof(p->addr), "%s", host);
		snprintf(p->port, sizeof(p->port), "%s", serv);
	}
}

void
peer_describe(const struct peer *p, char *out, size_t len)
{
	if (!p->unix_sock)
		snprintf(out, len, "%s port %s", p->addr[0] ? p->addr : "?",
		    p->port[0] ? p->port : "?");
	else if (p->pid == -1)
		snprintf(out, len, "a Unix socket peer the kernel did not name");
	else
		snprintf(out, len, "uid %ld pid %ld %s", p->uid, p->pid,
		    p->exe[0] ? p->exe : "(executable unknown)");
}
