/*
 * p11agent: who is on the other end of an accepted local connection
 * (agent/peer.c).
 *
 * On a Unix socket the kernel says (SO_PEERCRED): uid, gid, pid, and from
 * the pid the executable.  On a TCP socket only the addresses are known
 * here; the owner of a loopback client socket comes from sock_diag in a
 * later step.  Unknown numbers are -1, an unknown executable is "".
 */
#ifndef P11AGENT_PEER_H
#define P11AGENT_PEER_H

#include <limits.h>
#include <sys/types.h>

struct peer {
	int		 unix_sock;	/* 1: Unix socket, 0: TCP */
	long		 uid;
	long		 gid;
	long		 pid;
	char		 exe[PATH_MAX];	/* realpath of /proc/PID/exe */
	char		 addr[64];	/* TCP: the client's address */
	char		 port[8];	/* TCP: the client's port */
	char		 local[80];	/* TCP: our address:port */
};

/* Fills p from an accepted socket; never fails (unknowns stay -1/""). */
void	 peer_from_fd(int fd, struct peer *p);
/* "uid 1000 pid 4242 /usr/bin/curl" or "127.0.0.1 port 53422". */
void	 peer_describe(const struct peer *, char *, size_t);

#endif
