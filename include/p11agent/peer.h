/*
 * p11agent: who is on the other end of an accepted local connection
 * (agent/peer.c).
 *
 * On a Unix socket the kernel says (SO_PEERCRED): uid, gid, pid, and from
 * the pid the executable.  On a loopback TCP socket the uid that owns the
 * client's socket comes from an exact NETLINK_SOCK_DIAG (inet_diag)
 * lookup of the connection's 4-tuple (IPv4, IPv6, IPv4-mapped); a remote
 * client, a client that already closed its socket, or a failed lookup
 * leaves it unknown; its pid and executable are those of the process of
 * that uid holding the socket's inode, where /proc lets the agent see it.
 * The gid of a TCP peer stays unknown.  Unknown numbers are -1, an
 * unknown executable is "".
 *
 * Access: by default only the uid that runs the agent may use a tunnel;
 * the tunnel's allow-users and allow-groups widen that.  An unknown uid
 * is denied.  The policies that bind the tunnel's identity (policy.h)
 * must let the peer in too; a policy's allow-users or allow-groups take
 * the place of the default when the tunnel names none.
 */
#ifndef P11AGENT_PEER_H
#define P11AGENT_PEER_H

#include <limits.h>
#include <sys/types.h>

struct cfg_tunnel;

struct peer {
	int		 unix_sock;	/* 1: Unix socket, 0: TCP */
	long		 uid;
	long		 gid;
	long		 pid;
	char		 exe[PATH_MAX];	/* realpath of /proc/PID/exe */
	/* TCP: the socket is held by processes of different programs (a
	 * parent and a child): exe is the parent's, not surely the one
	 * that connected */
	int		 exe_shared;
	char		 addr[64];	/* TCP: the client's address */
	char		 port[8];	/* TCP: the client's port */
	char		 local[80];	/* TCP: our address:port */
	unsigned long	 inode;		/* TCP: the client socket's inode */
};

/* Fills p from an accepted socket; never fails (unknowns stay -1/""). */
void	 peer_from_fd(int fd, struct peer *p);
/* For a PIN dialog: "curl (pid 4242, alice)", or what is known. */
void	 peer_requester(const struct peer *, char *, size_t);
/* "uid 1000 pid 4242 /usr/bin/curl" or "127.0.0.1 port 53422". */
void	 peer_describe(const struct peer *, char *, size_t);

/* 1 if the peer may use tunnel t, 0 if not (also when its uid is
 * unknown).  A group is matched against the peer's gid (Unix sockets)
 * and the groups of the uid's account (getgrouplist). */
int	 peer_allowed(const struct peer *, const struct cfg_tunnel *);
/* The same, and the rule that decided, into rule: "own uid",
 * "allow-users UID", "allow-groups GID", the policies that let it in
 * ("policy bank (FILE:9: allow-programs)", agent/policy.c), or why it was
 * refused (peer_rule's text, or the policy rule it broke). */
int	 peer_access(const struct peer *, const struct cfg_tunnel *,
	    char *rule, size_t);
/* The rule, for a refusal: "only uid 1000; allow-users/allow-groups
 * widen it" or "only uid 1000, allow-users 1001, 1002". */
void	 peer_rule(const struct cfg_tunnel *, char *, size_t);

#endif
