/*
 * p11agent: the local peer of an accepted connection (peer.h).
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "p11agent/clock.h"
#include "p11agent/config.h"
#include "p11agent/peer.h"
#include "p11agent/policy.h"

#define DIAG_TIMEOUT_MS	100	/* the kernel answers at once */
#define MAX_GROUPS	1024	/* supplementary groups looked at */
#define MAX_FDS_SEEN	16384	/* descriptors looked at for a TCP pid */
#define RECENT_PIDS	8	/* recent TCP clients, tried first */
#define NEAR_FDS	32	/* their descriptors tried above and below */

/*
 * The kernel's name of the program: already absolute and without
 * symbolic links (what realpath would give, for one readlink instead of
 * one system call per path component).  A program deleted since it was
 * started is unknown.
 */
static void
peer_exe(struct peer *p)
{
	static const char	 deleted[] = " (deleted)";
	char			 link[64];
	ssize_t			 n;
	size_t			 d = sizeof(deleted) - 1;

	snprintf(link, sizeof(link), "/proc/%ld/exe", p->pid);
	n = readlink(link, p->exe, sizeof(p->exe) - 1);
	if (n <= 0 || p->exe[0] != '/' || (size_t)n == sizeof(p->exe) - 1)
		n = 0;
	else if ((size_t)n > d && memcmp(p->exe + n - d, deleted, d) == 0)
		n = 0;
	p->exe[n] = '\0';
}

/*
 * One TCP endpoint as the kernel's inet_diag wants it: family, port and
 * address in network order; an IPv4-mapped IPv6 address is plain IPv4.
 */
struct endpoint {
	int		 family;
	uint16_t	 port;
	uint32_t	 addr[4];
};

static int
endpoint_of(const struct sockaddr_storage *ss, struct endpoint *e)
{
	const struct sockaddr_in	*sin = (const void *)ss;
	const struct sockaddr_in6	*sin6 = (const void *)ss;

	memset(e, 0, sizeof(*e));
	if (ss->ss_family == AF_INET) {
		e->family = AF_INET;
		e->port = sin->sin_port;
		memcpy(e->addr, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		e->family = AF_INET;
		e->port = sin6->sin6_port;
		memcpy(e->addr, &sin6->sin6_addr.s6_addr[12], 4);
	} else if (ss->ss_family == AF_INET6) {
		e->family = AF_INET6;
		e->port = sin6->sin6_port;
		memcpy(e->addr, &sin6->sin6_addr, 16);
	} else
		return -1;
	return 0;
}

/*
 * The sock_diag socket is kept open from the first TCP connection on, so
 * that a lookup still works when the agent is short of descriptors (it
 * would deny everyone then).  Closed after a failed exchange, so that a
 * late answer cannot be read as the next one's (nlmsg_seq checks that
 * too).
 */
static int		 diag_fd = -1;
static uint32_t		 diag_seq;

static int
diag_socket(void)
{
	struct timeval	 tv = { 0, DIAG_TIMEOUT_MS * 1000 };

	if (diag_fd != -1)
		return diag_fd;
	if ((diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC,
	    NETLINK_SOCK_DIAG)) == -1)
		return -1;
	if (setsockopt(diag_fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
	    sizeof(tv)) == -1) {
		close(diag_fd);
		diag_fd = -1;
	}
	return diag_fd;
}

/* Is m the answer about the socket asked for in r? */
static int
diag_matches(const struct inet_diag_msg *m, const struct inet_diag_req_v2 *r)
{
	return m->idiag_family == r->sdiag_family &&
	    m->id.idiag_sport == r->id.idiag_sport &&
	    m->id.idiag_dport == r->id.idiag_dport &&
	    memcmp(m->id.idiag_src, r->id.idiag_src,
	    r->sdiag_family == AF_INET ? 4 : 16) == 0 &&
	    memcmp(m->id.idiag_dst, r->id.idiag_dst,
	    r->sdiag_family == AF_INET ? 4 : 16) == 0;
}

/*
 * Reads the answer to request seq: 0 and the socket's message, 1 when the
 * kernel knows no such socket (or says something else), -1 when the
 * exchange failed.
 */
static int
diag_answer(int nl, uint32_t seq, const struct inet_diag_req_v2 *r,
    struct inet_diag_msg *out)
{
	union {
		struct nlmsghdr	 h;
		char		 buf[8192];
	} u;
	struct nlmsghdr		*h;
	ssize_t			 n;
	int			 tries;

	for (tries = 0; tries < 4; tries++) {	/* skips stale answers */
		if ((n = recv(nl, &u, sizeof(u), 0)) <= 0)
			return -1;
		for (h = &u.h; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq)
				continue;
			/* NLMSG_ERROR: -ENOENT and the like */
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(*out)) ||
			    !diag_matches(NLMSG_DATA(h), r))
				return 1;
			memcpy(out, NLMSG_DATA(h), sizeof(*out));
			return 0;
		}
	}
	return -1;
}

/*
 * The owner of the client's end of a loopback TCP connection: an exact
 * sock_diag lookup of the 4-tuple as the client sees it (source: its
 * address and port; destination: ours).  The kernel answers within the
 * send, so the blocking receive (bounded by SO_RCVTIMEO) does not wait.
 * Only a socket still held by a process counts (inode set): a client
 * that closed its socket (time-wait, reported with uid 0) is unknown.
 */
static void
peer_tcp_owner(const struct sockaddr_storage *client,
    const struct sockaddr_storage *local, struct peer *p)
{
	struct {
		struct nlmsghdr		 h;
		struct inet_diag_req_v2	 r;
	} req;
	struct sockaddr_nl	 sa = { .nl_family = AF_NETLINK };
	struct inet_diag_msg	 m;
	struct endpoint		 cl, us;
	int			 nl, r = -1;

	if (endpoint_of(client, &cl) != 0 || endpoint_of(local, &us) != 0 ||
	    cl.family != us.family || (nl = diag_socket()) == -1)
		return;
	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.h.nlmsg_flags = NLM_F_REQUEST;	/* one socket: no dump */
	req.h.nlmsg_seq = ++diag_seq;
	req.r.sdiag_family = cl.family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0U;
	req.r.id.idiag_sport = cl.port;
	req.r.id.idiag_dport = us.port;
	memcpy(req.r.id.idiag_src, cl.addr, sizeof(cl.addr));
	memcpy(req.r.id.idiag_dst, us.addr, sizeof(us.addr));
	req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&sa,
	    sizeof(sa)) == (ssize_t)sizeof(req))
		r = diag_answer(nl, req.h.nlmsg_seq, &req.r, &m);
	if (r == -1) {
		close(diag_fd);
		diag_fd = -1;
	}
	if (r != 0)
		return;
	if (m.idiag_inode == 0 || m.idiag_state == TCP_TIME_WAIT ||
	    m.idiag_state == TCP_LISTEN || m.idiag_state == TCP_SYN_RECV)
		return;
	p->uid = m.idiag_uid;
	p->inode = m.idiag_inode;
}

/* Is dfd (/proc/PID/fd) holding want on descriptor fd? */
static int
fd_is(int dfd, long fd, const char *want)
{
	char	 name[32], link[64];
	ssize_t	 n;

	if (fd < 0)
		return 0;
	snprintf(name, sizeof(name), "%ld", fd);
	n = readlinkat(dfd, name, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	return strcmp(link, want) == 0;
}

/*
 * Does process dir pfd (/proc/PID) hold the socket named want?  Its
 * descriptor in *fd.  Near (near >= 0): only the descriptors at and next
 * to near are looked at (the kernel hands out the lowest free number, so
 * a client's next socket is close to its last one); else all of them,
 * within the budget.
 */
static int
holds_socket(int pfd, const char *want, long near, int *budget, long *fd)
{
	struct dirent	*de;
	DIR		*d;
	int		 dfd, i, found = 0;

	if ((dfd = openat(pfd, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1)
		return 0;
	if (near >= 0) {
		for (i = 0; !found && i <= 2 * NEAR_FDS; i++) {
			/* near, +1, -1, +2, -2, ... */
			*fd = near + (i % 2 ? (i + 1) / 2 : -(i / 2));
			found = fd_is(dfd, *fd, want);
		}
		close(dfd);
		return found;
	}
	if ((d = fdopendir(dfd)) == NULL) {
		close(dfd);
		return 0;
	}
	while (!found && *budget > 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		(*budget)--;
		*fd = strtol(de->d_name, NULL, 10);
		found = fd_is(dirfd(d), *fd, want);
	}
	closedir(d);
	return found;
}

/* Does /proc/PID (under procfd) belong to uid and hold the socket? */
static int
pid_holds(int procfd, long pid, long uid, const char *want, long near,
    int *budget, long *fd)
{
	struct stat	 st;
	char		 name[24];
	int		 pfd, found = 0;

	snprintf(name, sizeof(name), "%ld", pid);
	if ((pfd = openat(procfd, name, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return 0;
	if (fstat(pfd, &st) == 0 && (long)st.st_uid == uid)
		found = holds_socket(pfd, want, near, budget, fd);
	close(pfd);
	return found;
}

/* The parent of pid, or -1 (from /proc/PID/stat, after the name). */
static long
parent_of(int procfd, long pid)
{
	char	 name[32], buf[512], *p;
	ssize_t	 n;
	long	 ppid = -1;
	int	 fd;

	snprintf(name, sizeof(name), "%ld/stat", pid);
	if ((fd = openat(procfd, name, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) != NULL &&
	    sscanf(p + 1, " %*c %ld", &ppid) != 1)
		ppid = -1;
	return ppid;
}

static int
pid_desc(const void *a, const void *b)
{
	long	 x = *(const long *)a, y = *(const long *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * The processes that connected lately, most recent first, with the
 * descriptor their last socket had: an application opens many
 * connections, so it is looked at first, and only near that descriptor
 * (one that holds thousands would cost thousands of readlinks a connection
 * otherwise: bench/scale).  The rest of /proc only when that fails.
 */
static struct {
	long	 pid;
	long	 fd;
} recent[RECENT_PIDS];

static void
recent_add(long pid, long fd)
{
	int	 i;

	for (i = 0; i < RECENT_PIDS - 1 && recent[i].pid != pid; i++)
		;
	memmove(recent + 1, recent, i * sizeof(recent[0]));
	recent[0].pid = pid;
	recent[0].fd = fd;
}

/*
 * The process of a TCP peer: the one of the peer's uid whose descriptors
 * hold the client socket's inode (readable for processes of our own uid,
 * or any as root).  The recent clients are tried first, near their last
 * socket, then all processes newest pid first (a client that connects
 * now was likely started lately).  Bounded by MAX_FDS_SEEN; not found
 * leaves it unknown.
 */
static void
peer_tcp_pid(struct peer *p)
{
	struct dirent	*de;
	DIR		*proc;
	char		 want[64], *end;
	long		 pid, self = (long)getpid(), *pids = NULL, *np, fd = -1;
	long		 nfd = -1;
	size_t		 n = 0, cap = 0, i;
	int		 budget = MAX_FDS_SEEN;
	long		 child = -1;	/* the holder found, before the walk */
	struct peer	 c;		/* its program */

	if (p->uid < 0 || p->inode == 0 ||
	    (proc = opendir("/proc")) == NULL)
		return;
	snprintf(want, sizeof(want), "socket:[%lu]", p->inode);
	for (i = 0; i < RECENT_PIDS && recent[i].pid != 0; i++)
		if (pid_holds(dirfd(proc), recent[i].pid, p->uid, want,
		    recent[i].fd, &budget, &fd)) {
			p->pid = recent[i].pid;
			goto found;
		}
	while ((de = readdir(proc)) != NULL) {
		pid = strtol(de->d_name, &end, 10);
		if (*end != '\0' || pid <= 0 || pid == self)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			if ((np = realloc(pids, cap * sizeof(*pids))) == NULL)
				break;
			pids = np;
		}
		pids[n++] = pid;
	}
	if (pids != NULL)
		qsort(pids, n, sizeof(*pids), pid_desc);
	for (i = 0; i < n && budget > 0; i++)
		if (pid_holds(dirfd(proc), pids[i], p->uid, want, -1,
		    &budget, &fd)) {
			p->pid = pids[i];
			break;
		}
	/* newest first finds a child that inherited the socket (a shell's
	 * command): the program that connected is the oldest ancestor that
	 * holds it too; when they are different programs, which one made
	 * the connection is not known (exe_shared: allow-programs refuses) */
	child = p->pid;
	for (i = 0; p->pid != -1 && i < 8; i++) {
		pid = parent_of(dirfd(proc), p->pid);
		if (pid <= 1 || !pid_holds(dirfd(proc), pid, p->uid, want, -1,
		    &budget, &nfd))
			break;
		p->pid = pid;
		fd = nfd;
	}
found:
	free(pids);
	closedir(proc);
	if (p->pid != -1) {
		recent_add(p->pid, fd);
		peer_exe(p);
		if (child != -1 && child != p->pid) {
			c.pid = child;
			peer_exe(&c);
			p->exe_shared = strcmp(c.exe, p->exe) != 0;
		}
	}
}

void
peer_from_fd(int fd, struct peer *p)
{
	struct sockaddr_storage	 ls, ss;
	socklen_t		 sl = sizeof(ss);
	struct ucred		 uc;
	socklen_t		 ul = sizeof(uc);
	char			 host[INET6_ADDRSTRLEN + 16], serv[8];

	memset(p, 0, sizeof(*p));
	p->uid = p->gid = p->pid = -1;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_UNIX) {
		p->unix_sock = 1;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0) {
			p->uid = uc.uid;
			p->gid = uc.gid;
			p->pid = uc.pid;
			peer_exe(p);
		}
		return;
	}
	ls = ss;
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(p->local, sizeof(p->local), "%s:%s", host, serv);
	sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
		snprintf(p->addr, sizeof(p->addr), "%s", host);
		snprintf(p->port, sizeof(p->port), "%s", serv);
	}
	peer_tcp_owner(&ss, &ls, p);
	peer_tcp_pid(p);
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

/*
 * A uid's login name, for the PIN dialog; the lookup (NSS: maybe sssd or
 * LDAP) is made once per uid in a while, not for every connection.
 */
static int
user_name(long uid, char *out, size_t len)
{
	static struct {
		long	 uid;
		long	 at;
		char	 name[64];
	}		 cache[16];
	static int	 next;
	struct passwd	 pw, *res = NULL;
	char		 buf[4096];
	long		 now = clock_now_ms();
	int		 i;

	for (i = 0; i < 16; i++)
		if (cache[i].at != 0 && cache[i].uid == uid &&
		    now - cache[i].at < 600000) {
			snprintf(out, len, "%s", cache[i].name);
			return out[0] != '\0';
		}
	if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &res) != 0 ||
	    res == NULL)
		pw.pw_name = "";
	i = next++ % 16;
	cache[i].uid = uid;
	cache[i].at = now;
	snprintf(cache[i].name, sizeof(cache[i].name), "%s", pw.pw_name);
	snprintf(out, len, "%s", cache[i].name);
	return out[0] != '\0';
}

void
peer_requester(const struct peer *p, char *out, size_t len)
{
	char		 user[64];
	const char	*prog = strrchr(p->exe, '/');

	prog = prog != NULL ? prog + 1 : p->exe[0] ? p->exe : NULL;
	if (p->uid != -1 && user_name(p->uid, user, sizeof(user)))
		;
	else if (p->uid != -1)
		snprintf(user, sizeof(user), "uid %ld", p->uid);
	else
		snprintf(user, sizeof(user), "an unknown user");
	if (prog != NULL && p->pid != -1)
		snprintf(out, len, "%s (pid %ld, %s)", prog, p->pid, user);
	else if (p->pid != -1)
		snprintf(out, len, "a program (pid %ld, %s)", p->pid, user);
	else
		snprintf(out, len, "a program of %s", user);
}

/* Is gid the peer's gid or one of the groups of its uid's account? */
static int
in_group(const struct peer *p, long gid)
{
	struct passwd	 pw, *res = NULL;
	gid_t		 groups[MAX_GROUPS];
	char		 buf[4096];
	int		 n = MAX_GROUPS, i;

	if (p->gid != -1 && p->gid == gid)
		return 1;
	if (getpwuid_r((uid_t)p->uid, &pw, buf, sizeof(buf), &res) != 0 ||
	    res == NULL)
		return 0;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) == -1)
		n = MAX_GROUPS;	/* the first MAX_GROUPS were filled in */
	for (i = 0; i < n; i++)
		if ((long)groups[i] == gid)
			return 1;
	return 0;
}

/* Without policies: the agent's uid, allow-users, allow-groups. */
static int
base_access(const struct peer *p, const struct cfg_tunnel *t, char *rule,
    size_t len)
{
	int	 i;

	if (p->uid == (long)getuid()) {
		snprintf(rule, len, "own uid");
		return 1;
	}
	for (i = 0; i < t->nallow_users; i++)
		if ((long)t->allow_users[i] == p->uid) {
			snprintf(rule, len, "allow-users %ld", p->uid);
			return 1;
		}
	for (i = 0; i < t->nallow_groups; i++)
		if (in_group(p, (long)t->allow_groups[i])) {
			snprintf(rule, len, "allow-groups %ld",
			    (long)t->allow_groups[i]);
			return 1;
		}
	return 0;
}

/*
 * The policies binding the tunnel's identity (agent/policy.c) must all
 * let the peer in, and so must the tunnel's own rule (base_access).
 */
int
peer_access(const struct peer *p, const struct cfg_tunnel *t, char *rule,
    size_t len)
{
	char	 prule[512];
	size_t	 n;
	int	 pr;

	if (p->uid < 0) {
		peer_rule(t, rule, len);
		return 0;	/* the kernel did not say: deny */
	}
	/* a policy limits who may use the tunnel; it never lets in anyone
	 * the user's own rule (own uid, allow-users, allow-groups) does
	 * not: the card is the user's */
	pr = policy_peer(t, p, prule, sizeof(prule));
	if (pr == 0) {
		snprintf(rule, len, "%s", prule);
		return 0;
	}
	if (!base_access(p, t, rule, len)) {
		peer_rule(t, rule, len);
		return 0;
	}
	if (pr == 1 && prule[0] != '\0' && (n = strlen(rule)) < len)
		snprintf(rule + n, len - n, ", %s", prule);
	return 1;
}

int
peer_allowed(const struct peer *p, const struct cfg_tunnel *t)
{
	char	 rule[64];

	return peer_access(p, t, rule, sizeof(rule));
}

void
peer_rule(const struct cfg_tunnel *t, char *out, size_t len)
{
	size_t	 n;
	int	 i;

	snprintf(out, len, "only uid %ld", (long)getuid());
	for (i = 0; i < t->nallow_users; i++) {
		n = strlen(out);
		snprintf(out + n, len - n, "%s%ld", i ? ", " : ", allow-users ",
		    (long)t->allow_users[i]);
	}
	for (i = 0; i < t->nallow_groups; i++) {
		n = strlen(out);
		snprintf(out + n, len - n, "%s%ld", i ? ", " :
		    ", allow-groups ", (long)t->allow_groups[i]);
	}
	if (t->nallow_users == 0 && t->nallow_groups == 0) {
		n = strlen(out);
		snprintf(out + n, len - n, "; allow-users/allow-groups widen "
		    "it");
	}
}
